// lab.h — a small toolkit for running experiments with xgrad and writing up their results.
//
// Nothing here knows about BatchNorm or about a particular experiment; xgrad-lab's experiments
// (lr_sweep.cpp, convergence.cpp, noisy_bn.cpp) and examples/lab/my_experiment.cpp are built from it:
//
//   lab::Table      a table of results (fixed columns) saved as CSV           -> metrics.csv
//   lab::Json       an ordered JSON value (objects keep insertion order)        -> summary.json
//   lab::Progress   a progress bar with ETA on a terminal, plain lines otherwise (logs, CI)
//   lab::Figure     a figure of one or more panels drawn by gnuplot to PNG and SVG (its .gp script is kept
//                   beside the images so anyone can re-run or restyle it)
//   lab::Report     a markdown writer                                            -> report.md
//   lab::seed_for   independent, reproducible seeds for each purpose ("init", "shuffle", ...) from one --seed
//
// Every file is written atomically through xg::write_file_atomic / xg::AtomicFile (xgrad/atomic_file.h: a
// temporary file in the same folder, fsync, rename, fsync of the folder), so an interrupted run or a full disk
// never leaves a half-written CSV, JSON, report or plot. (Evaluation inside training uses xg::nn::EvalGuard, which switches a model
// to eval mode and restores every module's previous mode.)
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace lab {

namespace fs = std::filesystem;

// ---- files -------------------------------------------------------------------------------------------------

/// Writes `content` to `path` atomically (xg::write_file_atomic); creates the parent folder. Throws xg::Error.
/// Safe to call from several threads at once (each write has its own temporary file).
void write_file_atomic(const fs::path& path, std::string_view content);

// ---- seeds ---------------------------------------------------------------------------------------------------

/// A seed for one purpose, derived from the run's seed by hashing (SplitMix64): the streams for weight
/// initialisation, shuffling and noise are independent, and adding a purpose does not shift the others.
/// `seed_for(seed, "init", 3)` is the same in every run with the same seed.
std::uint64_t seed_for(std::uint64_t seed, std::string_view purpose, std::uint64_t index = 0);

// ---- timing --------------------------------------------------------------------------------------------------

/// Wall-clock stopwatch.
class Timer {
 public:
  Timer() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  void reset() { start_ = std::chrono::steady_clock::now(); }

 private:
  std::chrono::steady_clock::time_point start_;
};

/// "1m 05s", "42.3s", "850ms".
std::string format_duration(double seconds);

// ---- Table (CSV) ---------------------------------------------------------------------------------------------

/// A table with fixed, named columns; cells are text, integers or doubles. Saved as RFC-4180 CSV; doubles are
/// printed with up to 9 significant digits; NaN as "nan", infinities as "inf"/"-inf".
class Table {
 public:
  using Cell = std::variant<std::string, std::int64_t, double>;
  explicit Table(std::vector<std::string> columns);

  /// Appends a row; it must have one cell per column (else xg::Error naming the columns).
  void add(std::vector<Cell> row);
  const std::vector<std::string>& columns() const { return columns_; }
  const std::vector<std::vector<Cell>>& rows() const { return rows_; }
  std::size_t size() const { return rows_.size(); }
  /// Keeps the first n rows (cells.cpp takes a run's rows out to replay them in the sweep's order).
  void truncate(std::size_t n) { rows_.resize(std::min(n, rows_.size())); }
  /// Index of a column by name (xg::Error if absent).
  std::size_t column(std::string_view name) const;

  std::string to_csv() const;
  void save(const fs::path& path) const { write_file_atomic(path, to_csv()); }

 private:
  std::vector<std::string> columns_;
  std::vector<std::vector<Cell>> rows_;
};

/// A cell as text (as written to CSV, without quoting).
std::string cell_text(const Table::Cell& c);

// ---- Json ----------------------------------------------------------------------------------------------------

/// A JSON value: null, bool, number, string, array or object. Objects keep their keys in insertion order.
/// Non-finite numbers are written as null (JSON has no NaN), so a diverged run still yields valid JSON.
class Json {
 public:
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;

  Json() = default;  // null
  Json(std::nullptr_t) {}
  Json(bool b) : v_(b) {}
  Json(int i) : v_(static_cast<double>(i)) {}
  Json(long i) : v_(static_cast<double>(i)) {}
  Json(long long i) : v_(static_cast<double>(i)) {}
  Json(unsigned i) : v_(static_cast<double>(i)) {}
  Json(unsigned long i) : v_(static_cast<double>(i)) {}
  Json(unsigned long long i) : v_(static_cast<double>(i)) {}
  Json(double d) : v_(d) {}
  Json(const char* s) : v_(std::string(s)) {}
  Json(std::string s) : v_(std::move(s)) {}
  Json(std::string_view s) : v_(std::string(s)) {}
  Json(Array a) : v_(std::move(a)) {}
  Json(Object o) : v_(std::move(o)) {}
  template <class T>
  Json(const std::vector<T>& v) : v_(Array(v.begin(), v.end())) {}

  static Json object() { return Json(Object{}); }
  static Json array() { return Json(Array{}); }

  /// Object access: inserts a null member if the key is absent (the value must be an object or null).
  Json& operator[](const std::string& key);
  /// Array append (the value must be an array or null).
  void push_back(Json v);

  bool is_null() const { return std::holds_alternative<std::monostate>(v_); }
  bool is_object() const { return std::holds_alternative<Object>(v_); }
  bool is_array() const { return std::holds_alternative<Array>(v_); }
  /// Member lookup without inserting; nullptr if absent or not an object.
  const Json* find(std::string_view key) const;
  double number() const;             // xg::Error unless a number
  const std::string& str() const;    // xg::Error unless a string
  const Array& items() const;        // xg::Error unless an array

  /// Pretty-printed with `indent` spaces per level.
  std::string dump(int indent = 2) const;
  void save(const fs::path& path) const { write_file_atomic(path, dump() + "\n"); }

 private:
  void dump_to(std::string& out, int indent, int level) const;
  std::variant<std::monostate, bool, double, std::string, Array, Object> v_;
};

// ---- Progress ------------------------------------------------------------------------------------------------

/// Progress of `total` units of work (e.g. training steps over all runs of an experiment).
/// On a terminal: one line redrawn in place (at most ~10 times a second) with a bar, percentage, rate and ETA.
/// Otherwise (a log file, CI): a plain line at every 10% and at least every 30 s, so logs stay short.
class Progress {
 public:
  Progress(std::string label, std::size_t total, std::FILE* out = stderr);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  /// Adds `n` finished units; `status` (e.g. "lr=0.3 BN seed 1") is shown beside the bar.
  void advance(std::size_t n = 1, std::string_view status = {});
  /// Units of unequal cost (a CNN step costs tens of MLP steps): `total_cost` is the whole job's cost and
  /// set_unit_cost() the cost of each unit advanced from now on, both in the same arbitrary measure. The
  /// percentage and the ETA then follow the cost, so the ETA does not jump when cheap units give way to
  /// expensive ones; the count and rate shown stay in units. Without it every unit costs 1.
  void set_total_cost(double total_cost);
  void set_unit_cost(double cost) { unit_cost_ = cost; }
  /// Prints a message on its own line without garbling the bar.
  void note(std::string_view message);
  /// Ends the bar with a final line (called by the destructor if needed).
  void finish();

  std::size_t done() const { return done_; }
  /// Seconds since construction.
  double elapsed() const { return timer_.seconds(); }

  /// Under mpirun only rank 0 draws its bars (a CellRunner advances them by the cells other ranks run, so they
  /// show the whole job); other ranks print only their notes, prefixed with their rank. Set once by main.
  static void set_job(int rank);

 private:
  void draw(bool force);
  std::string label_;
  std::size_t total_, done_ = 0;
  double total_cost_ = 0, done_cost_ = 0, unit_cost_ = 1;  // total_cost_ == 0: cost = units
  std::FILE* out_;
  bool tty_, finished_ = false;
  std::string status_;
  Timer timer_;
  double last_draw_ = -1.0;
  int last_decile_ = -1;
  std::size_t last_done_ = static_cast<std::size_t>(-1);  // done_ at the last drawing
};

// ---- Figure (gnuplot) --------------------------------------------------------------------------------------

/// One curve (or band, or histogram) of a panel.
struct Series {
  std::string title;            // legend entry ("" = none)
  std::vector<double> x, y;     // points; NaN/Inf values are skipped by gnuplot (written as "NaN")
  std::vector<double> y2;       // for style "band": the upper edge (y is the lower edge)
  /// gnuplot style: "lines", "linespoints", "points", "band" (filled between y and y2), "steps",
  /// "boxes" (histogram bars centred on x).
  std::string style = "lines";
  std::string extra;            // extra gnuplot plot options, e.g. "dt 2", "lc rgb '#d62728'", "lw 2"
};

/// One panel (axes) of a figure.
struct Panel {
  std::string title, xlabel, ylabel;
  bool logx = false, logy = false;
  std::optional<std::pair<double, double>> xrange, yrange;
  std::string key = "top left";  // legend position ("off" hides it)
  std::vector<Series> series;
  std::vector<std::string> commands;  // extra gnuplot commands for this panel (e.g. "set arrow ...")
};

/// A figure: `rows` x `cols` panels in reading order, drawn to <dir>/<name>.png and .svg by gnuplot.
/// The data are inlined into <dir>/<name>.gp (gnuplot datablocks), so `gnuplot <name>.gp` redraws both images.
struct Figure {
  std::string name;    // file stem, e.g. "lr_sweep_accuracy"
  std::string title;   // overall title (shown above multi-panel figures)
  int rows = 1, cols = 1;
  int width = 900, height = 560;  // pixels of the PNG (the SVG uses the same size)
  std::vector<Panel> panels;
};

/// The gnuplot script of a figure (writes <stem>.png and <stem>.svg in the current folder when run there).
std::string gnuplot_script(const Figure& fig);

/// Writes <dir>/<name>.gp and runs gnuplot in `dir` (to temporary names, renamed over the images when both are
/// complete). Returns the PNG file name on success; on failure (e.g.
/// gnuplot missing) prints a warning, removes partial images and returns nullopt — the run goes on and the
/// report says the plot is missing.
std::optional<std::string> draw(const Figure& fig, const fs::path& dir);

/// "gnuplot 5.4 patchlevel 4", or "" if gnuplot is not installed.
std::string gnuplot_version();

// ---- Report (markdown) ---------------------------------------------------------------------------------------

/// Builds a markdown document.
class Report {
 public:
  void h1(std::string_view text) { line("# " + std::string(text)); blank(); }
  void h2(std::string_view text) { line("## " + std::string(text)); blank(); }
  void h3(std::string_view text) { line("### " + std::string(text)); blank(); }
  void para(std::string_view text) { line(std::string(text)); blank(); }
  void bullet(std::string_view text) { line("- " + std::string(text)); }
  /// A ```text block.
  void code(std::string_view text, std::string_view lang = "text");
  /// An image (relative path) with alt text; a missing image (nullopt) becomes a note.
  void image(std::string_view alt, const std::optional<std::string>& file);
  /// A table; every row must have headers.size() cells.
  void table(const std::vector<std::string>& headers, const std::vector<std::vector<std::string>>& rows);
  void blank() { text_ += "\n"; }
  void line(std::string_view l) { text_ += std::string(l) + "\n"; }

  const std::string& str() const { return text_; }
  void save(const fs::path& path) const { write_file_atomic(path, text_); }

 private:
  std::string text_;
};

// ---- formatting ------------------------------------------------------------------------------------------------

/// A learning rate or other positive number in short form: 0.01, 0.3, 3, 30, 1e-05.
std::string short_number(double v);
/// A percentage with one decimal: "87.4%" ("n/a" for NaN).
std::string percent(double fraction);

/// Versions of what the run used: xgrad, compiler, CLI11, zlib, OpenBLAS, the float32 GEMM backend, gnuplot.
Json versions();

}  // namespace lab
