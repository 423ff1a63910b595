// probes.cpp — loss-landscape and internal-covariate-shift probes (see probes.h).
#include "probes.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace lab::probes {

namespace {

// Visits the values of a tensor as doubles.
template <class F>
void each_value(const xg::Tensor& t, F&& f) {
  if (t.dtype() == xg::kFloat64) {
    const double* p = t.data_ptr<double>();
    for (std::size_t i = 0, n = t.numel(); i < n; ++i) f(i, p[i]);
  } else {
    const xg::Tensor c = t.to(xg::kFloat32);
    const float* p = c.data_ptr<float>();
    for (std::size_t i = 0, n = c.numel(); i < n; ++i) f(i, static_cast<double>(p[i]));
  }
}

std::vector<double> values(const xg::Tensor& t) {
  std::vector<double> v(t.numel());
  each_value(t, [&](std::size_t i, double x) { v[i] = x; });
  return v;
}

// Snapshot of parameter values (deep copies), restored with copy_ (same dtype, so bit for bit).
std::vector<xg::Tensor> snapshot(const std::vector<xg::Tensor>& params) {
  xg::NoGradGuard no_grad;
  std::vector<xg::Tensor> s;
  s.reserve(params.size());
  for (const auto& p : params) s.push_back(p.detach().clone());
  return s;
}

void restore(const std::vector<xg::Tensor>& params, const std::vector<xg::Tensor>& saved) {
  xg::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params.size(); ++i) {
    xg::Tensor p = params[i];
    p.copy_(saved[i]);
  }
}

// Restores the parameters when the probe leaves, also by an exception.
struct RestoreOnExit {
  const std::vector<xg::Tensor>& params;
  std::vector<xg::Tensor> saved;
  ~RestoreOnExit() { restore(params, saved); }
};

}  // namespace

std::vector<xg::Tensor> gradient(const LossFn& loss, const std::vector<xg::Tensor>& params, double* loss_value) {
  if (params.empty()) xg::fail("probes::gradient: no parameters given");
  const xg::Tensor l = loss();
  if (l.numel() != 1) xg::fail("probes::gradient: the loss must have one element, got shape {}", xg::shape_str(l.shape()));
  if (loss_value) *loss_value = l.item();
  return xg::autograd::grad({l}, params, {}, false, /*allow_unused=*/true);
}

double dot(const std::vector<xg::Tensor>& a, const std::vector<xg::Tensor>& b) {
  if (a.size() != b.size()) xg::fail("probes::dot: {} tensors against {}", a.size(), b.size());
  double s = 0;
  for (std::size_t k = 0; k < a.size(); ++k) {
    if (!a[k].defined() || !b[k].defined()) continue;  // an unused parameter: zero gradient
    if (a[k].numel() != b[k].numel())
      xg::fail("probes::dot: tensor {} has {} values against {}", k, a[k].numel(), b[k].numel());
    const std::vector<double> bv = values(b[k]);
    each_value(a[k], [&](std::size_t i, double x) { s += x * bv[i]; });
  }
  return s;
}

double norm(const std::vector<xg::Tensor>& a) {
  double s = 0;
  for (const auto& t : a)
    if (t.defined()) each_value(t, [&](std::size_t, double x) { s += x * x; });
  return std::sqrt(s);
}

double distance(const std::vector<xg::Tensor>& a, const std::vector<xg::Tensor>& b) {
  if (a.size() != b.size()) xg::fail("probes::distance: {} tensors against {}", a.size(), b.size());
  double s = 0;
  for (std::size_t k = 0; k < a.size(); ++k) {
    const bool da = a[k].defined(), db = b[k].defined();
    if (!da && !db) continue;
    if (da != db) {  // one side unused: the other is the whole difference
      s += std::pow(norm({da ? a[k] : b[k]}), 2);
      continue;
    }
    if (a[k].numel() != b[k].numel())
      xg::fail("probes::distance: tensor {} has {} values against {}", k, a[k].numel(), b[k].numel());
    const std::vector<double> bv = values(b[k]);
    each_value(a[k], [&](std::size_t i, double x) { s += (x - bv[i]) * (x - bv[i]); });
  }
  return std::sqrt(s);
}

