#!/usr/bin/env python3
"""Markdown tables for docs/batchnorm-fused.md §4 from one bench_batchnorm JSON file.

    build-bench/bin/bench_batchnorm --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true \
        --benchmark_report_aggregates_only=true --benchmark_out=bn.json --benchmark_out_format=json
    python3 bench/bn_table.py bn.json

Reads the minimum over repetitions of each benchmark (bn/<impl>/<phase>/<shape>/threads:<n>) and prints the
per-phase table and the training forward + backward table, ratios computed within this one run. A ratio that
misses its target is bold: fused / best oneDNN > 1, libtorch / fused < 4, composed / fused < 10.
"""
import itertools
import json
import sys

SHAPES = ["64x64x32x32", "32x128x28x28", "128x256x8x8", "256x1024", "60x100"]
PHASES = ["train_fwd", "bwd", "eval_fwd"]
PASSES = {"train_fwd": 3, "bwd": 3, "eval_fwd": 2}


def numel(shape):
    n = 1
    for s in shape.split("x"):
        n *= int(s)
    return n


def fmt_us(v):
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def bold_if(text, miss):
    return f"**{text}**" if miss else text


def header(*cells):
    """A markdown table's header row and separator."""
    print("| " + " | ".join(cells) + " |")
    print("|" + "---|" * len(cells))


def main(path):
    data = json.load(open(path))
    ctx = data["context"]
    t = {}  # (impl, phase, shape, threads) -> min real time in us
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "min":
            continue
        parts = b["run_name"].split("/")
        impl, phase, shape, thr = parts[1], parts[2], parts[3], int(parts[4].split(":")[1])
        scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[b["time_unit"]]
        t[(impl, phase, shape, thr)] = b["real_time"] * scale
    triad = {n: float(ctx.get(f"triad_GBps_threads:{n}", "nan")) for n in (1, 2)}
    print(f"STREAM triad: {triad[1]:.1f} GB/s (1 thread), {triad[2]:.1f} GB/s (2 threads); date {ctx.get('date')}")
    print()
    header("shape", "thr", "phase", "fused", "composed", "oneDNN nchw", "oneDNN nChw16c / nc", "libtorch",
           "fused / best oneDNN", "composed / fused", "fused GB/s", "share of triad")
    for shape, thr, ph in itertools.product(SHAPES, (1, 2), PHASES):
        g = lambda impl: t.get((impl, ph, shape, thr))
        fused, comp, nchw, lib = g("fused"), g("composed"), g("onednn_nchw"), g("libtorch")
        blk = g("onednn_nChw16c") or g("onednn_nc")
        if fused is None:
            continue
        dnn = [v for v in (nchw, blk) if v is not None]
        r_dnn = fused / min(dnn) if dnn else None
        r_comp = comp / fused if comp else None
        gbs = PASSES[ph] * numel(shape) * 4 / (fused * 1e-6) / 1e9
        print(f"| {shape} | {thr} | {ph} | {fmt_us(fused)} | {fmt_us(comp)} | {fmt_us(nchw)} | {fmt_us(blk)} "
              f"| {fmt_us(lib)} | {bold_if(f'{r_dnn:.2f}', r_dnn > 1.0) if r_dnn else '—'} "
              f"| {f'{r_comp:.1f}x' if r_comp else '—'} | {gbs:.1f} | {gbs / triad[thr]:.2f} |")
    print()
    header("shape", "thr", "libtorch fwd+bwd µs", "fused fwd+bwd µs", "libtorch / fused", "composed fwd+bwd µs",
           "composed / fused", "best oneDNN fwd+bwd µs", "fused / best oneDNN")
    for shape in SHAPES:
        for thr in (1, 2):
            s = lambda impl: (t.get((impl, "train_fwd", shape, thr)) or 0) + (t.get((impl, "bwd", shape, thr)) or 0)
            fused, lib, comp = s("fused"), s("libtorch"), s("composed")
            dnn = [v for v in (s("onednn_nchw"), s("onednn_nChw16c"), s("onednn_nc")) if v > 0]
            if not fused:
                continue
            r_lib = lib / fused if lib else None
            r_comp = comp / fused if comp else None
            r_dnn = fused / min(dnn) if dnn else None
            print(f"| {shape} | {thr} | {fmt_us(lib) if lib else '—'} | {fmt_us(fused)} "
                  f"| {bold_if(f'{r_lib:.2f}', r_lib < 4) if r_lib else '—'} | {fmt_us(comp) if comp else '—'} "
                  f"| {bold_if(f'{r_comp:.1f}x', r_comp < 10) if r_comp else '—'} "
                  f"| {fmt_us(min(dnn)) if dnn else '—'} | {bold_if(f'{r_dnn:.2f}', r_dnn > 1) if r_dnn else '—'} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bn_table.py bench_batchnorm.json")
    main(sys.argv[1])
