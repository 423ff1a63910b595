// The reverse-mode engine: record_op builds the graph during forward; backward walks it in reverse.
#include "xgrad/autograd.h"

#include <algorithm>
#include <atomic>
#include <span>
#include <unordered_map>

#include "detail.h"
#include "xgrad/ops.h"

namespace xg {

namespace {
thread_local bool g_grad_enabled = true;
thread_local int g_backward_depth = 0;  // > 0 while run_engine runs on this thread (autograd::in_backward)
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

// True if nobody but `g` holds its handle and its data, so the engine may keep it instead of copying.
bool sole_owner(const Tensor& g) { return g.impl().use_count() == 1 && g.impl()->storage.use_count() == 1; }

// grad += g, without aliasing: the first gradient stored is g itself when nobody else holds it, else a copy;
// later ones are added in place.
void accumulate_into(std::shared_ptr<TensorImpl>& slot, Tensor g) {
  if (!slot) {
    if (sole_owner(g) && !g.grad_fn() && !g.requires_grad() && !g.impl()->grad && g.impl()->hooks.empty()) {
      slot = g.impl();
      return;
    }
    slot = std::visit([](const auto& a) { return Tensor(std::decay_t<decltype(a)>(a)); }, *g.impl()->storage).impl();
    return;
  }
  dispatch(static_cast<Dtype>(slot->storage->index()), [&](auto t) {  // gradients are floating point
    using T = decltype(t);
    auto& acc = std::get<xt::xarray<T>>(*slot->storage);
    const auto& src = g.data<T>();
    auto* pa = acc.data();
    const auto* ps = src.data();
    for (std::size_t i = 0, n = acc.size(); i < n; ++i) pa[i] += ps[i];
  });
}

Tensor run_hooks(const std::vector<GradHook>& hooks, Tensor g) {
  for (const auto& h : hooks) {
    Tensor r = h(g);
    if (r.defined()) {
      if (!r.same_shape(g) || r.dtype() != g.dtype())
        fail("gradient hook returned shape {} ({}) but the gradient has shape {} ({})", shape_str(r.shape()),
             r.dtype(), shape_str(g.shape()), g.dtype());
      g = std::move(r);
    }
  }
  return g;
}

template <class Inputs>
bool any_requires_grad_impl(const Inputs& inputs) {
  if (!g_grad_enabled) return false;
  for (const auto& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

template <class Inputs>
Tensor record_impl(std::string_view name, Tensor out, const Inputs& inputs, BackwardFn&& backward) {
  std::shared_ptr<Node> node;
  // An integer or bool output (argmax, a comparison, .to(kInt64)) has no gradient: nothing is recorded and it
  // does not require grad, as in PyTorch.
  if (any_requires_grad_impl(inputs) && out.defined() && is_floating_point(out.dtype())) {
    if (!out.defined()) fail("record_op('{}'): the output tensor is undefined", name);
    for (const auto& t : inputs)
      if (t.defined() && t.impl() == out.impl())
        fail("record_op('{}'): the output must be a new tensor, not one of the inputs (that would make a cycle); "
             "return a copy, or return the input without recording",
             name);
    if (out.impl()->grad_fn)
      fail("record_op('{}'): the output was already produced by '{}'; an op must return a new tensor", name,
           out.impl()->grad_fn->name);
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
  if (!g_observers.empty()) {
    const std::vector<Tensor> in(inputs.begin(), inputs.end());
    for (auto* obs : g_observers) obs->on_forward(name, out, in, node.get());
  }
  return out;
}
}  // namespace

Node::~Node() {
  // Taking over the predecessors only this node keeps alive, and destroying them one at a time, turns the
  // recursive ~Node -> ~Edge -> ~Node ... of a long chain into a loop.
  std::vector<std::shared_ptr<Node>> doomed;
  auto adopt = [&doomed](std::vector<Edge>& edges) {
    for (auto& e : edges)
      if (e.node && e.node.use_count() == 1) doomed.push_back(std::move(e.node));
  };
  adopt(next);
  while (!doomed.empty()) {
    std::shared_ptr<Node> n = std::move(doomed.back());
    doomed.pop_back();
    adopt(n->next);
  }  // n dies here, with no sole-owned predecessor left to recurse into
}

void Node::release() {
  backward = nullptr;
  released = true;
}

bool is_grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool on) { g_grad_enabled = on; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

bool any_requires_grad(const std::vector<Tensor>& inputs) { return any_requires_grad_impl(inputs); }
bool any_requires_grad(std::initializer_list<Tensor> inputs) { return any_requires_grad_impl(inputs); }

Tensor record_op(std::string_view name, Tensor out, const std::vector<Tensor>& inputs, BackwardFn backward) {
  return record_impl(name, std::move(out), inputs, std::move(backward));
}
Tensor record_op(std::string_view name, Tensor out, std::initializer_list<Tensor> inputs, BackwardFn backward) {
  return record_impl(name, std::move(out), inputs, std::move(backward));
}

namespace autograd {

void add_observer(Observer* obs) { g_observers.push_back(obs); }
void remove_observer(Observer* obs) { std::erase(g_observers, obs); }
bool in_backward() { return g_backward_depth > 0; }

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

std::uint64_t next_run_id() {
  static std::atomic<std::uint64_t> counter{1};
  return counter.fetch_add(1, std::memory_order_relaxed);
}

// Where the engine delivers gradients: the leaves' .grad() (backward), or a table of captured tensors
// (autograd::grad), keyed by a leaf's TensorImpl or a non-leaf's Node.
using Capture = std::unordered_map<const void*, Tensor>;

void add_grad(Tensor& slot, Tensor g) { slot = slot.defined() ? add(slot, g) : std::move(g); }

// Gradients arriving at leaves during one run. They are summed per leaf first, so that a leaf used twice has
// its hooks called once, with the total (as PyTorch's AccumulateGrad does), and then added to .grad() at the end.
class LeafGrads {
 public:
  Tensor& slot(TensorImpl* leaf) {
    if (index_.empty()) {  // few leaves: a linear search beats hashing
      for (auto& [l, g] : items_)
        if (l == leaf) return g;
      if (items_.size() < 16) return items_.emplace_back(leaf, Tensor()).second;
      for (std::size_t i = 0; i < items_.size(); ++i) index_.emplace(items_[i].first, i);
    }
    auto [it, inserted] = index_.emplace(leaf, items_.size());
    if (inserted) items_.emplace_back(leaf, Tensor());
    return items_[it->second].second;
  }
  // Runs each leaf's hooks on its summed gradient and accumulates the result into .grad().
  void flush() {
    for (auto& [leaf, g] : items_) accumulate_into(leaf->grad, run_hooks(leaf->hooks, std::move(g)));
  }

 private:
  std::vector<std::pair<TensorImpl*, Tensor>> items_;
  std::unordered_map<TensorImpl*, std::size_t> index_;
};

void deliver_leaf(TensorImpl* leaf, Tensor g, Capture* capture, LeafGrads& leaves) {
  if (capture) {
    auto it = capture->find(leaf);
    if (it != capture->end()) add_grad(it->second, std::move(g));
    return;
  }
  add_grad(leaves.slot(leaf), std::move(g));
}

// The engine, in three steps:
//   1. seed each output's node with its gradient;
//   2. visit every node reachable from the outputs (breadth first, no recursion) and count, for each, how
//      many edges point at it — the consumers that still owe it a gradient;
//   3. Kahn's algorithm: run a node once all its consumers have delivered (its count reached 0), newest
//      (highest id) first among ready nodes, and hand each input's gradient on to its node or leaf.
// The per-node bookkeeping lives in the nodes' engine_* fields; `visited` lists them so they are reset at the
// end, also when a backward closure throws. Leaf gradients are summed per leaf and written at the very end.
void run_engine(std::span<const Tensor> outputs, std::span<const Tensor> grad_outputs, bool retain_graph,
                Capture* capture, std::string_view who) {
  NoGradGuard no_grad;  // backward closures compute with ops; nothing they do is recorded
  struct BackwardDepth {  // autograd::in_backward() is true until we return or throw
    BackwardDepth() { ++g_backward_depth; }
    ~BackwardDepth() { --g_backward_depth; }
  } in_backward_scope;

  const std::uint64_t run = next_run_id();
  std::vector<Node*> visited;
  struct Reset {
    std::vector<Node*>& nodes;
    ~Reset() {
      for (Node* n : nodes) {
        n->engine_run = 0;
        n->engine_grad = Tensor();
      }
    }
  } reset{visited};
  auto visit = [&](Node* n) {
    if (n->engine_run == run) return;
    n->engine_run = run;
    n->engine_deps = 0;
    n->engine_grad = Tensor();
    visited.push_back(n);
  };

  LeafGrads leaves;

  // 1. Seed the outputs.
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    Tensor g = seed_gradient(outputs[i], i < grad_outputs.size() ? grad_outputs[i] : Tensor(), who);
    if (Node* fn = outputs[i].impl()->grad_fn.get()) {
      visit(fn);
      add_grad(fn->engine_grad, std::move(g));
    } else {
      deliver_leaf(outputs[i].impl().get(), std::move(g), capture, leaves);  // backward() on a leaf: the seed
    }
  }

  // 2. Reach every node and count its incoming edges; `visited` doubles as the breadth-first queue.
  for (std::size_t k = 0; k < visited.size(); ++k)
    for (const Edge& e : visited[k]->next)
      if (e.node) {
        visit(e.node.get());
        ++e.node->engine_deps;
      }

  // 3. Run the nodes. Only the seeded nodes can start with no pending consumer.
  auto older = [](const Node* a, const Node* b) { return a->id < b->id; };  // max-heap on id: newest first
  std::vector<Node*> ready;
  for (Node* n : visited)
    if (n->engine_deps == 0) ready.push_back(n);
  std::make_heap(ready.begin(), ready.end(), older);

  std::vector<bool> needs;
  std::size_t step = 0;
  while (!ready.empty()) {
    std::pop_heap(ready.begin(), ready.end(), older);
    Node* n = ready.back();
    ready.pop_back();
    Tensor g = std::move(n->engine_grad);
    n->engine_grad = Tensor();
    if (n->released || !n->backward)
      fail("backward: trying to backward through the graph a second time (node '{}' #{}, output shape {}); its "
           "saved tensors were freed by the first backward. Pass retain_graph=true to the first backward() if you "
           "need to run backward twice",
           n->name, n->id, shape_str(n->shape));
    if (!n->hooks.empty()) g = run_hooks(n->hooks, std::move(g));
    if (capture) {
      auto it = capture->find(n);
      if (it != capture->end()) add_grad(it->second, g);
    } else if (auto out = n->output.lock(); out && out->retains_grad) {
      accumulate_into(out->grad, g);
    }

    needs.assign(n->next.size(), false);
    for (std::size_t i = 0; i < n->next.size(); ++i) needs[i] = n->next[i].active();
    std::vector<Tensor> grads = n->backward(g, needs);
    if (grads.size() != n->next.size())
      fail("backward of '{}' returned {} gradients for {} inputs", n->name, grads.size(), n->next.size());
    for (auto* obs : g_observers) obs->on_backward(*n, step, g, grads);
    ++step;
    g = Tensor();  // let a gradient nobody else holds be handed on without a copy

    for (std::size_t i = 0; i < n->next.size(); ++i) {
      const Edge& e = n->next[i];
      if (!e.active()) continue;
      Tensor& gi = grads[i];
      if (!gi.defined())
        fail("backward of '{}' returned no gradient for input {} (shape {}) which requires one", n->name, i,
             shape_str(n->input_shapes[i]));
      const auto gs = gi.sizes();
      if (!std::equal(gs.begin(), gs.end(), n->input_shapes[i].begin(), n->input_shapes[i].end()))
        fail("backward of '{}' returned a gradient of shape {} for input {} of shape {}", n->name,
             shape_str(gi.shape()), i, shape_str(n->input_shapes[i]));
      const Dtype want = e.node ? e.node->dtype : static_cast<Dtype>(e.leaf->storage->index());
      if (gi.dtype() != want)
        fail("backward of '{}' returned a {} gradient for input {} which is {}", n->name, gi.dtype(), i, want);
      if (e.node) {
        add_grad(e.node->engine_grad, std::move(gi));
        if (--e.node->engine_deps == 0) {
          ready.push_back(e.node.get());
          std::push_heap(ready.begin(), ready.end(), older);
        }
      } else {
        deliver_leaf(e.leaf.get(), std::move(gi), capture, leaves);
      }
    }
    if (!retain_graph) n->release();
  }
  leaves.flush();
}

}  // namespace

}  // namespace autograd

void detail::backward_one(const Tensor& output, const Tensor& gradient, bool retain_graph) {
  autograd::run_engine(std::span<const Tensor>(&output, 1), std::span<const Tensor>(&gradient, 1), retain_graph,
                       nullptr, "backward");
}

namespace autograd {

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
  // A leaf's hooks see its gradient here as in backward() (non-leaf hooks already ran in the engine).
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    TensorImpl* leaf = inputs[i].grad_fn() ? nullptr : inputs[i].impl().get();
    const bool first = std::find(keys.begin(), keys.begin() + i, keys[i]) == keys.begin() + i;  // once per leaf
    if (leaf && first && !leaf->hooks.empty())
      if (Tensor& g = capture[leaf]; g.defined()) g = run_hooks(leaf->hooks, std::move(g));
  }
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
