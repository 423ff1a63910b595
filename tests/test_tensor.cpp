// The Tensor type: factories, metadata, element access, dtype conversion, xtensor interop without copies,
// seeded random numbers, printing, and the worked example of docs/tensors.md.
//
// The regions marked // [name] ... // [/name] are the C++ snippets of docs/tensors.md (tests/test_docs.cpp
// checks they match), so every snippet in that guide is compiled and its claims are asserted right below it.
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>

#include "testing.h"

#define XGRAD_WORKED_EXAMPLE_NO_MAIN
#include "../examples/worked_example.cpp"

using namespace xgt;
using xg::kFloat32;
using xg::kFloat64;

TEST_CASE("factories") {
  // [factories]
  xg::Tensor z = xg::zeros({2, 3});                    // float32 unless a dtype is given
  xg::Tensor o = xg::ones({2, 3}, xg::kFloat64);
  xg::Tensor f = xg::full({2}, 7.5);
  xg::Tensor s = xg::scalar(3.0);                      // 0-d: shape {}
  xg::Tensor r = xg::arange(0, 1, 0.25);               // [0, 0.25, 0.5, 0.75]
  xg::Tensor l = xg::linspace(0, 1, 5);                // [0, 0.25, 0.5, 0.75, 1]
  xg::Tensor i = xg::eye(3);                           // 3×3 identity
  xg::Tensor v = xg::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});  // row-major
  xg::Tensor t = xg::tensor({{1, 2, 3}, {4, 5, 6}});   // the same from nested lists
  xg::Tensor e = xg::empty({2, 3});                    // values unspecified: for an output written whole
  // [/factories]
  check_values(z, {2, 3}, std::vector<double>(6, 0.0));
  CHECK(z.dtype() == kFloat32);
  check_values(o, {2, 3}, std::vector<double>(6, 1.0));
  CHECK(o.dtype() == kFloat64);
  check_values(f, {2}, {7.5, 7.5});
  check_values(s, {}, {3.0});
  CHECK(s.ndim() == 0);
  CHECK(s.numel() == 1);
  check_values(r, {4}, {0, 0.25, 0.5, 0.75});
  check_values(l, {5}, {0, 0.25, 0.5, 0.75, 1});
  check_values(i, {3, 3}, {1, 0, 0, 0, 1, 0, 0, 0, 1});
  check_values(v, {2, 3}, {1, 2, 3, 4, 5, 6});
  check_values(t, {2, 3}, {1, 2, 3, 4, 5, 6});
  CHECK_FALSE(t.requires_grad());

  check_values(xg::arange(5), {5}, {0, 1, 2, 3, 4});
  check_values(xg::arange(3, 0, -1, kFloat64), {3}, {3, 2, 1});
  check_values(xg::arange(0, 1, 0.3), {4}, {0, 0.3, 0.6, 0.9}, 1e-7);  // ceil((1-0)/0.3) = 4 points
  check_values(xg::arange(2, 2), {0}, {});
  check_values(xg::linspace(2, 3, 1), {1}, {2});
  check_values(xg::linspace(0, 1, 0), {0}, {});
  check_values(xg::linspace(-1, 1, 3, kFloat64), {3}, {-1, 0, 1});
  check_values(xg::eye(2, 3), {2, 3}, {1, 0, 0, 0, 1, 0});
  check_values(xg::eye(3, 1, kFloat64), {3, 1}, {1, 0, 0});
  check_values(xg::from_vector(std::vector<float>{1.5f, 2.5f}, {2, 1}), {2, 1}, {1.5, 2.5});
  check_values(xg::tensor({1, 2}, kFloat64, true), {2}, {1, 2});
  CHECK(xg::tensor({1, 2}, kFloat64, true).requires_grad());
  CHECK(xg::zeros({2}, kFloat64, true).requires_grad());
  CHECK(xg::full({1}, 2, kFloat32, true).requires_grad());
  const Tensor like = xg::ones({2, 2}, kFloat64);
  check_values(xg::zeros_like(like), {2, 2}, {0, 0, 0, 0});
  check_values(xg::ones_like(like), {2, 2}, {1, 1, 1, 1});
  check_values(xg::full_like(like, -2), {2, 2}, {-2, -2, -2, -2});
  CHECK(xg::full_like(like, -2).dtype() == kFloat64);
  CHECK(xg::zeros({0, 3}).numel() == 0);
  CHECK(e.shape() == Shape{2, 3});
  CHECK(e.dtype() == kFloat32);
  const Tensor e64 = xg::empty_like(like);
  CHECK(e64.shape() == Shape{2, 2});
  CHECK(e64.dtype() == kFloat64);
  CHECK(xg::empty({3}, kFloat64, true).requires_grad());
  CHECK(xg::empty({0, 3}).numel() == 0);
