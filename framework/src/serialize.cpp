// .npy and .npz files, written atomically and read defensively.
//
// .npy (numpy's format, https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
//   "\x93NUMPY" | major, minor (1, 0) | header length (uint16 LE; uint32 for versions 2 and 3) |
//   header: a Python dict literal "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" padded with
//   spaces and ended by '\n' so that the data starts at a multiple of 64 bytes | the raw array, C order.
// .npz: a zip archive of "<name>.npy" entries. We write "stored" (uncompressed) entries with zlib's CRC-32;
// we read stored and deflated entries (np.savez_compressed), and the zip64 fields numpy's writer emits.
//
// Every read error names the file (and the archive entry) and what is wrong; nothing is trusted before its
// bounds are checked, so a truncated or foreign file gives an xg::Error, never a crash.
#include "xgrad/serialize.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <xtensor/xarray.hpp>

namespace xg {

static_assert(std::endian::native == std::endian::little, "xgrad's .npy code assumes a little-endian host");

namespace {

// ---- little-endian byte helpers ----------------------------------------------------------------------------
void put_u16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
void put_u32(std::string& out, std::uint32_t v) {
  put_u16(out, static_cast<std::uint16_t>(v & 0xffff));
  put_u16(out, static_cast<std::uint16_t>(v >> 16));
}
std::uint16_t get_u16(const unsigned char* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }
std::uint32_t get_u32(const unsigned char* p) {
  return static_cast<std::uint32_t>(get_u16(p)) | (static_cast<std::uint32_t>(get_u16(p + 2)) << 16);
}
std::uint64_t get_u64(const unsigned char* p) {
  return static_cast<std::uint64_t>(get_u32(p)) | (static_cast<std::uint64_t>(get_u32(p + 4)) << 32);
}

// A read-only view of bytes with the name of where they came from (for error messages).
struct Bytes {
  const unsigned char* data;
  std::size_t size;
  std::string where;  // "file 'a.npy'" or "file 'm.npz', entry 'fc.weight.npy'"
};

// ---- files -----------------------------------------------------------------------------------------------------
std::string read_file(const std::string& path, const char* fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open '{}' ({})", fn, path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("{}: error while reading '{}'", fn, path);
  return ss.str();
}

// Writes `bytes` to `path` atomically: into "<path>.tmp-<pid>" in the same directory, fsync, rename over
// `path`, fsync the directory. A crash at any point leaves either the old file or the new one, never half.
void write_atomically(const std::string& path, const std::string& bytes, const char* fn) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot create '{}' ({})", fn, tmp, std::strerror(errno));
  auto abandon = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("{}: {} '{}' failed ({}); '{}' was not changed", fn, what, tmp, std::strerror(err), path);
  };
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      abandon("writing");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) abandon("fsync of");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: closing '{}' failed ({}); '{}' was not changed", fn, tmp, std::strerror(err), path);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot rename '{}' to '{}' ({})", fn, tmp, path, std::strerror(err));
  }
  // Make the rename itself durable.
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// ---- .npy writing -------------------------------------------------------------------------------------------
std::string npy_bytes(const Tensor& t, const std::string& name, const char* fn) {
  if (!t.defined()) fail("{}: '{}' is an undefined tensor; nothing to save", fn, name);
  std::string shape = "(";
  for (std::size_t i = 0; i < t.ndim(); ++i) shape += fmt::format("{}{}", i ? ", " : "", t.shape()[i]);
  if (t.ndim() == 1) shape += ",";  // a Python 1-tuple
  shape += ")";
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                                   t.dtype() == kFloat32 ? "<f4" : "<f8", shape);
  // Pad with spaces + '\n' so that preamble (10 bytes) + header is a multiple of 64 (numpy's alignment).
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  if (header.size() > std::numeric_limits<std::uint16_t>::max())
    fail("{}: '{}' has a shape too long for a version 1.0 .npy header", fn, name);
  std::string out("\x93NUMPY\x01\x00", 8);
  put_u16(out, static_cast<std::uint16_t>(header.size()));
  out += header;
  dispatch(t.dtype(), [&](auto v) {
    using T = decltype(v);
    if (t.numel() > 0) out.append(reinterpret_cast<const char*>(t.data_ptr<T>()), t.numel() * sizeof(T));
  });
  return out;
}

