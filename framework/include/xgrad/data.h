// xgrad/data.h — datasets for the bundled experiments: the IDX file format (MNIST, Fashion-MNIST, KMNIST, ...),
// an in-memory Dataset and a seeded DataLoader.
//
//   auto train = xg::data::load_mnist_folder("/usr/share/datasets/fashion-mnist", /*train=*/true);
//   auto [fit, val] = xg::data::train_val_split(train, 5000, /*seed=*/1);
//   xg::data::DataLoader loader(fit, xg::data::DataLoaderOptions(64).shuffle(true).seed(7));
//   for (const auto& batch : loader) { ...batch.images [64,1,28,28], batch.labels (64 ints)... }
//
// The IDX format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number {0, 0, type, ndim}, then ndim
// big-endian uint32 sizes, then the values row-major. MNIST-style images are type 0x08 (unsigned byte) with
// ndim 3 [N, rows, cols]; labels are type 0x08 with ndim 1 [N]. Files may be gzip-compressed (".gz"): they are
// read through zlib's gzread, which also reads plain files. Every defect (missing file, wrong magic, wrong
// number of dimensions, truncated data, trailing bytes, images/labels count mismatch) is an xg::Error naming
// the file and what is wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "xgrad/random.h"
#include "xgrad/serialize.h"
#include "xgrad/tensor.h"

namespace xg::data {

// ---- the IDX format --------------------------------------------------------------------------------------

/// The raw content of one IDX file of unsigned bytes (type 0x08): its sizes and its values, row-major.
struct IdxArray {
  std::vector<std::size_t> dims;
  std::vector<std::uint8_t> values;  // numel = product of dims
};

/// Reads an IDX file of unsigned bytes (plain or gzip). If `expected_ndim` is given, a file with another number
/// of dimensions is an error ("... has 1 dimension(s), expected 3 (an images file)").
IdxArray read_idx(const std::string& path, std::optional<std::size_t> expected_ndim = std::nullopt);

/// Writes an IDX file of unsigned bytes (gzip-compressed when the path ends in ".gz"). Used by tests and by
/// anyone preparing their own data in this format. The file is written to "<path>.tmp" and renamed when done.
void write_idx(const std::string& path, const IdxArray& array);

// ---- Dataset ---------------------------------------------------------------------------------------------

/// Labelled images held in memory.
struct Dataset {
  Tensor images;                      // [N, 1, H, W] float32, pixel values scaled to [0, 1]
  std::vector<std::size_t> labels;    // N class indices (what xg::nn::CrossEntropyLoss takes)
  std::string source;                 // where it came from (shown in reports), e.g. the folder

