// The code of docs/porting-from-pytorch.md: each region is a PyTorch idiom written with xgrad's public API,
// compiled here so that the guide cannot drift from the library. Run it to see the values the guide quotes.
#include <cstdio>
#include <filesystem>
#include <string>

#include <xgrad/xgrad.h>

namespace nn = xg::nn;

int main() {
  // [tensors]
  // torch.tensor([[1., 2.], [3., 4.]]); torch.arange(4); torch.zeros(2, 3, dtype=torch.float64)
  xg::Tensor a = xg::tensor({{1, 2}, {3, 4}});
  xg::Tensor idx = xg::arange(4, xg::kInt64);  // xgrad's factories default to float32: ask for int64
  xg::Tensor z = xg::zeros({2, 3}, xg::kFloat64);
  // a[:, 1]; a.T; a.view(-1); a[a > 2]; a.argmax(dim=1); torch.where(a > 2, a, 0.)
  xg::Tensor col = a.narrow(1, 1, 1).squeeze(1);        // [2, 4]
  xg::Tensor t = a.transpose(0, 1);                     // [[1, 3], [2, 4]]
  xg::Tensor flat = a.view({-1});                       // [1, 2, 3, 4] (a copy: xgrad has no strided views)
  xg::Tensor big = xg::masked_select(a, a > 2.0);       // [3, 4]
  xg::Tensor am = a.argmax(1);                          // int64 [1, 1]
  xg::Tensor w = xg::where(a > 2.0, a, xg::scalar(0.0));  // [[0, 0], [3, 4]]
  // [/tensors]
  fmt::print("{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n", idx, z, col, t, flat, big, am, w);

  // [autograd]
  // x = torch.tensor([2.], requires_grad=True); y = x**3 + 2*x; y.backward(); x.grad  -> 3·4 + 2 = 14
  xg::Tensor x = xg::tensor({2.0}).requires_grad_();
  xg::Tensor y = (x.pow(3) + 2.0 * x).sum();
  y.backward();
  const double dydx = x.grad().item();  // 14
  {
    xg::NoGradGuard no_grad;  // with torch.no_grad():
    xg::Tensor frozen = x * 2.0;  // requires_grad false
    fmt::print("no_grad: requires_grad = {}\n", frozen.requires_grad());
  }
  // torch.autograd.grad(outputs, inputs): the gradient without touching .grad
  xg::Tensor u = xg::tensor({1.0, 2.0}).requires_grad_();
  std::vector<xg::Tensor> g = xg::autograd::grad({(u * u).sum()}, {u});  // [2, 4]
  // [/autograd]
  fmt::print("dy/dx = {}, grad = {}\n", dydx, g[0]);

  // [checkpoint]
  // torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path) and back
  xg::manual_seed(0);
  auto model = std::make_shared<nn::Sequential>(nn::Linear(4, 3), nn::ReLU(), nn::Linear(3, 2));
  xg::optim::SGD opt(model->parameters(), xg::optim::SGDOptions(0.1).momentum(0.9));
  const std::string path = (std::filesystem::temp_directory_path() / "porting_guide_ckpt.npz").string();
  xg::StateDict ckpt;
  ckpt.merge("model", model->state_dict());
  ckpt.merge("optimizer", opt.state_dict());
  xg::save_npz(path, ckpt);  // numpy reads it: np.load(path)["model.0.weight"]

  const xg::StateDict back = xg::load_npz(path);
  model->load_state_dict(back.sub("model"));
  opt.load_state_dict(back.sub("optimizer"));
  // [/checkpoint]
  fmt::print("checkpoint keys: {}\n", fmt::join(back.keys(), ", "));
  std::filesystem::remove(path);
  return 0;
}