#ifdef XGRAD_POISON_EMPTY  // sanitizer builds: every value NaN, so an unwritten value shows up
  for (double v : e64.to_vector()) CHECK(std::isnan(v));
#endif
}

TEST_CASE("metadata and element access") {
  xg::Tensor t = xg::tensor({{1, 2, 3}, {4, 5, 6}}, kFloat64);
  CHECK(t.shape() == Shape{2, 3});
  CHECK(t.ndim() == 2);
  CHECK(t.numel() == 6);
  CHECK(t.size(0) == 2);
  CHECK(t.size(-1) == 3);
  CHECK(t.sizes().size() == 2);
  CHECK(t.sizes()[1] == 3);
  CHECK(t.same_shape(xg::zeros({2, 3})));
  CHECK_FALSE(t.same_shape(xg::zeros({3, 2})));
  CHECK(t.dtype() == kFloat64);
  CHECK(xg::dtype_name(kFloat32) == "float32");
  CHECK(xg::dtype_size(kFloat64) == 8);
  CHECK(xg::shape_str({64, 10}) == "[64,10]");
  CHECK(xg::shape_str({}) == "[]");
  CHECK(xg::scalar(2).size(0) == 1);  // a 0-d tensor answers like shape [1], as PyTorch
  // [access]
  double corner = t.at({1, 2});       // 6: row 1, column 2
  double last = t.at({-1, -1});       // 6 again: negative indices count from the end
  t.set({0, 0}, 10.0);                // writes one element (no autograd)
  double total = t.sum().item();      // item(): the value of a one-element tensor
  std::vector<double> flat = t.to_vector();  // row-major copy: {10, 2, 3, 4, 5, 6}
  // [/access]
  CHECK(corner == 6);
  CHECK(last == 6);
  CHECK(total == 30);
  CHECK(flat == std::vector<double>{10, 2, 3, 4, 5, 6});
  CHECK(xg::scalar(2.5).item<float>() == 2.5f);
}

TEST_CASE("dtypes: float32 by default, float64 on request, to() converts") {
  // [dtypes]
  xg::Tensor a = xg::tensor({0.1, 0.2});                 // float32
  xg::Tensor b = a.to(xg::kFloat64);                     // a float64 copy of the float32 values
  xg::Tensor c = xg::tensor({0.1, 0.2}, xg::kFloat64);   // float64 from the start
  xg::Tensor mixed = a + c;                               // promoted to float64, as in PyTorch
  xg::Tensor labels = xg::tensor({3, 0}, xg::kInt64);    // int64 class labels (never require grad)
  xg::Tensor hit = xg::eq(labels, 3);                    // comparisons give bool: [true, false]
  // [/dtypes]
  CHECK(mixed.dtype() == kFloat64);
  CHECK(labels.dtype() == xg::kInt64);
  CHECK(hit.dtype() == xg::kBool);
  CHECK(hit.to_vector() == std::vector<double>{1, 0});
  CHECK(a.dtype() == kFloat32);
  CHECK(b.dtype() == kFloat64);
  CHECK(b.at({0}) == double(0.1f));  // the float32 value, widened
  CHECK(c.at({0}) == 0.1);
  CHECK(b.at({0}) != c.at({0}));
  CHECK(xg::tensor({1.5}, kFloat64).to(kFloat32).dtype() == kFloat32);
  CHECK(xg::tensor({1e40}, kFloat64).to(kFloat32).item() == std::numeric_limits<double>::infinity());
  // clone() is a deep copy; the original is untouched by writes to it.
  Tensor d = c.clone();
  d.set({0}, 5);
  CHECK(c.at({0}) == 0.1);
}

