// The layering of docs/architecture.md, checked on the sources: every `#include "xgrad/..."` (or <xgrad/...>) in
// framework/, layers/ and optim/ must point down or into the same layer. A failure names the file, the line and
// the forbidden header.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {
struct Rule {
  const char* folder;                   // a top-level folder
  std::vector<std::string> forbidden;   // header prefixes it must not include
};

// The includes of every C++ file below root/folder: (file, line number, header).
struct Include {
  std::string file;
  int line;
  std::string header;
};
std::vector<Include> includes_below(const fs::path& dir) {
  std::vector<Include> out;
  const std::regex inc(R"(^\s*#\s*include\s*[<"](xgrad/[^>"]+)[>"])");
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const auto ext = e.path().extension();
    if (!e.is_regular_file() || (ext != ".cpp" && ext != ".h")) continue;
    std::ifstream in(e.path());
    int n = 0;
    for (std::string l; std::getline(in, l);) {
      ++n;
      std::smatch m;
      if (std::regex_search(l, m, inc)) out.push_back({e.path().string(), n, m[1]});
    }
  }
  return out;
}
}  // namespace

TEST_CASE("architecture: no include points up or sideways between framework, layers, optim and dist") {
  const fs::path root = XGRAD_SOURCE_DIR;
  const std::vector<Rule> rules = {
      {"framework", {"xgrad/nn", "xgrad/optim", "xgrad/dist", "xgrad/xgrad.h"}},
      {"layers", {"xgrad/optim", "xgrad/dist", "xgrad/xgrad.h"}},
      {"optim", {"xgrad/nn", "xgrad/dist", "xgrad/xgrad.h"}},
      {"dist", {"xgrad/optim", "xgrad/xgrad.h"}},  // above framework and layers; optim's neighbour
  };
  std::size_t seen = 0;
  for (const Rule& r : rules) {
    const auto incs = includes_below(root / r.folder);
    seen += incs.size();
    for (const Include& i : incs)
      for (const auto& f : r.forbidden) {
        INFO(i.file, ":", i.line, " includes ", i.header, " (", r.folder, "/ may not include ", f, "*)");
        CHECK(i.header.rfind(f, 0) != 0);
      }
  }
  CHECK(seen > 100);  // the scan found the sources
  // the umbrella header lives with the top-level target, not in a library
  CHECK(fs::exists(root / "include/xgrad/xgrad.h"));
  CHECK_FALSE(fs::exists(root / "framework/include/xgrad/xgrad.h"));
}

TEST_CASE("architecture: framework/src is split into core, kernels, tools and io, with nothing left loose") {
  const fs::path src = fs::path(XGRAD_SOURCE_DIR) / "framework/src";
  for (const char* d : {"core", "kernels", "tools", "io"}) CHECK(fs::is_directory(src / d));
  for (const auto& e : fs::directory_iterator(src)) {
    INFO(e.path().string());
    CHECK(e.is_directory());
  }
  // core's private header is used by core only
  for (const char* d : {"kernels", "tools", "io"})
    for (const auto& e : fs::recursive_directory_iterator(src / d)) {
      if (!e.is_regular_file()) continue;
      std::ifstream in(e.path());
      for (std::string l; std::getline(in, l);) {
        INFO(e.path().string(), ": ", l);
        CHECK(l.find("#include \"detail.h\"") == std::string::npos);
        CHECK(l.find("core/detail.h") == std::string::npos);
      }
    }
}
