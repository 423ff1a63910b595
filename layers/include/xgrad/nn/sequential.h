// xgrad/nn/sequential.h — Sequential: children run one after another.
//
//   auto mlp = std::make_shared<xg::nn::Sequential>(
//       xg::nn::Linear(784, 100), xg::nn::Sigmoid(), xg::nn::Linear(100, 10));
//   mlp->push_back(std::make_shared<xg::nn::Dropout>(0.1));   // shared_ptrs work too
//   auto y = mlp->forward(x);                 // names: "0.weight", "0.bias", "2.weight", ...
#pragma once

#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "xgrad/nn/module.h"

namespace xg::nn {

class Sequential : public Module {
 public:
  Sequential() = default;
  /// Takes modules by value (moved into shared_ptrs) or as shared_ptrs; each is named by its index.
  template <class... Ms>
    requires(sizeof...(Ms) > 0)
  explicit Sequential(Ms&&... modules) {
    (push_back(std::forward<Ms>(modules)), ...);
  }

  /// Appends a module under the name "<index>" (or `name`).
  template <class M>
  void push_back(std::shared_ptr<M> module) {
    push_back(std::to_string(size()), std::move(module));
  }
  template <class M>
  void push_back(const std::string& name, std::shared_ptr<M> module) {
    static_assert(std::is_base_of_v<Module, M>, "Sequential holds xg::nn::Module subclasses");
    items_.push_back(register_module(name, std::move(module)));
  }
  /// Appends a module given by value (an rvalue: `push_back(Linear(4, 2))`).
  template <class M>
    requires(std::is_base_of_v<Module, M> && !std::is_reference_v<M>)
  void push_back(M&& module) {
    push_back(std::make_shared<M>(std::move(module)));
  }

  /// Runs every child's forward(Tensor) in order (then this module's hooks).
  Tensor forward(const Tensor& input) override;

  std::size_t size() const { return items_.size(); }
  bool is_empty() const { return items_.empty(); }
  /// The i-th module (error if out of range).
  const std::shared_ptr<Module>& operator[](std::size_t i) const { return ptr(i); }
  const std::shared_ptr<Module>& ptr(std::size_t i) const;
  /// The i-th module as type M (error if out of range or if it is another type).
  template <class M>
  std::shared_ptr<M> at(std::size_t i) const {
    auto p = std::dynamic_pointer_cast<M>(ptr(i));
    if (!p) wrong_type(i);
    return p;
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  [[noreturn]] void wrong_type(std::size_t i) const;
  std::vector<std::shared_ptr<Module>> items_;
};

}  // namespace xg::nn
