#!/usr/bin/env python3
"""Markdown table for docs/benchmarks.md ("LayerNorm and GroupNorm") from one bench_norm JSON file.

    build-bench/bin/bench_norm --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true \
        --benchmark_report_aggregates_only=true --benchmark_out=norm.json --benchmark_out_format=json
    python3 bench/norm_table.py norm.json

Minimum over repetitions of each <ln|gn>/<impl>/<phase>/<shape>/threads:<n>; ratios within this one run
(peer / fused: above 1 means fused is faster).
"""
import json
import sys


def fmt_us(v):
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}"


def main(path):
    with open(path) as f:
        data = json.load(f)
    best = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "min":  # bench_norm adds a "min" statistic over the repetitions
            continue
        name = b["run_name"].replace("/real_time", "")
        t = b["real_time"] * {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[b["time_unit"]]
        best[name] = min(best.get(name, float("inf")), t)
    rows = {}
    for name, t in best.items():
        kind, impl, phase, shape, thr = name.split("/")
        rows.setdefault((kind, shape, thr.split(":")[1], phase), {})[impl] = t
    print("| layer | shape | thr | phase | fused µs | composed µs | oneDNN µs | libtorch µs | composed / fused "
          "| oneDNN / fused | libtorch / fused |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    order = {"ln": 0, "gn": 1}
    for key in sorted(rows, key=lambda k: (order[k[0]], k[1], k[2], k[3] != "fwd")):
        kind, shape, thr, phase = key
        r = rows[key]
        f = r.get("fused")
        print(f"| {'LayerNorm' if kind == 'ln' else 'GroupNorm'} | {shape} | {thr} | {phase} | {fmt_us(f)} | "
              f"{fmt_us(r.get('composed'))} | {fmt_us(r.get('onednn'))} | {fmt_us(r.get('libtorch'))} | "
              f"{ratio(r.get('composed'), f)} | {ratio(r.get('onednn'), f)} | {ratio(r.get('libtorch'), f)} |")


if __name__ == "__main__":
    main(sys.argv[1])
