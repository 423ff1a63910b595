#!/usr/bin/env python3
"""Markdown tables for docs/benchmarks.md ("CPUs and builds") from the JSON files of bench/compare_arch.sh.

    python3 bench/arch_table.py arch-bench

Files: bn-<build>-<round>.json and step-<build>-<round>.json, <build> = native | v3 (x86-64-v3 with oneDNN and
libtorch held to AVX2). Each cell is the minimum (BatchNorm) or the median of the medians (training step) over
every round of that build, so both builds' numbers come from the same interleaved run.
"""
import glob
import json
import os
import statistics
import sys

BUILDS = ["native", "v3"]
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
                out.setdefault((b, r["run_name"]), []).append(r["real_time"] * scale)
    return out, ctx


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "—"


def us(v):
    return "—" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")


def main(folder):
    bn, ctx = load(os.path.join(folder, "bn-{}-*.json"), "min")
    step, _ = load(os.path.join(folder, "step-{}-*.json"), "median")
    for b in BUILDS:
        c = ctx.get(b, {})
        print(f"- {b}: cpu {c.get('cpu', '?')}, xgrad {c.get('xgrad_arch', '?')}, date {c.get('date', '?')}")
    print()

    def t(build, impl, phase, shape, thr):
        v = bn.get((build, f"bn/{impl}/{phase}/{shape}/threads:{thr}"))
        return min(v) if v else None

    def train(build, impl, shape, thr):  # forward + backward
        f, g = t(build, impl, "train_fwd", shape, thr), t(build, impl, "bwd", shape, thr)
        return f + g if f is not None and g is not None else None

    print("BatchNorm, training forward + backward, float32 (µs; ratios within each build):")
    print()
    print("| shape | thr | fused native | fused v3 | v3 / native | libtorch / fused native | libtorch / fused v3 "
          "| composed / fused native | composed / fused v3 | fused / oneDNN native | fused / oneDNN v3 |")
    print("|" + "---|" * 11)
    for shape in SHAPES:
        for thr in (1, 2):
            fn, fv = train("native", "fused", shape, thr), train("v3", "fused", shape, thr)
            cells = [shape, str(thr), us(fn), us(fv), ratio(fv, fn)]
            for impl in ("libtorch", "composed"):
                cells += [ratio(train(b, impl, shape, thr), f) for b, f in (("native", fn), ("v3", fv))]
            dn = "onednn_nc" if shape.count("x") == 1 else "onednn_nchw"
            cells += [ratio(f, train(b, dn, shape, thr)) for b, f in (("native", fn), ("v3", fv))]
            print("| " + " | ".join(cells) + " |")
    print()
    print("Training step, one thread (median of medians; xgrad / libtorch within each build):")
    print()
    print("| model | xgrad native | xgrad v3 | v3 / native | xgrad / libtorch native | xgrad / libtorch v3 |")
    print("|---|---|---|---|---|---|")
    for m in ("mlp", "mlp_bn", "cnn"):
        x = {b: statistics.median(step.get((b, f"step/xgrad/{m}"), [0])) or None for b in BUILDS}
        p = {b: statistics.median(step.get((b, f"step/libtorch/{m}"), [0])) or None for b in BUILDS}
        print(f"| {m} | {us(x['native'])} | {us(x['v3'])} | {ratio(x['v3'], x['native'])} | "
              f"{ratio(x['native'], p['native'])} | {ratio(x['v3'], p['v3'])} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "arch-bench")