  std::size_t size() const { return labels.size(); }
  /// 1 + the largest label (0 for an empty dataset).
  std::size_t num_classes() const;
  /// The samples at `indices` (in that order, copied). Errors on an index >= size().
  Dataset subset(const std::vector<std::size_t>& indices) const;
  /// The first min(n, size()) samples.
  Dataset head(std::size_t n) const;
};

/// Images from an idx3 file and labels from an idx1 file; errors if the counts differ.
Dataset load_idx_pair(const std::string& images_path, const std::string& labels_path);

/// Finds `{train,t10k}-images-idx3-ubyte[.gz]` and `{train,t10k}-labels-idx1-ubyte[.gz]` in `dir` (the
/// plain name is preferred when both exist) and loads them. Also accepted: the dotted names of some MNIST
/// mirrors (`train-images.idx3-ubyte`) and one dataset prefix (`emnist-digits-train-images-idx3-ubyte.gz`);
/// two different prefixes in one folder are an error that names them. The error for a missing file lists what was
/// looked for and what the folder holds.
Dataset load_mnist_folder(const std::string& dir, bool train);

/// Splits `ds` into (train, validation) with `num_val` samples chosen by a seeded permutation.
/// Errors if num_val > size().
std::pair<Dataset, Dataset> train_val_split(const Dataset& ds, std::size_t num_val, std::uint64_t seed);

// ---- DataLoader ------------------------------------------------------------------------------------------

/// One mini-batch.
struct Batch {
  Tensor images;                      // [B, 1, H, W] float32
  std::vector<std::size_t> labels;    // B class indices
  Tensor targets;                     // the same labels as an int64 tensor [B] (PyTorch's batch.target)
  std::size_t size() const { return labels.size(); }
};

/// Options in PyTorch C++ style: `DataLoaderOptions(64).shuffle(true).drop_last(true).seed(3)`.
struct DataLoaderOptions {
  explicit DataLoaderOptions(std::size_t batch_size = 64) : batch_size_(batch_size) {}
  DataLoaderOptions& batch_size(std::size_t v) { batch_size_ = v; return *this; }
  /// Reshuffle the order at the start of every epoch (default true).
  DataLoaderOptions& shuffle(bool v) { shuffle_ = v; return *this; }
  /// Skip the last, smaller batch of an epoch (default false). BatchNorm in training mode cannot take a
  /// batch of one, so training loaders usually set it.
  DataLoaderOptions& drop_last(bool v) { drop_last_ = v; return *this; }
  /// Seed of the loader's own generator (shuffling does not touch xg::default_generator()).
  DataLoaderOptions& seed(std::uint64_t v) { seed_ = v; return *this; }

  std::size_t batch_size_;
  bool shuffle_ = true;
  bool drop_last_ = false;
  std::uint64_t seed_ = 0;
};

/// Iterates a Dataset in mini-batches. Each epoch is one pass over a permutation drawn from the loader's own
/// generator (or the natural order without shuffle): the same seed gives the same batches, epoch after epoch.
///
/// Two ways to use it: range-for (`for (auto& b : loader)`: every begin() starts a new epoch), or next()
/// for step-based training (continues the current epoch and starts a new one when it is exhausted).
/// The loader keeps a reference to the dataset: the dataset must outlive it.
class DataLoader {
 public:
  DataLoader(const Dataset& dataset, DataLoaderOptions options);

  /// Batches per epoch: ceil(N/B), or floor(N/B) with drop_last.
  std::size_t num_batches() const;
  /// Number of epochs started so far.
  std::size_t epoch() const { return epoch_; }
  const DataLoaderOptions& options() const { return opts_; }

  /// The next batch of the current epoch; starts a new epoch (reshuffled) when the current one is done.
  Batch next();

  /// The position for an exact resume (xgrad/checkpoint.h): epoch, the epoch's order, the next batch index and
  /// the shuffling generator. Batch size, shuffle and drop_last are constructor options, stored to be checked:
  /// loading into a loader built differently (or over a dataset of another size) is an error that changes
  /// nothing. Resuming next() continues with exactly the batches the saved loader would have given.
  StateDict state_dict() const;
  void load_state_dict(const StateDict& state);

  class Iterator {
   public:
    Iterator(DataLoader* loader, std::size_t index) : loader_(loader), index_(index) {
      if (loader_) load();
    }
    const Batch& operator*() const { return batch_; }
    const Batch* operator->() const { return &batch_; }
    Iterator& operator++() {
      ++index_;
      load();
      return *this;
    }
    bool operator==(const Iterator& o) const { return index_ == o.index_; }
    bool operator!=(const Iterator& o) const { return index_ != o.index_; }

   private:
    void load();
    DataLoader* loader_;
    std::size_t index_;
    Batch batch_;
  };
  /// Starts a new epoch and returns its first batch.
  Iterator begin();
  Iterator end();

 private:
  void start_epoch();
  Batch make_batch(std::size_t batch_index) const;

  const Dataset& ds_;
  DataLoaderOptions opts_;
  Generator gen_;
  std::vector<std::size_t> order_;
  std::size_t epoch_ = 0;
  std::size_t cursor_ = 0;  // next batch index within the epoch (for next())
};

}  // namespace xg::data
