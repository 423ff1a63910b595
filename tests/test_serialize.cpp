// .npy/.npz files: the byte layout checked against numpy's format spec (no python needed), round trips,
// files numpy writes (Fortran order, integers, version 2, deflate), atomic writes, and crafted bad files.
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "xgrad/xgrad.h"

namespace fs = std::filesystem;
namespace nn = xg::nn;
using xg::Shape;
using xg::Tensor;

namespace {

// A fresh directory per test case, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("xgrad_test_serialize_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

std::uint32_t u32(const std::string& s, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}
std::uint16_t u16(const std::string& s, std::size_t at) {
  return static_cast<std::uint16_t>(static_cast<unsigned char>(s[at]) | (static_cast<unsigned char>(s[at + 1]) << 8));
}
void put16(std::string& s, std::uint32_t v) {
  s.push_back(char(v & 0xff));
  s.push_back(char((v >> 8) & 0xff));
}
void put32(std::string& s, std::uint32_t v) {
  put16(s, v & 0xffff);
  put16(s, v >> 16);
}

// CRC-32 (IEEE 802.3, as zip uses), bit by bit: an independent check of what the writer stored.
std::uint32_t crc32_ref(const std::string& data) {
  std::uint32_t c = 0xffffffffu;
  for (unsigned char b : data) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// A .npy file built by hand from the spec: magic, version, header length, header, data.
std::string make_npy(const std::string& dict, const std::string& data, int major = 1) {
  std::string header = dict;
  const std::size_t pre = major == 1 ? 10 : 12;
  while ((pre + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out("\x93NUMPY", 6);
  out.push_back(char(major));
  out.push_back(0);
  if (major == 1)
    put16(out, static_cast<std::uint32_t>(header.size()));
  else
    put32(out, static_cast<std::uint32_t>(header.size()));
  return out + header + data;
}

template <class T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// A zip of the given (name, bytes, method) entries, built by hand from the zip spec (APPNOTE 4.3).
struct ZipItem {
  std::string name, data;
  bool deflate = false;
};
std::string make_zip(const std::vector<ZipItem>& items) {
  std::string out, cd;
  for (const auto& it : items) {
    std::string stored = it.data;
    if (it.deflate) {
      z_stream zs{};
      deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
      stored.resize(deflateBound(&zs, it.data.size()));
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(it.data.data()));
      zs.avail_in = uInt(it.data.size());
      zs.next_out = reinterpret_cast<Bytef*>(stored.data());
      zs.avail_out = uInt(stored.size());
      deflate(&zs, Z_FINISH);
      stored.resize(zs.total_out);
      deflateEnd(&zs);
    }
    const std::uint32_t off = std::uint32_t(out.size()), crc = crc32_ref(it.data);
    auto header = [&](std::string& s, bool central) {
      put32(s, central ? 0x02014b50 : 0x04034b50);
      if (central) put16(s, 20);
      put16(s, 20);
      put16(s, 0);
      put16(s, it.deflate ? 8 : 0);
      put16(s, 0);
      put16(s, 0x21);
      put32(s, crc);
      put32(s, std::uint32_t(stored.size()));
      put32(s, std::uint32_t(it.data.size()));
      put16(s, std::uint32_t(it.name.size()));
      put16(s, 0);
      if (central) {
        put16(s, 0);
        put16(s, 0);
        put16(s, 0);
        put32(s, 0);
        put32(s, off);
      }
      s += it.name;
    };
    header(out, false);
    out += stored;
    header(cd, true);
  }
  const std::uint32_t cd_off = std::uint32_t(out.size());
  out += cd;
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, std::uint32_t(items.size()));
  put16(out, std::uint32_t(items.size()));
  put32(out, std::uint32_t(cd.size()));
  put32(out, cd_off);
  put16(out, 0);
  return out;
}

// The raw bytes of a tensor's data.
std::string bits(const Tensor& t) {
  return xg::dispatch(t.dtype(), [&](auto v) {
    using T = decltype(v);
    return std::string(reinterpret_cast<const char*>(t.data_ptr<T>()), t.numel() * sizeof(T));
  });
}

bool same(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.to_vector() == b.to_vector();
}

// Two files numpy 1.24 wrote (python3-numpy on Debian 12), as hex. Python's zipfile gives every local header a
// zip64 extra field (numpy forces zip64), and np.savez_compressed deflates:
//   np.savez("s.npz", **{"fc.w": np.array([[1.5, -2], [0.25, 8]], dtype="<f4")})
//   np.savez_compressed("c.npz", w=np.arange(6.0).reshape(2, 3), n=np.array(7, dtype="<i8"))
const char* const kNumpySavez =
    "504b03041400000000000000210037e4424990000000900000000800140066632e772e6e707901001000900000000000000090000000"
    "00000000934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c"
    "20277368617065273a2028322c2032292c207d2020202020202020202020202020202020202020202020202020202020202020202020"
    "20202020202020202020202020202020202020202020200a0000c03f000000c00000803e00000041504b010214031400000000000000"
    "210037e44249900000009000000008000000000000000000000080010000000066632e772e6e7079504b050600000000010001003600"
    "0000ca0000000000";
const char* const kNumpySavezCompressed =
    "504b030414000000080000002100f0cd3b4657000000b000000005001400772e6e707901001000b00000000000000057000000000000"
    "009bec17ea1b10c9c850c650ad9e925a9c5ca46ea5a06e9366a1aea3a09e965f54529498179f5f94920a12774bcc294e058a17672416"
    "a402f91a463a0ac69a3a0ab50a64032e0614f0c11eca7080501c505a004a8b380000504b03041400000008000000210023b8f06c4600"
    "000088000000050014006e2e6e707901001000880000000000000046000000000000009bec17ea1b10c9c850c650ad9e925a9c5ca46e"
    "a5a06e9369a1aea3a09e965f54529498179f5f94920a12774bcc294e058a17672416a402f91a9a3a0ab50a14012e7606080000504b01"
    "02140314000000080000002100f0cd3b4657000000b0000000050000000000000000000000800100000000772e6e7079504b01021403"
    "1400000008000000210023b8f06c460000008800000005000000000000000000000080018e0000006e2e6e7079504b05060000000002"
    "000200660000000b0100000000";

// The bytes of a small .npz that save_npz wrote (two stored entries, "w" and "b").
std::string small_npz(const TempDir& dir) {
  xg::StateDict sd;
  sd.insert("w", xg::ones({4, 4}));
  sd.insert("b", xg::ones({4}));
  xg::save_npz(dir / "good.npz", sd);
  return read_bytes(dir / "good.npz");
}

std::string from_hex(const char* hex) {
  std::string out;
  for (const char* p = hex; p[0] && p[1]; p += 2) out.push_back(char(std::stoi(std::string(p, 2), nullptr, 16)));
  return out;
}

}  // namespace

TEST_CASE(".npy byte layout follows numpy's format 1.0") {
  TempDir dir;
  Tensor t = xg::from_vector(std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f}, {2, 3});
  xg::save_npy(dir / "a.npy", t);
  const std::string b = read_bytes(dir / "a.npy");
  CHECK(b.substr(0, 6) == std::string("\x93NUMPY", 6));
  CHECK(b[6] == 1);
  CHECK(b[7] == 0);
  const std::size_t hlen = u16(b, 8);
  CHECK((10 + hlen) % 64 == 0);  // data aligned to 64 bytes
  const std::string header = b.substr(10, hlen);
  CHECK(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0) == 0);
  CHECK(header.back() == '\n');
  CHECK(header.find_first_not_of(' ', 59) == hlen - 1);  // space padding up to the newline
  CHECK(b.size() == 10 + hlen + 6 * 4);
  float back[6];
  std::memcpy(back, b.data() + 10 + hlen, sizeof back);
  CHECK(back[0] == 1.5f);
  CHECK(back[2] == 3.25f);
  CHECK(back[4] == 1e-3f);

  // 1-d shapes are 1-tuples, 0-d shapes the empty tuple; float64 is '<f8'
  xg::save_npy(dir / "v.npy", xg::tensor({1, 2, 3}, xg::kFloat64));
  CHECK(read_bytes(dir / "v.npy").find("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }") == 10);
  xg::save_npy(dir / "s.npy", xg::scalar(4.0));
  CHECK(read_bytes(dir / "s.npy").find("'shape': (), }") != std::string::npos);
}

