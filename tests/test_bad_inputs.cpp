// The bad-input table of docs/bad-inputs.md, checked row by row: for every row the test runs the input named
// by its id and asserts that the xg::Error's message is exactly the one the table shows ("<dir>" stands for a
// temporary folder). A row without a check here, a check without a row, or a message that changed fails.
//
// XGRAD_PRINT_BAD_INPUTS=1 bin/test_bad_inputs prints every id with its current message (to edit the table).
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <memory>
#include <sstream>
#include <string>

#include "xgrad/xgrad.h"

namespace fs = std::filesystem;
namespace nn = xg::nn;
namespace optim = xg::optim;
using xg::Tensor;

namespace {

const fs::path kDir = fs::temp_directory_path() / ("xgrad_bad_inputs_" + std::to_string(::getpid()));

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

std::string idx_bytes(std::vector<std::uint32_t> dims, std::size_t values) {
  std::string s{'\0', '\0', '\x08', static_cast<char>(dims.size())};
  for (auto d : dims)
    for (int k = 24; k >= 0; k -= 8) s += static_cast<char>((d >> k) & 0xFF);
  return s + std::string(values, '\x01');
}

// The last line xgrad-lab prints for `args`.
std::string lab_error(const std::string& args) {
  const fs::path log = kDir / "lab.log";
  const std::string cmd =
      "'" + std::string(XGRAD_BINARY_DIR) + "/bin/xgrad-lab' " + args + " > '" + log.string() + "' 2>&1";
  (void)std::system(cmd.c_str());
  std::string text = slurp(log);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text.substr(text.rfind('\n') + 1);
}

std::shared_ptr<nn::Sequential> mlp(std::size_t hidden) {
  return std::make_shared<nn::Sequential>(nn::Linear(4, hidden), nn::BatchNorm1d(hidden), nn::ReLU(),
                                          nn::Linear(hidden, 3));
}

// id -> the bad input (throws).
const std::map<std::string, std::function<void()>>& rows() {
  static const std::map<std::string, std::function<void()>> r{
      // ---- shapes and dtypes
      {"broadcast", [] { xg::zeros({2, 3}) + xg::zeros({4}); }},
      {"matmul-shapes", [] { xg::matmul(xg::zeros({64, 10}), xg::zeros({20, 5})); }},
      {"linear-features", [] { nn::Linear(784, 100).forward(xg::zeros({8, 100})); }},
      {"dtype-mix", [] { xg::matmul(xg::zeros({2, 2}), xg::zeros({2, 2}, xg::kFloat64)); }},
      {"reshape-numel", [] { xg::reshape(xg::zeros({2, 3}), {4, 2}); }},
      {"axis-range", [] { xg::sum(xg::zeros({2, 3}), {2}); }},
      {"conv-rank", [] { xg::conv2d(xg::zeros({1, 28, 28}), xg::zeros({8, 1, 3, 3})); }},
      {"bn-channels", [] { nn::BatchNorm1d(10).forward(xg::zeros({4, 12})); }},
      {"bn2d-rank", [] { nn::BatchNorm2d(3).forward(xg::zeros({4, 3})); }},
      // ---- values: NaN/Inf, empty tensors, one value per channel
      {"nan-forward", [] {
         xg::DetectAnomalyGuard anomaly;
         Tensor x = xg::from_vector({1.0, std::nan(""), 3.0}, {3});
         xg::log(x - 2.0);
       }},
      {"nan-gradient", [] {
         Tensor w = xg::ones({2}, xg::kFloat32, true);
         optim::SGD opt({w}, optim::SGDOptions(0.1));
         opt.set_check_finite(true, {"fc.weight"});
         w.set_grad(xg::from_vector({0.5, std::nan("")}, {2}));
         opt.step();
       }},
      {"bn-one-value", [] { nn::BatchNorm1d(3).forward(xg::zeros({1, 3})); }},
      {"empty-batch", [] { nn::functional::cross_entropy(xg::zeros({0, 10}), std::vector<std::size_t>{}); }},
      {"label-range", [] { nn::functional::cross_entropy(xg::zeros({2, 10}), std::vector<std::size_t>{3, 10}); }},
      {"dropout-p", [] { nn::Dropout(1.5); }},
      {"uniform-range", [] { xg::uniform({2}, 1.0, 0.0); }},
      // ---- autograd
      {"backward-twice", [] {
         Tensor x = xg::ones({2}, xg::kFloat32, true);
         Tensor y = (x * x).sum();
         y.backward();
         y.backward();
       }},
      {"backward-non-scalar", [] { (xg::ones({2, 2}, xg::kFloat32, true) * 2.0).backward(); }},
      {"backward-no-grad", [] { xg::ones({2}).sum().backward(); }},
      // ---- optimizers
      {"lr-negative", [] { optim::SGD({xg::ones({1}, xg::kFloat32, true)}, optim::SGDOptions(-0.1)); }},
      {"lr-nan", [] { optim::Adam({xg::ones({1}, xg::kFloat32, true)}, optim::AdamOptions(std::nan(""))); }},
      {"lr-inf", [] { optim::SGD({xg::ones({1}, xg::kFloat32, true)}, optim::SGDOptions(INFINITY)); }},
      {"no-parameters", [] { optim::Adam(std::vector<Tensor>{}, optim::AdamOptions(1e-3)); }},
      {"optimizer-state-kind", [] {
         auto m = mlp(5);
         optim::SGD sgd(m->parameters(), optim::SGDOptions(0.1).momentum(0.9));
         optim::Adam adam(m->parameters(), optim::AdamOptions(1e-3));
         adam.load_state_dict(sgd.state_dict());
       }},
      // ---- checkpoints and state dicts
      {"checkpoint-architecture", [] {
         nn::save(*mlp(8), (kDir / "wide.npz").string());
         nn::load(*mlp(5), (kDir / "wide.npz").string());
       }},
      {"checkpoint-missing-entry", [] {
         auto m = mlp(5);
         xg::Checkpoint saved, wanted;
         std::uint64_t step = 0;
         saved.add("model", *m);
         saved.save((kDir / "model-only.npz").string());
         optim::Adam opt(m->parameters(), optim::AdamOptions(1e-3));
         wanted.add("model", *m).add("optimizer", opt).add("step", step);
         wanted.load((kDir / "model-only.npz").string());
       }},
      {"checkpoint-truncated", [] {
         auto m = mlp(5);
         xg::Checkpoint ck;
         ck.add("model", *m);
         ck.save((kDir / "cut.npz").string());
         fs::resize_file(kDir / "cut.npz", 100);
         ck.load((kDir / "cut.npz").string());
       }},
      {"npy-magic", [] {
         write(kDir / "not.npy", "PK\x03\x04 this is a zip, not an npy");
         xg::load_npy((kDir / "not.npy").string());
       }},
      {"npz-missing", [] { xg::load_npz((kDir / "nowhere.npz").string()); }},
      {"loader-state", [] {
         xg::data::Dataset ds;
         ds.images = xg::zeros({20, 1, 2, 2});
         ds.labels.assign(20, 0);
         xg::data::DataLoader a(ds, xg::data::DataLoaderOptions(4)), b(ds, xg::data::DataLoaderOptions(5));
         a.next();
         b.load_state_dict(a.state_dict());
       }},
      // ---- datasets
      {"idx-missing", [] { xg::data::read_idx((kDir / "train-images-idx3-ubyte").string()); }},
      {"idx-magic", [] {
         write(kDir / "photo.idx", "\x89PNG\r\n\x1a\n");
         xg::data::read_idx((kDir / "photo.idx").string());
       }},
      {"idx-forged-size", [] {
         write(kDir / "forged-idx3-ubyte", idx_bytes({60000, 28, 4000}, 16));
         xg::data::read_idx((kDir / "forged-idx3-ubyte").string());
       }},
      {"idx-truncated", [] {
         write(kDir / "short-idx1-ubyte", idx_bytes({100}, 60));
         xg::data::read_idx((kDir / "short-idx1-ubyte").string());
       }},
      {"image-label-count", [] {
         write(kDir / "i-idx3-ubyte", idx_bytes({3, 2, 2}, 12));
         write(kDir / "l-idx1-ubyte", idx_bytes({2}, 2));
         xg::data::load_idx_pair((kDir / "i-idx3-ubyte").string(), (kDir / "l-idx1-ubyte").string());
       }},
      {"loader-batch-zero", [] {
         xg::data::Dataset ds;
         ds.images = xg::zeros({4, 1, 2, 2});
         ds.labels.assign(4, 0);
         xg::data::DataLoader(ds, xg::data::DataLoaderOptions(0));
       }},
      // ---- files written
      {"write-disk-full", [] {
         xg::set_write_fault_hook([](xg::WriteStep s, std::size_t) {
           return s == xg::WriteStep::Write ? xg::WriteFault{ENOSPC} : xg::WriteFault{};
         });
         struct Unhook {
           ~Unhook() { xg::set_write_fault_hook({}); }
         } unhook;
         xg::save_npz((kDir / "ck.npz").string(), mlp(5)->state_dict());
       }},
      {"write-no-folder", [] { xg::save_npy((kDir / "no-such-folder" / "w.npy").string(), xg::ones({2})); }},
      // ---- xgrad-lab
      {"lab-out-unwritable", [] {
         write(kDir / "a-file", "x");
         xg::fail("{}", lab_error("lr-sweep --tiny --out '" + (kDir / "a-file" / "results").string() + "'"));
       }},
      {"lab-data-missing", [] {
         xg::fail("{}", lab_error("lr-sweep --tiny --data '" + (kDir / "no-data").string() + "' --out '" +
                                  (kDir / "o").string() + "'"));
       }},
      {"lab-lr-nan", [] {
         xg::fail("{}", lab_error("landscape --tiny --mlp-lr nan --out '" + (kDir / "o").string() + "'"));
       }},
      {"lab-batch-larger", [] {
         xg::fail("{}", lab_error("regularisation --tiny --batch 500 --out '" + (kDir / "o").string() + "'"));
       }},
      {"lab-resume-nothing", [] {
         fs::create_directories(kDir / "finished");
         xg::fail("{}", lab_error("lr-sweep --resume '" + (kDir / "finished").string() + "'"));
       }},
  };
  return r;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const xg::Error& e) {
    std::string m = e.what();
    for (std::size_t p; (p = m.find(kDir.string())) != std::string::npos;) m.replace(p, kDir.string().size(), "<dir>");
    // What changes from run to run: temporary file names and anomaly mode's tensor ids.
    m = std::regex_replace(m, std::regex(R"(\.tmp-\d+-\d+)"), ".tmp-<pid>-<n>");
    m = std::regex_replace(m, std::regex(R"(#\d+)"), "#<n>");
    return std::regex_replace(m, std::regex(R"(\bt\d+\b)"), "t<id>");
  } catch (const std::exception& e) {
    return std::string("(not an xg::Error: ") + e.what() + ")";
  }
  return "(no error)";
}

