// cells.cpp — a sweep's cells over MPI ranks, recorded atomically for restarts (cells.h).
#include "cells.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#if XGRAD_LAB_DIST
#include <xgrad/dist.h>
#endif

namespace lab {

// ---- the job ---------------------------------------------------------------------------------------------------
namespace {
bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}
}  // namespace

#if XGRAD_LAB_DIST
ClusterSession::ClusterSession(int& argc, char**& argv) {
  if (launched_by_mpi()) xg::dist::init(&argc, &argv);
}
ClusterSession::~ClusterSession() {
  if (xg::dist::is_initialized()) xg::dist::finalize();
}
int job_rank() { return xg::dist::rank(); }
int job_size() { return xg::dist::world_size(); }
int fail_job(const std::string& message) {
  if (job_size() > 1)
    xg::dist::abort(fmt::format("xgrad-lab: error on rank {} of {}: {}\nxgrad-lab: ending all {} ranks; no report "
                                "was written. The experiments' finished runs are kept in <out>/cells/: run the same "
                                "command again to resume (the ddp experiment keeps none).",
                                job_rank(), job_size(), message, job_size()));
  fmt::print(stderr, "xgrad-lab: error: {}\n", message);
  return 1;
}
#else
ClusterSession::ClusterSession(int&, char**&) {
  if (launched_by_mpi())
    fmt::print(stderr, "xgrad-lab: started by mpirun, but built without MPI (XGRAD_DIST=OFF): every rank runs the "
                       "whole sweep on its own\n");
}
ClusterSession::~ClusterSession() = default;
int job_rank() { return 0; }
int job_size() { return 1; }
int fail_job(const std::string& message) {
  fmt::print(stderr, "xgrad-lab: error: {}\n", message);
  return 1;
}
#endif

// ---- the cell file -------------------------------------------------------------------------------------------
namespace {

constexpr const char* kMagic = "xgrad-lab cell 2";  // 2: RunResult::series, the command in the key

std::string hex(double v) { return fmt::format("{:a}", v); }

double parse_double(const std::string& s, const std::string& what) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0') xg::fail("{}: '{}' is not a number (a damaged cell file? delete it)", what, s);
  return v;
}

void put_vector(std::string& out, const char* name, const std::vector<double>& v) {
  out += fmt::format("vec {} {}", name, v.size());
  for (double x : v) {
    out += ' ';
    out += hex(x);
  }
  out += "\n";
}

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// The command line without what cannot change a result: --out (where, not what) and --threads (xgrad's results
// do not depend on the thread count: docs/determinism.md). It holds the subcommand and every other option.
std::string command_key(const std::string& command_line) {
  std::istringstream in(command_line);
  std::string out, tok;
  bool skip_value = false;
  while (in >> tok) {
    if (skip_value) {
      skip_value = false;
      continue;
    }
    if (tok == "--out" || tok == "--threads") {
      skip_value = true;
      continue;
    }
    if (tok.rfind("--out=", 0) == 0 || tok.rfind("--threads=", 0) == 0) continue;
    out += (out.empty() ? "" : " ") + tok;
  }
  return out;
}

