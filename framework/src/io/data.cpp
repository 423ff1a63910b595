// IDX reader/writer, Dataset and DataLoader (see xgrad/data.h).
#include "xgrad/data.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numeric>

#include "xgrad/atomic_file.h"
#include "xgrad/checkpoint.h"
#include "xgrad/common.h"

namespace fs = std::filesystem;

namespace xg::data {

namespace {

// The IDX type code of unsigned bytes, the only one MNIST-style files use.
constexpr std::uint8_t kUnsignedByte = 0x08;
// Refuse sizes whose product exceeds this (a foreign file read as IDX would otherwise ask for terabytes).
// The largest IDX array read (2^31 bytes, 45x MNIST's training images): a bigger declared size is a forged or
// corrupt header, refused with a message before anything is allocated.
constexpr std::uint64_t kMaxValues = std::uint64_t(1) << 31;

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

std::string type_name(std::uint8_t code) {
  switch (code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return fmt::format("unknown type 0x{:02X}", code);
  }
}

// Reads exactly n bytes or returns how many were read (gzread reads plain files too).
std::size_t read_bytes(gzFile f, void* dst, std::size_t n, const std::string& path) {
  auto* p = static_cast<unsigned char*>(dst);
  std::size_t got = 0;
  while (got < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(n - got, 1u << 30));
    const int r = gzread(f, p + got, chunk);
    if (r < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      fail("read_idx: '{}' could not be decompressed ({}); is it a damaged .gz file?", path, msg ? msg : "?");
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

std::string listing(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  if (names.empty()) return "it is empty";
  std::string s = "it holds:";
  for (std::size_t i = 0; i < names.size() && i < 12; ++i) s += " " + names[i];
  if (names.size() > 12) s += fmt::format(" ... ({} entries)", names.size());
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------- IDX

IdxArray read_idx(const std::string& path, std::optional<std::size_t> expected_ndim) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("read_idx: '{}' does not exist", path);
  if (fs::is_directory(path, ec)) fail("read_idx: '{}' is a directory, not an IDX file", path);
  GzFile f(gzopen(path.c_str(), "rb"));
  if (!f) fail("read_idx: '{}' could not be opened ({})", path, std::strerror(errno));

  // Magic number: two zero bytes, the type code, the number of dimensions.
  std::uint8_t magic[4];
  const auto got = read_bytes(f.get(), magic, 4, path);
  if (got < 4) fail("read_idx: '{}' is truncated: it has {} byte(s), an IDX header needs at least 4", path, got);
  if (magic[0] != 0 || magic[1] != 0)
    fail("read_idx: '{}' is not an IDX file: its magic number starts with bytes {:02X} {:02X}, expected 00 00",
         path, magic[0], magic[1]);
  if (magic[2] != kUnsignedByte)
    fail("read_idx: '{}' holds {} values (type 0x{:02X}); only unsigned bytes (0x08) as in MNIST are supported",
         path, type_name(magic[2]), magic[2]);
  const std::size_t ndim = magic[3];
  if (ndim == 0) fail("read_idx: '{}' declares 0 dimensions", path);
  if (expected_ndim && ndim != *expected_ndim)
    fail("read_idx: '{}' has {} dimension(s), expected {} ({})", path, ndim, *expected_ndim,
         *expected_ndim == 3 ? "an images file [N, rows, cols]" : *expected_ndim == 1 ? "a labels file [N]" : "");

  // Sizes: ndim big-endian uint32.
  IdxArray out;
  std::uint64_t count = 1;
  for (std::size_t i = 0; i < ndim; ++i) {
    unsigned char b[4];
    if (read_bytes(f.get(), b, 4, path) < 4)
      fail("read_idx: '{}' is truncated in its header: it ends before the size of dimension {} of {}", path, i,
           ndim);
    const std::uint32_t n = (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) |
                            (std::uint32_t(b[2]) << 8) | std::uint32_t(b[3]);
    out.dims.push_back(n);
    count *= n;
    if (count > kMaxValues)
      fail("read_idx: '{}' declares sizes {} whose product exceeds the limit of {} values (2 GiB); it is not a "
           "valid IDX file (a corrupt or forged size field?)",
           path, shape_str(out.dims), kMaxValues);
  }

  // Values, read in chunks: memory grows with the bytes that really follow, so a forged size field in a small
  // (or gzip-compressed) file cannot make us allocate gigabytes before finding that the data are missing.
  constexpr std::size_t kChunk = std::size_t(16) << 20;
  std::size_t n = 0;
  while (n < count) {
    const std::size_t want = std::min<std::size_t>(count - n, kChunk);
    out.values.resize(n + want);
    const auto got_now = read_bytes(f.get(), out.values.data() + n, want, path);
    n += got_now;
    if (got_now < want) break;
  }
  if (n < count)
    fail("read_idx: '{}' is truncated: its header declares sizes {} = {} values but only {} follow", path,
         shape_str(out.dims), count, n);
  unsigned char extra;
  if (read_bytes(f.get(), &extra, 1, path) != 0)
    fail("read_idx: '{}' has data after the {} values its header declares (sizes {}); is it a foreign file?",
         path, count, shape_str(out.dims));
  return out;
}

namespace {
// `raw` as a gzip stream (deflate level 6, gzip header: windowBits 15 + 16), in memory.
std::string gzip_bytes(const std::string& raw, const std::string& path) {
  if (raw.size() > 0xFFFFFFFFu) fail("write_idx: '{}': {} bytes are too many to compress in one piece", path, raw.size());
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    fail("write_idx: '{}': zlib could not start compressing", path);
  std::string out(deflateBound(&z, static_cast<uLong>(raw.size())), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) fail("write_idx: '{}': zlib could not compress the data (code {})", path, rc);
  return out;
}
}  // namespace

void write_idx(const std::string& path, const IdxArray& array) {
  if (array.dims.empty() || array.dims.size() > 255)
    fail("write_idx: '{}': an IDX array needs 1..255 dimensions, got {}", path, array.dims.size());
  const std::size_t count = numel_of(array.dims);
  if (count != array.values.size())
    fail("write_idx: '{}': sizes {} need {} values, got {}", path, shape_str(array.dims), count,
         array.values.size());
  const bool gz = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
  std::string bytes{'\0', '\0', static_cast<char>(kUnsignedByte), static_cast<char>(array.dims.size())};
  for (auto d : array.dims)
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<char>((d >> s) & 0xFF));
  bytes.append(reinterpret_cast<const char*>(array.values.data()), count);
  write_file_atomic(path, gz ? gzip_bytes(bytes, path) : bytes, "write_idx");
}

// ----------------------------------------------------------------------------------------------- Dataset

std::size_t Dataset::num_classes() const {
  std::size_t m = 0;
  for (auto l : labels) m = std::max(m, l + 1);
  return m;
}

Dataset Dataset::subset(const std::vector<std::size_t>& indices) const {
  const Shape s = images.shape();  // [N, 1, H, W]
  const std::size_t per = s[1] * s[2] * s[3];
  xt::xarray<float> out = xt::xarray<float>::from_shape({indices.size(), s[1], s[2], s[3]});
  const float* src = images.data_ptr<float>();
  Dataset d;
  d.labels.reserve(indices.size());
  for (std::size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] >= size())
      fail("Dataset::subset: index {} is out of range for a dataset of {} samples", indices[i], size());
    std::memcpy(out.data() + i * per, src + indices[i] * per, per * sizeof(float));
    d.labels.push_back(labels[indices[i]]);
  }
  d.images = Tensor(std::move(out));
  d.source = source;
  return d;
}

Dataset Dataset::head(std::size_t n) const {
  std::vector<std::size_t> idx(std::min(n, size()));
  std::iota(idx.begin(), idx.end(), 0);
  return subset(idx);
}

Dataset load_idx_pair(const std::string& images_path, const std::string& labels_path) {
  IdxArray im = read_idx(images_path, 3);
  IdxArray lb = read_idx(labels_path, 1);
  if (im.dims[0] != lb.dims[0])
    fail("load_idx_pair: '{}' holds {} images but '{}' holds {} labels; they must be the same count "
         "(mixed up train and t10k files?)",
         images_path, im.dims[0], labels_path, lb.dims[0]);
  if (im.dims[1] == 0 || im.dims[2] == 0)
    fail("load_idx_pair: '{}' has images of size {}x{}; both sides must be positive", images_path, im.dims[1],
         im.dims[2]);
  // Pixels: unsigned bytes 0..255 -> float32 in [0, 1].
  xt::xarray<float> x = xt::xarray<float>::from_shape({im.dims[0], 1, im.dims[1], im.dims[2]});
  float* p = x.data();
  for (std::size_t i = 0; i < im.values.size(); ++i) p[i] = static_cast<float>(im.values[i]) * (1.0f / 255.0f);
  Dataset d;
  d.images = Tensor(std::move(x));
  d.labels.assign(lb.values.begin(), lb.values.end());
  d.source = images_path;
  return d;
}

Dataset load_mnist_folder(const std::string& dir, bool train) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail("load_mnist_folder: '{}' is not a folder (expected a folder with MNIST-format files such as "
         "train-images-idx3-ubyte.gz; on Debian: apt-get install dataset-fashion-mnist)",
         dir);
  const std::string prefix = train ? "train" : "t10k";
  // Names in use: "train-images-idx3-ubyte[.gz]" (MNIST, Fashion-MNIST, KMNIST), "train-images.idx3-ubyte"
  // (some MNIST mirrors), and a dataset prefix such as "emnist-digits-train-images-idx3-ubyte.gz" (EMNIST).
  auto find = [&](const std::string& stem) {
    std::string dotted = stem;
    dotted.replace(dotted.find("-idx"), 4, ".idx");
    for (const std::string& name : {stem, stem + ".gz", dotted, dotted + ".gz"}) {
      const fs::path p = fs::path(dir) / name;
      if (fs::is_regular_file(p, ec)) return p.string();
    }
    std::vector<std::string> prefixed;  // "<prefix>-<stem>" and "<prefix>-<stem>.gz"
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string n = e.path().filename().string();
      for (const std::string& tail : {"-" + stem, "-" + stem + ".gz"})
        if (n.size() > tail.size() && n.compare(n.size() - tail.size(), tail.size(), tail) == 0 &&
            e.is_regular_file(ec))
          prefixed.push_back(n);
    }
    std::sort(prefixed.begin(), prefixed.end());
    // "x-stem" and "x-stem.gz" both found: keep the plain one
    std::vector<std::string> unique;
    for (const auto& n : prefixed)
      if (!(n.size() > 3 && n.compare(n.size() - 3, 3, ".gz") == 0 &&
            std::find(prefixed.begin(), prefixed.end(), n.substr(0, n.size() - 3)) != prefixed.end()))
        unique.push_back(n);
    if (unique.size() == 1) return (fs::path(dir) / unique[0]).string();
    if (unique.size() > 1)
      fail("load_mnist_folder: '{}' holds several datasets' {} files: {}; point --data/dir at a folder with one "
           "dataset (or link the wanted files as {}.gz)",
           dir, stem, fmt::join(unique, ", "), stem);
    fail("load_mnist_folder: '{}' has neither {} nor {}.gz (nor {}, nor a prefixed name like "
         "emnist-digits-{}.gz); {}",
         dir, stem, stem, dotted, stem, listing(dir));
  };
  const std::string images = find(prefix + "-images-idx3-ubyte");
  const std::string labels = find(prefix + "-labels-idx1-ubyte");
  Dataset d = load_idx_pair(images, labels);
  d.source = dir;
  return d;
}

