// nets.cpp — networks, the noisy-BN module and the shared training pieces (see nets.h).
#include "nets.h"

#include <algorithm>
#include <cmath>

#include "lab.h"

namespace lab {

namespace nn = xg::nn;

// ------------------------------------------------------------------------------------------ TimeVaryingNoise

TimeVaryingNoise::TimeVaryingNoise(std::size_t channels, NoiseOptions options, std::uint64_t seed)
    : nn::Module("TimeVaryingNoise"), opts_(options), gen_(seed), mu_(channels, 0.0), sigma_(channels, 1.0) {
  new_step();
}

void TimeVaryingNoise::new_step() {
  for (std::size_t j = 0; j < mu_.size(); ++j) {
    mu_[j] = -opts_.n_mu + 2 * opts_.n_mu * gen_.uniform();         // U(-n_mu, n_mu)
    sigma_[j] = 1.0 + (opts_.n_sigma - 1.0) * gen_.uniform();       // U(1, n_sigma)
  }
}

xg::Tensor TimeVaryingNoise::forward(const xg::Tensor& input) {
  if (!is_training()) return apply_forward_hooks(input, input);
  // input [N, C, S...]: element i of channel j gets a <- s*a + m, s ~ N(sigma_j, r_sigma),
  // m ~ U(mu_j - r_mu, mu_j + r_mu). s and m are constants: the gradient flows through the product only.
  const xg::Shape shape = input.shape();
  const std::size_t N = shape[0], C = shape[1], S = input.numel() / (N * C);
  if (C != mu_.size())
    xg::fail("TimeVaryingNoise: input {} has {} channels, the module was built for {}", xg::shape_str(shape), C,
             mu_.size());
  xt::xarray<float> s = xt::xarray<float>::from_shape(shape), m = xt::xarray<float>::from_shape(shape);
  float* ps = s.data();
  float* pm = m.data();
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t j = 0; j < C; ++j)
      for (std::size_t k = 0; k < S; ++k) {
        const std::size_t i = (n * C + j) * S + k;
        ps[i] = static_cast<float>(sigma_[j] + opts_.r_sigma * gen_.normal());
        pm[i] = static_cast<float>(mu_[j] - opts_.r_mu + 2 * opts_.r_mu * gen_.uniform());
      }
  xg::Tensor out = input * xg::Tensor(std::move(s)) + xg::Tensor(std::move(m));
  return apply_forward_hooks(input, out);
}

// ------------------------------------------------------------------------------------------------- networks

namespace {

std::shared_ptr<nn::Module> activation(const std::string& name) {
  if (name == "relu") return std::make_shared<nn::ReLU>();
  if (name == "sigmoid") return std::make_shared<nn::Sigmoid>();
  xg::fail("make_net: unknown activation '{}' (use relu or sigmoid)", name);
}

// Initialises one Linear/Conv2d from its own generator (see make_net).
template <class Layer>
void init_layer(Layer& layer, const NetSpec& spec, xg::Generator& gen) {
  if (spec.init_std) {
    nn::init::normal_(layer.weight, 0.0, *spec.init_std, &gen);
    if (layer.bias.defined()) nn::init::zeros_(layer.bias);
  } else if (spec.kaiming) {
    nn::init::kaiming_normal_(layer.weight, 0.0, nn::init::FanMode::FanIn, nn::init::Nonlinearity::ReLU, &gen);
    if (layer.bias.defined()) nn::init::zeros_(layer.bias);
  } else {
    layer.reset_parameters(&gen);
  }
}

}  // namespace

Net make_net(const NetSpec& spec, const xg::Shape& input_shape, std::size_t classes, std::uint64_t init_seed,
             std::uint64_t noise_seed) {
  if (input_shape.size() != 4)
    xg::fail("make_net: expected an input shape [N, C, H, W], got {}", xg::shape_str(input_shape));
  Net net;
  net.model = std::make_shared<nn::Sequential>();
  auto& seq = *net.model;
  std::size_t layer = 0;  // index of the weight layer (seeds its generator)

  // After a Linear/Conv with `width` outputs: [BN] -> [noise] -> activation.
  auto block_tail = [&](std::size_t width, bool image) {
    if (spec.batchnorm && spec.lp_norm > 0) {
      std::shared_ptr<nn::Module> lp;
      if (image) lp = std::make_shared<nn::LpNorm2d>(nn::LpNormOptions(width).p(spec.lp_norm));
      else lp = std::make_shared<nn::LpNorm1d>(nn::LpNormOptions(width).p(spec.lp_norm));
      seq.push_back(lp);
    } else if (spec.batchnorm) {
      std::shared_ptr<nn::BatchNormBase> bn;
      if (image) bn = std::make_shared<nn::BatchNorm2d>(nn::BatchNormOptions(width));
      else bn = std::make_shared<nn::BatchNorm1d>(nn::BatchNormOptions(width));
      seq.push_back(bn);
      net.batchnorms.push_back(bn);
    }
    if (spec.noise) {
      auto noise = std::make_shared<TimeVaryingNoise>(width, spec.noise_options,
                                                      seed_for(noise_seed, "noise", net.noise.size()));
      seq.push_back(noise);
      net.noise.push_back(noise);
    }
    net.last_preactivation = seq.ptr(seq.size() - 1);
    seq.push_back(activation(spec.activation));
  };

  if (spec.kind == "mlp") {
    seq.push_back(nn::Flatten());
    std::size_t in = input_shape[1] * input_shape[2] * input_shape[3];
    for (std::size_t width : spec.hidden) {
      auto lin = std::make_shared<nn::Linear>(nn::LinearOptions(in, width).bias(!spec.batchnorm));
      xg::Generator gen(seed_for(init_seed, "layer", layer++));
      init_layer(*lin, spec, gen);
      seq.push_back(lin);
      block_tail(width, false);
      in = width;
    }
    auto head = std::make_shared<nn::Linear>(in, classes);
    xg::Generator gen(seed_for(init_seed, "layer", layer++));
    init_layer(*head, spec, gen);
    seq.push_back(head);
  } else if (spec.kind == "cnn") {
    std::size_t c = input_shape[1], h = input_shape[2], w = input_shape[3];
    const std::vector<std::size_t> widths{8, 8, 0, 16, 16, 0};  // 0 = maxpool 2
    for (std::size_t width : widths) {
      if (width == 0) {
        seq.push_back(std::make_shared<nn::MaxPool2d>(nn::MaxPool2dOptions(2)));
        h /= 2;
        w /= 2;
        continue;
      }
      auto conv = std::make_shared<nn::Conv2d>(nn::Conv2dOptions(c, width, 3).padding(1).bias(!spec.batchnorm));
      xg::Generator gen(seed_for(init_seed, "layer", layer++));
      init_layer(*conv, spec, gen);
      seq.push_back(conv);
      block_tail(width, true);
      c = width;
    }
    seq.push_back(nn::Flatten());
    auto head = std::make_shared<nn::Linear>(c * h * w, classes);
    xg::Generator gen(seed_for(init_seed, "layer", layer++));
    init_layer(*head, spec, gen);
    seq.push_back(head);
  } else {
    xg::fail("make_net: unknown network kind '{}' (use mlp or cnn)", spec.kind);
  }
  return net;
}

