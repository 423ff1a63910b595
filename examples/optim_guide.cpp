// optim_guide — the code shown in docs/optim.md: a small two-layer network trained with AdamW (parameter groups,
// no weight decay on biases), a linear warm-up followed by cosine annealing, gradient clipping, the NaN check, and
// a checkpoint that resumes training exactly. Prints the loss per epoch (it falls).
//
//   build-optim/bin/optim_guide
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "xgrad/xgrad.h"

using namespace xg;

namespace {

// Two interleaved half-moons in 2-d, 256 points, labels 0/1 as a [256, 1] column.
struct Data {
  Tensor x, y;
};
Data make_moons(Generator& gen) {
  const std::size_t n = 256;
  std::vector<double> xs(n * 2), ys(n);
  for (std::size_t i = 0; i < n; ++i) {
    const bool upper = i % 2 == 0;
    const double t = 3.14159265358979 * gen.uniform();
    xs[2 * i] = upper ? std::cos(t) : 1 - std::cos(t);
    xs[2 * i + 1] = upper ? std::sin(t) : 0.5 - std::sin(t);
    xs[2 * i] += 0.1 * gen.normal();
    xs[2 * i + 1] += 0.1 * gen.normal();
    ys[i] = upper ? 1.0 : 0.0;
  }
  return {from_vector(xs, {n, 2}), from_vector(ys, {n, 1})};
}

// A 2 -> 32 -> 1 network as plain tensors (the layers library wraps the same thing in modules).
struct Net {
  Tensor w1, b1, w2, b2;
  explicit Net(Generator& gen)
      : w1(normal({2, 32}, 0.0, 0.7, kFloat32, &gen).requires_grad_()),
        b1(zeros({32}, kFloat32, true)),
        w2(normal({32, 1}, 0.0, 0.2, kFloat32, &gen).requires_grad_()),
        b2(zeros({1}, kFloat32, true)) {}
  Tensor forward(const Tensor& x) const { return matmul(tanh(matmul(x, w1) + b1), w2) + b2; }  // logits
};

// Mean binary cross-entropy on logits z: log(1 + e^z) - y·z.
Tensor bce_with_logits(const Tensor& z, const Tensor& y) { return (log(1.0 + exp(z)) - y * z).mean(); }

// [epoch]
// One pass over the data in mini-batches of 64; returns the mean loss.
double train_epoch(const Net& net, xg::optim::Optimizer& opt, const Data& data) {
  double total = 0;
  for (std::size_t start = 0; start < 256; start += 64) {
    const Tensor x = data.x.narrow(0, start, 64), y = data.y.narrow(0, start, 64);
    opt.zero_grad();  // gradients from the last step -> none
    Tensor loss = bce_with_logits(net.forward(x), y);
    loss.backward();  // fills .grad() of w1, b1, w2, b2
    xg::optim::clip_grad_norm_(opt.parameters(), /*max_norm=*/1.0);
    opt.step();  // one in-place update per parameter
    total += loss.item() / 4;
  }
  return total;
}
// [/epoch]

}  // namespace

int main() {
  Generator gen(0);
  const Data data = make_moons(gen);
  Net net(gen);

  // [optimizer]
  // Weights get weight decay; biases get their own group without it.
  using namespace xg::optim;
  AdamW opt({ParamGroup({net.w1, net.w2}), ParamGroup({net.b1, net.b2}, AdamWOptions(0.05).weight_decay(0.0))},
            AdamWOptions(0.05).weight_decay(1e-2));
  opt.set_check_finite(true, {"w1", "w2", "b1", "b2"});  // a NaN gradient throws instead of reaching the weights
  // [/optimizer]

  // [schedule]
  // 5 epochs of linear warm-up from lr/10, then cosine annealing to 0 over the remaining 35.
  const int epochs = 40;
  auto warmup = std::make_shared<LinearLR>(opt, /*start_factor=*/0.1, /*end_factor=*/1.0, /*total_iters=*/5);
  auto cosine = std::make_shared<CosineAnnealingLR>(opt, /*T_max=*/epochs - 5);
  SequentialLR sched(opt, {warmup, cosine}, /*milestones=*/{5});
  // [/schedule]

  const std::string ckpt_path = (std::filesystem::temp_directory_path() / "optim_guide.npz").string();
  std::vector<double> losses;

  // [loop]
  for (int epoch = 0; epoch < epochs / 2; ++epoch) {
    losses.push_back(train_epoch(net, opt, data));
    sched.step();  // once per epoch, after the optimizer steps
    if (epoch % 5 == 0) std::printf("epoch %2d  loss %.4f  lr %.5f\n", epoch, losses.back(), sched.get_last_lr()[0]);
  }
  // [/loop]

  // [checkpoint]
  // Model, optimizer and schedule go into one .npz file (numpy can read it).
  StateDict ckpt;
  StateDict model;
  model.insert("w1", net.w1);
  model.insert("b1", net.b1);
  model.insert("w2", net.w2);
  model.insert("b2", net.b2);
  ckpt.merge("model", model);
  ckpt.merge("optimizer", opt.state_dict());
  ckpt.merge("scheduler", sched.state_dict());
  save_npz(ckpt_path, ckpt);
  // [/checkpoint]

  for (int epoch = epochs / 2; epoch < epochs; ++epoch) {
    losses.push_back(train_epoch(net, opt, data));
    sched.step();
    if (epoch % 5 == 0 || epoch == epochs - 1)
      std::printf("epoch %2d  loss %.4f  lr %.5f\n", epoch, losses.back(), sched.get_last_lr()[0]);
  }

  // [resume]
  // A fresh network, optimizer and schedule built the same way continue from the checkpoint.
  Generator other(1);
  Net net2(other);
  AdamW opt2({ParamGroup({net2.w1, net2.w2}), ParamGroup({net2.b1, net2.b2}, AdamWOptions(0.05).weight_decay(0.0))},
             AdamWOptions(0.05).weight_decay(1e-2));
  auto warmup2 = std::make_shared<LinearLR>(opt2, 0.1, 1.0, 5);
  auto cosine2 = std::make_shared<CosineAnnealingLR>(opt2, epochs - 5);
  SequentialLR sched2(opt2, {warmup2, cosine2}, {5});

  const StateDict saved_ckpt = load_npz(ckpt_path);
  for (auto [name, param] : {std::pair{"w1", net2.w1}, {"b1", net2.b1}, {"w2", net2.w2}, {"b2", net2.b2}}) {
    const Tensor saved = saved_ckpt.at(std::string("model.") + name);
    std::memcpy(param.data_ptr<float>(), saved.data_ptr<float>(), param.numel() * sizeof(float));
  }
  opt2.load_state_dict(saved_ckpt.sub("optimizer"));
  sched2.load_state_dict(saved_ckpt.sub("scheduler"));
  // [/resume]
  std::filesystem::remove(ckpt_path);

  // Train the resumed copy for the remaining 20 epochs: it must end where the uninterrupted run ended.
  for (int epoch = epochs / 2; epoch < epochs; ++epoch) {
    train_epoch(net2, opt2, data);
    sched2.step();
  }
  bool same = true;
  for (auto [a, b] : {std::pair{net.w1, net2.w1}, {net.b1, net2.b1}, {net.w2, net2.w2}, {net.b2, net2.b2}})
    same = same && std::memcmp(a.data_ptr<float>(), b.data_ptr<float>(), a.numel() * sizeof(float)) == 0;
  std::printf("loss %.4f -> %.4f; resumed run identical: %s\n", losses.front(), losses.back(), same ? "yes" : "no");
  return losses.back() < losses.front() && same ? 0 : 1;
}