TEST_CASE(".npy round trips keep dtype, shape and every bit") {
  TempDir dir;
  xg::Generator g(1);
  for (const Tensor& t : {xg::randn({2, 3, 4}, xg::kFloat32, &g), xg::randn({5}, xg::kFloat64, &g), xg::scalar(-0.5),
                          xg::zeros({0, 3}), xg::tensor({NAN, INFINITY, -0.0})}) {
    xg::save_npy(dir / "t.npy", t);
    const Tensor u = xg::load_npy(dir / "t.npy");
    CHECK(u.dtype() == t.dtype());
    CHECK(u.shape() == t.shape());
    CHECK(bits(u) == bits(t));  // NaN, inf and -0 included
  }
}

TEST_CASE("load_npy reads what numpy writes: Fortran order, integers, big-endian, version 2") {
  TempDir dir;
  // np.asfortranarray([[1, 2, 3], [4, 5, 6]], dtype='<f4'): stored column by column
  write_bytes(dir / "f.npy", make_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                                      raw(std::vector<float>{1, 4, 2, 5, 3, 6})));
  Tensor f = xg::load_npy(dir / "f.npy");
  CHECK(f.shape() == Shape{2, 3});
  CHECK(f.to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6});
  // 3-d: element [i, j, k] = 100i + 10j + k, stored with i fastest, then j, then k
  std::vector<double> f3;
  for (int k = 0; k < 2; ++k)
    for (int j = 0; j < 3; ++j)
      for (int i = 0; i < 2; ++i) f3.push_back(100 * i + 10 * j + k);
  write_bytes(dir / "f3.npy", make_npy("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3, 2), }", raw(f3)));
  Tensor t3 = xg::load_npy(dir / "f3.npy");
  for (std::ptrdiff_t i = 0; i < 2; ++i)
    for (std::ptrdiff_t j = 0; j < 3; ++j)
      for (std::ptrdiff_t k = 0; k < 2; ++k) CHECK(t3.at({i, j, k}) == double(100 * i + 10 * j + k));
  // int64 (e.g. PyTorch's num_batches_tracked) loads as int64
  write_bytes(dir / "i.npy", make_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
                                      raw(std::vector<std::int64_t>{-3, 1000})));
  Tensor i = xg::load_npy(dir / "i.npy");
  CHECK(i.dtype() == xg::kInt64);
  CHECK(i.to_vector() == std::vector<double>{-3, 1000});
  // big-endian float64
  std::string be = raw(std::vector<double>{2.5});
  std::reverse(be.begin(), be.end());
  write_bytes(dir / "b.npy", make_npy("{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }", be));
  CHECK(xg::load_npy(dir / "b.npy").item() == 2.5);
  // format version 2.0 (4-byte header length), keys in another order, double quotes
  write_bytes(dir / "v2.npy", make_npy("{\"shape\": (1, 2), \"fortran_order\": False, \"descr\": \"<f4\"}",
                                       raw(std::vector<float>{7, 8}), 2));
  CHECK(xg::load_npy(dir / "v2.npy").to_vector() == std::vector<double>{7, 8});
}

