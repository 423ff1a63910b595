// xg::dist's communication layer: MPI calls behind the functions of xgrad/dist.h, each checked (MPI_ERRORS_RETURN)
// and turned into an xg::Error naming the call.
#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "xgrad/autograd.h"
#include "xgrad/dist.h"

namespace xg::dist {

namespace {

void check(int rc, const char* fn, const char* mpi_call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("xg::dist::{}: {} failed: {}", fn, mpi_call, std::string(msg, static_cast<std::size_t>(len)));
}

bool finalized() {
  int f = 0;
  MPI_Finalized(&f);
  return f != 0;
}

// The collectives need MPI up; without it the process is a world of one and they are no-ops.
bool active(const char* fn) {
  if (finalized()) fail("xg::dist::{}: called after MPI_Finalize (the Session has ended)", fn);
  return is_initialized();
}

int count_of(std::size_t n, const char* fn) {
  if (n > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    fail("xg::dist::{}: {} values is more than one MPI call can take (2^31 - 1); split the tensor", fn, n);
  return static_cast<int>(n);
}

// Same size and dtype on every rank, checked with one small all-reduce (max of (v, -v) gives max and min).
void check_same(const char* fn, const Tensor& t) {
  if (!t.defined()) fail("xg::dist::{}: the tensor is undefined on rank {}", fn, rank());
  std::int64_t v[4] = {std::int64_t(t.numel()), -std::int64_t(t.numel()), std::int64_t(t.dtype()),
                       -std::int64_t(t.dtype())};
  check(MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD), fn, "MPI_Allreduce");
  if (v[0] != -v[1] || v[2] != -v[3])
    fail("xg::dist::{}: the ranks disagree on the tensor (rank {} has {} values of {}; over all ranks the count "
         "ranges {}..{}): every rank must pass the same shape and dtype",
         fn, rank(), t.numel(), t.dtype(), -v[1], v[0]);
}

template <class T>
MPI_Datatype mpi_type() {
  return sizeof(T) == 4 ? MPI_FLOAT : MPI_DOUBLE;
}

template <class T>
void all_reduce_raw(T* data, std::size_t n, ReduceOp op) {
  if (!active("all_reduce") || n == 0) return;
  const int P = world_size();
  if (P > 1)
    check(MPI_Allreduce(MPI_IN_PLACE, data, count_of(n, "all_reduce"), mpi_type<T>(), MPI_SUM, MPI_COMM_WORLD),
          "all_reduce", "MPI_Allreduce");
  if (op == ReduceOp::Mean && P > 1)
    for (std::size_t i = 0; i < n; ++i) data[i] /= static_cast<T>(P);
}

template <class T>
void broadcast_raw(T* data, std::size_t n, int root) {
  if (!active("broadcast") || n == 0) return;
  if (root < 0 || root >= world_size())
    fail("xg::dist::broadcast: root {} is not a rank (world_size {})", root, world_size());
  check(MPI_Bcast(data, count_of(n, "broadcast"), mpi_type<T>(), root, MPI_COMM_WORLD), "broadcast", "MPI_Bcast");
}

}  // namespace

// ---- set-up --------------------------------------------------------------------------------------------------
void init(int* argc, char*** argv) {
  if (is_initialized()) return;
  if (finalized()) fail("xg::dist::init: MPI was already finalized in this process; it cannot start again");
  int provided = 0;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "init", "MPI_Init_thread");
  // Errors come back as return codes (turned into xg::Error) instead of MPI's default abort.
  check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "init", "MPI_Comm_set_errhandler");
}

void finalize() {
  if (!is_initialized()) return;
  check(MPI_Finalize(), "finalize", "MPI_Finalize");
}

Session::Session(int& argc, char**& argv) {
  owns_ = !is_initialized();
  init(&argc, &argv);
}
Session::Session() {
  owns_ = !is_initialized();
  init();
}
Session::~Session() {
  if (owns_ && is_initialized()) MPI_Finalize();
}

bool is_initialized() {
  int i = 0;
  MPI_Initialized(&i);
  return i != 0 && !finalized();
}

int rank() {
  if (!is_initialized()) return 0;
  int r = 0;
  check(MPI_Comm_rank(MPI_COMM_WORLD, &r), "rank", "MPI_Comm_rank");
  return r;
}

int world_size() {
  if (!is_initialized()) return 1;
  int n = 1;
  check(MPI_Comm_size(MPI_COMM_WORLD, &n), "world_size", "MPI_Comm_size");
  return n;
}