TEST_CASE("broadcasting follows numpy") {
  // [broadcast]
  xg::Tensor m = xg::tensor({{1, 2, 3}, {4, 5, 6}});  // [2,3]
  xg::Tensor row = xg::tensor({10, 20, 30});          // [3]   -> stretched over the 2 rows
  xg::Tensor col = xg::from_vector({100, 200}, {2, 1});  // [2,1] -> stretched over the 3 columns
  xg::Tensor r1 = m + row;  // [[11, 22, 33], [14, 25, 36]]
  xg::Tensor r2 = m + col;  // [[101, 102, 103], [204, 205, 206]]
  xg::Tensor r3 = m * 2.0;  // a double acts as a 0-d tensor of m's dtype
  xg::Tensor r4 = xg::zeros({3, 1, 4}) + xg::zeros({2, 4});  // [3,2,4]
  // [/broadcast]
  check_values(r1, {2, 3}, {11, 22, 33, 14, 25, 36});
  check_values(r2, {2, 3}, {101, 102, 103, 204, 205, 206});
  check_values(r3, {2, 3}, {2, 4, 6, 8, 10, 12});
  CHECK(r4.shape() == Shape{3, 2, 4});
  CHECK(xg::broadcast_shapes({3, 1, 4}, {2, 4}, "test") == Shape{3, 2, 4});
  CHECK(xg::broadcast_shapes({}, {5}, "test") == Shape{5});
  CHECK(xg::broadcast_shapes({1, 1}, {1}, "test") == Shape{1, 1});
}

TEST_CASE("xtensor interop: in and out without copies") {
  // [interop]
  xt::xarray<float> a = {{1, 2}, {3, 4}};
  const float* buffer = a.data();
  xg::Tensor t(std::move(a));                    // adopts the array: no copy

  xt::xarray<float>& view = t.data<float>();    // the tensor's own array, by reference
  view(0, 1) = 20;                               // writes go straight into the tensor
  xt::xarray<float> doubled = 2.0f * t.data<float>();  // any xtensor expression reads it in place
  float* raw = t.data_ptr<float>();              // or raw pointers, row-major and contiguous
  xt::xarray<double> copy = t.to_xarray<double>();     // converting out is a copy
  // [/interop]
  CHECK(t.data_ptr<float>() == buffer);
  CHECK(&view == &t.data<float>());
  CHECK(raw == buffer);
  CHECK(t.at({0, 1}) == 20);
  CHECK(doubled(0, 1) == 40);
  CHECK(copy(1, 1) == 4.0);
  CHECK(copy.data() != static_cast<const void*>(buffer));
  // Moving the array back out also moves the buffer (the tensor is left with an empty array).
  xt::xarray<float> out = std::move(t.data<float>());
  CHECK(out.data() == buffer);
  // float64 arrays work the same way, and requires_grad can be set on construction.
  xt::xarray<double> d = {1.0, 2.0};
  const double* dbuf = d.data();
  Tensor td(std::move(d), /*requires_grad=*/true);
  CHECK(td.data_ptr<double>() == dbuf);
  CHECK(td.requires_grad());
  CHECK(td.dtype() == kFloat64);
  // Asking for the wrong element type is an error, not a reinterpretation.
  CHECK_THROWS_WITH_AS(td.data<float>(), doctest::Contains("the tensor holds float64"), xg::Error);
}

