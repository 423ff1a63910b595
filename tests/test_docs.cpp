// Every C++ snippet in README.md and docs/ must be a verbatim copy of a region of a file that CI compiles.
//
// In markdown, a ```cpp block is preceded by a marker naming its source:
//     <!-- snippet: examples/first_program.cpp#main -->
// and the source file delimits the region with `// [main]` and `// [/main]` lines. The region is compared
// after removing its common indentation. `python3 scripts/sync_docs.py` rewrites the blocks from the sources.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {
std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) {
    while (!l.empty() && (l.back() == ' ' || l.back() == '\r')) l.pop_back();
    lines.push_back(l);
  }
  return lines;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& l : v) s += l + "\n";
  return s;
}

// The lines between `// [name]` and `// [/name]`, with their common indentation removed.
bool extract_region(const fs::path& file, const std::string& name, std::vector<std::string>& out) {
  const auto lines = read_lines(file);
  const std::string open = "// [" + name + "]", close = "// [/" + name + "]";
  bool inside = false, found = false;
  for (const auto& l : lines) {
    const auto t = l.substr(std::min(l.find_first_not_of(' '), l.size()));
    if (t == open) {
      inside = true;
      found = true;
      continue;
    }
    if (t == close) break;
    if (inside) out.push_back(l);
  }
  std::size_t indent = std::string::npos;
  for (const auto& l : out)
    if (!l.empty()) indent = std::min(indent, l.find_first_not_of(' '));
  if (indent != std::string::npos)
    for (auto& l : out) l = l.size() >= indent ? l.substr(indent) : std::string();
  return found;
}
}  // namespace

TEST_CASE("every C++ snippet in the docs is compiled code") {
  const fs::path root = XGRAD_SOURCE_DIR;
  std::vector<fs::path> docs{root / "README.md"};
  for (const auto& e : fs::recursive_directory_iterator(root / "docs"))
    if (e.path().extension() == ".md") docs.push_back(e.path());
  std::size_t checked = 0;
  for (const auto& doc : docs) {
    const auto lines = read_lines(doc);
    std::string marker;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      const std::string& l = lines[i];
      if (l.rfind("<!-- snippet:", 0) == 0) {
        marker = l;
        continue;
      }
      if (l == "```cpp" || l == "```c++") {
        const std::string where = doc.filename().string() + ":" + std::to_string(i + 1);
        INFO("C++ block at ", where);
        REQUIRE_MESSAGE(!marker.empty(), "a ```cpp block without a <!-- snippet: file#region --> marker");
        const auto spec = marker.substr(13, marker.find("-->") - 13);
        const auto trimmed = spec.substr(spec.find_first_not_of(' '), spec.find_last_not_of(' ') - spec.find_first_not_of(' ') + 1);
        const auto hash = trimmed.find('#');
        REQUIRE_MESSAGE(hash != std::string::npos, "marker needs file#region: ", marker);
        const fs::path src = root / trimmed.substr(0, hash);
        REQUIRE_MESSAGE(fs::exists(src), "snippet source missing: ", src.string());
        std::vector<std::string> region;
        REQUIRE_MESSAGE(extract_region(src, trimmed.substr(hash + 1), region), "region not found: ", trimmed);
        std::vector<std::string> block;
        for (++i; i < lines.size() && lines[i] != "```"; ++i) block.push_back(lines[i]);
        CHECK_MESSAGE(join(block) == join(region), "snippet differs from ", trimmed,
                      " (run python3 scripts/sync_docs.py)");
        ++checked;
        marker.clear();
      } else if (!l.empty()) {
        marker.clear();
      }
    }
  }
  MESSAGE("checked ", checked, " snippets");
}
