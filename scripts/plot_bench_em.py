#!/usr/bin/env python3
"""Plots ecl-bench-em's CSV (and the NumPy EM's, when present): seconds to
the KKT tolerance versus K (at the K sweep's N) and versus N (at the N
sweep's K), log scales, one line per solver. Writes a PNG.

Not here: running the benchmark (scripts/bench-em.sh).
"""
import argparse
import csv
import os
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot_bench_em: matplotlib missing; install with: "
             "apt-get install -y python3-numpy python3-matplotlib")


def load(path, solver=None):
    if not os.path.exists(path):
        return []
    rows = list(csv.DictReader(open(path)))
    for r in rows:
        r.setdefault("solver", solver)
        if solver:
            r["solver"] = solver
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", default="build/bench/bench_em.csv")
    ap.add_argument("--numpy-csv", default="build/bench/bench_em_numpy.csv")
    ap.add_argument("--out", default="build/bench/bench_em.png")
    ap.add_argument("--k-sweep-n", type=int, default=250)
    ap.add_argument("--n-sweep-k", type=int, default=10)
    args = ap.parse_args()
    rows = load(args.csv) + load(args.numpy_csv, "numpy_em")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, fixed, var, title in ((axes[0], ("n", args.k_sweep_n), "k", "N = %d" % args.k_sweep_n),
                                  (axes[1], ("k", args.n_sweep_k), "n", "K = %d" % args.n_sweep_k)):
        for solver in sorted({r["solver"] for r in rows}):
            pts = sorted((int(r[var]), float(r["seconds_median"])) for r in rows
                         if r["solver"] == solver and int(r[fixed[0]]) == fixed[1])
            if pts:
                ax.plot(*zip(*pts), marker="o", label=solver)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(var.upper())
        ax.set_ylabel("seconds to full KKT < tol")
        ax.set_title("pseudo-label solve, " + title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("plot_bench_em: wrote", args.out)


if __name__ == "__main__":
    main()
