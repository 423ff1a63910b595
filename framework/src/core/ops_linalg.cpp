// Matrix products through BLAS: matmul (numpy semantics, batched) and linear (x·Wᵀ + b, PyTorch's layout).
#include "xgrad/blas.h"
#include "detail.h"

namespace xg {
using detail::Grads;
using detail::Needs;

namespace {
// C = op(A)·op(B) for same-batch operands A [...,r,c], B [...,r,c] (no autograd). Batch dims must be equal.
Tensor bmm_raw(const Tensor& a, bool ta, const Tensor& b, bool tb) {
  const Shape as = a.shape(), bs = b.shape();
  const std::size_t nd = as.size();
  const std::size_t n = ta ? as[nd - 1] : as[nd - 2], k = ta ? as[nd - 2] : as[nd - 1];
  const std::size_t m = tb ? bs[nd - 2] : bs[nd - 1];
  Shape cs(as.begin(), as.end() - 2);
  const std::size_t batch = numel_of(cs);
  cs.push_back(n);
  cs.push_back(m);
  if (k == 0) return zeros(cs, a.dtype());  // a sum of no products
  Tensor c = empty(cs, a.dtype());           // every entry written by the GEMMs (beta = 0)
  dispatch(a.dtype(), [&](auto t) {
    using T = decltype(t);
    const T* pa = a.data_ptr<T>();
    const T* pb = b.data_ptr<T>();
    T* pc = c.data_ptr<T>();
    const std::size_t sa = as[nd - 2] * as[nd - 1], sb = bs[nd - 2] * bs[nd - 1], sc = n * m;
    for (std::size_t i = 0; i < batch; ++i)
      blas::gemm(ta, tb, n, m, k, T(1), pa + i * sa, as[nd - 1], pb + i * sb, bs[nd - 1], T(0), pc + i * sc, m);
  });
  return c;
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  detail::check_same_dtype(a, b, "matmul");
  const Shape as = a.shape(), bs = b.shape();
  if (as.empty() || bs.empty())
    fail("matmul: both arguments need at least 1 dimension, got {} and {}", shape_str(as), shape_str(bs));
  const std::size_t ka = as.back(), kb = bs.size() == 1 ? bs[0] : bs[bs.size() - 2];
  if (ka != kb) fail("matmul: cannot multiply {} by {}", shape_str(as), shape_str(bs));
  // numpy's 1-d rules: a vector on the left is a row, on the right a column; the extra axis is removed after.
  if (as.size() == 1 && bs.size() == 1) return reshape(matmul(unsqueeze(a, 0), unsqueeze(b, 1)), {});  // dot
  if (as.size() == 1) return squeeze(matmul(unsqueeze(a, 0), b), -2);
  if (bs.size() == 1) return squeeze(matmul(a, unsqueeze(b, -1)), -1);
  // Broadcast the batch axes, then one GEMM per batch entry.
  const Shape ba(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
  Shape batch = broadcast_shapes(ba, bb, "matmul");
  Shape ae = batch, be = batch;
  ae.insert(ae.end(), as.end() - 2, as.end());
  be.insert(be.end(), bs.end() - 2, bs.end());
  const Tensor A = expand(a, ae), B = expand(b, be);
  Tensor out = bmm_raw(A, false, B, false);
  return record_op("matmul", out, {A, B}, [A = A.detach(), B = B.detach()](const Tensor& g, const Needs& n) {
    // C = A·B  =>  dA = G·Bᵀ, dB = Aᵀ·G
    return Grads{n[0] ? bmm_raw(g, false, B, true) : Tensor(), n[1] ? bmm_raw(A, true, g, false) : Tensor()};
  });
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  detail::check_same_dtype(x, w, "linear");
  const Shape xs = x.shape(), ws = w.shape();
  if (ws.size() != 2) fail("linear: weight must be [out_features, in_features], got {}", shape_str(ws));
  if (xs.empty() || xs.back() != ws[1])
    fail("linear: input {} does not end in in_features = {} (weight {})", shape_str(xs), ws[1], shape_str(ws));
  if (b.defined()) {
    detail::check_same_dtype(x, b, "linear");
    if (b.shape() != Shape{ws[0]}) fail("linear: bias must be [{}], got {}", ws[0], shape_str(b.shape()));
  }
  const std::size_t in = ws[1], outf = ws[0], rows = x.numel() / std::max<std::size_t>(in, 1);
  Shape ys = xs;
  ys.back() = outf;
  // written whole: bias rows then beta = 1, or beta = 0; only in == 0 without a bias leaves it at zero
  Tensor y = in == 0 && !b.defined() ? zeros(ys, x.dtype()) : empty(ys, x.dtype());
  dispatch(x.dtype(), [&](auto t) {
    using T = decltype(t);
    T* py = y.data_ptr<T>();
    if (b.defined()) {  // y = b broadcast over rows, then y += x·Wᵀ
      const T* pb = b.data_ptr<T>();
      for (std::size_t r = 0; r < rows; ++r) std::copy_n(pb, outf, py + r * outf);
    }
    if (in > 0)
      blas::gemm(false, true, rows, outf, in, T(1), x.data_ptr<T>(), in, w.data_ptr<T>(), in, T(b.defined() ? 1 : 0),
                 py, outf);
  });
  std::vector<Tensor> inputs{x, w};
  if (b.defined()) inputs.push_back(b);
  return record_op("linear", y, inputs,
                   [x = x.detach(), w = w.detach(), rows, in, outf](const Tensor& g, const Needs& n) {
                     // y = x·Wᵀ + b  =>  dx = G·W, dW = Gᵀ·x, db = Σ_rows G
                     Grads grads(n.size());
                     dispatch(g.dtype(), [&](auto t) {
                       using T = decltype(t);
                       const T* pg = g.data_ptr<T>();
                       if (n[0]) {
                         grads[0] = empty(x.shape(), g.dtype());  // beta = 0: written whole
                         blas::gemm(false, false, rows, in, outf, T(1), pg, outf, w.data_ptr<T>(), in, T(0),
                                    grads[0].data_ptr<T>(), in);
                       }
                       if (n[1]) {
                         grads[1] = empty(w.shape(), g.dtype());
                         blas::gemm(true, false, outf, in, rows, T(1), pg, outf, x.data_ptr<T>(), in, T(0),
                                    grads[1].data_ptr<T>(), in);
                       }
                       if (n.size() > 2 && n[2]) {
                         grads[2] = zeros({outf}, g.dtype());
                         T* pb = grads[2].data_ptr<T>();
                         for (std::size_t r = 0; r < rows; ++r)
                           for (std::size_t o = 0; o < outf; ++o) pb[o] += pg[r * outf + o];
                       }
                     });
                     return grads;
                   });
}

Tensor Tensor::matmul(const Tensor& other) const { return xg::matmul(*this, other); }

}  // namespace xg
