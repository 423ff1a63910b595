// lab.cpp — the experiment toolkit (see lab.h).
#include "lab.h"

#include <unistd.h>
#include <zlib.h>

#include <CLI/Version.hpp>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <fstream>

#include <fmt/format.h>

#include "xgrad/atomic_file.h"
#include "xgrad/blas.h"
#include "xgrad/cpu.h"
#include "xgrad/common.h"

extern "C" char* openblas_get_config(void);  // OpenBLAS's build description (cblas.h declares it too)

#ifndef XGRAD_VERSION
#define XGRAD_VERSION "unknown"
#endif

namespace lab {

// ------------------------------------------------------------------------------------------------------ files

void write_file_atomic(const fs::path& path, std::string_view content) {
  std::error_code ec;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), ec);
  if (ec) xg::fail("cannot create the folder '{}' for '{}': {}", path.parent_path().string(), path.string(), ec.message());
  xg::write_file_atomic(path.string(), content, "xgrad-lab");
}

// ------------------------------------------------------------------------------------------------------ seeds

namespace {
// SplitMix64 finaliser: a bijective mix of 64 bits.
std::uint64_t mix(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

std::uint64_t seed_for(std::uint64_t seed, std::string_view purpose, std::uint64_t index) {
  std::uint64_t h = mix(seed);
  for (unsigned char c : purpose) h = mix(h ^ c);  // FNV-like fold of the purpose name
  return mix(h ^ mix(index + 0x632BE59BD9B4E019ull));
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 1) return fmt::format("{:.0f}ms", s * 1000);
  if (s < 60) return fmt::format("{:.1f}s", s);
  const auto total = static_cast<long>(std::lround(s));
  if (total < 3600) return fmt::format("{}m {:02d}s", total / 60, static_cast<int>(total % 60));
  return fmt::format("{}h {:02d}m", total / 3600, static_cast<int>((total % 3600) / 60));
}

// ------------------------------------------------------------------------------------------------------ Table

Table::Table(std::vector<std::string> columns) : columns_(std::move(columns)) {
  if (columns_.empty()) xg::fail("lab::Table: needs at least one column");
}

void Table::add(std::vector<Cell> row) {
  if (row.size() != columns_.size()) {
    std::string names;
    for (const auto& c : columns_) names += (names.empty() ? "" : ",") + c;
    xg::fail("lab::Table::add: got {} cells for {} columns ({})", row.size(), columns_.size(), names);
  }
  rows_.push_back(std::move(row));
}

std::size_t Table::column(std::string_view name) const {
  for (std::size_t i = 0; i < columns_.size(); ++i)
    if (columns_[i] == name) return i;
  xg::fail("lab::Table: no column named '{}'", name);
}

std::string cell_text(const Table::Cell& c) {
  if (const auto* s = std::get_if<std::string>(&c)) return *s;
  if (const auto* i = std::get_if<std::int64_t>(&c)) return std::to_string(*i);
  const double d = std::get<double>(c);
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  return fmt::format("{:.9g}", d);
}

namespace {
std::string csv_quote(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}
}  // namespace

std::string Table::to_csv() const {
  std::string out;
  auto add_row = [&out](const auto& cells, auto text) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      if (i) out += ',';
      out += csv_quote(text(cells[i]));
    }
    out += '\n';
  };
  add_row(columns_, [](const std::string& c) { return c; });
  for (const auto& r : rows_) {
    add_row(r, [](const Cell& c) { return cell_text(c); });
  }
  return out;
}

// ------------------------------------------------------------------------------------------------------- Json

Json& Json::operator[](const std::string& key) {
  if (is_null()) v_ = Object{};
  auto* o = std::get_if<Object>(&v_);
  if (!o) xg::fail("lab::Json: operator[\"{}\"] on a value that is not an object", key);
  for (auto& [k, v] : *o)
    if (k == key) return v;
  o->emplace_back(key, Json());
  return o->back().second;
}

