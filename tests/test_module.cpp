// The Module system: registration, dotted names, recursion, modes, hooks, dtype conversion, state dicts,
// Sequential, printing, and the errors of each.
#include <doctest/doctest.h>

#include <sstream>

#include "xgrad/xgrad.h"

namespace nn = xg::nn;
using xg::Tensor;

namespace {

// A user-defined module, written as the docs show.
struct Net : nn::Module {
  Net() {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(4, 3));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(nn::LinearOptions(3, 2).bias(false)));
    scale = register_parameter("scale", xg::ones({2}));
    steps = register_buffer("steps", xg::zeros({1}));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = xg::relu(fc1->forward(x));
    return apply_forward_hooks(x, fc2->forward(h) * scale);
  }
  std::shared_ptr<nn::Linear> fc1, fc2;
  Tensor scale, steps;
};

std::vector<std::string> names_of(const nn::NamedTensors& v) {
  std::vector<std::string> out;
  for (const auto& [n, t] : v) out.push_back(n);
  return out;
}

bool same_values(const Tensor& a, const Tensor& b) { return a.shape() == b.shape() && a.to_vector() == b.to_vector(); }

}  // namespace

TEST_CASE("parameters, buffers and children have stable dotted names in registration order") {
  auto net = std::make_shared<Net>();
  CHECK(names_of(net->named_parameters()) == std::vector<std::string>{"scale", "fc1.weight", "fc1.bias", "fc2.weight"});
  CHECK(names_of(net->named_parameters(/*recurse=*/false)) == std::vector<std::string>{"scale"});
  CHECK(names_of(net->named_buffers()) == std::vector<std::string>{"steps"});
  CHECK(net->parameters().size() == 4);
  CHECK(net->buffers().size() == 1);
  CHECK(net->children().size() == 2);
  CHECK(net->named_children()[1].first == "fc2");
  // the accessors return the modules' own handles
  CHECK(net->parameters()[1].impl() == net->fc1->weight.impl());
  for (const auto& p : net->parameters()) {
    CHECK(p.is_leaf());
    CHECK(p.requires_grad());
  }
  CHECK_FALSE(net->steps.requires_grad());

  auto model = std::make_shared<nn::Sequential>();
  model->push_back("features", std::make_shared<nn::Sequential>(nn::Linear(2, 2), nn::ReLU(), nn::Linear(2, 2)));
  model->push_back("head", net);
  const auto names = names_of(model->named_parameters());
  CHECK(names.front() == "features.0.weight");
  CHECK(names[2] == "features.2.weight");
  CHECK(names.back() == "head.fc2.weight");
  // tensor labels follow the full dotted path (graph export shows them), module labels too
  CHECK(net->fc1->weight.label() == "head.fc1.weight");
  CHECK(net->steps.label() == "head.steps");
  CHECK(net->fc1->label() == "head.fc1");

  std::vector<std::string> mods;
  for (const auto& [n, m] : model->named_modules()) mods.push_back(n + ":" + m->name());
  CHECK(mods == std::vector<std::string>{":Sequential", "features:Sequential", "features.0:Linear", "features.1:ReLU",
                                         "features.2:Linear", "head:Net", "head.fc1:Linear", "head.fc2:Linear"});
  CHECK(model->modules().size() == 8);
  CHECK(model->modules(/*include_self=*/false).size() == 7);
  CHECK(model->find_tensor("head.fc1.bias").impl() == net->fc1->bias.impl());
  CHECK_THROWS_WITH_AS(model->find_tensor("head.fc3.bias"),
                       doctest::Contains("no parameter or buffer named 'head.fc3.bias'"), xg::Error);
}