std::pair<Dataset, Dataset> train_val_split(const Dataset& ds, std::size_t num_val, std::uint64_t seed) {
  if (num_val > ds.size())
    fail("train_val_split: asked for {} validation samples from a dataset of {}", num_val, ds.size());
  Generator gen(seed);
  auto perm = randperm(ds.size(), &gen);
  std::vector<std::size_t> val(perm.begin(), perm.begin() + static_cast<std::ptrdiff_t>(num_val));
  std::vector<std::size_t> tr(perm.begin() + static_cast<std::ptrdiff_t>(num_val), perm.end());
  // Keep each part in the original order: the split chooses *which* samples, loaders choose the order.
  std::sort(val.begin(), val.end());
  std::sort(tr.begin(), tr.end());
  return {ds.subset(tr), ds.subset(val)};
}

// -------------------------------------------------------------------------------------------- DataLoader

DataLoader::DataLoader(const Dataset& dataset, DataLoaderOptions options)
    : ds_(dataset), opts_(options), gen_(options.seed_) {
  if (opts_.batch_size_ == 0) fail("DataLoader: batch_size must be positive");
  if (ds_.size() == 0) fail("DataLoader: the dataset is empty");
  if (opts_.drop_last_ && ds_.size() < opts_.batch_size_)
    fail("DataLoader: drop_last with batch_size {} on a dataset of {} samples gives no batch at all",
         opts_.batch_size_, ds_.size());
  cursor_ = num_batches();  // so that the first next() starts epoch 1
}