void Json::push_back(Json v) {
  if (is_null()) v_ = Array{};
  auto* a = std::get_if<Array>(&v_);
  if (!a) xg::fail("lab::Json: push_back on a value that is not an array");
  a->push_back(std::move(v));
}

const Json* Json::find(std::string_view key) const {
  const auto* o = std::get_if<Object>(&v_);
  if (!o) return nullptr;
  for (const auto& [k, v] : *o)
    if (k == key) return &v;
  return nullptr;
}

double Json::number() const {
  if (const auto* d = std::get_if<double>(&v_)) return *d;
  xg::fail("lab::Json: not a number");
}
const std::string& Json::str() const {
  if (const auto* s = std::get_if<std::string>(&v_)) return *s;
  xg::fail("lab::Json: not a string");
}
const Json::Array& Json::items() const {
  if (const auto* a = std::get_if<Array>(&v_)) return *a;
  xg::fail("lab::Json: not an array");
}

namespace {
std::string json_escape(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        if (c < 0x20) o += fmt::format("\\u{:04x}", c);
        else o += static_cast<char>(c);
    }
  }
  return o + "\"";
}
}  // namespace

void Json::dump_to(std::string& out, int indent, int level) const {
  const std::string pad(static_cast<std::size_t>(indent * (level + 1)), ' ');
  const std::string end_pad(static_cast<std::size_t>(indent * level), ' ');
  const char* nl = indent > 0 ? "\n" : "";
  std::visit(
      [&](const auto& v) {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, std::monostate>) {
          out += "null";
        } else if constexpr (std::is_same_v<V, bool>) {
          out += v ? "true" : "false";
        } else if constexpr (std::is_same_v<V, double>) {
          if (!std::isfinite(v)) out += "null";
          else if (v == std::floor(v) && std::fabs(v) < 1e15) out += fmt::format("{}", static_cast<long long>(v));
          else out += fmt::format("{:.9g}", v);
        } else if constexpr (std::is_same_v<V, std::string>) {
          out += json_escape(v);
        } else if constexpr (std::is_same_v<V, Array>) {
          // Arrays of plain numbers stay on one line (curves, grids), others one item per line.
          const bool flat = std::all_of(v.begin(), v.end(), [](const Json& j) {
            return !j.is_array() && !j.is_object();
          });
          if (v.empty()) { out += "[]"; return; }
          out += "[";
          for (std::size_t i = 0; i < v.size(); ++i) {
            if (i) out += ",";
            if (flat) { if (i) out += " "; }
            else {
              out += nl;
              out += pad;
            }
            v[i].dump_to(out, indent, level + 1);
          }
          if (!flat) {
            out += nl;
            out += end_pad;
          }
          out += "]";
        } else {
          if (v.empty()) { out += "{}"; return; }
          out += "{";
          for (std::size_t i = 0; i < v.size(); ++i) {
            if (i) out += ',';
            out += nl;
            out += pad;
            out += json_escape(v[i].first);
            out += indent > 0 ? ": " : ":";
            v[i].second.dump_to(out, indent, level + 1);
          }
          out += nl;
          out += end_pad;
          out += '}';
        }
      },
      v_);
}

std::string Json::dump(int indent) const {
  std::string out;
  dump_to(out, indent, 0);
  return out;
}

// --------------------------------------------------------------------------------------------------- Progress

namespace {
int g_job_rank = 0;  // Progress::set_job: only rank 0 draws
}  // namespace

void Progress::set_job(int rank) { g_job_rank = rank; }

Progress::Progress(std::string label, std::size_t total, std::FILE* out)
    : label_(std::move(label)), total_(std::max<std::size_t>(total, 1)), out_(out),
      tty_(::isatty(::fileno(out)) == 1) {
  draw(true);
}

Progress::~Progress() {
  if (finished_) return;
  if (std::uncaught_exceptions() > 0) {  // stopped by an error or a signal: end the line, do not claim "done"
    if (tty_ && g_job_rank == 0) std::fprintf(out_, "\n");
    std::fflush(out_);
    return;
  }
  finish();
}

