// autograd_walkthrough — BatchNorm of a tiny [4,3] batch composed from primitive ops, watched at every step:
//   1. forward, one op at a time (ForwardTracer),
//   2. the graph backward will walk, as Graphviz DOT (and an SVG if Graphviz is installed),
//   3. backward, node by node (BackwardTracer),
//   4. the gradients against BatchNorm's closed form (and the fused kernel, xg::kernels::batch_norm_backward),
//   5. gradcheck against finite differences,
//   6. anomaly mode catching the NaN of a broken variant (eps = 0 and a constant channel).
//
//   build/bin/autograd_walkthrough [graph.svg]     # default: autograd_walkthrough.svg in the current directory
//
// Read it with docs/autograd.md, which explains this output line by line. Exits 1 if a check fails.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <xgrad/xgrad.h>
#if __has_include(<xgrad/kernels/batchnorm.h>)
#include <xgrad/kernels/batchnorm.h>
#define WALKTHROUGH_HAVE_FUSED_BN 1
#endif

namespace {

// [compose]
// Training-mode BatchNorm over the batch axis, written out op by op (PyTorch semantics: biased variance,
// eps inside the square root). Every intermediate is kept and labelled as soon as it exists, so the graph, the
// tracers and anomaly mode can name it; retain_grad() keeps the non-leaves' gradients for the graph export.
struct ComposedBatchNorm {
  xg::Tensor mean, xc, sq, var, var_eps, invstd, xhat, scaled, y;
};

xg::Tensor keep(xg::Tensor t, const char* label) {
  t.set_label(label);
  if (t.requires_grad()) t.retain_grad();
  return t;
}

ComposedBatchNorm batch_norm_composed(const xg::Tensor& x, const xg::Tensor& weight, const xg::Tensor& bias,
                                      double eps) {
  ComposedBatchNorm bn;
  bn.mean = keep(x.mean({0}, /*keepdim=*/true), "mean");        // [1,C]  per-channel mean
  bn.xc = keep(x - bn.mean, "xc");                              // [N,C]  centred
  bn.sq = keep(bn.xc * bn.xc, "sq");                            // [N,C]
  bn.var = keep(bn.sq.mean({0}, /*keepdim=*/true), "var");      // [1,C]  biased variance
  bn.var_eps = keep(bn.var + eps, "var+eps");                   // [1,C]
  bn.invstd = keep(bn.var_eps.rsqrt(), "invstd");               // [1,C]  1/sqrt(var + eps)
  bn.xhat = keep(bn.xc * bn.invstd, "xhat");                    // [N,C]  normalised
  bn.scaled = keep(bn.xhat * weight, "scaled");                 // [N,C]  weight [C] broadcasts over N
  bn.y = keep(bn.scaled + bias, "y");                           // [N,C]
  return bn;
}
// [/compose]

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string svg_path = argc > 1 ? argv[1] : "autograd_walkthrough.svg";
  const std::size_t N = 4, C = 3;
  const double eps = 1e-5;
  bool ok = true;

  // [inputs]
  xg::Tensor x = xg::tensor({{1.0, -2.0, 0.5}, {2.0, 0.0, 1.5}, {-1.0, 1.0, 2.5}, {0.5, 3.0, -0.5}},
                            xg::kFloat64, /*requires_grad=*/true);
  xg::Tensor weight = xg::tensor({1.0, 0.5, 2.0}, xg::kFloat64, true);
  xg::Tensor bias = xg::tensor({0.0, 0.1, -0.2}, xg::kFloat64, true);
  x.set_label("x");
  weight.set_label("weight");
  bias.set_label("bias");
  // The gradient arriving from "the rest of the network": dL/dy.
  xg::Tensor dy = xg::tensor({{0.1, -0.2, 0.3}, {0.4, 0.0, -0.1}, {-0.3, 0.2, 0.5}, {0.2, 0.1, -0.4}}, xg::kFloat64);
  // [/inputs]

  xg::TraceOptions trace_opts;
  trace_opts.max_values = 12;  // print whole [4,3] tensors (the default stops at 10 elements)

  std::printf("== 1. forward: every op as it is recorded (ForwardTracer) ==\n");
  // [forward]
  ComposedBatchNorm bn;
  {
    xg::ForwardTracer trace(trace_opts);
    bn = batch_norm_composed(x, weight, bias, eps);
  }
  // [/forward]

  std::printf("\n== 2. the graph backward will walk (Graphviz DOT) ==\n");
  // [dot]
  xg::DotOptions dot_opts;
  dot_opts.max_values = 12;
  dot_opts.rankdir = "TB";  // top to bottom: the [4,3] values make wide nodes
  std::printf("%s", xg::to_dot(bn.y, dot_opts).c_str());
  // [/dot]

  std::printf("\n== 3. backward, node by node (BackwardTracer) ==\n");
  // [backward]
  {
    xg::BackwardTracer trace(trace_opts);
    bn.y.backward(dy);  // y is not a scalar: pass dL/dy explicitly
  }
  // [/backward]

  // [render]
  if (xg::graphviz_available()) {
    xg::render(bn.y, svg_path, dot_opts);  // now with the gradients filled in
    std::printf("\nrendered the graph with its gradients to %s\n", svg_path.c_str());
  } else {
    std::printf("\n(graphviz's `dot` is not installed: apt-get install graphviz to render the graph)\n");
  }
  // [/render]