std::size_t DataLoader::num_batches() const {
  const std::size_t n = ds_.size(), b = opts_.batch_size_;
  return opts_.drop_last_ ? n / b : (n + b - 1) / b;
}

void DataLoader::start_epoch() {
  if (opts_.shuffle_) {
    order_ = randperm(ds_.size(), &gen_);
  } else {
    order_.resize(ds_.size());
    std::iota(order_.begin(), order_.end(), 0);
  }
  ++epoch_;
  cursor_ = 0;
}

Batch DataLoader::make_batch(std::size_t batch_index) const {
  const std::size_t lo = batch_index * opts_.batch_size_;
  const std::size_t hi = std::min(lo + opts_.batch_size_, ds_.size());
  std::vector<std::size_t> idx(order_.begin() + static_cast<std::ptrdiff_t>(lo),
                               order_.begin() + static_cast<std::ptrdiff_t>(hi));
  Dataset d = ds_.subset(idx);
  Tensor targets = from_vector(d.labels, {d.labels.size()});  // int64, what cross_entropy takes (PyTorch's target)
  return Batch{d.images, std::move(d.labels), std::move(targets)};
}

Batch DataLoader::next() {
  if (cursor_ >= num_batches()) start_epoch();
  return make_batch(cursor_++);
}

StateDict DataLoader::state_dict() const {
  auto number = [](double v) { return from_vector(std::vector<double>{v}, {1}, kFloat64); };
  StateDict sd;
  sd.insert("epoch", number(static_cast<double>(epoch_)));
  sd.insert("cursor", number(static_cast<double>(cursor_)));
  sd.insert("order", from_vector(std::vector<double>(order_.begin(), order_.end()), {order_.size()}, kFloat64));
  sd.insert("dataset_size", number(static_cast<double>(ds_.size())));
  sd.insert("batch_size", number(static_cast<double>(opts_.batch_size_)));
  sd.insert("shuffle", number(opts_.shuffle_ ? 1.0 : 0.0));
  sd.insert("drop_last", number(opts_.drop_last_ ? 1.0 : 0.0));
  sd.merge("generator", generator_state(gen_));
  return sd;
}