TEST_CASE("registration errors name the module and the problem") {
  nn::Module m;
  m.register_parameter("w", xg::ones({2}));
  CHECK_THROWS_WITH_AS(m.register_parameter("w", xg::ones({2})), doctest::Contains("'w' is already registered"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(m.register_buffer("w", xg::ones({2})), doctest::Contains("already registered"), xg::Error);
  CHECK_THROWS_WITH_AS(m.register_parameter("", xg::ones({2})), doctest::Contains("empty name"), xg::Error);
  CHECK_THROWS_WITH_AS(m.register_buffer("a.b", xg::ones({2})), doctest::Contains("must not contain '.'"), xg::Error);
  CHECK_THROWS_WITH_AS(m.register_module("c", std::shared_ptr<nn::Linear>()), doctest::Contains("null module"),
                       xg::Error);
  // A stack module cannot give itself out as a shared_ptr.
  CHECK_THROWS_WITH_AS(m.modules(), doctest::Contains("std::shared_ptr"), xg::Error);
  CHECK(m.modules(false).empty());
  // A non-leaf becomes a leaf parameter.
  Tensor a = xg::ones({2}, xg::kFloat32, true);
  Tensor p = m.register_parameter("p", a * 2.0);
  CHECK(p.is_leaf());
  CHECK(p.requires_grad());
  // a module without forward(Tensor) says so
  CHECK_THROWS_WITH_AS(m.forward(a), doctest::Contains("no forward(const Tensor&) override"), xg::Error);
}

TEST_CASE("train() and eval() recurse; EvalGuard restores each module's mode") {
  auto model = std::make_shared<nn::Sequential>(nn::Linear(2, 2), nn::Dropout(0.5), nn::Sequential(nn::ReLU()));
  CHECK(model->is_training());
  model->eval();
  for (const auto& m : model->modules()) CHECK_FALSE(m->is_training());
  model->train();
  for (const auto& m : model->modules()) CHECK(m->is_training());
  (*model)[1]->eval();  // a mixed tree
  {
    nn::EvalGuard guard(*model);
    for (const auto& m : model->modules()) CHECK_FALSE(m->is_training());
  }
  CHECK(model->is_training());
  CHECK_FALSE((*model)[1]->is_training());
  CHECK((*model)[2]->is_training());
}

TEST_CASE("zero_grad clears to none or to zeros") {
  nn::Linear lin(3, 2);
  Tensor x = xg::randn({4, 3});
  lin.forward(x).sum().backward();
  CHECK(lin.weight.grad().defined());
  lin.zero_grad(/*set_to_none=*/false);
  CHECK(lin.weight.grad().defined());
  for (double v : lin.weight.grad().to_vector()) CHECK(v == 0.0);
  lin.zero_grad();
  CHECK_FALSE(lin.weight.grad().defined());
  CHECK_FALSE(lin.bias.grad().defined());
}

TEST_CASE("forward hooks see input and output, may replace the output, and can be removed") {
  auto model = std::make_shared<nn::Sequential>(nn::Linear(3, 4), nn::Sigmoid(), nn::Linear(4, 2));
  Tensor x = xg::randn({5, 3});
  const Tensor plain = model->forward(x);

  std::vector<double> seen_in, seen_out;
  std::vector<std::string> order;
  auto h1 = (*model)[1]->register_forward_hook([&](nn::Module& m, const Tensor& in, const Tensor& out) {
    order.push_back(m.name());
    seen_in = in.to_vector();
    seen_out = out.to_vector();
  });
  auto h0 = (*model)[0]->register_forward_hook(
      [&](nn::Module& m, const Tensor&, const Tensor&) { order.push_back(m.name()); });
  const Tensor y = model->forward(x);
  CHECK(order == std::vector<std::string>{"Linear", "Sigmoid"});
  CHECK(same_values(y, plain));  // reading changes nothing
  // the hook saw the sigmoid's real input and output
  const Tensor pre = (*model)[0]->forward(x);
  CHECK(seen_in == pre.to_vector());
  CHECK(seen_out == xg::sigmoid(pre).to_vector());

  // a hook that replaces the output (noise injection): the graph goes through the replacement
  auto h2 = (*model)[1]->register_forward_hook([](nn::Module&, const Tensor&, const Tensor& out) { return out * 0.0; });
  const Tensor z = model->forward(x);
  auto last = model->at<nn::Linear>(2);
  for (std::size_t i = 0; i < 5; ++i)
    for (std::size_t j = 0; j < 2; ++j)
      CHECK(z.at({(std::ptrdiff_t)i, (std::ptrdiff_t)j}) == doctest::Approx(last->bias.at({(std::ptrdiff_t)j})));
  CHECK((*model)[1]->num_forward_hooks() == 2);
  h2.remove();
  h2.remove();  // twice is fine
  CHECK_FALSE(h2.active());
  CHECK(h1.active());
  h1.remove();
  h0.remove();
  order.clear();
  CHECK(same_values(model->forward(x), plain));
  CHECK(order.empty());
}

TEST_CASE("a hook does not change gradients; user modules fire hooks via apply_forward_hooks") {
  xg::manual_seed(3);
  auto net = std::make_shared<Net>();
  Tensor x = xg::randn({2, 4});
  net->forward(x).sum().backward();
  const auto g_plain = net->fc1->weight.grad().to_vector();
  net->zero_grad();
  int calls = 0;
  net->register_forward_hook([&](nn::Module&, const Tensor& in, const Tensor& out) {
    ++calls;
    CHECK(in.shape() == xg::Shape{2, 4});
    CHECK(out.shape() == xg::Shape{2, 2});
    (void)out.sum().item();  // a computation inside the hook
  });
  net->forward(x).sum().backward();
  CHECK(calls == 1);
  CHECK(net->fc1->weight.grad().to_vector() == g_plain);
}

TEST_CASE("to(dtype) converts parameters and buffers in place, keeping the handles") {
  auto net = std::make_shared<Net>();
  const Tensor w = net->fc1->weight;
  const auto before = w.to_vector();
  net->forward(xg::randn({1, 4})).sum().backward();
  net->to(xg::kFloat64);
  CHECK(w.dtype() == xg::kFloat64);
  CHECK(w.impl() == net->parameters()[1].impl());
  for (const auto& p : net->parameters()) CHECK(p.dtype() == xg::kFloat64);
  CHECK(net->steps.dtype() == xg::kFloat64);
  CHECK_FALSE(w.grad().defined());
  const auto after = w.to_vector();
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < after.size(); ++i) CHECK(after[i] == before[i]);  // float -> double is exact
  const Tensor y = net->forward(xg::randn({2, 4}, xg::kFloat64));
  CHECK(y.dtype() == xg::kFloat64);
  net->to(xg::kFloat32);
  CHECK(w.dtype() == xg::kFloat32);
}

TEST_CASE("state_dict holds parameters then buffers per module; load_state_dict copies in place") {
  auto a = std::make_shared<Net>();
  auto b = std::make_shared<Net>();
  const auto keys = a->state_dict().keys();
  CHECK(keys == std::vector<std::string>{"scale", "steps", "fc1.weight", "fc1.bias", "fc2.weight"});
  CHECK(a->state_dict().at("fc1.weight").impl() == a->fc1->weight.impl());  // no copy
  const Tensor bw = b->fc1->weight;
  auto r = b->load_state_dict(a->state_dict());
  CHECK(r.missing_keys.empty());
  CHECK(r.unexpected_keys.empty());
  CHECK(bw.impl() == b->fc1->weight.impl());                    // same handle ...
  CHECK(same_values(bw, a->fc1->weight));                       // ... new values
  CHECK(bw.impl()->storage != a->fc1->weight.impl()->storage);  // copied, not shared

  // a float64 dict loads into a float32 model (converted)
  xg::StateDict d64;
  for (const auto& [n, t] : a->state_dict()) d64.insert(n, t.to(xg::kFloat64).detach());
  b->load_state_dict(d64);
  CHECK(b->fc2->weight.dtype() == xg::kFloat32);
  CHECK(same_values(b->fc2->weight, a->fc2->weight));
}

TEST_CASE("load_state_dict names every problem in one error and changes nothing") {
  auto net = std::make_shared<Net>();
  const auto before = net->fc1->weight.to_vector();
  xg::StateDict d;
  for (const auto& [n, t] : net->state_dict())
    if (n != "fc1.bias") d.insert(n, xg::zeros(t.shape()));
  d.set("fc2.weight", xg::zeros({3, 3}));  // wrong shape
  d.insert("fc3.weight", xg::zeros({1}));  // unexpected
  try {
    net->load_state_dict(d);
    FAIL("expected an error");
  } catch (const xg::Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("missing keys: fc1.bias") != std::string::npos);
    CHECK(msg.find("unexpected keys: fc3.weight") != std::string::npos);
    CHECK(msg.find("fc2.weight (checkpoint [3,3] vs model [2,3])") != std::string::npos);
  }
  CHECK(net->fc1->weight.to_vector() == before);
  // not strict: missing/unexpected are returned, shape mismatches are still an error
  CHECK_THROWS_WITH_AS(net->load_state_dict(d, false), doctest::Contains("shape mismatch: fc2.weight"), xg::Error);
  d.set("fc2.weight", xg::zeros({2, 3}));
  auto r = net->load_state_dict(d, /*strict=*/false);
  CHECK(r.missing_keys == std::vector<std::string>{"fc1.bias"});
  CHECK(r.unexpected_keys == std::vector<std::string>{"fc3.weight"});
  for (double v : net->fc1->weight.to_vector()) CHECK(v == 0.0);
}

