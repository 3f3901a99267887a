#!/usr/bin/env python3
"""The outside reference for ecl-bench-em: plain EM for the pseudo-labels
written the usual way in NumPy (one thread), on the same sigma files and with
the same stopping rule (the full KKT measure of solvers.h, checked every 8
iterations, tol and cap as given). Reads the C bench's CSV for the cases,
writes its own CSV and prints the merged table: ecl's EM against NumPy's EM
and against both Newton solvers.

Not here: the C solvers (src/solvers*.c), the plot (plot_bench_em.py).
"""
import argparse
import csv
import os
import statistics
import sys
import time

try:
    import numpy as np
except ImportError:
    sys.exit("bench_em_numpy: numpy missing; install with: "
             "apt-get install -y python3-numpy python3-matplotlib")

FLOOR = 1e-30


def kkt_full(sigma, y, lam):
    """max of y|g - mu| and max(0, mu - g), over (1 + lambda); u uniform."""
    n, k = y.shape
    w = lam * (1.0 / k) / np.maximum(y.sum(0, dtype=np.float64) / n, FLOOR)
    yw = y * w
    mu = -(sigma + yw).sum(1, keepdims=True)
    comp = np.abs(-sigma - yw - y * mu)
    sign = sigma / np.maximum(y, FLOOR) + w + mu
    return max(comp.max(), sign.max()) / (1.0 + lam)


def em_numpy(sigma, lam, tol, max_iter, check_every=8):
    """Plain EM from y = sigma: y <- (sigma + w y) / row sum, w = lam u / ybar."""
    n, k = sigma.shape
    y = np.maximum(sigma, FLOOR)
    y /= y.sum(1, keepdims=True)
    it = 0
    while True:
        if tol > 0 and it % check_every == 0 and kkt_full(sigma, y, lam) < tol:
            return y, it, True
        if it >= max_iter:
            return y, it, False
        w = lam * (1.0 / k) / np.maximum(y.mean(0), FLOOR)
        y = sigma + w * y
        y /= y.sum(1, keepdims=True)
        np.maximum(y, FLOOR, out=y)
        it += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", default="build/bench/bench_em.csv", help="ecl-bench-em CSV")
    ap.add_argument("--sigma-dir", default="build/bench/sigma")
    ap.add_argument("--out", default="build/bench/bench_em_numpy.csv")
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--max-iter", type=int, default=100000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    rows = list(csv.DictReader(open(args.csv)))
    cases = []
    for r in rows:
        key = (int(r["n"]), int(r["k"]), float(r["lambda"]))
        if key not in cases:
            cases.append(key)

    out = []
    for n, k, lam in cases:
        path = os.path.join(args.sigma_dir, "sigma_%d_%d.f32" % (n, k))
        sigma = np.fromfile(path, dtype=np.float32).reshape(n, k).astype(np.float64)
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            y, it, conv = em_numpy(sigma, lam, args.tol, args.max_iter)
            times.append(time.perf_counter() - t0)
        out.append(dict(n=n, k=k, **{"lambda": lam}, iters=it, converged=int(conv),
                        seconds_median=statistics.median(times)))
        print("bench_em_numpy: N %-8d K %-5d lambda %-6g %7d iters %10.5f s%s" %
              (n, k, lam, it, out[-1]["seconds_median"], "" if conv else " (cap)"),
              file=sys.stderr)
    with open(args.out, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(out[0].keys()))
        wr.writeheader()
        wr.writerows(out)

    # The merged table: seconds (median) and the ratios the targets name.
    by = {(int(r["n"]), int(r["k"]), float(r["lambda"]), r["solver"]): r for r in rows}
    print("%8s %5s %6s | %-17s %-17s %-17s %-17s %-17s | %8s %8s %8s %9s %9s" %
          ("N", "K", "lambda", "ecl em", "numpy em", "dual", "newton", "newton_dense",
           "np/em", "dense/em", "newt/em", "dense/best", "dual dist"))
    for o in out:
        key = (o["n"], o["k"], o["lambda"])
        em, du, nt, dn = (by.get(key + (s,)) for s in ("em", "dual", "newton", "newton_dense"))
        conv = [r for (a, b, c, s), r in by.items() if (a, b, c) == key and r["converged"] == "1"]
        best = min(conv, key=lambda r: float(r["seconds_median"])) if conv else None

        def cell(r):
            if r is None:
                return "%-17s" % "-"
            star = "" if str(r["converged"]) == "1" else "*"
            return "%6s %9.5fs%s" % (r["iters"], float(r["seconds_median"]), star)

        def ratio(a, b):
            return "%8.1f" % (float(a["seconds_median"]) / float(b["seconds_median"])) \
                if a and b else "%8s" % "-"
        dist = "%9.1e" % float(du["dist_ref"]) if du and du.get("dist_ref") else "%9s" % "-"
        print("%8d %5d %6g | %s %s %s %s %s | %s %s %s %9s %s  (best %s)" %
              (o["n"], o["k"], o["lambda"], cell(em), cell(o), cell(du), cell(nt), cell(dn),
               ratio(o, em), ratio(dn, em), ratio(nt, em),
               ratio(dn, best).strip() if best else "-", dist,
               best["solver"] if best else "-"))
    print("(* = stopped at the iteration cap or stalled; seconds are medians of %d runs, one "
          "thread; dual dist = max |y - y*| of the dual, y* the lower-KKT of dual and "
          "newton at 1e-10)" % args.reps)


if __name__ == "__main__":
    main()