TEST_CASE("bad .npy files give errors naming the file and the problem") {
  TempDir dir;
  const std::string good =
      make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", raw(std::vector<float>{1, 2, 3, 4}));
  auto expect_error = [&](const std::string& bytes, const std::string& what) {
    write_bytes(dir / "bad.npy", bytes);
    CAPTURE(what);
    CHECK_THROWS_WITH_AS(xg::load_npy(dir / "bad.npy"), doctest::Contains(what.c_str()), xg::Error);
    CHECK_THROWS_WITH_AS(xg::load_npy(dir / "bad.npy"), doctest::Contains("bad.npy"), xg::Error);
  };
  expect_error(good.substr(0, good.size() - 3),
               "is truncated: shape [2,2] of '<f4' needs 16 bytes of data but only 13 follow");
  expect_error(good.substr(0, 40), "is truncated: its header needs 128 bytes");
  expect_error(good.substr(0, 8), "is truncated (8 bytes");
  expect_error("", "not a .npy array (wrong magic bytes");
  expect_error("PK\x03\x04 this is a zip", "not a .npy array (wrong magic bytes");
  expect_error(good + "xx", "2 unexpected bytes after the data");
  expect_error(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2) ", ""),
               "bad .npy header: expected ',' or '}'");
  expect_error(make_npy("{'descr': '<f4', 'shape': (4,), }", raw(std::vector<float>{1, 2, 3, 4})),
               "must have the keys");
  expect_error(make_npy("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (4,), }", ""),
               "fortran_order must be True or False");
  expect_error(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", ""), "expected a dimension");
  expect_error(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'extra': 1}", ""),
               "unknown key 'extra'");
  expect_error(make_npy("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')),
               "holds dtype '<c8'");
  expect_error(make_npy("{'descr': '|S4', 'fortran_order': False, 'shape': (1,), }", "abcd"), "holds dtype '|S4'");
  expect_error(make_npy("{'descr': '<f2', 'fortran_order': False, 'shape': (1,), }", "ab"), "holds dtype '<f2'");
  std::string v9 = good;
  v9[6] = 9;
  expect_error(v9, "format version 9.0");
  CHECK_THROWS_WITH_AS(xg::load_npy(dir / "missing.npy"), doctest::Contains("cannot open"), xg::Error);
}