TEST_CASE("Sequential: construction, indexing, typed access, forward") {
  auto seq = std::make_shared<nn::Sequential>(nn::Linear(3, 4), nn::Tanh());
  seq->push_back(std::make_shared<nn::Linear>(4, 1));
  seq->push_back(nn::Identity());
  CHECK(seq->size() == 4);
  CHECK((*seq)[3]->name() == "Identity");
  auto lin = seq->at<nn::Linear>(2);
  CHECK(lin->options().in_features() == 4);
  CHECK_THROWS_WITH_AS(seq->at<nn::Linear>(1), doctest::Contains("module 1 is a Tanh"), xg::Error);
  CHECK_THROWS_WITH_AS(seq->ptr(7), doctest::Contains("index 7 is out of range (it holds 4 modules)"), xg::Error);
  Tensor x = xg::randn({2, 3});
  const Tensor expect = lin->forward(xg::tanh(seq->at<nn::Linear>(0)->forward(x)));
  CHECK(same_values(seq->forward(x), expect));
  // a module whose forward takes two arguments cannot sit in a Sequential
  seq->push_back(nn::MSELoss());
  CHECK_THROWS_WITH_AS(seq->forward(x), doctest::Contains("MSELoss: this module has no forward(const Tensor&)"),
                       xg::Error);
}