// ---- .npy reading --------------------------------------------------------------------------------------------
// The header dict: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  Shape shape;
};

class HeaderParser {
 public:
  HeaderParser(std::string_view s, const std::string& where) : s_(s), where_(where) {}

  NpyHeader parse() {
    NpyHeader h;
    bool seen_descr = false, seen_order = false, seen_shape = false;
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') break;
      const std::string key = parse_string();
      expect(':');
      skip_ws();
      if (key == "descr") {
        h.descr = parse_string();
        seen_descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = parse_bool();
        seen_order = true;
      } else if (key == "shape") {
        h.shape = parse_shape();
        seen_shape = true;
      } else {
        bad(fmt::format("unknown key '{}'", key));
      }
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() == '}') break;
      bad("expected ',' or '}'");
    }
    if (!seen_descr || !seen_order || !seen_shape) bad("it must have the keys 'descr', 'fortran_order' and 'shape'");
    return h;
  }

 private:
  [[noreturn]] void bad(const std::string& what) const {
    fail("load_npy: {} has a bad .npy header: {} (header: \"{}\")", where_, what,
         std::string(s_.substr(0, std::min<std::size_t>(s_.size(), 120))));
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    skip_ws();
    if (peek() != c) bad(fmt::format("expected '{}' at position {}", c, i_));
    ++i_;
  }
  std::string parse_string() {
    skip_ws();
    const char q = peek();
    if (q != '\'' && q != '"') bad(fmt::format("expected a quoted string at position {}", i_));
    const std::size_t end = s_.find(q, i_ + 1);
    if (end == std::string_view::npos) bad("unterminated string");
    std::string out(s_.substr(i_ + 1, end - i_ - 1));
    i_ = end + 1;
    return out;
  }
  bool parse_bool() {
    if (s_.substr(i_, 4) == "True") {
      i_ += 4;
      return true;
    }
    if (s_.substr(i_, 5) == "False") {
      i_ += 5;
      return false;
    }
    bad("fortran_order must be True or False");
  }
  Shape parse_shape() {
    Shape shape;
    expect('(');
    while (true) {
      skip_ws();
      if (peek() == ')') break;
      if (peek() < '0' || peek() > '9') bad(fmt::format("expected a dimension at position {}", i_));
      std::size_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        const std::size_t digit = static_cast<std::size_t>(peek() - '0');
        if (v > (std::numeric_limits<std::size_t>::max() - digit) / 10) bad("a dimension overflows");
        v = v * 10 + digit;
        ++i_;
      }
      if (peek() == 'L') ++i_;  // Python 2 long suffix
      shape.push_back(v);
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != ')') bad("expected ',' or ')' in the shape");
    }
    ++i_;
    return shape;
  }

  std::string_view s_;
  const std::string& where_;
  std::size_t i_ = 0;
};

// Element kinds we accept: floats as they are, integers and bools converted to float64.
struct ElementType {
  char kind;  // 'f', 'i', 'u', 'b'
  std::size_t size;
  bool big_endian;
};