TEST_CASE(".npz: a stored zip of <name>.npy entries with correct CRCs, round trip") {
  TempDir dir;
  xg::StateDict sd;
  xg::Generator g(2);
  sd.insert("fc1.weight", xg::randn({3, 4}, xg::kFloat32, &g));
  sd.insert("fc1.bias", xg::randn({3}, xg::kFloat32, &g));
  sd.insert("bn.num_batches_tracked", xg::scalar(12.0, xg::kFloat64));
  xg::save_npz(dir / "m.npz", sd);
  const std::string z = read_bytes(dir / "m.npz");
  // walk the local headers: each is a stored entry whose CRC matches its bytes and whose bytes are a .npy
  std::size_t p = 0;
  std::vector<std::string> names;
  for (int k = 0; k < 3; ++k) {
    REQUIRE(u32(z, p) == 0x04034b50u);
    CHECK(u16(z, p + 8) == 0);  // method: stored
    const std::uint32_t crc = u32(z, p + 14), size = u32(z, p + 18);
    CHECK(u32(z, p + 22) == size);
    const std::size_t nlen = u16(z, p + 26), xlen = u16(z, p + 28);
    names.push_back(z.substr(p + 30, nlen));
    const std::string data = z.substr(p + 30 + nlen + xlen, size);
    CHECK(crc == crc32_ref(data));
    CHECK(data.substr(0, 6) == std::string("\x93NUMPY", 6));
    p += 30 + nlen + xlen + size;
  }
  CHECK(names == std::vector<std::string>{"fc1.weight.npy", "fc1.bias.npy", "bn.num_batches_tracked.npy"});
  // entry times are fixed at 1980-01-01 (the zip epoch), so the same state writes the same bytes
  CHECK(u16(z, 12) == 0x21);
  xg::save_npz(dir / "again.npz", sd);
  CHECK(read_bytes(dir / "again.npz") == z);
  CHECK(u32(z, p) == 0x02014b50u);  // the central directory follows
  const std::size_t eocd = z.size() - 22;
  CHECK(u32(z, eocd) == 0x06054b50u);
  CHECK(u16(z, eocd + 10) == 3);
  CHECK(u32(z, eocd + 16) == p);

  const xg::StateDict back = xg::load_npz(dir / "m.npz");
  CHECK(back.keys() == sd.keys());
  for (const auto& [n, t] : sd) CHECK(same(back.at(n), t));
}

TEST_CASE("load_npz reads deflated entries (np.savez_compressed) and rejects foreign entries") {
  TempDir dir;
  const std::string w =
      make_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", raw(std::vector<double>{1, 2, 3}));
  write_bytes(dir / "c.npz", make_zip({{"w.npy", w, true}, {"b.npy", w, false}}));
  const auto sd = xg::load_npz(dir / "c.npz");
  CHECK(sd.at("w").to_vector() == std::vector<double>{1, 2, 3});
  CHECK(sd.at("b").to_vector() == std::vector<double>{1, 2, 3});
  write_bytes(dir / "f.npz", make_zip({{"readme.txt", "hello"}}));
  CHECK_THROWS_WITH_AS(xg::load_npz(dir / "f.npz"), doctest::Contains("entry 'readme.txt', which is not a .npy array"),
                       xg::Error);
  write_bytes(dir / "d.npz", make_zip({{"a.npy", w}, {"a.npy", w}}));
  CHECK_THROWS_WITH_AS(xg::load_npz(dir / "d.npz"), doctest::Contains("holds two entries with the same name"),
                       xg::Error);
  write_bytes(dir / "e.npz", make_zip({{"a.npy", "garbage"}}));
  CHECK_THROWS_WITH_AS(xg::load_npz(dir / "e.npz"), doctest::Contains("entry 'a.npy' is not a .npy array"), xg::Error);
}

