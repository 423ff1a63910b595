// A complete training loop on an MNIST-format dataset: load_mnist_folder, DataLoader, a Sequential MLP,
// CrossEntropyLoss on the int64 targets, SGD, and accuracy on the test set. docs/getting-started.md walks
// through it; docs/porting-from-pytorch.md shows it beside its PyTorch equivalent.
//
//   build/bin/mnist_training [data folder] [--sigmoid]
//
// The folder holds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (default /usr/share/datasets/fashion-mnist).
// --sigmoid trains the deep sigmoid network of Ioffe & Szegedy's Figure 1 (three hidden layers of 100) at
// PyTorch's default init and lr 0.5 instead of the ReLU one: it stays at chance for the whole run.
#include <cstdio>
#include <string>

#include <xgrad/xgrad.h>

// [training]
namespace nn = xg::nn;

// One pass over the test set without recording a graph: the fraction of correct arg-maxes.
double evaluate(nn::Module& net, const xg::data::Dataset& test) {
  nn::EvalGuard eval(net);  // eval mode (BatchNorm would use its running statistics), restored at scope exit
  xg::NoGradGuard no_grad;
  xg::data::DataLoader loader(test, xg::data::DataLoaderOptions(1000).shuffle(false));
  double correct = 0;
  for (const auto& batch : loader)
    correct += nn::functional::accuracy(net.forward(batch.images), batch.targets).item() * double(batch.size());
  return correct / double(test.size());
}

int main(int argc, char** argv) {
  const std::string dir = argc > 1 && argv[1][0] != '-' ? argv[1] : "/usr/share/datasets/fashion-mnist";
  const bool sigmoid = argc > 1 && std::string(argv[argc - 1]) == "--sigmoid";
  try {
    xg::manual_seed(0);  // the weights' initial values; the loader has its own seed
    const xg::data::Dataset train = xg::data::load_mnist_folder(dir, /*train=*/true);
    const xg::data::Dataset test = xg::data::load_mnist_folder(dir, /*train=*/false);

    nn::Sequential net;
    net.push_back(nn::Flatten());  // [B, 1, 28, 28] -> [B, 784]
    if (sigmoid) {
      net.push_back(nn::Linear(784, 100));
      net.push_back(nn::Sigmoid());
      net.push_back(nn::Linear(100, 100));
      net.push_back(nn::Sigmoid());
      net.push_back(nn::Linear(100, 100));
      net.push_back(nn::Sigmoid());
      net.push_back(nn::Linear(100, 10));
    } else {
      net.push_back(nn::Linear(784, 100));
      net.push_back(nn::ReLU());
      net.push_back(nn::Linear(100, 10));
    }
    nn::CrossEntropyLoss criterion;
    xg::optim::SGD opt(net.parameters(), xg::optim::SGDOptions(sigmoid ? 0.5 : 0.1));
    xg::data::DataLoader loader(train, xg::data::DataLoaderOptions(60).shuffle(true).drop_last(true).seed(1));

    for (int epoch = 1; epoch <= 2; ++epoch) {
      double loss_sum = 0, window = 0;
      std::size_t steps = 0;
      for (const auto& batch : loader) {  // each range-for is one epoch over a fresh permutation
        xg::Tensor loss = criterion.forward(net.forward(batch.images), batch.targets);  // int64 targets
        opt.zero_grad();
        loss.backward();
        opt.step();
        loss_sum += loss.item();
        window += loss.item();
        if (++steps % 250 == 0 && epoch == 1) {  // the first epoch's progress, as the mean of 250 steps
          fmt::print("  step {:4d}  train loss {:.4f}\n", steps, window / 250);
          window = 0;
        }
      }
      fmt::print("epoch {}  train loss {:.4f}  test accuracy {:.4f}\n", epoch, loss_sum / double(steps),
                 evaluate(net, test));
    }
  } catch (const xg::Error& e) {
    fmt::print(stderr, "mnist_training: {}\n", e.what());
    return 1;
  }
  return 0;
}
// [/training]