TEST_CASE("seeded random numbers are reproducible, streams are independent") {
  // [random]
  xg::manual_seed(42);
  xg::Tensor a = xg::randn({3});        // from the global generator
  xg::manual_seed(42);
  xg::Tensor b = xg::randn({3});        // the same three numbers again

  xg::Generator noise(7), shuffle(8);   // separate streams: drawing from one does not move the other
  xg::Tensor u = xg::rand({2, 2}, xg::kFloat32, &noise);
  std::vector<std::size_t> perm = xg::randperm(5, &shuffle);
  // [/random]
  CHECK(a.to_vector() == b.to_vector());
  CHECK(perm.size() == 5);

  // Same seed, same values; different seeds, different values.
  xg::Generator g1(123), g2(123), g3(124);
  const auto v1 = xg::uniform({50}, -1, 1, kFloat64, &g1).to_vector();
  CHECK(v1 == xg::uniform({50}, -1, 1, kFloat64, &g2).to_vector());
  CHECK(v1 != xg::uniform({50}, -1, 1, kFloat64, &g3).to_vector());
  // Independence: interleaving draws from another generator (or the global one) changes nothing.
  xg::Generator h1(5), h2(5), other(6);
  const auto first = xg::randn({10}, kFloat64, &h1).to_vector();
  xg::randn({100}, kFloat64, &other);
  xg::randn({100});
  CHECK(first == xg::randn({10}, kFloat64, &h2).to_vector());
  // And the global stream is untouched by explicit generators.
  xg::manual_seed(9);
  const auto g_first = xg::rand({4}).to_vector();
  xg::manual_seed(9);
  xg::rand({4}, kFloat32, &other);
  CHECK(g_first == xg::rand({4}).to_vector());
  CHECK(xg::default_generator().initial_seed() == 9);

  // Distributions: ranges and moments of 20000 draws.
  xg::Generator g(11);
  const auto uv = xg::uniform({20000}, 2.0, 5.0, kFloat64, &g).to_vector();
  double mn = 1e9, mx = -1e9, sum = 0;
  for (double x : uv) {
    mn = std::min(mn, x);
    mx = std::max(mx, x);
    sum += x;
  }
  CHECK(mn >= 2.0);
  CHECK(mx < 5.0);
  CHECK(sum / 20000 == doctest::Approx(3.5).epsilon(0.01));
  const auto nv = xg::normal({20000}, 1.0, 2.0, kFloat64, &g).to_vector();
  double m1 = 0, m2 = 0;
  for (double x : nv) m1 += x;
  m1 /= 20000;
  for (double x : nv) m2 += (x - m1) * (x - m1);
  CHECK(m1 == doctest::Approx(1.0).epsilon(0.05));
  CHECK(std::sqrt(m2 / 19999) == doctest::Approx(2.0).epsilon(0.03));
  // randperm is a permutation of 0..n-1, reproducible from the seed.
  xg::Generator p1(3), p2(3);
  const auto pa = xg::randperm(100, &p1);
  CHECK(std::set<std::size_t>(pa.begin(), pa.end()).size() == 100);
  CHECK(*std::max_element(pa.begin(), pa.end()) == 99);
  CHECK(pa == xg::randperm(100, &p2));
  CHECK(xg::randperm(0).empty());
}