void DataLoader::load_state_dict(const StateDict& state) {
  auto number = [&](const char* key) {
    const Tensor& t = state.at(key);
    if (t.numel() != 1) fail("DataLoader::load_state_dict: '{}' must be one number, got shape {}", key, shape_str(t.shape()));
    const double v = t.to_vector()[0];
    if (!(v >= 0 && v < 9007199254740992.0 && v == std::floor(v)))
      fail("DataLoader::load_state_dict: '{}' must be a non-negative integer, got {}", key, v);
    return static_cast<std::size_t>(v);
  };
  auto expect = [&](const char* key, std::size_t have, const char* what) {
    const std::size_t saved = number(key);
    if (saved != have)
      fail("DataLoader::load_state_dict: the saved loader had {} {}, this one has {}: build the loader as the "
           "saved run did",
           saved, what, have);
  };
  expect("dataset_size", ds_.size(), "samples");
  expect("batch_size", opts_.batch_size_, "as batch size");
  expect("shuffle", opts_.shuffle_ ? 1 : 0, "as shuffle (0/1)");
  expect("drop_last", opts_.drop_last_ ? 1 : 0, "as drop_last (0/1)");
  const std::size_t epoch = number("epoch"), cursor = number("cursor");
  const std::vector<double> order = state.at("order").to_vector();
  if (order.size() != (epoch == 0 ? 0 : ds_.size()))
    fail("DataLoader::load_state_dict: the saved order has {} indices for a dataset of {} samples", order.size(),
         ds_.size());
  std::vector<std::size_t> idx(order.size());
  std::vector<bool> seen(order.size(), false);
  for (std::size_t i = 0; i < order.size(); ++i) {
    const double v = order[i];
    if (!(v >= 0 && v < static_cast<double>(order.size()) && v == std::floor(v)) || seen[static_cast<std::size_t>(v)])
      fail("DataLoader::load_state_dict: the saved order is not a permutation of 0..{} (entry {} is {})",
           order.size() - 1, i, v);
    idx[i] = static_cast<std::size_t>(v);
    seen[idx[i]] = true;
  }
  if (cursor > num_batches())
    fail("DataLoader::load_state_dict: the saved position is batch {} of an epoch of {} batches", cursor,
         num_batches());
  Generator g = gen_;
  load_generator_state(g, state.sub("generator"));
  if (state.size() != 7 + state.sub("generator").size())
    fail("DataLoader::load_state_dict: {} keys, expected epoch, cursor, order, dataset_size, batch_size, shuffle, "
         "drop_last and generator.*",
         state.size());
  // Everything checked: commit.
  gen_ = g;
  order_ = std::move(idx);
  epoch_ = epoch;
  cursor_ = cursor;
}

DataLoader::Iterator DataLoader::begin() {
  start_epoch();
  cursor_ = num_batches();  // a later next() starts a fresh epoch
  return Iterator(this, 0);
}

DataLoader::Iterator DataLoader::end() { return Iterator(nullptr, num_batches()); }

void DataLoader::Iterator::load() {
  if (index_ < loader_->num_batches()) batch_ = loader_->make_batch(index_);
}

}  // namespace xg::data