  std::printf("\n== 4. the gradients against BatchNorm's closed form ==\n");
  // [closed_form]
  // The closed form of the fused kernel, per channel c over the N values of the batch:
  //   db = sum dy     dw = sum dy*xhat     dx = w*invstd*(dy - mean(dy) - xhat*mean(dy*xhat))
  const std::vector<double> xv = x.to_vector(), wv = weight.to_vector(), dyv = dy.to_vector();
  std::vector<double> dx_ref(N * C), dw_ref(C), db_ref(C), mean_ref(C), invstd_ref(C);
  for (std::size_t c = 0; c < C; ++c) {
    double m = 0, v = 0;
    for (std::size_t n = 0; n < N; ++n) m += xv[n * C + c] / N;
    for (std::size_t n = 0; n < N; ++n) v += (xv[n * C + c] - m) * (xv[n * C + c] - m) / N;
    const double invstd = 1 / std::sqrt(v + eps);
    for (std::size_t n = 0; n < N; ++n) {
      const double xhat = (xv[n * C + c] - m) * invstd;
      db_ref[c] += dyv[n * C + c];
      dw_ref[c] += dyv[n * C + c] * xhat;
    }
    for (std::size_t n = 0; n < N; ++n) {
      const double xhat = (xv[n * C + c] - m) * invstd;
      dx_ref[n * C + c] = wv[c] * invstd * (dyv[n * C + c] - db_ref[c] / N - xhat * dw_ref[c] / N);
    }
    mean_ref[c] = m;
    invstd_ref[c] = invstd;
  }
  // [/closed_form]
  const double e_dx = max_abs_diff(x.grad().to_vector(), dx_ref);
  const double e_dw = max_abs_diff(weight.grad().to_vector(), dw_ref);
  const double e_db = max_abs_diff(bias.grad().to_vector(), db_ref);
  std::printf("x.grad()      = %s\n", xg::format_values(x.grad()).c_str());
  std::printf("weight.grad() = %s\n", xg::format_values(weight.grad()).c_str());
  std::printf("bias.grad()   = %s\n", xg::format_values(bias.grad()).c_str());
  std::printf("max |autograd - closed form|:  dx %.1e   dweight %.1e   dbias %.1e\n", e_dx, e_dw, e_db);
  ok = ok && e_dx < 1e-12 && e_dw < 1e-12 && e_db < 1e-12;

#ifdef WALKTHROUGH_HAVE_FUSED_BN
  // [fused]
  // The fused kernel computes the same three gradients in two passes over the data, from the per-channel
  // mean and invstd that its forward saved — here taken from the composed graph.
  std::vector<double> dx_fused(N * C), dw_fused(C), db_fused(C);
  xg::kernels::batch_norm_backward<double>(dyv.data(), xv.data(), wv.data(), mean_ref.data(), invstd_ref.data(),
                                           dx_fused.data(), dw_fused.data(), db_fused.data(), {N, C, 1});
  // [/fused]
  const double f_dx = max_abs_diff(x.grad().to_vector(), dx_fused);
  const double f_dw = max_abs_diff(weight.grad().to_vector(), dw_fused);
  const double f_db = max_abs_diff(bias.grad().to_vector(), db_fused);
  std::printf("max |autograd - fused kernel|: dx %.1e   dweight %.1e   dbias %.1e\n", f_dx, f_dw, f_db);
  ok = ok && f_dx < 1e-12 && f_dw < 1e-12 && f_db < 1e-12;
#endif

  std::printf("\n== 5. gradcheck: the composed BatchNorm against finite differences ==\n");
  // [gradcheck]
  xg::GradcheckResult check = xg::gradcheck(
      [eps](const std::vector<xg::Tensor>& in) { return batch_norm_composed(in[0], in[1], in[2], eps).y; },
      {x, weight, bias});  // gradcheck copies the inputs: x.grad() etc. are left alone
  std::printf("%s\n", check.report.c_str());
  // [/gradcheck]
  ok = ok && check.ok;

  std::printf("\n== 6. when it goes wrong: anomaly mode ==\n");
  // [anomaly]
  // A classic BatchNorm failure: eps = 0 and a channel whose values are all equal (a dead ReLU feature).
  // Its variance is 0, rsqrt(0) = inf, and NaN follows in xhat = 0 * inf. Anomaly mode stops at the first op
  // that produced a non-finite value and says which one, with the labels and shapes around it.
  xg::Tensor dead = xg::tensor({{1.0, 0.0, 0.5}, {2.0, 0.0, 1.5}, {-1.0, 0.0, 2.5}, {0.5, 0.0, -0.5}},
                               xg::kFloat64, true);
  dead.set_label("x_dead");
  try {
    xg::DetectAnomalyGuard anomaly;
    batch_norm_composed(dead, weight, bias, /*eps=*/0.0);
    std::printf("no anomaly?\n");
    ok = false;
  } catch (const xg::Error& e) {
    std::printf("xg::Error: %s\n", e.what());
  }
  // [/anomaly]

  std::printf("\n%s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