TEST_CASE("printing a module tree") {
  auto model = std::make_shared<nn::Sequential>(nn::Conv2d(nn::Conv2dOptions(1, 8, 3).padding(1).bias(false)),
                                                nn::BatchNorm2d(8), nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(),
                                                nn::Linear(8 * 14 * 14, 10));
  std::ostringstream os;
  os << *model;
  const std::string expect =
      "Sequential(\n"
      "  (0): Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=false)\n"
      "  (1): BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)\n"
      "  (2): ReLU()\n"
      "  (3): MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))\n"
      "  (4): Flatten(start_dim=1, end_dim=-1)\n"
      "  (5): Linear(in_features=1568, out_features=10, bias=true)\n"
      ")";
  CHECK(os.str() == expect);
}

TEST_CASE("options are validated at construction") {
  CHECK_THROWS_WITH_AS(nn::Linear(0, 3), doctest::Contains("in_features and out_features must be > 0"), xg::Error);
  CHECK_THROWS_WITH_AS(nn::Conv2d(nn::Conv2dOptions(1, 2, 3).stride(0)), doctest::Contains("stride must be >= 1"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(nn::Conv2d(1, 0, 3), doctest::Contains("must be > 0"), xg::Error);
  CHECK_THROWS_WITH_AS(nn::Conv2d(1, 2, {0, 3}), doctest::Contains("kernel_size must be >= 1"), xg::Error);
  CHECK_THROWS_WITH_AS(nn::MaxPool2d(nn::MaxPool2dOptions(2).padding(2)), doctest::Contains("at most half the kernel"),
                       xg::Error);
  CHECK_THROWS_WITH_AS(nn::AvgPool2d(nn::AvgPool2dOptions(2).stride(xg::nn::Size2(0))),
                       doctest::Contains("stride must be >= 1"), xg::Error);
  CHECK_THROWS_WITH_AS(nn::Dropout(1.5), doctest::Contains("p must be in [0, 1], got 1.5"), xg::Error);
  CHECK_THROWS_WITH_AS(nn::BatchNorm1d(nn::BatchNormOptions(4).eps(0)),
                       doctest::Contains("eps must be a finite number > 0"), xg::Error);
  CHECK_THROWS_WITH_AS(nn::BatchNorm2d(nn::BatchNormOptions(4).momentum(1.5)),
                       doctest::Contains("momentum must be in [0, 1]"), xg::Error);
  CHECK_THROWS_WITH_AS(nn::BatchNorm2d(0), doctest::Contains("num_features must be > 0"), xg::Error);
  // the builder keeps defaults for what is not set
  const auto o = nn::Conv2dOptions(3, 16, {3, 5}).padding({1, 2});
  CHECK(o.stride() == nn::Size2(1, 1));
  CHECK(o.kernel_size() == nn::Size2(3, 5));
  CHECK(o.bias());
}
