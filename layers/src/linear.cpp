// Linear, Flatten, Identity, the activation modules and Sequential: thin modules over framework ops.
#include <cmath>
#include <ostream>

#include "xgrad/nn/activation.h"
#include "xgrad/nn/init.h"
#include "xgrad/nn/linear.h"
#include "xgrad/nn/sequential.h"
#include "xgrad/ops.h"

namespace xg::nn {

// ---- Linear ------------------------------------------------------------------------------------------------
Linear::Linear(const LinearOptions& options) : options_(options) {
  if (options.in_features() == 0 || options.out_features() == 0)
    fail("Linear: in_features and out_features must be > 0, got in_features={}, out_features={}",
         options.in_features(), options.out_features());
  weight = register_parameter("weight", zeros({options.out_features(), options.in_features()}));
  bias = register_parameter("bias", options.bias() ? zeros({options.out_features()}) : Tensor());
  reset_parameters();
}

void Linear::reset_parameters(Generator* gen) {
  // PyTorch's default: kaiming_uniform_(a = √5) gives U(-1/√in, 1/√in) for the weight; the bias uses the same
  // bound.
  init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn, init::Nonlinearity::LeakyReLU, gen);
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(options_.in_features()));
    init::uniform_(bias, -bound, bound, gen);
  }
}

Tensor Linear::forward(const Tensor& input) {
  if (input.ndim() == 0 || input.shape().back() != options_.in_features())
    fail("Linear: input of shape {} must end in in_features = {} (weight is {})", shape_str(input.shape()),
         options_.in_features(), shape_str(weight.shape()));
  return apply_forward_hooks(input, linear(input, weight, bias));
}

void Linear::pretty_print(std::ostream& os) const {
  os << "Linear(in_features=" << options_.in_features() << ", out_features=" << options_.out_features()
     << ", bias=" << (options_.bias() ? "true" : "false") << ")";
}

// ---- Flatten, Identity ---------------------------------------------------------------------------------
Tensor Flatten::forward(const Tensor& input) {
  return apply_forward_hooks(input, flatten(input, options_.start_dim(), options_.end_dim()));
}

void Flatten::pretty_print(std::ostream& os) const {
  os << "Flatten(start_dim=" << options_.start_dim() << ", end_dim=" << options_.end_dim() << ")";
}

Tensor Identity::forward(const Tensor& input) { return apply_forward_hooks(input, input); }

Tensor Unflatten::forward(const Tensor& input) {
  if (!input.defined()) fail("Unflatten: the input is undefined");
  const Shape in = input.shape();
  const std::size_t d = normalize_axis(dim_, in.size(), "Unflatten", in);
  std::vector<std::ptrdiff_t> shape(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(d));
  std::ptrdiff_t known = 1;
  int infer = 0;
  for (auto v : sizes_) {
    if (v == -1) ++infer;
    else if (v <= 0) fail("Unflatten: sizes [{}] must be positive (one may be -1)", fmt::join(sizes_, ", "));
    else known *= v;
  }
  if (infer > 1 || (infer == 0 && static_cast<std::size_t>(known) != in[d]) ||
      (infer == 1 && in[d] % static_cast<std::size_t>(known) != 0))
    fail("Unflatten: axis {} of size {} (input {}) cannot be split into [{}]", dim_, in[d], shape_str(in),
         fmt::join(sizes_, ", "));
  shape.insert(shape.end(), sizes_.begin(), sizes_.end());
  shape.insert(shape.end(), in.begin() + static_cast<std::ptrdiff_t>(d) + 1, in.end());
  return apply_forward_hooks(input, reshape(input, shape));
}

void Unflatten::pretty_print(std::ostream& os) const {
  os << "Unflatten(dim=" << dim_ << ", unflattened_size=(" << fmt::format("{}", fmt::join(sizes_, ", ")) << "))";
}

// ---- activations ---------------------------------------------------------------------------------------
Tensor ReLU::forward(const Tensor& input) { return apply_forward_hooks(input, relu(input)); }
Tensor Sigmoid::forward(const Tensor& input) { return apply_forward_hooks(input, sigmoid(input)); }
Tensor Tanh::forward(const Tensor& input) { return apply_forward_hooks(input, tanh(input)); }
Tensor Softmax::forward(const Tensor& input) { return apply_forward_hooks(input, softmax(input, dim_)); }
void Softmax::pretty_print(std::ostream& os) const { os << "Softmax(dim=" << dim_ << ")"; }
Tensor LogSoftmax::forward(const Tensor& input) { return apply_forward_hooks(input, log_softmax(input, dim_)); }
void LogSoftmax::pretty_print(std::ostream& os) const { os << "LogSoftmax(dim=" << dim_ << ")"; }

// ---- Sequential ------------------------------------------------------------------------------------------
Tensor Sequential::forward(const Tensor& input) {
  Tensor x = input;
  for (const auto& m : items_) x = m->forward(x);
  return apply_forward_hooks(input, x);
}

const std::shared_ptr<Module>& Sequential::ptr(std::size_t i) const {
  if (i >= items_.size()) fail("Sequential: index {} is out of range (it holds {} modules)", i, items_.size());
  return items_[i];
}

void Sequential::wrong_type(std::size_t i) const {
  fail("Sequential: module {} is a {}, not the requested type", i, items_[i]->name());
}

}  // namespace xg::nn