std::string processor_name() {
  if (!is_initialized()) return "localhost";
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  check(MPI_Get_processor_name(name, &len), "processor_name", "MPI_Get_processor_name");
  return std::string(name, static_cast<std::size_t>(len));
}

// ---- collectives -------------------------------------------------------------------------------------------
void all_reduce(float* data, std::size_t n, ReduceOp op) { all_reduce_raw(data, n, op); }
void all_reduce(double* data, std::size_t n, ReduceOp op) { all_reduce_raw(data, n, op); }

void all_reduce(Tensor& t, ReduceOp op) {
  if (!active("all_reduce")) return;
  check_same("all_reduce", t);
  dispatch(t.dtype(), [&](auto tag) { all_reduce_raw(t.data_ptr<decltype(tag)>(), t.numel(), op); });
}

void broadcast(float* data, std::size_t n, int root) { broadcast_raw(data, n, root); }
void broadcast(double* data, std::size_t n, int root) { broadcast_raw(data, n, root); }

void broadcast(Tensor& t, int root) {
  if (!active("broadcast")) return;
  if (root < 0 || root >= world_size())
    fail("xg::dist::broadcast: root {} is not a rank (world_size {})", root, world_size());
  check_same("broadcast", t);
  dispatch(t.dtype(), [&](auto tag) { broadcast_raw(t.data_ptr<decltype(tag)>(), t.numel(), root); });
}

void broadcast(std::vector<char>& bytes, int root) {
  if (!active("broadcast")) return;
  std::uint64_t n = bytes.size();
  check(MPI_Bcast(&n, 1, MPI_UINT64_T, root, MPI_COMM_WORLD), "broadcast", "MPI_Bcast");
  bytes.resize(n);
  if (n) check(MPI_Bcast(bytes.data(), count_of(n, "broadcast"), MPI_CHAR, root, MPI_COMM_WORLD), "broadcast", "MPI_Bcast");
}

void all_gather(const double* in, std::size_t n, double* out) {
  if (!active("all_gather") || world_size() == 1) {
    std::copy(in, in + n, out);
    return;
  }
  const int c = count_of(n, "all_gather");
  check(MPI_Allgather(in, c, MPI_DOUBLE, out, c, MPI_DOUBLE, MPI_COMM_WORLD), "all_gather", "MPI_Allgather");
}

std::vector<std::string> all_gather(const std::string& s) {
  if (!active("all_gather") || world_size() == 1) return {s};
  const int P = world_size();
  int len = count_of(s.size(), "all_gather");
  std::vector<int> lens(P), offs(P);
  check(MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD), "all_gather", "MPI_Allgather");
  std::size_t total = 0;
  for (int r = 0; r < P; ++r) {
    offs[r] = count_of(total, "all_gather");
    total += static_cast<std::size_t>(lens[r]);
  }
  std::string all(total, '\0');
  check(MPI_Allgatherv(s.data(), len, MPI_CHAR, all.data(), lens.data(), offs.data(), MPI_CHAR, MPI_COMM_WORLD),
        "all_gather", "MPI_Allgatherv");
  std::vector<std::string> out;
  for (int r = 0; r < P; ++r) out.push_back(all.substr(offs[r], lens[r]));
  return out;
}

void barrier() {
  if (!active("barrier")) return;
  check(MPI_Barrier(MPI_COMM_WORLD), "barrier", "MPI_Barrier");
}

void abort(const std::string& message, int code) {
  std::fprintf(stderr, "xgrad (rank %d of %d): %s\n", rank(), world_size(), message.c_str());
  std::fflush(stderr);
  if (is_initialized() && world_size() > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

// ---- differentiable all-reduce -----------------------------------------------------------------------------
namespace functional {
Tensor all_reduce(const Tensor& x, ReduceOp op) {
  if (!x.defined()) fail("xg::dist::functional::all_reduce: the input is undefined");
  Tensor y = x.detach().clone();
  dist::all_reduce(y, op);
  return record_op("dist_all_reduce", y, {x}, [op](const Tensor& g, const std::vector<bool>&) {
    // y_s = Σ_r x_r on every rank s, so dL/dx_r = Σ_s dL/dy_s: the gradient's all-reduce (÷P for the mean).
    Tensor gx = g.detach().clone();
    dist::all_reduce(gx, op);
    return std::vector<Tensor>{gx};
  });
}
}  // namespace functional

}  // namespace xg::dist
