// xgrad/dist.h — xg::dist: data-parallel and multi-process work on MPI (Debian's OpenMPI), the names of
// torch.distributed.
//
//   int main(int argc, char** argv) {
//     xg::dist::Session mpi(argc, argv);            // MPI_Init; MPI_Finalize when it goes out of scope
//     xg::Tensor g = ...;
//     xg::dist::all_reduce(g, xg::dist::ReduceOp::Mean);   // in place, the same values on every rank
//     if (xg::dist::rank() == 0) ...
//   }
//   mpirun -np 2 ./program
//
// Without a Session (or when MPI was never initialised) a program is one process: rank() 0, world_size() 1, and
// every collective leaves its data as it is — so code written for P ranks runs unchanged on one.
//
// Errors: MPI's error handler on MPI_COMM_WORLD is set to MPI_ERRORS_RETURN, and every failing call becomes an
// xg::Error naming the call and MPI's message ("xg::dist::all_reduce: MPI_Allreduce failed: MPI_ERR_TRUNCATE ...").
// A rank that dies is reported by mpirun, which then ends the other ranks (docs/distributed.md).
//
// Collectives are blocking and must be called by every rank in the same order with the same sizes (MPI's rule).
// Results are identical on every rank: a sum is reduced by MPI_Allreduce (OpenMPI's algorithms give every rank
// the same bits), a moment merge is an all-gather followed by the same fixed-order combine on every rank.
//
// The rest of xg::dist: xgrad/dist/ddp.h (DistributedDataParallel, DistributedSampler) and
// xgrad/dist/sync_batchnorm.h (nn::SyncBatchNorm, convert_sync_batchnorm). Link xgrad::dist.
#pragma once

#include <cstddef>
#include <vector>

#include "xgrad/tensor.h"

namespace xg::dist {

/// RAII: MPI_Init_thread (MPI_THREAD_FUNNELED: only the main thread calls MPI) in the constructor unless MPI is
/// already initialised, MPI_Finalize in the destructor if this Session initialised it. One per process.
class Session {
 public:
  Session(int& argc, char**& argv);
  Session();  ///< without the command line (MPI-3 allows null argc/argv)
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

 private:
  bool owns_ = false;
};

/// Free-function form of Session: init() (idempotent) and finalize() (once; collectives after it are errors).
void init(int* argc = nullptr, char*** argv = nullptr);
void finalize();

/// True between init() and finalize().
bool is_initialized();
/// This process's rank in [0, world_size()), 0 when MPI is not initialised.
int rank();
/// Number of processes, 1 when MPI is not initialised.
int world_size();
/// The host name MPI reports for this rank (for logs).
std::string processor_name();

/// sum, or sum / world_size() (mean) — PyTorch's ReduceOp.SUM and ReduceOp.AVG.
enum class ReduceOp { Sum, Mean };

/// In place: every rank's `t` becomes the sum (or mean) of all ranks' `t`. float32 or float64; the shape and
/// dtype must be the same on every rank (checked: a mismatch is an xg::Error on every rank, not a hang or a
/// silent truncation). Raw data only: no autograd (use functional::all_reduce for a differentiable one).
void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum);
/// The same on n contiguous values.
void all_reduce(float* data, std::size_t n, ReduceOp op = ReduceOp::Sum);
void all_reduce(double* data, std::size_t n, ReduceOp op = ReduceOp::Sum);

/// In place: every rank's `t` becomes rank `root`'s (same shape and dtype everywhere, checked).
void broadcast(Tensor& t, int root = 0);
void broadcast(float* data, std::size_t n, int root = 0);
void broadcast(double* data, std::size_t n, int root = 0);
void broadcast(std::vector<char>& bytes, int root = 0);  ///< resized to root's size on the other ranks

/// Gather: out (size n * world_size()) holds rank r's n values at [r*n, (r+1)*n), on every rank.
void all_gather(const double* in, std::size_t n, double* out);
/// Every rank's string, in rank order, on every rank (the sizes may differ).
std::vector<std::string> all_gather(const std::string& s);

/// Blocks until every rank has called it.
void barrier();

/// Ends every rank of the job at once (MPI_Abort) with `code`, after printing `message` on this rank's stderr.
/// For an error one rank cannot report to the others (the others would wait forever in their next collective).
[[noreturn]] void abort(const std::string& message, int code = 1);

namespace functional {
/// Differentiable all-reduce (torch.distributed.nn.functional.all_reduce): y = Σ_ranks x (or the mean). Its
/// backward is the all-reduce of the gradient: y on every rank depends on x on every rank, so
/// dL/dx_r = Σ_s dL_s/dy_s (summed over ranks; ÷P for the mean). Every rank must run the backward too.
Tensor all_reduce(const Tensor& x, ReduceOp op = ReduceOp::Sum);
}  // namespace functional

}  // namespace xg::dist