ElementType element_type(const std::string& descr, const std::string& where) {
  auto unsupported = [&]() {
    fail("load_npy: {} holds dtype '{}', which xgrad cannot load (supported: float32 '<f4', float64 '<f8', and "
         "integer/bool types, loaded as float64)",
         where, descr);
  };
  if (descr.size() < 3) unsupported();
  const char order = descr[0], kind = descr[1];
  std::size_t size = 0;
  for (std::size_t i = 2; i < descr.size(); ++i) {
    if (descr[i] < '0' || descr[i] > '9') unsupported();
    size = size * 10 + static_cast<std::size_t>(descr[i] - '0');
    if (size > 16) unsupported();
  }
  if (order != '<' && order != '>' && order != '|' && order != '=') unsupported();
  const bool ok = (kind == 'f' && (size == 4 || size == 8)) ||
                  ((kind == 'i' || kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
                  (kind == 'b' && size == 1);
  if (!ok) unsupported();
  return {kind, size, order == '>' && size > 1};
}

// One element of the raw data as double.
double element_at(const unsigned char* p, const ElementType& e) {
  unsigned char b[8] = {};
  const std::size_t n = std::min<std::size_t>(e.size, sizeof b);  // element_type allows at most 8 bytes
  std::memcpy(b, p, n);
  if (e.big_endian)
    for (std::size_t i = 0; i < n / 2; ++i) std::swap(b[i], b[n - 1 - i]);
  auto as = [&](auto v) {
    std::memcpy(&v, b, sizeof v);
    return static_cast<double>(v);
  };
  switch (e.kind) {
    case 'f': return e.size == 4 ? as(float{}) : as(double{});
    case 'b': return b[0] != 0 ? 1.0 : 0.0;
    case 'i':
      return e.size == 1   ? as(std::int8_t{})
             : e.size == 2 ? as(std::int16_t{})
             : e.size == 4 ? as(std::int32_t{})
                           : as(std::int64_t{});
    default:
      return e.size == 1   ? as(std::uint8_t{})
             : e.size == 2 ? as(std::uint16_t{})
             : e.size == 4 ? as(std::uint32_t{})
                           : as(std::uint64_t{});
  }
}

template <class T>
Tensor make_tensor(const unsigned char* data, const ElementType& e, const NpyHeader& h, std::size_t n) {
  xt::xarray<T> a = xt::xarray<T>::from_shape(h.shape);
  T* out = a.data();
  if (!h.fortran_order) {
    if (e.kind == 'f' && e.size == sizeof(T) && !e.big_endian) {
      if (n > 0) std::memcpy(out, data, n * sizeof(T));  // (an empty array may have no buffer at all)
    } else {
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(element_at(data + i * e.size, e));
    }
    return Tensor(std::move(a));
  }
  // Fortran order: the first axis varies fastest in the file. Walk the C-order output with an odometer over
  // the index and read element Σ index[k]·fstride[k], fstride[k] = shape[0]·…·shape[k-1].
  const std::size_t nd = h.shape.size();
  std::vector<std::size_t> index(nd, 0), fstride(nd, 1);
  for (std::size_t k = 1; k < nd; ++k) fstride[k] = fstride[k - 1] * h.shape[k - 1];
  for (std::size_t i = 0; i < n; ++i) {
    std::size_t src = 0;
    for (std::size_t k = 0; k < nd; ++k) src += index[k] * fstride[k];
    out[i] = static_cast<T>(element_at(data + src * e.size, e));
    for (std::size_t k = nd; k-- > 0;) {  // next C-order index: the last axis fastest
      if (++index[k] < h.shape[k]) break;
      index[k] = 0;
    }
  }
  return Tensor(std::move(a));
}

Tensor parse_npy(const Bytes& b) {
  static constexpr unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (b.size < 6 || std::memcmp(b.data, magic, 6) != 0)
    fail("load_npy: {} is not a .npy array (wrong magic bytes: a .npy file starts with \"\\x93NUMPY\")", b.where);
  if (b.size < 10) fail("load_npy: {} is truncated ({} bytes, shorter than the .npy preamble)", b.where, b.size);
  const int major = b.data[6];
  std::size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = get_u16(b.data + 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (b.size < 12) fail("load_npy: {} is truncated ({} bytes, shorter than the .npy preamble)", b.where, b.size);
    header_len = get_u32(b.data + 8);
    header_start = 12;
  } else {
    fail("load_npy: {} has .npy format version {}.{}, which xgrad does not know (1.0, 2.0, 3.0)", b.where, major,
         static_cast<int>(b.data[7]));
  }
  if (header_start + header_len > b.size)
    fail("load_npy: {} is truncated: its header needs {} bytes but the file has {}", b.where, header_start + header_len,
         b.size);
  const std::string_view text(reinterpret_cast<const char*>(b.data + header_start), header_len);
  const NpyHeader h = HeaderParser(text, b.where).parse();
  const ElementType e = element_type(h.descr, b.where);
  std::size_t n = 1;
  for (std::size_t d : h.shape) {
    if (d != 0 && n > std::numeric_limits<std::size_t>::max() / d / 8)
      fail("load_npy: {} declares an impossibly large shape {}", b.where, shape_str(h.shape));
    n *= d;
  }
  const std::size_t data_start = header_start + header_len, need = n * e.size;
  const std::size_t have = b.size - data_start;
  if (have < need)
    fail("load_npy: {} is truncated: shape {} of '{}' needs {} bytes of data but only {} follow the header", b.where,
         shape_str(h.shape), h.descr, need, have);
  if (have > need)
    fail("load_npy: {} is corrupt: {} unexpected bytes after the data of shape {}", b.where, have - need,
         shape_str(h.shape));
  const unsigned char* data = b.data + data_start;
  if (e.kind == 'f' && e.size == 4) return make_tensor<float>(data, e, h, n);
  return make_tensor<double>(data, e, h, n);
}

// ---- zip writing (stored entries) ------------------------------------------------------------------------------
constexpr std::uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr std::uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr std::uint16_t kDosDate1980 = (0 << 9) | (1 << 5) | 1;  // 1980-01-01, the zip epoch

std::string zip_bytes(const std::vector<std::pair<std::string, std::string>>& files, const std::string& path) {
  constexpr std::uint64_t kMax32 = std::numeric_limits<std::uint32_t>::max();
  if (files.size() >= 0xffff) fail("save_npz: '{}': {} entries are more than a plain zip holds", path, files.size());
  std::string out, central;
  for (const auto& [name, data] : files) {
    if (name.size() >= 0xffff) fail("save_npz: '{}': the name '{}' is too long", path, name);
    if (data.size() >= kMax32 || out.size() >= kMax32)
      fail("save_npz: '{}': entry '{}' does not fit a zip without zip64 (4 GiB)", path, name);
    const auto crc = static_cast<std::uint32_t>(
        ::crc32(0L, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
    const auto offset = static_cast<std::uint32_t>(out.size());
    const auto size = static_cast<std::uint32_t>(data.size());
    const auto name_len = static_cast<std::uint16_t>(name.size());
    // local file header
    put_u32(out, kLocalSig);
    put_u16(out, 20);  // version needed to extract: 2.0
    put_u16(out, 0);   // flags
    put_u16(out, 0);   // method: stored
    put_u16(out, 0);   // time
    put_u16(out, kDosDate1980);
    put_u32(out, crc);
    put_u32(out, size);  // compressed size
    put_u32(out, size);  // uncompressed size
    put_u16(out, name_len);
    put_u16(out, 0);  // extra length
    out += name;
    out += data;
    // central directory record
    put_u32(central, kCentralSig);
    put_u16(central, 20);  // version made by
    put_u16(central, 20);  // version needed
    put_u16(central, 0);
    put_u16(central, 0);
    put_u16(central, 0);
    put_u16(central, kDosDate1980);
    put_u32(central, crc);
    put_u32(central, size);
    put_u32(central, size);
    put_u16(central, name_len);
    put_u16(central, 0);  // extra
    put_u16(central, 0);  // comment
    put_u16(central, 0);  // disk
    put_u16(central, 0);  // internal attributes
    put_u32(central, 0);  // external attributes
    put_u32(central, offset);
    central += name;
  }
  if (out.size() + central.size() >= kMax32) fail("save_npz: '{}' does not fit a zip without zip64 (4 GiB)", path);
  const auto cd_offset = static_cast<std::uint32_t>(out.size());
  out += central;
  put_u32(out, kEndSig);
  put_u16(out, 0);
  put_u16(out, 0);
  put_u16(out, static_cast<std::uint16_t>(files.size()));
  put_u16(out, static_cast<std::uint16_t>(files.size()));
  put_u32(out, static_cast<std::uint32_t>(central.size()));
  put_u32(out, cd_offset);
  put_u16(out, 0);  // comment length
  return out;
}

// ---- zip reading -------------------------------------------------------------------------------------------------
struct ZipEntry {
  std::string name;
  std::uint16_t method = 0, flags = 0;
  std::uint32_t crc = 0;
  std::uint64_t csize = 0, usize = 0, offset = 0;
};

std::vector<ZipEntry> zip_directory(const Bytes& b) {
  auto bad = [&](const std::string& what) { fail("load_npz: {} {}", b.where, what); };
  if (b.size < 22) bad(fmt::format("is not an .npz (zip) archive: only {} bytes, or truncated", b.size));
  // The end-of-central-directory record is the last 22 bytes plus a comment of up to 65535 bytes.
  std::size_t eocd = std::string::npos;
  const std::size_t lowest = b.size >= 22 + 0xffff ? b.size - 22 - 0xffff : 0;
  for (std::size_t p = b.size - 22 + 1; p-- > lowest;)
    if (get_u32(b.data + p) == kEndSig) {
      eocd = p;
      break;
    }
  if (eocd == std::string::npos)
    bad("is not an .npz (zip) archive, or is truncated: no end-of-central-directory record");
  std::uint64_t count = get_u16(b.data + eocd + 10);
  std::uint64_t cd_size = get_u32(b.data + eocd + 12);
  std::uint64_t cd_offset = get_u32(b.data + eocd + 16);
  if (count == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {  // zip64
    if (eocd < 20 || get_u32(b.data + eocd - 20) != kZip64LocatorSig) bad("has a damaged zip64 directory locator");
    const std::uint64_t z64 = get_u64(b.data + eocd - 20 + 8);
    if (z64 > b.size || b.size - z64 < 56 || get_u32(b.data + z64) != kZip64EndSig)
      bad("has a damaged zip64 directory");
    count = get_u64(b.data + z64 + 32);
    cd_size = get_u64(b.data + z64 + 40);
    cd_offset = get_u64(b.data + z64 + 48);
  }
  if (cd_offset > b.size || cd_size > b.size - cd_offset)
    bad(fmt::format("has a bad zip directory: it claims bytes {}..{} of a {}-byte file (truncated?)", cd_offset,
                    cd_offset + cd_size, b.size));
  std::vector<ZipEntry> entries;
  std::size_t p = cd_offset;
  const std::size_t end = cd_offset + cd_size;
  for (std::uint64_t i = 0; i < count; ++i) {
    if (end - p < 46 || get_u32(b.data + p) != kCentralSig)
      bad(fmt::format("has a bad zip directory: record {} of {} is damaged", i, count));
    ZipEntry e;
    e.flags = get_u16(b.data + p + 8);
    e.method = get_u16(b.data + p + 10);
    e.crc = get_u32(b.data + p + 16);
    e.csize = get_u32(b.data + p + 20);
    e.usize = get_u32(b.data + p + 24);
    const std::size_t name_len = get_u16(b.data + p + 28), extra_len = get_u16(b.data + p + 30),
                      comment_len = get_u16(b.data + p + 32);
    e.offset = get_u32(b.data + p + 42);
    if (end - p - 46 < name_len + extra_len + comment_len)
      bad(fmt::format("has a bad zip directory: record {} runs past its end", i));
    e.name.assign(reinterpret_cast<const char*>(b.data + p + 46), name_len);
    // zip64 extra field (id 1): 64-bit values for the fields saturated at 0xffffffff, in this order.
    for (std::size_t x = p + 46 + name_len, xe = x + extra_len; x + 4 <= xe;) {
      const std::uint16_t id = get_u16(b.data + x), len = get_u16(b.data + x + 2);
      if (x + 4 + len > xe) bad(fmt::format("has a bad extra field in the record of '{}'", e.name));
      if (id == 1) {
        std::size_t q = x + 4;
        auto take = [&](std::uint64_t& field) {
          if (field != 0xffffffff) return;
          if (q + 8 > x + 4 + len) bad(fmt::format("has a short zip64 field for '{}'", e.name));
          field = get_u64(b.data + q);
          q += 8;
        };
        take(e.usize);
        take(e.csize);
        take(e.offset);
      }
      x += 4 + len;
    }
    entries.push_back(std::move(e));
    p += 46 + name_len + extra_len + comment_len;
  }
  return entries;
}

// The uncompressed bytes of one entry, CRC-checked.
std::string zip_entry_data(const Bytes& b, const ZipEntry& e) {
  auto bad = [&](const std::string& what) { fail("load_npz: {}, entry '{}' {}", b.where, e.name, what); };
  if (e.flags & 1) bad("is encrypted");
  if (e.offset > b.size || b.size - e.offset < 30 || get_u32(b.data + e.offset) != kLocalSig)
    bad("has a bad local header (the archive is truncated or corrupt)");
  const std::size_t data_start = e.offset + 30 + get_u16(b.data + e.offset + 26) + get_u16(b.data + e.offset + 28);
  if (data_start > b.size || e.csize > b.size - data_start)
    bad(fmt::format("is truncated: it needs {} bytes but the file ends {} bytes after its start", e.csize,
                    data_start > b.size ? 0 : b.size - data_start));
  const auto* src = b.data + data_start;
  std::string out;
  if (e.method == 0) {
    if (e.csize != e.usize) bad("has inconsistent sizes for a stored entry");
    out.assign(reinterpret_cast<const char*>(src), e.csize);
  } else if (e.method == 8) {  // deflate (np.savez_compressed)
    if (e.usize > (std::uint64_t{1} << 40)) bad("declares an implausible size");
    out.resize(e.usize);
    z_stream zs{};
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) bad("cannot be inflated (zlib init failed)");
    zs.next_in = const_cast<Bytef*>(src);
    zs.avail_in = static_cast<uInt>(e.csize);
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    const int rc = inflate(&zs, Z_FINISH);
    const std::size_t produced = zs.total_out;
    inflateEnd(&zs);
    if (rc != Z_STREAM_END || produced != e.usize) bad("is corrupt (deflate stream does not decode)");
  } else {
    bad(fmt::format("uses compression method {}, which xgrad cannot read (stored or deflate)", e.method));
  }
  const auto crc = static_cast<std::uint32_t>(
      ::crc32(0L, reinterpret_cast<const Bytef*>(out.data()), static_cast<uInt>(out.size())));
  if (crc != e.crc) bad(fmt::format("is corrupt: CRC-32 {:08x} but the directory says {:08x}", crc, e.crc));
  return out;
}

}  // namespace

// ---- public API -------------------------------------------------------------------------------------------------
void save_npy(const std::string& path, const Tensor& t) {
  write_atomically(path, npy_bytes(t, path, "save_npy"), "save_npy");
}

Tensor load_npy(const std::string& path) {
  const std::string bytes = read_file(path, "load_npy");
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  return parse_npy({data, bytes.size(), fmt::format("file '{}'", path)});
}

void save_npz(const std::string& path, const StateDict& tensors) {
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& [name, t] : tensors) {
    if (name.empty()) fail("save_npz: '{}': a tensor has an empty name", path);
    if (name.find('\0') != std::string::npos) fail("save_npz: '{}': the name '{}' contains a NUL byte", path, name);
    files.emplace_back(name + ".npy", npy_bytes(t, name, "save_npz"));
  }
  write_atomically(path, zip_bytes(files, path), "save_npz");
}

StateDict load_npz(const std::string& path) {
  const std::string bytes = read_file(path, "load_npz");
  const Bytes b{reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), fmt::format("file '{}'", path)};
  StateDict out;
  for (const ZipEntry& e : zip_directory(b)) {
    if (e.name.size() < 5 || e.name.compare(e.name.size() - 4, 4, ".npy") != 0)
      fail("load_npz: file '{}' holds entry '{}', which is not a .npy array (an .npz holds only <name>.npy)", path,
           e.name);
    const std::string key = e.name.substr(0, e.name.size() - 4);
    if (out.contains(key)) fail("load_npz: file '{}' holds the entry '{}' twice", path, e.name);
    const std::string data = zip_entry_data(b, e);
    out.insert(key, parse_npy({reinterpret_cast<const unsigned char*>(data.data()), data.size(),
                               fmt::format("file '{}', entry '{}'", path, e.name)}));
  }
  return out;
}

}  // namespace xg