// Everything that determines a cell's result: the options in effect (also those the command line leaves at
// their defaults) and the command line itself.
std::string common_key(const Lab& lab) {
  const auto& o = lab.options();
  return fmt::format("mode={} seed={} bn_impl={} data={} cmd={}", o.mode, o.seed, lab.bn_impl(), o.data,
                     command_key(o.command_line));
}
std::string cell_key(const Lab& lab, const RunSpec& s) {
  return fmt::format("{} {} {} {} lr={} seed_index={} steps={} batch={} log_every={} eval_every={} kind={} bn={} "
                     "train={} eval={} blowup={} {}",
                     s.experiment, s.model, s.optimizer, s.arm, hex(s.lr), s.seed_index, s.steps, s.batch_size,
                     s.log_every, s.eval_every, s.net.kind, s.net.batchnorm, s.train_set ? s.train_set->size() : 0,
                     s.eval_set ? s.eval_set->size() : 0, hex(s.blowup_loss), common_key(lab));
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string serialize_cell(const std::string& key, const RunResult& r,
                           const std::vector<std::vector<Table::Cell>>& rows) {
  std::string out = fmt::format("{}\nkey {}\ndiverged {} {}\nwhy {}\n", kMagic, key, int(r.diverged), r.diverged_at,
                                r.diverged_why);
  out += fmt::format("scalars {} {} {} {}\n", hex(r.final_accuracy), hex(r.best_accuracy), hex(r.final_train_loss),
                     hex(r.seconds));
  put_vector(out, "log_steps", r.log_steps);
  put_vector(out, "train_loss", r.train_loss);
  put_vector(out, "train_accuracy", r.train_accuracy);
  put_vector(out, "eval_steps", r.eval_steps);
  put_vector(out, "eval_accuracy", r.eval_accuracy);
  put_vector(out, "eval_loss", r.eval_loss);
  out += fmt::format("series {}\n", r.series.size());
  for (const auto& [name, v] : r.series) {
    if (name.empty() || name.find_first_of(" \t\n") != std::string::npos)
      xg::fail("cell series name '{}' must be one word", name);
    put_vector(out, name.c_str(), v);
  }
  out += fmt::format("rows {}\n", rows.size());
  for (const auto& row : rows) {
    std::string line;
    for (const auto& c : row) {  // typed: s:<text> i:<integer> d:<hexfloat>, tab-separated
      if (!line.empty()) line += '\t';
      if (const auto* t = std::get_if<std::string>(&c)) line += "s:" + *t;
      else if (const auto* i = std::get_if<std::int64_t>(&c)) line += "i:" + std::to_string(*i);
      else line += "d:" + hex(std::get<double>(c));
    }
    out += line + "\n";
  }
  return out + "end\n";
}

void parse_cell(const std::string& text, const std::string& key, const std::string& what, RunResult& r,
                std::vector<std::vector<Table::Cell>>& rows) {
  std::istringstream in(text);
  std::string line;
  auto next = [&](const char* expect) {
    if (!std::getline(in, line) || line.rfind(expect, 0) != 0)
      xg::fail("{}: expected a line starting with '{}' (an incomplete or damaged cell file? delete it to rerun the "
               "cell)",
               what, expect);
    return line.substr(std::string(expect).size());
  };
  if (next(kMagic) != "") xg::fail("{}: not an xgrad-lab cell file", what);
  if (next("key ") != key) xg::fail("{}: recorded for another configuration", what);
  {
    std::istringstream d(next("diverged "));
    int dv = 0;
    d >> dv >> r.diverged_at;
    r.diverged = dv != 0;
  }
  r.diverged_why = next("why ");
  {
    std::istringstream d(next("scalars "));
    std::string a, b, c, e;
    d >> a >> b >> c >> e;
    r.final_accuracy = parse_double(a, what);
    r.best_accuracy = parse_double(b, what);
    r.final_train_loss = parse_double(c, what);
    r.seconds = parse_double(e, what);
  }
  for (auto* v : {&r.log_steps, &r.train_loss, &r.train_accuracy, &r.eval_steps, &r.eval_accuracy, &r.eval_loss}) {
    std::istringstream d(next("vec "));
    std::string name, tok;
    std::size_t n = 0;
    d >> name >> n;
    v->clear();
    for (std::size_t i = 0; i < n && d >> tok; ++i) v->push_back(parse_double(tok, what));
    if (v->size() != n) xg::fail("{}: vector {} is truncated", what, name);
  }
  auto count = [&](const char* expect) {
    const std::string s = next(expect);
    char* end = nullptr;
    const unsigned long long n = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0') xg::fail("{}: '{}{}' is not a count (a damaged cell file? delete it)", what, expect, s);
    return static_cast<std::size_t>(n);
  };
  r.series.clear();
  for (std::size_t k = 0, ns = count("series "); k < ns; ++k) {
    std::istringstream d(next("vec "));
    std::string name, tok;
    std::size_t len = 0;
    d >> name >> len;
    std::vector<double>& v = r.series[name];
    for (std::size_t i = 0; i < len && d >> tok; ++i) v.push_back(parse_double(tok, what));
    if (v.size() != len) xg::fail("{}: series {} is truncated", what, name);
  }
  const std::size_t n = count("rows ");
  rows.clear();
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::getline(in, line)) xg::fail("{}: {} of {} metrics rows", what, i, n);
    std::vector<Table::Cell> row;
    std::istringstream cells(line);
    for (std::string c; std::getline(cells, c, '\t');) {
      if (c.rfind("s:", 0) == 0) row.emplace_back(c.substr(2));
      else if (c.rfind("i:", 0) == 0) row.emplace_back(std::int64_t(std::stoll(c.substr(2))));
      else if (c.rfind("d:", 0) == 0) row.emplace_back(parse_double(c.substr(2), what));
      else xg::fail("{}: bad metrics cell '{}'", what, c);
    }
    rows.push_back(std::move(row));
  }
  next("end");
}

// ---- CellRunner ----------------------------------------------------------------------------------------------
CellRunner::CellRunner(Lab& lab, std::string experiment, Progress* progress)
    : lab_(lab), experiment_(std::move(experiment)), progress_(progress), dir_(lab.out() / "cells" / experiment_) {
  std::string listing;  // the keys on disk, one a line, decided by rank 0
  // Only a job of several ranks skips recorded cells; a single process resumes with --resume instead (its
  // checkpoints replay finished runs and continue the interrupted one, in loop order: resume.h).
  if (is_report_rank() && job_size() > 1 && fs::is_directory(dir_))
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().extension() != ".cell") continue;
      std::istringstream in(read_text(e.path()));
      std::string magic, key;
      std::getline(in, magic);
      std::getline(in, key);
      if (magic == kMagic && key.rfind("key ", 0) == 0) listing += key.substr(4) + "\n";
    }
