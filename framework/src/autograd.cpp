// The reverse-mode engine: record_op builds the graph during forward; backward walks it in reverse.
#include "xgrad/autograd.h"

#include <algorithm>
#include <atomic>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "xgrad/ops.h"

namespace xg {

namespace {
thread_local bool g_grad_enabled = true;
std::vector<autograd::Observer*> g_observers;

std::uint64_t next_node_id() {
  static std::atomic<std::uint64_t> counter{1};
  return counter.fetch_add(1, std::memory_order_relaxed);
}

Edge edge_to(const Tensor& t) {
  Edge e;
  if (!t.defined() || !t.requires_grad()) return e;
  if (t.grad_fn())
    e.node = t.grad_fn();
  else
    e.leaf = t.impl();
  return e;
}

// grad += g, without aliasing: the first gradient stored is a copy, later ones are added in place.
void accumulate_into(std::shared_ptr<TensorImpl>& slot, const Tensor& g) {
  NoGradGuard no_grad;
  if (!slot) {
    slot = std::make_shared<TensorImpl>(*g.impl());  // a fresh handle with its own copy of the data
    slot->storage = std::make_shared<Storage>(*g.impl()->storage);
    slot->grad_fn = nullptr;
    slot->requires_grad = false;
    slot->hooks.clear();
    return;
  }
  std::visit(
      [&](auto& acc) {
        using A = std::decay_t<decltype(acc)>;
        const auto& src = g.data<typename A::value_type>();
        auto* pa = acc.data();
        const auto* ps = src.data();
        for (std::size_t i = 0, n = acc.size(); i < n; ++i) pa[i] += ps[i];
      },
      *slot->storage);
}

Tensor run_hooks(const std::vector<GradHook>& hooks, Tensor g) {
  for (const auto& h : hooks) {
    Tensor r = h(g);
    if (r.defined()) {
      if (r.shape() != g.shape())
        fail("gradient hook returned shape {} but the gradient has shape {}", shape_str(r.shape()),
             shape_str(g.shape()));
      g = r;
    }
  }
  return g;
}
}  // namespace

void Node::release() {
  backward = nullptr;
  released = true;
}

bool is_grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const auto& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensor record_op(std::string_view name, Tensor out, const std::vector<Tensor>& inputs, BackwardFn backward) {
  std::shared_ptr<Node> node;
  if (any_requires_grad(inputs)) {
    node = std::make_shared<Node>();
    node->name = std::string(name);
    node->id = next_node_id();
    node->next.reserve(inputs.size());
    node->input_shapes.reserve(inputs.size());
    for (const auto& t : inputs) {
      node->next.push_back(edge_to(t));
      node->input_shapes.push_back(t.defined() ? t.shape() : Shape{});
    }
    node->shape = out.shape();
    node->dtype = out.dtype();
    node->backward = std::move(backward);
    node->output = out.impl();
    out.impl()->grad_fn = node;
    out.impl()->requires_grad = true;
  }
  for (auto* obs : g_observers) obs->on_forward(name, out, inputs, node.get());
  return out;
}

namespace autograd {

void add_observer(Observer* obs) { g_observers.push_back(obs); }
void remove_observer(Observer* obs) { std::erase(g_observers, obs); }

namespace {

// The seed gradient for one output: `given`, or ones for a one-element output.
Tensor seed_gradient(const Tensor& out, const Tensor& given, std::string_view who) {
  if (!out.defined()) fail("{}: an output tensor is undefined", who);
  if (!out.requires_grad())
    fail("{}: the tensor (shape {}) does not require grad and has no grad_fn — nothing to differentiate. "
         "Did you forget requires_grad_() on an input, or compute it under NoGradGuard?",
         who, shape_str(out.shape()));
  if (given.defined()) {
    if (given.shape() != out.shape())
      fail("{}: the gradient has shape {} but the output has shape {}", who, shape_str(given.shape()),
           shape_str(out.shape()));
    if (given.dtype() != out.dtype())
      fail("{}: the gradient is {} but the output is {}", who, given.dtype(), out.dtype());
    return given;
  }
  if (out.numel() != 1)
    fail("{}: the output has shape {} ({} elements); backward() without a gradient needs a scalar. "
         "Reduce it first (e.g. .sum() or .mean()) or pass a gradient of shape {}",
         who, shape_str(out.shape()), out.numel(), shape_str(out.shape()));
  return ones_like(out);
}

// The engine. Gradients for non-leaf tensors are summed per node; leaf gradients either accumulate into
// .grad() (capture == nullptr) or are collected in `capture` (autograd::grad).
void run_engine(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs, bool retain_graph,
                std::unordered_map<const void*, Tensor>* capture, std::string_view who) {
  NoGradGuard no_grad;  // backward closures compute with ops; nothing they do is recorded
  std::unordered_map<Node*, Tensor> pending;  // summed gradient of each node's output so far
  std::vector<std::pair<std::shared_ptr<TensorImpl>, Tensor>> leaf_grads;

  auto add_grad = [](Tensor& slot, const Tensor& g) { slot = slot.defined() ? add(slot, g) : g; };

  auto deliver_leaf = [&](const std::shared_ptr<TensorImpl>& leaf, const Tensor& g) {
    if (capture) {
      auto it = capture->find(leaf.get());
      if (it != capture->end()) add_grad(it->second, g);
      return;
    }
    accumulate_into(leaf->grad, run_hooks(leaf->hooks, g));
  };

  // 1. Seed the outputs.
  std::vector<Node*> roots;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    Tensor g = seed_gradient(outputs[i], i < grad_outputs.size() ? grad_outputs[i] : Tensor(), who);
    if (auto fn = outputs[i].grad_fn()) {
      add_grad(pending[fn.get()], g);
      roots.push_back(fn.get());
    } else {
      deliver_leaf(outputs[i].impl(), g);  // backward() on a leaf: its gradient is the seed
    }
  }

