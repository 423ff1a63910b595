#!/usr/bin/env python3
"""Rewrites every ```cpp block in README.md and docs/**/*.md from the source region its marker names.

    <!-- snippet: examples/first_program.cpp#main -->
    ```cpp
    ...copied from between `// [main]` and `// [/main]` in examples/first_program.cpp...
    ```
tests/test_docs.cpp checks the same thing in CI; this script is only a convenience for writers.
"""
import pathlib, re, sys, textwrap

root = pathlib.Path(__file__).resolve().parent.parent

def region(spec):
    path, name = spec.split("#", 1)
    lines = (root / path).read_text().splitlines()
    out, inside = [], False
    for l in lines:
        t = l.strip()
        if t == f"// [{name}]": inside = True; continue
        if t == f"// [/{name}]": break
        if inside: out.append(l.rstrip())
    if not inside: sys.exit(f"region {spec} not found")
    return textwrap.dedent("\n".join(out)).splitlines()

for doc in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]:
    lines, out, i, changed = doc.read_text().splitlines(), [], 0, False
    while i < len(lines):
        m = re.match(r"<!-- snippet:\s*(\S+)\s*-->", lines[i])
        out.append(lines[i]); i += 1
        if m and i < len(lines) and lines[i] in ("```cpp", "```c++"):
            out.append(lines[i]); i += 1
            old = []
            while i < len(lines) and lines[i] != "```": old.append(lines[i]); i += 1
            new = region(m.group(1))
            changed |= new != old
            out.extend(new)
    if changed:
        doc.write_text("\n".join(out) + "\n"); print("updated", doc.relative_to(root))
