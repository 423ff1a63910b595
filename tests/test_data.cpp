// Tests of xgrad/data.h: the IDX reader on small files crafted here byte by byte (good ones, plain and gzip,
// and broken ones), Dataset subsets/splits and the DataLoader's batching and seeded shuffling.
#include <doctest/doctest.h>

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "xgrad/data.h"

namespace fs = std::filesystem;
using xg::data::DataLoader;
using xg::data::DataLoaderOptions;
using xg::data::Dataset;

namespace {

// A fresh, empty temp folder per test case.
fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("xgrad_test_data_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// An IDX file image written by hand (independently of xg::data::write_idx): magic, big-endian sizes, bytes.
std::vector<std::uint8_t> idx_bytes(std::uint8_t type, const std::vector<std::uint32_t>& dims,
                                    const std::vector<std::uint8_t>& values) {
  std::vector<std::uint8_t> b{0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (auto d : dims) {
    b.push_back(std::uint8_t(d >> 24));
    b.push_back(std::uint8_t(d >> 16));
    b.push_back(std::uint8_t(d >> 8));
    b.push_back(std::uint8_t(d));
  }
  b.insert(b.end(), values.begin(), values.end());
  return b;
}

void write_plain(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_gz(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  gzFile f = gzopen(p.string().c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

// n images of rows x cols with pixel (i, r, c) = (i*7 + r*3 + c) % 256, labels i % 10.
std::vector<std::uint8_t> pixels(std::uint32_t n, std::uint32_t rows, std::uint32_t cols) {
  std::vector<std::uint8_t> v;
  for (std::uint32_t i = 0; i < n; ++i)
    for (std::uint32_t r = 0; r < rows; ++r)
      for (std::uint32_t c = 0; c < cols; ++c) v.push_back(std::uint8_t((i * 7 + r * 3 + c) % 256));
  return v;
}
std::vector<std::uint8_t> labels(std::uint32_t n) {
  std::vector<std::uint8_t> v;
  for (std::uint32_t i = 0; i < n; ++i) v.push_back(std::uint8_t(i % 10));
  return v;
}

// A dataset of n 2x2 images whose first pixel encodes the sample index (i / 255) and label i % 10.
Dataset numbered(std::size_t n) {
  Dataset d;
  std::vector<float> px(n * 4, 0.0f);
  for (std::size_t i = 0; i < n; ++i) {
    px[i * 4] = float(i);
    d.labels.push_back(i % 10);
  }
  d.images = xg::from_vector(px, {n, 1, 2, 2});
  return d;
}
std::size_t sample_id(const xg::data::Batch& b, std::size_t j) {
  return static_cast<std::size_t>(b.images.data<float>()(j, 0, 0, 0));
}

}  // namespace

TEST_CASE("read_idx reads plain and gzip files with the right sizes and values") {
  const auto dir = temp_dir("good");
  const auto bytes = idx_bytes(0x08, {3, 2, 4}, pixels(3, 2, 4));
  write_plain(dir / "a-idx3-ubyte", bytes);
  write_gz(dir / "a-idx3-ubyte.gz", bytes);
  for (const char* name : {"a-idx3-ubyte", "a-idx3-ubyte.gz"}) {
    INFO(name);
    const auto arr = xg::data::read_idx((dir / name).string(), 3);
    CHECK(arr.dims == std::vector<std::size_t>{3, 2, 4});
    CHECK(arr.values == pixels(3, 2, 4));
  }
  fs::remove_all(dir);
}

TEST_CASE("load_mnist_folder finds the four files, scales pixels to [0,1] and keeps labels") {
  const auto dir = temp_dir("folder");
  write_gz(dir / "train-images-idx3-ubyte.gz", idx_bytes(0x08, {5, 3, 2}, pixels(5, 3, 2)));
  write_gz(dir / "train-labels-idx1-ubyte.gz", idx_bytes(0x08, {5}, labels(5)));
  write_plain(dir / "t10k-images-idx3-ubyte", idx_bytes(0x08, {2, 3, 2}, pixels(2, 3, 2)));
  write_plain(dir / "t10k-labels-idx1-ubyte", idx_bytes(0x08, {2}, labels(2)));

  const Dataset tr = xg::data::load_mnist_folder(dir.string(), true);
  REQUIRE(tr.size() == 5);
  CHECK(tr.images.shape() == xg::Shape{5, 1, 3, 2});
  CHECK(tr.labels == std::vector<std::size_t>{0, 1, 2, 3, 4});
  CHECK(tr.num_classes() == 5);
  const auto px = pixels(5, 3, 2);
  const float* p = tr.images.data_ptr<float>();
  for (std::size_t i = 0; i < px.size(); ++i) REQUIRE(p[i] == doctest::Approx(px[i] / 255.0).epsilon(1e-6));

  const Dataset te = xg::data::load_mnist_folder(dir.string(), false);
  CHECK(te.size() == 2);
  CHECK(te.images.shape() == xg::Shape{2, 1, 3, 2});
  fs::remove_all(dir);
}

TEST_CASE("load_mnist_folder accepts the other file names in use: dotted (MNIST mirrors) and prefixed (EMNIST)") {
  const auto dir = temp_dir("names");
  SUBCASE("train-images.idx3-ubyte") {
    write_plain(dir / "train-images.idx3-ubyte", idx_bytes(0x08, {3, 2, 2}, pixels(3, 2, 2)));
    write_plain(dir / "train-labels.idx1-ubyte", idx_bytes(0x08, {3}, labels(3)));
    const Dataset d = xg::data::load_mnist_folder(dir.string(), true);
    CHECK(d.size() == 3);
    CHECK(d.labels == std::vector<std::size_t>{0, 1, 2});
  }
  SUBCASE("emnist-digits-train-images-idx3-ubyte.gz, plain preferred over .gz of the same prefix") {
    write_gz(dir / "emnist-digits-train-images-idx3-ubyte.gz", idx_bytes(0x08, {4, 2, 2}, pixels(4, 2, 2)));
    write_plain(dir / "emnist-digits-train-images-idx3-ubyte", idx_bytes(0x08, {2, 2, 2}, pixels(2, 2, 2)));
    write_gz(dir / "emnist-digits-train-labels-idx1-ubyte.gz", idx_bytes(0x08, {2}, labels(2)));
    const Dataset d = xg::data::load_mnist_folder(dir.string(), true);
    CHECK(d.size() == 2);  // the plain images file (2 images), not the .gz one (4)
    CHECK(d.images.shape() == xg::Shape{2, 1, 2, 2});
  }
  SUBCASE("two prefixed datasets in one folder: a clear error naming both") {
    write_gz(dir / "emnist-digits-train-images-idx3-ubyte.gz", idx_bytes(0x08, {2, 2, 2}, pixels(2, 2, 2)));
    write_gz(dir / "emnist-letters-train-images-idx3-ubyte.gz", idx_bytes(0x08, {2, 2, 2}, pixels(2, 2, 2)));
    CHECK_THROWS_WITH_AS(xg::data::load_mnist_folder(dir.string(), true),
                         doctest::Contains("several datasets' train-images-idx3-ubyte files: "
                                           "emnist-digits-train-images-idx3-ubyte.gz, "
                                           "emnist-letters-train-images-idx3-ubyte.gz"),
                         xg::Error);
  }
  fs::remove_all(dir);
}

TEST_CASE("broken IDX files give errors naming the file and the defect") {
  const auto dir = temp_dir("bad");
  const auto f = [&](const char* n) { return (dir / n).string(); };

  SUBCASE("missing file") {
    CHECK_THROWS_WITH_AS(xg::data::read_idx(f("nothing-here")),
                         doctest::Contains("nothing-here' does not exist"), xg::Error);
  }
  SUBCASE("bad magic (a foreign file)") {
    write_plain(f("foreign"), {'P', 'K', 3, 4, 0, 0, 0, 0});
    CHECK_THROWS_WITH_AS(xg::data::read_idx(f("foreign")), doctest::Contains("foreign' is not an IDX file"),
                         xg::Error);
  }
  SUBCASE("unsupported value type") {
    write_plain(f("floats"), idx_bytes(0x0D, {1}, {0, 0, 0, 0}));
    CHECK_THROWS_WITH_AS(xg::data::read_idx(f("floats")), doctest::Contains("float32 values"), xg::Error);
  }
  SUBCASE("header shorter than the magic number") {
    write_plain(f("tiny"), {0, 0});
    CHECK_THROWS_WITH_AS(xg::data::read_idx(f("tiny")), doctest::Contains("tiny' is truncated"), xg::Error);
  }
  SUBCASE("truncated sizes") {
    write_plain(f("hdr"), {0, 0, 8, 3, 0, 0, 0, 2, 0, 0});
    CHECK_THROWS_WITH_AS(xg::data::read_idx(f("hdr")), doctest::Contains("truncated in its header"), xg::Error);
  }
  SUBCASE("truncated data, plain and gzip") {
    auto bytes = idx_bytes(0x08, {4, 2, 2}, pixels(4, 2, 2));
    bytes.resize(bytes.size() - 5);
    write_plain(f("short"), bytes);
    write_gz(f("short.gz"), bytes);
    CHECK_THROWS_WITH_AS(xg::data::read_idx(f("short")), doctest::Contains("declares sizes [4,2,2] = 16 values but only 11"),
                         xg::Error);
    CHECK_THROWS_WITH_AS(xg::data::read_idx(f("short.gz")), doctest::Contains("short.gz' is truncated"), xg::Error);
  }
  SUBCASE("trailing data") {
    auto bytes = idx_bytes(0x08, {2}, {1, 2});
    bytes.push_back(9);
    write_plain(f("long"), bytes);
    CHECK_THROWS_WITH_AS(xg::data::read_idx(f("long")), doctest::Contains("data after the 2 values"), xg::Error);
  }
  SUBCASE("wrong number of dimensions") {
    write_plain(f("train-images-idx3-ubyte"), idx_bytes(0x08, {4}, labels(4)));
    write_plain(f("train-labels-idx1-ubyte"), idx_bytes(0x08, {4}, labels(4)));
    CHECK_THROWS_WITH_AS(xg::data::load_mnist_folder(dir.string(), true),
                         doctest::Contains("has 1 dimension(s), expected 3"), xg::Error);
  }
  SUBCASE("image/label count mismatch") {
    write_plain(f("train-images-idx3-ubyte"), idx_bytes(0x08, {3, 2, 2}, pixels(3, 2, 2)));
    write_plain(f("train-labels-idx1-ubyte"), idx_bytes(0x08, {4}, labels(4)));
    CHECK_THROWS_WITH_AS(xg::data::load_mnist_folder(dir.string(), true),
                         doctest::Contains("holds 3 images but"), xg::Error);
  }
  SUBCASE("folder without the files") {
    write_plain(f("readme.txt"), {'h', 'i'});
    CHECK_THROWS_WITH_AS(xg::data::load_mnist_folder(dir.string(), false),
                         doctest::Contains("neither t10k-images-idx3-ubyte nor t10k-images-idx3-ubyte.gz (nor "
                                           "t10k-images.idx3-ubyte, nor a prefixed name like "
                                           "emnist-digits-t10k-images-idx3-ubyte.gz); it holds: readme.txt"),
                         xg::Error);
    CHECK_THROWS_WITH_AS(xg::data::load_mnist_folder(f("no-such-folder"), false),
                         doctest::Contains("is not a folder"), xg::Error);
  }
  SUBCASE("a corrupt gzip stream") {
    auto bytes = idx_bytes(0x08, {64}, labels(64));
    write_gz(f("c.gz"), bytes);
    std::fstream io(f("c.gz"), std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(12);
    const char junk[8] = {'\x7f', '\x13', '\x55', '\x00', '\x42', '\x17', '\x33', '\x01'};
    io.write(junk, 8);
    io.close();
    CHECK_THROWS_AS(xg::data::read_idx(f("c.gz")), xg::Error);
  }
  fs::remove_all(dir);
}

TEST_CASE("write_idx round-trips through read_idx, plain and gzip") {
  const auto dir = temp_dir("write");
  xg::data::IdxArray a{{2, 3}, {1, 2, 3, 250, 251, 252}};
  for (const char* name : {"w-idx", "w-idx.gz"}) {
    const auto p = (dir / name).string();
    xg::data::write_idx(p, a);
    const auto b = xg::data::read_idx(p);
    CHECK(b.dims == a.dims);
    CHECK(b.values == a.values);
    CHECK_FALSE(fs::exists(p + ".tmp"));
  }
  CHECK_THROWS_WITH_AS(xg::data::write_idx((dir / "x").string(), {{2, 2}, {1, 2, 3}}),
                       doctest::Contains("need 4 values, got 3"), xg::Error);
  fs::remove_all(dir);
}

TEST_CASE("subset, head and train_val_split") {
  const Dataset d = numbered(20);
  const Dataset s = d.subset({7, 3, 3});
  CHECK(s.size() == 3);
  CHECK(s.labels == std::vector<std::size_t>{7, 3, 3});
  CHECK(s.images.data<float>()(0, 0, 0, 0) == 7.0f);
  CHECK(d.head(100).size() == 20);
  CHECK_THROWS_WITH_AS(d.subset({20}), doctest::Contains("index 20 is out of range"), xg::Error);

  auto [tr, val] = xg::data::train_val_split(d, 6, 42);
  CHECK(tr.size() == 14);
  CHECK(val.size() == 6);
  std::set<float> ids;
  for (const Dataset* part : {&tr, &val})
    for (std::size_t i = 0; i < part->size(); ++i) ids.insert(part->images.data<float>()(i, 0, 0, 0));
  CHECK(ids.size() == 20);  // disjoint and complete
  auto [tr2, val2] = xg::data::train_val_split(d, 6, 42);
  CHECK(val2.labels == val.labels);
  CHECK(xg::data::train_val_split(d, 6, 43).second.images.to_vector() != val.images.to_vector());
  CHECK_THROWS_WITH_AS(xg::data::train_val_split(d, 21, 1), doctest::Contains("21 validation samples"), xg::Error);
}

TEST_CASE("DataLoader: batch sizes, drop_last, coverage and seeded shuffling") {
  const Dataset d = numbered(10);
  SUBCASE("without drop_last the last batch is smaller") {
    DataLoader l(d, DataLoaderOptions(4).shuffle(false));
    CHECK(l.num_batches() == 3);
    std::vector<std::size_t> sizes, ids;
    for (const auto& b : l) {
      sizes.push_back(b.size());
      CHECK(b.images.shape() == xg::Shape{b.size(), 1, 2, 2});
      for (std::size_t j = 0; j < b.size(); ++j) ids.push_back(sample_id(b, j));
    }
    CHECK(sizes == std::vector<std::size_t>{4, 4, 2});
    CHECK(ids == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  }
  SUBCASE("drop_last skips it") {
    DataLoader l(d, DataLoaderOptions(4).drop_last(true).seed(1));
    CHECK(l.num_batches() == 2);
    std::size_t n = 0;
    for (const auto& b : l) {
      CHECK(b.size() == 4);
      ++n;
    }
    CHECK(n == 2);
    CHECK_THROWS_WITH_AS(DataLoader(d, DataLoaderOptions(11).drop_last(true)), doctest::Contains("no batch at all"),
                         xg::Error);
    CHECK_THROWS_WITH_AS(DataLoader(d, DataLoaderOptions(0)), doctest::Contains("batch_size must be positive"),
                         xg::Error);
  }
  SUBCASE("shuffled epochs are permutations, differ between epochs, and repeat with the seed") {
    auto epochs = [&](std::uint64_t seed) {
      DataLoader l(d, DataLoaderOptions(3).seed(seed));
      std::vector<std::vector<std::size_t>> out;
      for (int e = 0; e < 3; ++e) {
        std::vector<std::size_t> ids;
        for (const auto& b : l)
          for (std::size_t j = 0; j < b.size(); ++j) {
            ids.push_back(sample_id(b, j));
            CHECK(b.labels[j] == sample_id(b, j) % 10);  // labels travel with their images
          }
        out.push_back(ids);
      }
      return out;
    };
    const auto a = epochs(5), b = epochs(5), c = epochs(6);
    CHECK(a == b);
    CHECK(a != c);
    CHECK(a[0] != a[1]);
    for (auto e : a) {
      std::sort(e.begin(), e.end());
      CHECK(e == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    }
  }
  SUBCASE("next() walks epochs back to back") {
    DataLoader l(d, DataLoaderOptions(4).drop_last(true).seed(9));
    std::vector<std::size_t> first;
    for (int i = 0; i < 2; ++i) {
      auto b = l.next();
      for (std::size_t j = 0; j < b.size(); ++j) first.push_back(sample_id(b, j));
    }
    CHECK(l.epoch() == 1);
    l.next();
    CHECK(l.epoch() == 2);
    std::set<std::size_t> uniq(first.begin(), first.end());
    CHECK(uniq.size() == 8);  // no sample twice within an epoch
  }
}
