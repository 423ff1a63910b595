// cells.h — the independent runs (cells) of a sweep, spread over MPI ranks and recorded for restarts.
//
//   mpirun -np 4 xgrad-lab lr-sweep --out results     # 4 ranks share the cells; rank 0 writes the report
//
// A sweep's loop stays as it is; inside it, `RunResult r = cells.run(spec, [&] { return train_run(...); });`
// (or, for a run that is not a train_run, `cells.run("arm=bn seed_index=2", steps, [&] { ... })`) and after
// it `if (!cells.gather(...)) return;`. Every experiment of `xgrad-lab all` is written this way, so every one
// is spread. What happens:
//   * under mpirun, every finished cell is written to <out>/cells/<experiment>/<hash>.cell (lab::write_file_atomic: a killed
//     process leaves the cell whole or absent), with its RunResult (RunResult::series included) and its
//     metrics.csv rows (doubles as hexfloats: exact), keyed by everything that determines it (experiment, model,
//     optimizer, arm, lr, seed, steps, batch, sizes, and the command line without --out and --threads, which
//     holds every option) — so a restart with the same command skips it and a restart with other options does
//     not reuse it;
//   * the cells not yet on disk when the sweep starts are dealt round-robin to the ranks (rank 0 decides which
//     are on disk and tells the others, so every rank agrees); a rank runs only its own;
//   * gather() brings every cell to rank 0 in the loop's order, which replays their metrics rows into the Lab:
//     metrics.csv is bit-identical to a single-process run (and to a resumed one). Other ranks return false and
//     write nothing; rank 0 writes report.md, metrics.csv and summary.json at the end (Lab::finish).
// A rank that fails ends the whole job (fail_job: MPI_Abort) with its message; a rank that is killed makes
// mpirun end the others. Either way no report is written, and the finished cells stay for the restart.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "training.h"

namespace lab {

/// MPI for xgrad-lab: initialised only when the process was started by mpirun/srun (OMPI_COMM_WORLD_SIZE,
/// PMI_SIZE or PMIX_RANK in the environment), so a plain `xgrad-lab ...` never touches MPI.
class ClusterSession {
 public:
  ClusterSession(int& argc, char**& argv);
  ~ClusterSession();
  ClusterSession(const ClusterSession&) = delete;
  ClusterSession& operator=(const ClusterSession&) = delete;
};
int job_rank();
int job_size();
/// True on the rank that writes the report (rank 0).
inline bool is_report_rank() { return job_rank() == 0; }
/// Reports `message` and ends the job: all ranks at once (MPI_Abort) when there are several, else returns 1
/// for main to return.
int fail_job(const std::string& message);

class CellRunner {
 public:
  /// Lists the cells already recorded in <out>/cells/<experiment>/ (on rank 0, shared with the other ranks) —
  /// under mpirun only: a single process resumes with --resume (resume.h), never by skipping recorded cells.
  /// `progress` (optional): advanced by the steps of the cells this rank does not run (another rank's, or
  /// recorded ones), so that rank 0's bar — the one drawn under mpirun — shows the whole job.
  CellRunner(Lab& lab, std::string experiment, Progress* progress = nullptr);

  /// The next cell of the loop: its result if this rank runs it (fn) or it is recorded on disk (on rank 0),
  /// else an empty RunResult that gather() fills in. Records what fn returns and the metrics rows it wrote.
  RunResult run(const RunSpec& spec, const std::function<RunResult()>& fn);
  /// The same for a cell that is not described by a RunSpec (its own training loop, a probe): `what` names what
  /// distinguishes it from the experiment's other cells (e.g. "arm=bn seed_index=1"; the command line is added
  /// to the key), `steps` counts it in the timing table. fn must return the RunResult the analysis needs
  /// (RunResult::series for anything beyond the standard fields) and set its `seconds`.
  RunResult run(const std::string& what, std::size_t steps, const std::function<RunResult()>& fn);
  /// Brings every cell to rank 0: on_result(i, result) for cell i in loop order, its metrics rows replayed into
  /// the Lab in that order. Returns true on rank 0 (go on with the analysis), false on the others.
  bool gather(const std::function<void(std::size_t, RunResult)>& on_result);

  std::size_t cells_run() const { return ran_; }
  std::size_t cells_skipped() const { return skipped_; }

 private:
  RunResult run_keyed(const std::string& key, std::size_t steps, const std::function<RunResult()>& fn);
  struct Entry {
    std::string key;
    std::string text;    // the serialised cell, once known on this rank
    bool local = false;  // run by this rank in this invocation (train_run added its timing already)
    std::size_t steps = 0;
  };
  Lab& lab_;
  std::string experiment_;
  Progress* progress_ = nullptr;
  fs::path dir_;
  std::vector<std::string> done_;  // keys recorded on disk when the sweep started
  std::vector<Entry> entries_;
  std::size_t todo_ = 0, ran_ = 0, skipped_ = 0;
};

/// The cell file format (exposed for the tests): a RunResult and its metrics rows, exactly.
std::string serialize_cell(const std::string& key, const RunResult& r, const std::vector<std::vector<Table::Cell>>& rows);
/// Parses what serialize_cell wrote; xg::Error naming `what` if it is not a complete cell of `key`.
void parse_cell(const std::string& text, const std::string& key, const std::string& what, RunResult& r,
                std::vector<std::vector<Table::Cell>>& rows);

}  // namespace lab