// The rows of the table in docs/bad-inputs.md: id -> message (the cell's code span, `\|` unescaped).
std::vector<std::pair<std::string, std::string>> table() {
  std::ifstream in(fs::path(XGRAD_SOURCE_DIR) / "docs" / "bad-inputs.md");
  std::vector<std::pair<std::string, std::string>> out;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("| `", 0) != 0) continue;
    std::vector<std::string> cells;
    std::string cell;
    for (std::size_t i = 1; i < line.size(); ++i) {
      if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == '|') {
        cell += '|';
        ++i;
      } else if (line[i] == '|') {
        cells.push_back(cell);
        cell.clear();
      } else {
        cell += line[i];
      }
    }
    if (cells.size() != 3) continue;
    auto code = [](std::string c) {
      while (!c.empty() && c.front() == ' ') c.erase(0, 1);
      while (!c.empty() && c.back() == ' ') c.pop_back();
      const bool dbl = c.rfind("`` ", 0) == 0;
      const std::size_t strip = dbl ? 3 : 1;
      return c.size() >= 2 * strip ? c.substr(strip, c.size() - 2 * strip) : c;
    };
    out.emplace_back(code(cells[0]), code(cells[2]));
  }
  return out;
}

}  // namespace

TEST_CASE("every row of docs/bad-inputs.md gets exactly the message it shows") {
  fs::remove_all(kDir);
  fs::create_directories(kDir);
  if (std::getenv("XGRAD_PRINT_BAD_INPUTS")) {
    for (const auto& [id, f] : rows()) std::printf("%s\t%s\n", id.c_str(), message_of(f).c_str());
  }
  const auto t = table();
  CHECK(t.size() >= 30);
  std::map<std::string, int> seen;
  for (const auto& [id, expected] : t) {
    CAPTURE(id);
    ++seen[id];
    auto it = rows().find(id);
    REQUIRE_MESSAGE(it != rows().end(), "the table has a row '" << id << "' that this test does not check");
    CHECK(message_of(it->second) == expected);
  }
  for (const auto& [id, f] : rows()) CHECK_MESSAGE(seen[id] == 1, "row '" << id << "' is in the table " << seen[id] << " times");
  fs::remove_all(kDir);
}