std::string describe(const NetSpec& spec) {
  std::string s;
  if (spec.kind == "mlp") {
    s = "MLP 784";
    for (auto w : spec.hidden) s += fmt::format("-{}", w);
    s += "-10";
  } else {
    s = "CNN 8-8-16-16";
  }
  s += spec.activation == "sigmoid" ? " sigmoid" : " ReLU";
  if (spec.batchnorm && spec.lp_norm > 0)
    s += std::isinf(spec.lp_norm) ? " + l-inf norm" : fmt::format(" + l{} norm", spec.lp_norm);
  else if (spec.batchnorm) s += " + BN";
  if (spec.noise) s += " + noise";
  return s;
}

// ------------------------------------------------------------------------------------------ training pieces

std::size_t count_correct(const xg::Tensor& logits, const std::vector<std::size_t>& labels) {
  const std::size_t N = logits.size(0), C = logits.size(1);
  const float* p = logits.data_ptr<float>();
  std::size_t correct = 0;
  for (std::size_t r = 0; r < N; ++r) {
    const float* row = p + r * C;
    bool finite = true;
    std::size_t best = 0;
    for (std::size_t k = 0; k < C; ++k) {
      finite = finite && std::isfinite(row[k]);
      if (row[k] > row[best]) best = k;
    }
    if (finite && best == labels[r]) ++correct;
  }
  return correct;
}

StepResult train_step(Net& net, xg::optim::Optimizer& opt, const xg::data::Batch& batch) {
  for (auto& n : net.noise) n->new_step();
  opt.zero_grad();
  xg::Tensor logits = net.model->forward(batch.images);
  xg::Tensor loss = nn::functional::cross_entropy(logits, batch.labels);
  const StepResult r{loss.item(), count_correct(logits, batch.labels)};
  if (!std::isfinite(r.loss)) return r;
  loss.backward();
  opt.step();
  return r;
}

Evaluation evaluate(nn::Module& model, const xg::data::Dataset& ds, std::size_t batch_size) {
  nn::EvalGuard eval_mode(model);
  xg::NoGradGuard no_grad;
  double loss_sum = 0;
  std::size_t correct = 0;
  for (std::size_t lo = 0; lo < ds.size(); lo += batch_size) {
    std::vector<std::size_t> idx;
    for (std::size_t i = lo; i < std::min(lo + batch_size, ds.size()); ++i) idx.push_back(i);
    const xg::data::Dataset part = ds.subset(idx);
    const xg::Tensor logits = model.forward(part.images);
    loss_sum += nn::functional::cross_entropy(logits, part.labels, nn::Reduction::Sum).item();
    correct += count_correct(logits, part.labels);
  }
  const double n = static_cast<double>(ds.size());
  return {loss_sum / n, static_cast<double>(correct) / n};
}

std::vector<double> percentiles(std::vector<double> v, const std::vector<double>& ps) {
  std::vector<double> out;
  if (v.empty()) return std::vector<double>(ps.size(), std::nan(""));
  std::sort(v.begin(), v.end());
  for (double p : ps) {
    const double pos = p / 100.0 * static_cast<double>(v.size() - 1);
    const auto lo = static_cast<std::size_t>(std::floor(pos));
    const auto hi = std::min(lo + 1, v.size() - 1);
    out.push_back(v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]));
  }
  return out;
}

std::vector<double> unit_values(const xg::Tensor& t, std::size_t unit) {
  const xg::Shape s = t.shape();
  const std::size_t N = s[0], C = s[1], S = t.numel() / (N * C);
  if (unit >= C) xg::fail("unit_values: unit {} out of range for {}", unit, xg::shape_str(s));
  const xg::Tensor f = t.dtype() == xg::kFloat32 ? t : t.to(xg::kFloat32);
  const float* p = f.data_ptr<float>();
  std::vector<double> out;
  out.reserve(N * S);
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t k = 0; k < S; ++k) out.push_back(p[(n * C + unit) * S + k]);
  return out;
}

}  // namespace lab