TEST_CASE("printing: PyTorch's layout, plus the shape") {
  // [print]
  xg::Tensor t = xg::tensor({{1, 2}, {3, 4}});
  std::string s = fmt::format("{}", t);
  // tensor([[1., 2.],
  //         [3., 4.]], shape=[2,2])
  // [/print]
  CHECK(s == "tensor([[1., 2.],\n        [3., 4.]], shape=[2,2])");
  auto str = [](const Tensor& x) { return fmt::format("{}", x); };
  // Fixed point with 4 decimals, right-aligned to the widest element.
  CHECK(str(xg::tensor({0.1, 0.25, -3})) == "tensor([ 0.1000,  0.2500, -3.0000], shape=[3])");
  // Scientific when the nonzero magnitudes span more than 1000x, or are tiny/huge.
  CHECK(str(xg::tensor({0.001, 2.0})) == "tensor([1.0000e-03, 2.0000e+00], shape=[2])");
  CHECK(str(xg::tensor({1e-5})) == "tensor([1.0000e-05], shape=[1])");
  CHECK(str(xg::tensor({1e9})) == "tensor([1.0000e+09], shape=[1])");
  // 0-d, float64, requires_grad and grad_fn, empty, non-finite.
  CHECK(str(xg::scalar(3.5, kFloat64, true)) == "tensor(3.5000, shape=[], dtype=float64, requires_grad=true)");
  CHECK(str(xg::ones({2}, kFloat32, true) * 2.0) == "tensor([2., 2.], shape=[2], grad_fn=<mul>)");
  CHECK(str(xg::zeros({0, 3})) == "tensor([], shape=[0,3])");
  const double inf = std::numeric_limits<double>::infinity();
  CHECK(str(xg::tensor({1.5, std::nan(""), inf, -inf})) == "tensor([1.5000,    nan,    inf,   -inf], shape=[4])");
  CHECK(str(Tensor()) == "tensor(undefined)");
  // 3-d: a blank line between the outer blocks.
  CHECK(str(xg::reshape(xg::arange(8), {2, 2, 2})) ==
        "tensor([[[0., 1.],\n         [2., 3.]],\n\n        [[4., 5.],\n         [6., 7.]]], shape=[2,2,2])");
  // operator<< prints the same.
  std::ostringstream os;
  os << t;
  CHECK(os.str() == s);
}

TEST_CASE("printing: more than 1000 elements are summarised with ...") {
  auto str = [](const Tensor& x) { return fmt::format("{}", x); };
  CHECK(str(xg::arange(2000)) == "tensor([   0.,    1.,    2.,  ..., 1997., 1998., 1999.], shape=[2000])");
  CHECK(str(xg::reshape(xg::arange(2000), {40, 50})) ==
        "tensor([[   0.,    1.,    2.,  ...,   47.,   48.,   49.],\n"
        "        [  50.,   51.,   52.,  ...,   97.,   98.,   99.],\n"
        "        [ 100.,  101.,  102.,  ...,  147.,  148.,  149.],\n"
        "        ...,\n"
        "        [1850., 1851., 1852.,  ..., 1897., 1898., 1899.],\n"
        "        [1900., 1901., 1902.,  ..., 1947., 1948., 1949.],\n"
        "        [1950., 1951., 1952.,  ..., 1997., 1998., 1999.]], shape=[40,50])");
  // Exactly 1000 elements: all printed.
  const std::string full = str(xg::arange(1000));
  CHECK(full.find("...") == std::string::npos);
  CHECK(full.find(" 500.,") != std::string::npos);
  CHECK(full.rfind("999.], shape=[1000])") != std::string::npos);
  // The number style is chosen from the printed elements only (PyTorch too): the hidden 1e-9 does not turn
  // the printout scientific.
  std::vector<double> v(1200, 1.5);
  v[600] = 1e-9;
  CHECK(str(xg::from_vector(v, {1200}, kFloat64)).find("e-") == std::string::npos);
}