TEST_CASE("load_npz reads the .npz files numpy writes: zip64 extra fields, stored and deflated") {
  TempDir dir;
  const std::string stored = from_hex(kNumpySavez), deflated = from_hex(kNumpySavezCompressed);
  // the fixtures hold what they claim: a zip64 extra field (id 1) in the first local header; method 0, then 8
  REQUIRE(u16(stored, 28) == 20);
  CHECK(u16(stored, 30 + u16(stored, 26)) == 1);
  CHECK(u16(stored, 8) == 0);
  CHECK(u16(deflated, 8) == 8);
  write_bytes(dir / "s.npz", stored);
  const auto s = xg::load_npz(dir / "s.npz");
  CHECK(s.keys() == std::vector<std::string>{"fc.w"});
  CHECK(s.at("fc.w").dtype() == xg::kFloat32);
  CHECK(s.at("fc.w").shape() == Shape{2, 2});
  CHECK(s.at("fc.w").to_vector() == std::vector<double>{1.5, -2, 0.25, 8});
  write_bytes(dir / "c.npz", deflated);
  const auto c = xg::load_npz(dir / "c.npz");
  CHECK(c.keys() == std::vector<std::string>{"w", "n"});
  CHECK(c.at("w").shape() == Shape{2, 3});
  CHECK(c.at("w").to_vector() == std::vector<double>{0, 1, 2, 3, 4, 5});
  CHECK(c.at("n").dtype() == xg::kInt64);  // int64 stays int64
  CHECK(c.at("n").item() == 7.0);
}

TEST_CASE("bad .npz files: truncated, foreign, bad directory, corrupt data") {
  TempDir dir;
  const std::string good = small_npz(dir);
  auto expect_error = [&](const std::string& bytes, const std::string& what) {
    write_bytes(dir / "bad.npz", bytes);
    CAPTURE(what);
    CHECK_THROWS_WITH_AS(xg::load_npz(dir / "bad.npz"), doctest::Contains(what.c_str()), xg::Error);
    CHECK_THROWS_WITH_AS(xg::load_npz(dir / "bad.npz"), doctest::Contains("bad.npz"), xg::Error);
  };
  expect_error(good.substr(0, good.size() - 30), "no end-of-central-directory record");
  expect_error(good.substr(0, 100), "no end-of-central-directory record");
  expect_error("", "is not an .npz (zip) archive");
  expect_error(std::string(200, 'x'), "no end-of-central-directory record");
  // np.save output (a .npy) passed to load_npz
  xg::save_npy(dir / "x.npy", xg::ones({3}));
  expect_error(read_bytes(dir / "x.npy"), "no end-of-central-directory record");
  // the directory offset points past the end
  std::string off = good;
  off[off.size() - 6] = '\x7f';
  expect_error(off, "has a bad zip directory");
  // the directory's first record signature is damaged
  std::string sig = good;
  sig[u32(good, good.size() - 6)] = 'X';
  expect_error(sig, "has a bad zip directory");
  // the data was cut out of the middle (the directory still claims it)
  expect_error(good.substr(0, 50) + good.substr(90), "bad");
  // one flipped bit in the float data
  std::string flip = good;
  flip[150] = char(flip[150] ^ 0x10);
  expect_error(flip, "is corrupt: CRC-32");
  CHECK_THROWS_WITH_AS(xg::load_npz(dir / "none.npz"), doctest::Contains("cannot open '"), xg::Error);

  // a checksum that does not match the data (changed in both headers, so the directory itself is consistent)
  std::string crc = good;
  const std::size_t cd = u32(good, good.size() - 6);
  REQUIRE(u32(good, cd) == 0x02014b50u);
  for (std::size_t at : {std::size_t{14}, cd + 16}) crc[at] = char(crc[at] ^ 0x01);
  expect_error(crc, "is corrupt: CRC-32 mismatch");
  // ... or changed in the directory only: it no longer matches the local header
  std::string crc_cd = good;
  crc_cd[cd + 16] = char(crc_cd[cd + 16] ^ 0x01);
  expect_error(crc_cd, "has a bad zip directory");
  // a damaged deflate stream (np.savez_compressed's file, one byte of the first entry's data changed)
  std::string inflate = from_hex(kNumpySavezCompressed);
  const std::size_t data0 = 30 + u16(inflate, 26) + u16(inflate, 28);
  inflate[data0 + 10] = char(inflate[data0 + 10] ^ 0x55);
  expect_error(inflate, "is corrupt");
}