void Progress::advance(std::size_t n, std::string_view status) {
  const std::size_t step = std::min(n, total_ - done_);
  done_ += step;
  done_cost_ += static_cast<double>(step) * unit_cost_;
  if (!status.empty()) status_ = status;
  draw(false);
}

void Progress::set_total_cost(double total_cost) {
  total_cost_ = total_cost > 0 ? total_cost : 0.0;
}

void Progress::note(std::string_view message) {
  if (g_job_rank != 0) {  // rank 0 draws the bar: other ranks print their notes only
    std::fprintf(out_, "[rank %d] %.*s\n", g_job_rank, static_cast<int>(message.size()), message.data());
    std::fflush(out_);
    return;
  }
  if (tty_) std::fprintf(out_, "\r\033[K");
  std::fprintf(out_, "%.*s\n", static_cast<int>(message.size()), message.data());
  if (tty_) draw(true);
  std::fflush(out_);
}

void Progress::finish() {
  if (finished_) return;
  if (g_job_rank != 0) {
    finished_ = true;
    return;
  }
  done_ = total_;
  status_.clear();
  if (tty_ || last_done_ != done_) draw(true);
  if (tty_) std::fprintf(out_, "\n");
  std::fflush(out_);
  finished_ = true;
}

void Progress::draw(bool force) {
  if (g_job_rank != 0) return;
  const double t = timer_.seconds();
  const double frac = done_ >= total_   ? 1.0
                      : total_cost_ > 0 ? std::min(done_cost_ / total_cost_, 1.0)
                                        : static_cast<double>(done_) / static_cast<double>(total_);
  const int decile = static_cast<int>(frac * 10);
  if (tty_) {
    if (!force && t - last_draw_ < 0.1) return;
  } else {
    if (!force && decile == last_decile_ && t - last_draw_ < 30.0) return;
  }
  last_draw_ = t;
  last_decile_ = decile;
  last_done_ = done_;
  const double rate = t > 0 ? static_cast<double>(done_) / t : 0.0;
  const std::string eta = done_ >= total_ ? "done in " + format_duration(t)
                          : frac > 0      ? "ETA " + format_duration(t * (1.0 - frac) / frac)
                                          : "ETA ?";
  if (tty_) {
    constexpr int kWidth = 28;
    const int filled = static_cast<int>(frac * kWidth);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(out_, "\r\033[K%s [%s] %3.0f%% %.0f/s %s  %s", label_.c_str(), bar.c_str(), frac * 100, rate,
                 eta.c_str(), status_.c_str());
  } else {
    // with unit costs the count and the percentage measure different things: say so
    std::fprintf(out_, "%s: %3.0f%% (%zu/%zu%s) %.0f/s %s  %s\n", label_.c_str(), frac * 100, done_, total_,
                 total_cost_ > 0 ? ", % weighted by cost" : "", rate, eta.c_str(), status_.c_str());
  }
  std::fflush(out_);
}

// ---------------------------------------------------------------------------------------------------- Figure

namespace {
std::string gp_quote(std::string_view s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o + "\"";
}
std::string gp_number(double v) { return std::isfinite(v) ? fmt::format("{:.9g}", v) : "NaN"; }
}  // namespace