  // 2. Count, for every reachable node, how many edges point at it (iterative DFS: no recursion).
  std::unordered_map<Node*, std::size_t> deps;
  {
    std::vector<Node*> stack(roots.begin(), roots.end());
    std::unordered_set<Node*> seen(roots.begin(), roots.end());
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      for (const auto& e : n->next) {
        if (!e.node) continue;
        ++deps[e.node.get()];
        if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
      }
    }
  }

  // 3. Kahn's algorithm: a node runs once every consumer has delivered its gradient. Among ready nodes the
  //    newest (highest id) goes first — the reverse of the forward order.
  auto newer = [](Node* a, Node* b) { return a->id < b->id; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(newer)> ready(newer);
  {
    std::unordered_set<Node*> queued;
    for (Node* r : roots)
      if (deps[r] == 0 && queued.insert(r).second) ready.push(r);
  }

  std::size_t step = 0;
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    Tensor g = std::move(pending[n]);
    pending.erase(n);
    if (n->released || !n->backward)
      fail("backward: trying to backward through the graph a second time (node '{}' #{}, output shape {}); its "
           "saved tensors were freed by the first backward. Pass retain_graph=true to the first backward() if you "
           "need to run backward twice",
           n->name, n->id, shape_str(n->shape));
    g = run_hooks(n->hooks, g);
    if (capture) {
      auto it = capture->find(n);
      if (it != capture->end()) add_grad(it->second, g);
    } else if (auto out = n->output.lock(); out && out->retains_grad) {
      accumulate_into(out->grad, g);
    }

    std::vector<bool> needs(n->next.size());
    for (std::size_t i = 0; i < n->next.size(); ++i) needs[i] = n->next[i].active();
    std::vector<Tensor> grads = n->backward(g, needs);
    if (grads.size() != n->next.size())
      fail("backward of '{}' returned {} gradients for {} inputs", n->name, grads.size(), n->next.size());
    for (auto* obs : g_observers) obs->on_backward(*n, step, g, grads);
    ++step;

    for (std::size_t i = 0; i < n->next.size(); ++i) {
      const Edge& e = n->next[i];
      if (!e.active()) continue;
      const Tensor& gi = grads[i];
      if (!gi.defined())
        fail("backward of '{}' returned no gradient for input {} (shape {}) which requires one", n->name, i,
             shape_str(n->input_shapes[i]));
      if (gi.shape() != n->input_shapes[i])
        fail("backward of '{}' returned a gradient of shape {} for input {} of shape {}", n->name,
             shape_str(gi.shape()), i, shape_str(n->input_shapes[i]));
      if (e.node) {
        add_grad(pending[e.node.get()], gi);
        if (--deps[e.node.get()] == 0) ready.push(e.node.get());
      } else {
        deliver_leaf(e.leaf, gi);
      }
    }
    if (!retain_graph) n->release();
  }
}

}  // namespace

void backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs, bool retain_graph) {
  if (!grad_outputs.empty() && grad_outputs.size() != outputs.size())
    fail("autograd::backward: {} outputs but {} gradients", outputs.size(), grad_outputs.size());
  run_engine(outputs, grad_outputs, retain_graph, nullptr, "backward");
}

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs, bool retain_graph, bool allow_unused) {
  if (!grad_outputs.empty() && grad_outputs.size() != outputs.size())
    fail("autograd::grad: {} outputs but {} gradients", outputs.size(), grad_outputs.size());
  std::unordered_map<const void*, Tensor> capture;
  std::vector<const void*> keys;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad())
      fail("autograd::grad: input {} does not require grad; mark it with requires_grad_()", i);
    const void* key = x.grad_fn() ? static_cast<const void*>(x.grad_fn().get()) : x.impl().get();
    keys.push_back(key);
    capture.emplace(key, Tensor());
  }
  run_engine(outputs, grad_outputs, retain_graph, &capture, "autograd::grad");
  std::vector<Tensor> result;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    Tensor g = capture[keys[i]];
    if (!g.defined() && !allow_unused)
      fail("autograd::grad: input {} (shape {}) was not used to compute the outputs; pass allow_unused=true "
           "to get an undefined gradient instead",
           i, shape_str(inputs[i].shape()));
    result.push_back(g);
  }
  return result;
}

}  // namespace autograd
}  // namespace xg