Landscape probe_landscape(const LossFn& loss, const std::vector<xg::Tensor>& params, const std::vector<double>& etas) {
  if (etas.empty()) xg::fail("probe_landscape: no step lengths given");
  for (double e : etas)
    if (!(e > 0) || !std::isfinite(e)) xg::fail("probe_landscape: step lengths must be finite and > 0, got {}", e);
  Landscape r;
  r.etas = etas;
  const std::vector<xg::Tensor> g = gradient(loss, params, &r.loss);
  r.grad_norm = norm(g);
  r.loss_min = r.loss_max = r.loss;
  RestoreOnExit guard{params, snapshot(params)};
  double beta = 0;
  for (double eta : etas) {
    {  // x − η·g, from the saved x each time (no accumulation of rounding)
      xg::NoGradGuard no_grad;
      for (std::size_t k = 0; k < params.size(); ++k) {
        xg::Tensor p = params[k];
        p.copy_(guard.saved[k]);
        if (g[k].defined()) p.sub_(g[k], eta);
      }
    }
    double l = 0;
    const std::vector<xg::Tensor> g2 = gradient(loss, params, &l);
    const double d = distance(g, g2);
    r.losses.push_back(l);
    r.grad_distances.push_back(d);
    if (std::isfinite(l)) {
      r.loss_min = std::min(r.loss_min, l);
      r.loss_max = std::max(r.loss_max, l);
    } else {
      r.loss_max = std::numeric_limits<double>::infinity();
    }
    const double moved = eta * r.grad_norm;
    if (moved > 0) beta = std::isfinite(d) ? std::max(beta, d / moved) : std::numeric_limits<double>::infinity();
  }
  r.beta = beta;
  return r;
}

Ics probe_ics(const LossFn& loss, const std::vector<Layer>& layers, double lr) {
  if (layers.empty()) xg::fail("probe_ics: no layers given");
  if (!(lr > 0) || !std::isfinite(lr)) xg::fail("probe_ics: the learning rate must be finite and > 0, got {}", lr);
  // Every tensor once, layer by layer; where each layer's tensors and its weight sit in that list.
  std::vector<xg::Tensor> all;
  std::vector<std::size_t> first, weight_at;
  for (const auto& layer : layers) {
    first.push_back(all.size());
    std::size_t w = static_cast<std::size_t>(-1);
    for (const auto& p : layer.params) {
      if (&p.storage() == &layer.weight.storage()) w = all.size();
      all.push_back(p);
    }
    if (w == static_cast<std::size_t>(-1)) {  // the weight not listed among params: add it
      w = all.size();
      all.push_back(layer.weight);
    }
    weight_at.push_back(w);
  }
  first.push_back(all.size());

  const std::vector<xg::Tensor> G = gradient(loss, all);  // every layer's gradient at the current point
  Ics r;
  RestoreOnExit guard{all, snapshot(all)};
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const xg::Tensor& Gi = G[weight_at[i]];
    r.grad_norm.push_back(norm({Gi}));
    if (i == 0) {
      r.distance.push_back(0.0);
      r.cosine.push_back(1.0);
      continue;
    }
    {  // layer i−1 takes its SGD step (layers before it already did): W ← W − lr·G
      xg::NoGradGuard no_grad;
      for (std::size_t k = first[i - 1]; k < first[i]; ++k)
        if (G[k].defined()) {
          xg::Tensor p = all[k];
          p.sub_(G[k], lr);
        }
    }
    const xg::Tensor Gp = gradient(loss, {layers[i].weight})[0];
    r.distance.push_back(distance({Gi}, {Gp}));
    const double n1 = norm({Gi}), n2 = norm({Gp});
    r.cosine.push_back(n1 > 0 && n2 > 0 ? dot({Gi}, {Gp}) / (n1 * n2) : std::nan(""));
  }
  return r;
}

}  // namespace lab::probes