#if XGRAD_LAB_DIST
  std::vector<char> bytes(listing.begin(), listing.end());
  xg::dist::broadcast(bytes, 0);
  listing.assign(bytes.begin(), bytes.end());
#endif
  std::istringstream in(listing);
  for (std::string k; std::getline(in, k);) done_.push_back(k);
}

RunResult CellRunner::run(const RunSpec& spec, const std::function<RunResult()>& fn) {
  return run_keyed(cell_key(lab_, spec), spec.steps, fn);
}

RunResult CellRunner::run(const std::string& what, std::size_t steps, const std::function<RunResult()>& fn) {
  return run_keyed(fmt::format("{} {} {}", experiment_, what, common_key(lab_)), steps, fn);
}

RunResult CellRunner::run_keyed(const std::string& key, std::size_t steps, const std::function<RunResult()>& fn) {
  if (key.find('\n') != std::string::npos) xg::fail("{}: a cell key must be one line: '{}'", experiment_, key);
  const fs::path file = dir_ / fmt::format("{:016x}.cell", fnv1a(key));
  for (const auto& e : entries_)
    if (e.key == key) xg::fail("{}: two cells of the sweep have the same key '{}'", experiment_, key);
  entries_.push_back({key, {}, false, steps});
  RunResult r;
  std::vector<std::vector<Table::Cell>> rows;
  if (std::find(done_.begin(), done_.end(), key) != done_.end()) {  // recorded by an earlier run: skip it
    ++skipped_;
    if (progress_) progress_->advance(steps, "recorded cells");
    if (is_report_rank()) {
      entries_.back().text = read_text(file);
      parse_cell(entries_.back().text, key, file.string(), r, rows);
    }
    return r;
  }
  const int owner = static_cast<int>(todo_++ % static_cast<std::size_t>(job_size()));
  if (owner != job_rank()) {  // another rank's: it trains meanwhile
    if (progress_) progress_->advance(steps);
    return r;
  }
  Table& metrics = lab_.metrics_table();
  const std::size_t mark = metrics.size();
  r = fn();
  rows.assign(metrics.rows().begin() + static_cast<std::ptrdiff_t>(mark), metrics.rows().end());
  metrics.truncate(mark);  // replayed in the sweep's order by gather()
  entries_.back().text = serialize_cell(key, r, rows);
  entries_.back().local = true;
  // One process resumes from its checkpoints (resume.h), so only a job of several ranks records its cells. The
  // text goes through gather()'s parser either way: one process and K ranks build the report the same way.
  if (job_size() > 1) write_file_atomic(file, entries_.back().text);
  ++ran_;
  return r;
}

bool CellRunner::gather(const std::function<void(std::size_t, RunResult)>& on_result) {
  std::vector<std::string> texts(entries_.size());
  for (std::size_t i = 0; i < entries_.size(); ++i) texts[i] = entries_[i].text;
#if XGRAD_LAB_DIST
  if (job_size() > 1) {
    std::string mine;  // "<index> <length>\n<text>" for every cell this rank ran
    for (std::size_t i = 0; i < entries_.size(); ++i)
      if (!entries_[i].text.empty() && !is_report_rank())
        mine += fmt::format("{} {}\n{}", i, entries_[i].text.size(), entries_[i].text);
    const auto all = xg::dist::all_gather(mine);
    for (const std::string& part : all) {
      std::size_t pos = 0;
      while (pos < part.size()) {
        const std::size_t eol = part.find('\n', pos);
        std::istringstream h(part.substr(pos, eol - pos));
        std::size_t i = 0, len = 0;
        h >> i >> len;
        texts.at(i) = part.substr(eol + 1, len);
        pos = eol + 1 + len;
      }
    }
  }
#endif
  if (!is_report_rank()) {
    fmt::print(stderr, "xgrad-lab: rank {} of {}: {} {} cell(s) run, sent to rank 0\n", job_rank(), job_size(), ran_,
               experiment_);
    return false;
  }
  Table& metrics = lab_.metrics_table();
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    if (texts[i].empty()) xg::fail("{}: cell {} ({}) was never run", experiment_, i, entries_[i].key);
    RunResult r;
    std::vector<std::vector<Table::Cell>> rows;
    parse_cell(texts[i], entries_[i].key, fmt::format("{} cell {}", experiment_, i), r, rows);
    for (auto& row : rows) metrics.add(std::move(row));
    // train_run added the timing of this rank's own runs; the others' (and the recorded ones') come here
    if (!entries_[i].local) lab_.add_timing(experiment_, r.seconds, r.diverged ? r.diverged_at : entries_[i].steps);
    on_result(i, std::move(r));
  }
  if (job_size() > 1 || skipped_ > 0)
    fmt::print(stderr, "xgrad-lab: {}: {} cell(s) over {} rank(s), {} recorded before and skipped\n", experiment_,
               entries_.size(), job_size(), skipped_);
  return true;
}

}  // namespace lab
