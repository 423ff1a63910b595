// The doctest main of the MPI suites: MPI up before the tests, and every rank's exit code the worst of all ranks,
// so that a failure on any rank fails the CTest entry (mpirun returns the first nonzero code).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "xgrad/dist.h"

int main(int argc, char** argv) {
  xg::dist::Session mpi(argc, argv);
  doctest::Context ctx(argc, argv);
  int rc = ctx.run();
  double worst = rc;
  xg::dist::all_reduce(&worst, 1);  // sum of the codes: 0 only if every rank passed
  if (xg::dist::rank() == 0)
    std::printf("[rank 0 of %d] every rank %s\n", xg::dist::world_size(), worst == 0 ? "passed" : "FAILED somewhere");
  return worst == 0 ? 0 : 1;
}