TEST_CASE("the worked example of docs/tensors.md: every number recomputed by hand") {
  const WorkedExample r = run_worked_example();
  // y = x·w + b with w broadcast over the rows: y_ij = x_ij·w_j + b
  const double x[2][2] = {{1, 2}, {3, 4}}, w[2] = {0.5, -1.0}, b = 0.25;
  double y[2][2], loss = 0;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      y[i][j] = x[i][j] * w[j] + b;
      loss += y[i][j] * y[i][j] / 4;
    }
  // dloss/dw_j = (2/4)·Σ_i y_ij·x_ij ; dloss/db = (2/4)·Σ_ij y_ij
  double gw[2] = {0, 0}, gb = 0;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      gw[j] += 0.5 * y[i][j] * x[i][j];
      gb += 0.5 * y[i][j];
    }
  check_values(r.y, {2, 2}, {y[0][0], y[0][1], y[1][0], y[1][1]}, 1e-7);
  check_values(r.loss, {}, {loss}, 1e-7);
  check_values(r.w.grad(), {2}, {gw[0], gw[1]}, 1e-7);
  check_values(r.b.grad(), {}, {gb}, 1e-7);
  // The numbers quoted in the guide's prose.
  CHECK(loss == 5.1875);
  CHECK(gw[0] == 3.0);
  CHECK(gw[1] == -9.25);
  CHECK(gb == -1.5);

  // The printout in docs/tensors.md (the ```text block after `<!-- output: examples/worked_example.cpp -->`)
  // is what the program prints.
  std::ifstream in(std::string(XGRAD_SOURCE_DIR) + "/docs/tensors.md");
  REQUIRE(in.good());
  std::string line, block;
  bool after_marker = false, inside = false, found = false;
  while (std::getline(in, line)) {
    if (line == "<!-- output: examples/worked_example.cpp -->") {
      after_marker = true;
      continue;
    }
    if (after_marker && line == "```text") {
      inside = true;
      after_marker = false;
      continue;
    }
    if (inside && line == "```") {
      found = true;
      break;
    }
    if (inside) block += line + "\n";
  }
  REQUIRE(found);
  CHECK(block == worked_example_output(r));
}

namespace {
// The shape of the GCC 12.2 + AVX-512 miscompile (cmake/xgrad_options.cmake): a function that passes two braced
// lists, the second {1, 1, 1, 0}, to an out-of-line function. Built with -march=native but without
// -fno-tree-slp-vectorize, the callee receives {1, 1, 1, 1}.
double g_last_element = -1;
[[gnu::noinline]] void record_last(const std::vector<std::size_t>& shape, const std::vector<double>& v) {
  g_last_element = v.back();
}
[[gnu::noinline]] void pass_braced_lists() { record_last({4}, {1, 1, 1, 0}); }
}  // namespace

TEST_CASE("the compiler passes braced lists intact (GCC 12 AVX-512 constant miscompile guard)") {
  pass_braced_lists();
  CHECK(g_last_element == 0.0);
}

TEST_CASE("docs/getting-started.md shows examples/consumer/CMakeLists.txt verbatim") {
  // tests/test_docs.cpp checks the ```cpp blocks; the one ```cmake block is checked here the same way: the lines
  // between `# [cmake]` and `# [/cmake]` of the consumer project's CMakeLists.txt.
  auto lines = [](const std::string& path) {
    std::ifstream in(std::string(XGRAD_SOURCE_DIR) + "/" + path);
    REQUIRE(in.good());
    std::vector<std::string> v;
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
  };
  std::string region, block;
  bool inside = false;
  for (const auto& l : lines("examples/consumer/CMakeLists.txt")) {
    if (l == "# [/cmake]") break;
    if (inside) region += l + "\n";
    if (l == "# [cmake]") inside = true;
  }
  const auto doc = lines("docs/getting-started.md");
  for (std::size_t i = 0; i + 1 < doc.size(); ++i)
    if (doc[i] == "<!-- snippet: examples/consumer/CMakeLists.txt#cmake -->" && doc[i + 1] == "```cmake") {
      for (std::size_t j = i + 2; j < doc.size() && doc[j] != "```"; ++j) block += doc[j] + "\n";
      break;
    }
  CHECK_FALSE(region.empty());
  CHECK(block == region);
}