std::string gnuplot_script(const Figure& fig) {
  std::string s = fmt::format("# {} — drawn by xgrad-lab. Regenerate the images with: gnuplot {}.gp\n",
                              fig.title.empty() ? fig.name : fig.title, fig.name);
  // Data first, as datablocks: $d<panel>_<series>.
  for (std::size_t p = 0; p < fig.panels.size(); ++p)
    for (std::size_t k = 0; k < fig.panels[p].series.size(); ++k) {
      const Series& ser = fig.panels[p].series[k];
      if (ser.x.size() != ser.y.size() || (!ser.y2.empty() && ser.y2.size() != ser.y.size()))
        xg::fail("lab::Figure '{}': series '{}' has {} x values and {} y values{}", fig.name, ser.title,
                 ser.x.size(), ser.y.size(), ser.y2.empty() ? "" : fmt::format(" and {} y2 values", ser.y2.size()));
      s += fmt::format("$d{}_{} << EOD\n", p, k);
      for (std::size_t i = 0; i < ser.x.size(); ++i) {
        s += gp_number(ser.x[i]);
        s += ' ';
        s += gp_number(ser.y[i]);
        if (!ser.y2.empty()) {
          s += ' ';
          s += gp_number(ser.y2[i]);
        }
        s += '\n';
      }
      s += "EOD\n";
    }
  // The drawing, as a function of the terminal so PNG and SVG share it.
  std::string body;
  const bool multi = fig.panels.size() > 1 || fig.rows * fig.cols > 1;
  if (multi)
    body += fmt::format("set multiplot layout {},{} title {} font \",13\"\n", fig.rows, fig.cols,
                        gp_quote(fig.title));
  for (std::size_t p = 0; p < fig.panels.size(); ++p) {
    const Panel& pn = fig.panels[p];
    body += "reset\nset grid lc rgb '#dddddd'\nset datafile missing 'NaN'\n";
    body += "set style fill transparent solid 0.25 noborder\n";
    body += "set title " + gp_quote(pn.title.empty() && !multi ? fig.title : pn.title) + "\n";
    body += "set xlabel " + gp_quote(pn.xlabel) + "\nset ylabel " + gp_quote(pn.ylabel) + "\n";
    body += pn.logx ? "set logscale x\nset format x '%g'\n" : "";
    body += pn.logy ? "set logscale y\n" : "";
    if (pn.xrange) body += fmt::format("set xrange [{}:{}]\n", gp_number(pn.xrange->first), gp_number(pn.xrange->second));
    if (pn.yrange) body += fmt::format("set yrange [{}:{}]\n", gp_number(pn.yrange->first), gp_number(pn.yrange->second));
    body += pn.key == "off" ? "unset key\n" : "set key " + pn.key + " opaque box lc rgb '#cccccc'\n";
    for (const auto& c : pn.commands) body += c + "\n";
    std::string plot;
    for (std::size_t k = 0; k < pn.series.size(); ++k) {
      const Series& ser = pn.series[k];
      std::string using_style;
      if (ser.style == "band") using_style = "using 1:2:3 with filledcurves";
      else if (ser.style == "boxes") using_style = "using 1:2 with boxes";
      else using_style = "using 1:2 with " + ser.style;
      plot += fmt::format("{}$d{}_{} {} {} title {}", plot.empty() ? "plot " : ", \\\n     ", p, k, using_style,
                          ser.extra, gp_quote(ser.title));
    }
    body += plot.empty() ? "set label 'no data' at graph 0.45, graph 0.5\nset xrange [0:1]\nset yrange [0:1]\nplot NaN notitle\n" : plot + "\n";
  }
  if (multi) body += "unset multiplot\n";
  // gnuplot 5 has no functions of statements: write the body twice, once per terminal.
  // The output names are variables so that xgrad-lab can render to temporary names and rename them into place
  // (xgrad/atomic_file.h); run by hand, the script writes <name>.png and <name>.svg.
  s += fmt::format("if (!exists('png_out')) png_out = '{}.png'\nif (!exists('svg_out')) svg_out = '{}.svg'\n",
                   fig.name, fig.name);
  s += fmt::format("set terminal pngcairo size {},{} noenhanced font 'Sans,10'\nset output png_out\n", fig.width,
                   fig.height);
  s += body;
  s += fmt::format("set output\nset terminal svg size {},{} noenhanced font 'Sans,10' background rgb 'white'\n"
                   "set output svg_out\n",
                   fig.width, fig.height);
  s += body;
  s += "set output\n";
  return s;
}