TEST_CASE("a truncated or damaged .npz at any byte gives an xg::Error naming the file, never a crash") {
  TempDir dir;
  for (const std::string& good : {small_npz(dir), from_hex(kNumpySavezCompressed)}) {
    // cut short at every length: the end record, the directory or an entry is missing
    for (std::size_t n = 0; n < good.size(); ++n) {
      write_bytes(dir / "cut.npz", good.substr(0, n));
      CAPTURE(n);
      CHECK_THROWS_WITH_AS(xg::load_npz(dir / "cut.npz"), doctest::Contains("cut.npz"), xg::Error);
    }
    // every byte inverted in turn: an error or (for bytes nothing checks, e.g. a timestamp) a normal load
    for (std::size_t i = 0; i < good.size(); ++i) {
      std::string bad = good;
      bad[i] = char(~bad[i]);
      write_bytes(dir / "flip.npz", bad);
      CAPTURE(i);
      try {
        xg::load_npz(dir / "flip.npz");
      } catch (const xg::Error& e) {
        CHECK(std::string(e.what()).find("flip.npz") != std::string::npos);
      }
    }
  }
}

TEST_CASE("writes are atomic: no temporary file left, failures leave the old file intact") {
  TempDir dir;
  xg::StateDict sd;
  sd.insert("w", xg::full({2, 2}, 3.0));
  xg::save_npz(dir / "ck.npz", sd);
  xg::save_npz(dir / "ck.npz", sd);  // overwrite
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir.path)) files.push_back(e.path().filename().string());
  CHECK(files == std::vector<std::string>{"ck.npz"});
  // a save that fails (an undefined tensor) does not touch the existing file
  xg::StateDict broken;
  broken.insert("w", xg::zeros({2, 2}));
  broken.insert("oops", Tensor());
  CHECK_THROWS_WITH_AS(xg::save_npz(dir / "ck.npz", broken), doctest::Contains("'oops' is an undefined tensor"),
                       xg::Error);
  CHECK(xg::load_npz(dir / "ck.npz").at("w").to_vector() == std::vector<double>{3, 3, 3, 3});
  // an unwritable destination names the path
  CHECK_THROWS_WITH_AS(xg::save_npz(dir / "no/such/dir/ck.npz", sd), doctest::Contains("no/such/dir/ck.npz.tmp-"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(xg::save_npy(dir / "no/such.npy", xg::ones({1})), doctest::Contains("cannot create"), xg::Error);
  files.clear();
  for (const auto& e : fs::directory_iterator(dir.path)) files.push_back(e.path().filename().string());
  CHECK(files == std::vector<std::string>{"ck.npz"});
}

TEST_CASE("nn::save / nn::load: a model with BatchNorm round-trips through one file") {
  TempDir dir;
  auto make = [] {
    return std::make_shared<nn::Sequential>(nn::Conv2d(nn::Conv2dOptions(1, 2, 3).bias(false)), nn::BatchNorm2d(2),
                                            nn::ReLU(), nn::Flatten(), nn::Linear(8, 3));
  };
  xg::manual_seed(1);
  auto a = make();
  a->forward(xg::randn({2, 1, 4, 4}));  // running statistics move
  nn::save(*a, dir / "model.npz");
  xg::manual_seed(2);
  auto b = make();
  const Tensor w = b->at<nn::Linear>(4)->weight;
  auto r = nn::load(*b, dir / "model.npz");
  CHECK(r.missing_keys.empty());
  CHECK(w.impl() == b->at<nn::Linear>(4)->weight.impl());
  for (const auto& [n, t] : a->state_dict()) CHECK(same(b->state_dict().at(n), t));
  CHECK(b->at<nn::BatchNorm2d>(1)->num_batches_tracked.item() == 1.0);
  a->eval();
  b->eval();
  Tensor x = xg::randn({1, 1, 4, 4});
  CHECK(a->forward(x).to_vector() == b->forward(x).to_vector());
  // another architecture: the error names the file and the keys
  auto other = std::make_shared<nn::Sequential>(nn::Linear(8, 3));
  CHECK_THROWS_WITH_AS(nn::load(*other, dir / "model.npz"), doctest::Contains("nn::load('"), xg::Error);
  CHECK_THROWS_WITH_AS(nn::load(*other, dir / "model.npz"), doctest::Contains("missing keys: 0.bias"), xg::Error);
  CHECK_THROWS_WITH_AS(nn::load(*other, dir / "model.npz"), doctest::Contains("unexpected keys: 1.weight, 1.bias"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(nn::load(*other, dir / "model.npz"),
                       doctest::Contains("0.weight (checkpoint [2,1,3,3] vs model [3,8])"), xg::Error);
}
