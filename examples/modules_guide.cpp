// The program behind docs/modules.md and docs/batchnorm.md: every C++ block in those pages is a region of this
// file (between `// [name]` and `// [/name]`), so the docs always compile and run.
//
// It builds a small classifier for a synthetic 2-d problem (three Gaussian blobs), trains it with plain SGD,
// reads activations through a forward hook, saves and reloads it, and shows the BatchNorm modes.
//
//   build/bin/modules_guide [out_dir]      (writes <out_dir>/blobs.npz, default /tmp)
#include <cstdio>
#include <iostream>
#include <string>

#include "xgrad/xgrad.h"

namespace {

// [custom_module]
// A user-defined module: register parameters, buffers and children in the constructor, write forward().
struct BlobNet : xg::nn::Module {
  explicit BlobNet(std::size_t hidden) {
    fc1 = register_module("fc1", std::make_shared<xg::nn::Linear>(xg::nn::LinearOptions(2, hidden).bias(false)));
    bn1 = register_module("bn1", std::make_shared<xg::nn::BatchNorm1d>(hidden));
    fc2 = register_module("fc2", std::make_shared<xg::nn::Linear>(hidden, 3));
    temperature = register_buffer("temperature", xg::ones({1}));  // saved with the model, never trained
  }

  xg::Tensor forward(const xg::Tensor& x) override {
    xg::Tensor h = xg::relu(bn1->forward(fc1->forward(x)));  // [N, 2] -> [N, hidden]
    xg::Tensor logits = fc2->forward(h) / temperature;       // [N, 3]
    return apply_forward_hooks(x, logits);                   // lets hooks on BlobNet itself fire
  }

  std::shared_ptr<xg::nn::Linear> fc1, fc2;
  std::shared_ptr<xg::nn::BatchNorm1d> bn1;
  xg::Tensor temperature;
};
// [/custom_module]

// Three Gaussian blobs in the plane, one per class: x [n, 2], labels in {0, 1, 2}.
void make_blobs(std::size_t n, xg::Generator& gen, xg::Tensor& x, std::vector<std::size_t>& y) {
  const double centres[3][2] = {{-2.0, 0.0}, {2.0, 0.0}, {0.0, 2.5}};
  std::vector<double> v;
  y.clear();
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t c = gen.randint(3);
    y.push_back(c);
    v.push_back(centres[c][0] + gen.normal());
    v.push_back(centres[c][1] + gen.normal());
  }
  x = xg::from_vector(v, {n, 2});
}