std::optional<std::string> draw(const Figure& fig, const fs::path& dir) {
  const fs::path script = dir / (fig.name + ".gp");
  write_file_atomic(script, gnuplot_script(fig));
  const fs::path log = dir / (fig.name + ".gnuplot.log");
  const fs::path png = dir / (fig.name + ".png"), svg = dir / (fig.name + ".svg");
  // gnuplot writes temporary files beside the images; they replace the images only when both are complete.
  xg::AtomicFile png_tmp(png.string(), "xgrad-lab"), svg_tmp(svg.string(), "xgrad-lab");
  const std::string cmd =
      fmt::format("cd '{}' && gnuplot -e \"png_out='{}'; svg_out='{}'\" '{}.gp' > '{}' 2>&1", dir.string(),
                  fs::path(png_tmp.temp_path()).filename().string(), fs::path(svg_tmp.temp_path()).filename().string(),
                  fig.name, log.filename().string());
  const int rc = std::system(cmd.c_str());
  std::error_code ec;
  const fs::path png_written(png_tmp.temp_path());
  if (rc != 0 || !fs::exists(png_written, ec) || fs::file_size(png_written, ec) == 0) {
    std::string why;
    std::ifstream in(log);
    std::getline(in, why);
    fmt::print(stderr, "warning: gnuplot could not draw {} ({}); the data are in {}\n", png.string(),
               why.empty() ? "is gnuplot installed? apt-get install gnuplot-nox" : why, script.string());
    // No stale image of an earlier run may stand in for this one (the temporary files go with png_tmp/svg_tmp).
    fs::remove(png, ec);
    fs::remove(svg, ec);
    return std::nullopt;
  }
  png_tmp.commit();
  svg_tmp.commit();
  fs::remove(log, ec);
  return png.filename().string();
}

std::string gnuplot_version() {
  std::FILE* p = ::popen("gnuplot --version 2>/dev/null", "r");
  if (!p) return "";
  char buf[128] = {0};
  std::string v = std::fgets(buf, sizeof buf, p) ? buf : "";
  ::pclose(p);
  while (!v.empty() && (v.back() == '\n' || v.back() == '\r')) v.pop_back();
  return v;
}

// ---------------------------------------------------------------------------------------------------- Report

void Report::code(std::string_view text, std::string_view lang) {
  line("```" + std::string(lang));
  text_ += std::string(text);
  if (!text.empty() && text.back() != '\n') text_ += "\n";
  line("```");
  blank();
}

void Report::image(std::string_view alt, const std::optional<std::string>& file) {
  if (file) line(fmt::format("![{}]({})", alt, *file));
  else line(fmt::format("*(plot \"{}\" missing: gnuplot failed or is not installed; see the warning in the log)*", alt));
  blank();
}

void Report::table(const std::vector<std::string>& headers, const std::vector<std::vector<std::string>>& rows) {
  auto row_text = [](const std::vector<std::string>& r) {
    std::string s = "|";
    for (const auto& c : r) s += " " + c + " |";
    return s;
  };
  line(row_text(headers));
  std::string sep = "|";
  for (std::size_t i = 0; i < headers.size(); ++i) sep += "---|";
  line(sep);
  for (const auto& r : rows) {
    if (r.size() != headers.size())
      xg::fail("lab::Report::table: a row has {} cells for {} headers", r.size(), headers.size());
    line(row_text(r));
  }
  blank();
}

// ------------------------------------------------------------------------------------------------ formatting

std::string short_number(double v) {
  if (!std::isfinite(v)) return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
  return fmt::format("{:.3g}", v);
}

std::string percent(double f) { return std::isfinite(f) ? fmt::format("{:.1f}%", 100 * f) : "n/a"; }

Json versions() {
  Json v = Json::object();
  v["xgrad"] = XGRAD_VERSION;
#if defined(__clang__)
  v["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
  v["compiler"] = "gcc " __VERSION__;
#endif
  v["cli11"] = CLI11_VERSION;
  v["zlib"] = zlibVersion();
  v["openblas"] = openblas_get_config();
  v["sgemm"] = xg::blas::sgemm_backend_name();  // what runs the float32 products (xgrad/blas.h)
  v["cpu"] = xg::cpu::cpu_name();               // the CPU and the build's level (xgrad/cpu.h)
  v["arch"] = xg::cpu::build_arch();
  v["simd"] = xg::cpu::simd_name();
  v["gnuplot"] = gnuplot_version();
  return v;
}

}  // namespace lab
