// .npy and .npz files, written atomically and read defensively.
//
// .npy (numpy's format, https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
//   "\x93NUMPY" | major, minor (1, 0) | header length (uint16 LE; uint32 for versions 2 and 3) |
//   header: a Python dict literal "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" padded with
//   spaces and ended by '\n' so that the data starts at a multiple of 64 bytes | the raw array, C order.
// .npz: a zip archive of "<name>.npy" entries, built and parsed by libzip (Debian's libzip-dev, not hand-written
// zip code). We write "stored" (uncompressed) entries, as np.savez does; we read stored and deflated entries
// (np.savez_compressed), with the zip64 fields numpy's writer emits.
//
// Every read error names the file (and the archive entry) and what is wrong; nothing is trusted before its
// bounds are checked, so a truncated or foreign file gives an xg::Error, never a crash.
#include "xgrad/serialize.h"

#include <fcntl.h>
#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>

#include <xtensor/xarray.hpp>

#include "xgrad/atomic_file.h"

namespace xg {

static_assert(std::endian::native == std::endian::little, "xgrad's .npy code assumes a little-endian host");

namespace {

// ---- little-endian byte helpers ----------------------------------------------------------------------------
void put_u16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
std::uint16_t get_u16(const unsigned char* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }
std::uint32_t get_u32(const unsigned char* p) {
  return static_cast<std::uint32_t>(get_u16(p)) | (static_cast<std::uint32_t>(get_u16(p + 2)) << 16);
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

// ---- .npy writing -------------------------------------------------------------------------------------------
std::string npy_bytes(const Tensor& t, const std::string& name, const char* fn) {
  if (!t.defined()) fail("{}: '{}' is an undefined tensor; nothing to save", fn, name);
  std::string shape = "(";
  for (std::size_t i = 0; i < t.ndim(); ++i) shape += fmt::format("{}{}", i ? ", " : "", t.shape()[i]);
  if (t.ndim() == 1) shape += ",";  // a Python 1-tuple
  shape += ")";
  const Dtype d = t.dtype();
  const char* descr = d == kFloat32 ? "<f4" : d == kFloat64 ? "<f8" : d == kInt64 ? "<i8" : d == kInt32 ? "<i4" : "|b1";
  std::string header =
      fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr, shape);
  // Pad with spaces + '\n' so that preamble (10 bytes) + header is a multiple of 64 (numpy's alignment).
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  if (header.size() > std::numeric_limits<std::uint16_t>::max())
    fail("{}: '{}' has a shape too long for a version 1.0 .npy header", fn, name);
  std::string out("\x93NUMPY\x01\x00", 8);
  put_u16(out, static_cast<std::uint16_t>(header.size()));
  out += header;
  dispatch_all(t.dtype(), [&](auto v) {  // bool is one byte 0/1, numpy's '|b1'
    using T = decltype(v);
    static_assert(sizeof(bool) == 1);
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

// Element kinds we accept, each loaded as the xgrad dtype that holds it exactly: '<f4' float32, '<f8' float64,
// '<i8' int64, '<i4' int32, '|b1' bool; the narrower integers numpy has and xgrad has not (int8, int16, uint8,
// uint16) as int32, uint32 as int64, and uint64 as int64 (a value beyond int64's range is an error).
struct ElementType {
  char kind;  // 'f', 'i', 'u', 'b'
  std::size_t size;
  bool big_endian;
};

ElementType element_type(const std::string& descr, const std::string& where) {
  auto unsupported = [&]() {
    fail("load_npy: {} holds dtype '{}', which xgrad cannot load (supported: float32 '<f4', float64 '<f8', int64 "
         "'<i8', int32 '<i4', bool '|b1', and the other integer types, loaded as int32/int64)",
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

// The dtype a file's element type loads as (see ElementType).
Dtype load_dtype(const ElementType& e) {
  if (e.kind == 'f') return e.size == 4 ? kFloat32 : kFloat64;
  if (e.kind == 'b') return kBool;
  if (e.kind == 'i') return e.size == 8 ? kInt64 : kInt32;
  return e.size >= 4 ? kInt64 : kInt32;  // 'u'
}

// One integer element of the raw data, exactly (uint64 beyond int64's range is an error).
std::int64_t element_int(const unsigned char* p, const ElementType& e, const std::string& where) {
  unsigned char b[8] = {};
  const std::size_t n = std::min<std::size_t>(e.size, sizeof b);
  std::memcpy(b, p, n);
  if (e.big_endian)
    for (std::size_t i = 0; i < n / 2; ++i) std::swap(b[i], b[n - 1 - i]);
  auto as = [&](auto v) {
    std::memcpy(&v, b, sizeof v);
    return v;
  };
  if (e.kind == 'b') return b[0] != 0;
  if (e.kind == 'i')
    return e.size == 1 ? as(std::int8_t{}) : e.size == 2 ? as(std::int16_t{}) : e.size == 4 ? as(std::int32_t{})
                                                                                       : as(std::int64_t{});
  if (e.size == 8) {
    const std::uint64_t v = as(std::uint64_t{});
    if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      fail("load_npy: {} holds the uint64 value {}, beyond int64's range (xgrad has no uint64 dtype)", where, v);
    return static_cast<std::int64_t>(v);
  }
  return e.size == 1 ? as(std::uint8_t{}) : e.size == 2 ? as(std::uint16_t{}) : as(std::uint32_t{});
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
Tensor make_tensor(const unsigned char* data, const ElementType& e, const NpyHeader& h, std::size_t n,
                   const std::string& where) {
  xt::xarray<T> a = xt::xarray<T>::from_shape(h.shape);
  T* out = a.data();
  auto element_at = [&](const unsigned char* p) {
    if constexpr (std::is_floating_point_v<T>) return static_cast<T>(::xg::element_at(p, e));
    else return static_cast<T>(element_int(p, e, where));
  };
  const char kind = std::is_same_v<T, bool> ? 'b' : std::is_floating_point_v<T> ? 'f' : 'i';
  if (!h.fortran_order) {
    if (e.kind == kind && e.size == sizeof(T) && !e.big_endian && e.kind != 'b') {
      if (n > 0) std::memcpy(out, data, n * sizeof(T));  // (an empty array may have no buffer at all)
    } else {
      for (std::size_t i = 0; i < n; ++i) out[i] = element_at(data + i * e.size);
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
    out[i] = element_at(data + src * e.size);
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
  return dispatch_all(load_dtype(e), [&](auto t) { return make_tensor<decltype(t)>(data, e, h, n, b.where); });
}

// ---- .npz: zip archives through libzip -----------------------------------------------------------------------
// libzip (Debian's libzip-dev) builds the archive in memory, so the file itself is still written once, by
// write_file_atomic (xgrad/atomic_file.h: temp file, fsync, rename). Reading parses the whole file from memory: libzip checks the zip
// structure and each entry's CRC-32, we bound sizes and give the messages.

// Owning handles; each frees with libzip's own call.
struct ZipDiscard {
  void operator()(zip_t* z) const { zip_discard(z); }
};
struct ZipFileClose {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};
struct ZipSourceFree {
  void operator()(zip_source_t* s) const { zip_source_free(s); }
};
using ZipArchive = std::unique_ptr<zip_t, ZipDiscard>;
using ZipFile = std::unique_ptr<zip_file_t, ZipFileClose>;
using ZipSource = std::unique_ptr<zip_source_t, ZipSourceFree>;

std::string zip_message(zip_error_t* err) {
  std::string m = zip_error_strerror(err);
  zip_error_fini(err);
  return m;
}

// 1980-01-01 00:00 local time, the zip epoch: fixed entry times make equal state dicts equal files.
time_t zip_epoch() {
  std::tm tm{};
  tm.tm_year = 80;
  tm.tm_mday = 1;
  tm.tm_isdst = -1;
  return std::mktime(&tm);
}

// A zip of "stored" (uncompressed, as np.savez writes) entries; libzip adds zip64 fields where sizes need them.
std::string zip_bytes(const std::vector<std::pair<std::string, std::string>>& files, const std::string& path) {
  // An empty archive is only the 22-byte end record (as np.savez() writes); libzip would write nothing at all.
  static constexpr char kEmptyZip[22] = {'P', 'K', 5, 6};
  if (files.empty()) return std::string(kEmptyZip, sizeof kEmptyZip);
  auto bad = [&](const std::string& what) { fail("save_npz: '{}': {}", path, what); };
  zip_error_t err;
  zip_error_init(&err);
  ZipSource mem(zip_source_buffer_create(nullptr, 0, 0, &err));
  if (!mem) bad("libzip cannot create a buffer: " + zip_message(&err));
  ZipArchive za(zip_open_from_source(mem.get(), ZIP_TRUNCATE, &err));
  if (!za) bad("libzip cannot start an archive: " + zip_message(&err));
  zip_source_keep(mem.get());  // the archive owns one reference, `mem` the other: the bytes outlive zip_close
  const time_t epoch = zip_epoch();
  for (const auto& [name, data] : files) {
    zip_source_t* src = zip_source_buffer(za.get(), data.data(), data.size(), 0);
    const zip_int64_t i = src ? zip_file_add(za.get(), name.c_str(), src, ZIP_FL_ENC_GUESS) : -1;
    if (i < 0) {
      if (src) zip_source_free(src);
      bad(fmt::format("cannot add entry '{}' ({})", name, zip_strerror(za.get())));
    }
    const auto idx = static_cast<zip_uint64_t>(i);
    if (zip_set_file_compression(za.get(), idx, ZIP_CM_STORE, 0) != 0 ||
        zip_file_set_mtime(za.get(), idx, epoch, 0) != 0)
      bad(fmt::format("cannot set up entry '{}' ({})", name, zip_strerror(za.get())));
  }
  if (zip_close(za.get()) != 0) bad(fmt::format("libzip cannot write the archive ({})", zip_strerror(za.get())));
  za.release();  // zip_close freed it
  // Read the finished archive back out of the buffer.
  zip_stat_t st;
  if (zip_source_stat(mem.get(), &st) != 0 || !(st.valid & ZIP_STAT_SIZE) || zip_source_open(mem.get()) != 0)
    bad(fmt::format("cannot read the archive libzip built ({})", zip_error_strerror(zip_source_error(mem.get()))));
  std::string out(st.size, '\0');
  zip_uint64_t done = 0;
  while (done < st.size) {
    const zip_int64_t n = zip_source_read(mem.get(), out.data() + done, st.size - done);
    if (n <= 0) break;
    done += static_cast<zip_uint64_t>(n);
  }
  zip_source_close(mem.get());
  if (done != st.size) bad("cannot read the archive libzip built");
  return out;
}

// What a failed read means, and what to do about it.
constexpr const char* kDamaged = "the file is damaged or was cut short; save it again or use another copy";

// An open archive over `bytes` (which must outlive it).
ZipArchive zip_open_bytes(const std::string& bytes, const std::string& path) {
  auto bad = [&](const std::string& what) { fail("load_npz: file '{}' {}", path, what); };
  // libzip opens an empty file as an empty archive; an .npz has at least the 22-byte end record.
  if (bytes.size() < 22) bad(fmt::format("is not an .npz (zip) archive: only {} bytes ({})", bytes.size(), kDamaged));
  zip_error_t err;
  zip_error_init(&err);
  ZipSource src(zip_source_buffer_create(bytes.data(), bytes.size(), 0, &err));
  if (!src) bad("cannot be read: " + zip_message(&err));
  // ZIP_CHECKCONS: every local header must agree with the directory (catches cut or spliced archives early).
  ZipArchive za(zip_open_from_source(src.get(), ZIP_RDONLY | ZIP_CHECKCONS, &err));
  if (!za) {
    const int code = zip_error_code_zip(&err);
    const std::string lib = zip_message(&err);
    // libzip says "not a zip" both when there is no end record and when the directory it points at is bad; the
    // end record's signature in the file's last 64 KiB (where it must be) tells the two apart for the message.
    const std::size_t tail = std::min<std::size_t>(bytes.size(), 22 + 0xffff);
    const bool has_end =
        std::string_view(bytes).substr(bytes.size() - tail).find("PK\x05\x06") != std::string_view::npos;
    if (code == ZIP_ER_NOZIP && !has_end)
      bad(fmt::format("is not an .npz (zip) archive, or is truncated: no end-of-central-directory record "
                      "(libzip: {}). An .npz is written by np.savez or xg::save_npz; if this one was, {}",
                      lib, kDamaged));
    if (code == ZIP_ER_NOZIP || code == ZIP_ER_INCONS)
      bad(fmt::format("has a bad zip directory: it does not match the rest of the file (libzip: {}); {}", lib,
                      kDamaged));
    if (code == ZIP_ER_EXISTS)
      bad(fmt::format("holds two entries with the same name (libzip: {}); {}", lib, kDamaged));
    bad(fmt::format("cannot be opened as a zip archive (libzip: {}); {}", lib, kDamaged));
  }
  src.release();  // the archive owns the source now
  return za;
}

// The uncompressed bytes of entry `i`, CRC-checked by libzip.
std::string zip_entry_data(zip_t* za, zip_uint64_t i, const zip_stat_t& st, const std::string& path) {
  auto bad = [&](const std::string& what) { fail("load_npz: file '{}', entry '{}' {}", path, st.name, what); };
  if (st.encryption_method != ZIP_EM_NONE) bad("is encrypted; xgrad reads only unencrypted archives");
  if (st.comp_method != ZIP_CM_STORE && st.comp_method != ZIP_CM_DEFLATE)
    bad(fmt::format("uses compression method {}, which xgrad cannot read (stored or deflate, as np.savez and "
                    "np.savez_compressed write)",
                    st.comp_method));
  if (st.comp_method == ZIP_CM_STORE && st.size != st.comp_size)
    bad(fmt::format("is stored (not compressed) but declares {} bytes of data and {} in the file; {}", st.size,
                    st.comp_size, kDamaged));
  // Deflate expands at most 1032:1, so a larger claimed size is a lie (or a zip bomb): refuse before allocating.
  if (st.size / 1032 > st.comp_size + 1)
    bad(fmt::format("declares {} bytes from {} compressed ones, which deflate cannot produce; {}", st.size,
                    st.comp_size, kDamaged));
  ZipFile f(zip_fopen_index(za, i, 0));
  if (!f) bad(fmt::format("cannot be opened (libzip: {}); {}", zip_strerror(za), kDamaged));
  std::string out(st.size, '\0');
  zip_uint64_t done = 0;
  while (true) {  // to the end, where libzip compares the CRC-32 and the size
    char probe;
    char* to = done < out.size() ? out.data() + done : &probe;
    const zip_int64_t n = zip_fread(f.get(), to, done < out.size() ? out.size() - done : 1);
    if (n < 0) {
      zip_error_t* e = zip_file_get_error(f.get());
      const int code = zip_error_code_zip(e);
      if (code == ZIP_ER_CRC) bad(fmt::format("is corrupt: CRC-32 mismatch, its data differs from the checksum "
                                              "stored when it was written; {}", kDamaged));
      if (code == ZIP_ER_COMPRESSED_DATA || code == ZIP_ER_ZLIB)
        bad(fmt::format("is corrupt: its deflate stream does not decode (libzip: {}); {}", zip_error_strerror(e),
                        kDamaged));
      bad(fmt::format("cannot be read (libzip: {}); {}", zip_error_strerror(e), kDamaged));
    }
    if (n == 0) break;
    if (to == &probe) bad(fmt::format("holds more than the {} bytes its directory record says; {}", st.size, kDamaged));
    done += static_cast<zip_uint64_t>(n);
  }
  if (done != st.size)
    bad(fmt::format("is truncated: {} of the {} bytes its directory record says; {}", done, st.size, kDamaged));
  return out;
}

}  // namespace

// ---- public API -------------------------------------------------------------------------------------------------
void save_npy(const std::string& path, const Tensor& t) {
  write_file_atomic(path, npy_bytes(t, path, "save_npy"), "save_npy");
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
  write_file_atomic(path, zip_bytes(files, path), "save_npz");
}

StateDict load_npz(const std::string& path) {
  const std::string bytes = read_file(path, "load_npz");
  const ZipArchive za = zip_open_bytes(bytes, path);
  StateDict out;
  const zip_int64_t count = zip_get_num_entries(za.get(), 0);
  for (zip_int64_t k = 0; k < count; ++k) {
    const auto i = static_cast<zip_uint64_t>(k);
    zip_stat_t st;
    if (zip_stat_index(za.get(), i, 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) || !(st.valid & ZIP_STAT_SIZE) ||
        !(st.valid & ZIP_STAT_COMP_SIZE) || !(st.valid & ZIP_STAT_COMP_METHOD))
      fail("load_npz: file '{}' has a bad zip directory: record {} of {} cannot be read (libzip: {}); {}", path, k,
           count, zip_strerror(za.get()), kDamaged);
    const std::string name = st.name;
    if (name.size() < 5 || name.compare(name.size() - 4, 4, ".npy") != 0)
      fail("load_npz: file '{}' holds entry '{}', which is not a .npy array (an .npz holds only <name>.npy)", path,
           name);
    const std::string key = name.substr(0, name.size() - 4);
    if (out.contains(key)) fail("load_npz: file '{}' holds the entry '{}' twice", path, name);
    const std::string data = zip_entry_data(za.get(), i, st, path);
    out.insert(key, parse_npy({reinterpret_cast<const unsigned char*>(data.data()), data.size(),
                               fmt::format("file '{}', entry '{}'", path, name)}));
  }
  return out;
}

}  // namespace xg
