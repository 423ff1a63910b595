#!/usr/bin/env python3
"""Markdown tables for docs/benchmarks.md ("CPUs and builds") from the JSON files of bench/compare_arch.sh.

    python3 bench/arch_table.py arch-bench

Files: bn-<arm>-<round>.json and step-<arm>-<round>.json, <arm> = native | v3 (x86-64-v3) | v3avx2 (x86-64-v3
with oneDNN and libtorch held to AVX2, as on an AVX2-only CPU). Each cell is the median of the medians over
every round of that build, so both builds' numbers come from the same interleaved run. (Google Benchmark 1.7
reports mean, median, stddev and cv: the median of each repetition set is used throughout.)
"""
import glob
import json
import os
import statistics
import sys

BUILDS = ["native", "v3", "v3avx2"]
SHAPES = ["64x64x32x32", "128x256x8x8", "256x1024", "60x100"]


def load(pattern, aggregate):
    """{(build, run_name): [times in us]} over every file matching pattern (one placeholder for the build)."""
    out, ctx = {}, {}
    for b in BUILDS:
        for path in sorted(glob.glob(pattern.format(b))):
            data = json.load(open(path))
            ctx[b] = data["context"]
            for r in data["benchmarks"]:
                if r.get("aggregate_name") != aggregate:
                    continue
                scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[r["time_unit"]]
                name = "/".join(p for p in r["run_name"].split("/") if p != "real_time" and not p.startswith("min_time:"))
                out.setdefault((b, name), []).append(r["real_time"] * scale)
    return out, ctx


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "—"


def us(v):
    return "—" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")


def main(folder):
    bn, ctx = load(os.path.join(folder, "bn-{}-*.json"), "median")
    step, _ = load(os.path.join(folder, "step-{}-*.json"), "median")
    for b in BUILDS:
        c = ctx.get(b, {})
        print(f"- {b}: cpu {c.get('cpu', '?')}, xgrad {c.get('xgrad_arch', '?')}, date {c.get('date', '?')}")
    print()

    def t(build, impl, phase, shape, thr):
        v = bn.get((build, f"bn/{impl}/{phase}/{shape}/threads:{thr}"))
        return statistics.median(v) if v else None

    def train(build, impl, shape, thr):  # forward + backward
        f, g = t(build, impl, "train_fwd", shape, thr), t(build, impl, "bwd", shape, thr)
        return f + g if f is not None and g is not None else None

    print("BatchNorm, training forward + backward, float32 (µs; ratios within each build):")
    print()
    arms = ("native", "v3", "v3avx2")
    print("| shape | thr | fused native | v3 / native | v3avx2 / native | libtorch / fused: native, v3, v3avx2 "
          "| composed / fused: native, v3, v3avx2 | fused / oneDNN nchw (nc): native, v3, v3avx2 |")
    print("|" + "---|" * 8)
    for shape in SHAPES:
        for thr in (1, 2):
            f = {a: train(a, "fused", shape, thr) for a in arms}
            cells = [shape, str(thr), us(f["native"]), ratio(f["v3"], f["native"]), ratio(f["v3avx2"], f["native"])]
            for impl in ("libtorch", "composed"):
                cells.append(" / ".join(ratio(train(a, impl, shape, thr), f[a]) for a in arms))
            dn = "onednn_nc" if shape.count("x") == 1 else "onednn_nchw"
            cells.append(" / ".join(ratio(f[a], train(a, dn, shape, thr)) for a in arms))
            print("| " + " | ".join(cells) + " |")
    print()
    print("Training step, one thread (median of medians; xgrad / libtorch within each build):")
    print()
    print("| model | xgrad native µs | v3 / native | v3avx2 / native | xgrad / libtorch: native, v3, v3avx2 |")
    print("|---|---|---|---|---|")
    for m in ("mlp", "mlp_bn", "cnn"):
        x = {b: statistics.median(step.get((b, f"step/xgrad/{m}"), [0])) or None for b in BUILDS}
        p = {b: statistics.median(step.get((b, f"step/libtorch/{m}"), [0])) or None for b in BUILDS}
        print(f"| {m} | {us(x['native'])} | {ratio(x['v3'], x['native'])} | {ratio(x['v3avx2'], x['native'])} | "
              + " / ".join(ratio(x[b], p[b]) for b in BUILDS) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "arch-bench")