double accuracy(const xg::Tensor& logits, const std::vector<std::size_t>& y) {
  std::size_t right = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    std::size_t best = 0;
    for (std::size_t c = 1; c < 3; ++c)
      if (logits.at({std::ptrdiff_t(i), std::ptrdiff_t(c)}) > logits.at({std::ptrdiff_t(i), std::ptrdiff_t(best)}))
        best = c;
    right += best == y[i];
  }
  return double(right) / double(y.size());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string out_dir = argc > 1 ? argv[1] : "/tmp";
  xg::manual_seed(0);  // one seed: initialisation and data below are reproducible
  xg::Generator data_gen(1);

  // [sequential]
  namespace nn = xg::nn;
  auto mlp = std::make_shared<nn::Sequential>(nn::Linear(nn::LinearOptions(784, 100).bias(false)), nn::BatchNorm1d(100),
                                              nn::Sigmoid(), nn::Linear(100, 10));
  std::cout << *mlp << "\n";
  for (const auto& [name, p] : mlp->named_parameters())
    std::cout << name << " " << xg::shape_str(p.shape()) << "\n";  // 0.weight [100,784], 1.weight [100], ...
  // [/sequential]

  // [options]
  auto conv = nn::Conv2d(nn::Conv2dOptions(1, 32, 3).padding(1).bias(false));  // defaults for the rest
  std::cout << "conv weight " << xg::shape_str(conv.weight.shape()) << "\n";   // [32,1,3,3] as PyTorch
  try {
    nn::Conv2d bad(nn::Conv2dOptions(1, 32, 3).stride(0));
  } catch (const xg::Error& e) {
    std::cout << "error: " << e.what() << "\n";  // Conv2d: stride must be >= 1, got (0, 0)
  }
  // [/options]

  auto net = std::make_shared<BlobNet>(16);
  xg::Tensor x_train, x_test;
  std::vector<std::size_t> y_train, y_test;
  make_blobs(600, data_gen, x_train, y_train);
  make_blobs(300, data_gen, x_test, y_test);

  // [training_loop]
  const float lr = 0.1f;
  const auto params = net->parameters();
  for (int step = 0; step <= 300; ++step) {
    const std::size_t start = (step * 60) % 600;  // batches of 60
    const xg::Tensor xb = x_train.narrow(0, start, 60);
    const std::vector<std::size_t> yb(y_train.begin() + start, y_train.begin() + start + 60);

    net->zero_grad();                                                       // grads to "none"
    xg::Tensor loss = nn::functional::cross_entropy(net->forward(xb), yb);  // forward
    loss.backward();                                                        // backward
    {
      xg::NoGradGuard no_grad;  // the update itself is not part of any graph
      for (const auto& p : params) {
        xg::Tensor w = p;
        w.data<float>() -= lr * p.grad().data<float>();
      }
    }
    if (step % 100 == 0) std::printf("step %3d  loss %.4f\n", step, loss.item());
  }
  // [/training_loop]

  // [eval]
  double test_acc = 0;
  {
    nn::EvalGuard eval(*net);  // eval mode for this scope (BatchNorm uses its running statistics) ...
    xg::NoGradGuard no_grad;   // ... and no graph is recorded
    test_acc = accuracy(net->forward(x_test), y_test);
  }  // back to the previous modes here
  std::printf("test accuracy %.3f (training mode restored: %s)\n", test_acc, net->is_training() ? "yes" : "no");
  // [/eval]

  // [hooks]
  // Read the BatchNorm output of every forward without changing the graph.
  std::vector<double> bn_means;
  xg::nn::HookHandle handle =
      net->bn1->register_forward_hook([&](xg::nn::Module& module, const xg::Tensor& input, const xg::Tensor& output) {
        bn_means.push_back(output.mean().item());  // e.g. for percentiles over training
      });
  net->forward(x_test);
  handle.remove();       // no more calls after this
  net->forward(x_test);  // not recorded
  std::printf("hook saw %zu forward(s); mean BN output %.2e\n", bn_means.size(), bn_means.at(0));
  // [/hooks]

  // [save_load]
  const std::string path = out_dir + "/blobs.npz";
  xg::nn::save(*net, path);  // one .npz: np.load(path)["bn1.running_mean"] in numpy

  auto restored = std::make_shared<BlobNet>(16);
  xg::nn::load(*restored, path);  // strict: every key and shape must match
  restored->eval();
  net->eval();
  const double diff = (restored->forward(x_test) - net->forward(x_test)).abs().max().item();
  std::printf("saved %zu tensors to %s; reloaded model differs by %.1e\n", net->state_dict().size(), path.c_str(),
              diff);

  try {
    auto wrong = std::make_shared<BlobNet>(8);  // other hidden size: shape mismatches are named
    xg::nn::load(*wrong, path);
  } catch (const xg::Error& e) {
    std::printf("error: %s\n", e.what());
  }
  // [/save_load]

  // [bn_modes]
  // BatchNorm's statistics modes on a fresh layer (see docs/batchnorm.md for the table).
  nn::BatchNorm1d bn(nn::BatchNorm1dOptions(3).momentum(0.1));
  xg::Tensor batch = xg::randn({8, 3}) * 2.0 + 5.0;  // mean ≈ 5, std ≈ 2 per feature

  bn.forward(batch);  // training: batch statistics, running stats move 10% of the way
  std::printf("after 1 step:   running_mean[0] = %.3f, batches = %.0f\n", bn.running_mean.at({0}),
              bn.num_batches_tracked.item());

  bn.set_update_running_stats(false);  // probe: batch statistics, buffers untouched
  bn.forward(batch);
  bn.set_update_running_stats(true);
  {
    nn::NoStatsUpdateGuard probe;  // the same for every BatchNorm in this scope
    bn.forward(batch);
  }
  std::printf("after 2 probes: running_mean[0] = %.3f, batches = %.0f\n", bn.running_mean.at({0}),
              bn.num_batches_tracked.item());

  bn.freeze_statistics();  // running statistics from now on, even after a parent's train()
  bn.train();
  const xg::Tensor frozen = bn.forward(batch);
  bn.eval();
  const double same = (frozen - bn.forward(batch)).abs().max().item();
  std::printf("frozen in train() == eval(): max difference %.1e\n", same);
  // [/bn_modes]

  // [bn_functional]
  // The stateless form, with PyTorch's argument order, against the formula written out.
  const xg::Tensor images = xg::randn({4, 3, 5, 5});
  xg::Tensor running_mean = xg::zeros({3}), running_var = xg::ones({3});
  const xg::Tensor y = nn::functional::batch_norm(images, running_mean, running_var, /*weight=*/{}, /*bias=*/{},
                                                  /*training=*/true, /*exponential_average_factor=*/0.1,
                                                  /*eps=*/1e-5);
  const xg::Tensor mean = images.mean({0, 2, 3}, /*keepdim=*/true);                    // [1, 3, 1, 1]
  const xg::Tensor var = images.var({0, 2, 3}, /*unbiased=*/false, /*keepdim=*/true);  // biased: ÷ m
  const xg::Tensor by_hand = (images - mean) / (var + 1e-5).sqrt();                    // eps inside the sqrt
  const double unbiased0 = images.var({0, 2, 3}, /*unbiased=*/true).at({0});           // ÷ (m − 1), m = 100
  std::printf("functional vs formula: %.1e; running_var[0] = %.5f = 0.9 + 0.1 * %.5f\n",
              (y - by_hand).abs().max().item(), running_var.at({0}), unbiased0);
  // [/bn_functional]

  // [bn_errors]
  nn::BatchNorm1d bn_small(3);
  try {
    bn_small.forward(xg::randn({1, 3}));  // one sample in training mode
  } catch (const xg::Error& e) {
    std::printf("error: %s\n", e.what());
  }
  // [/bn_errors]
  return test_acc > 0.8 && diff == 0.0 && same == 0.0 ? 0 : 1;
}
