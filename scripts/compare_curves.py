#!/usr/bin/env python3
"""Comparisons for scripts/gpu-check.sh (standard library only).

  compare_curves.py CPU/log.jsonl GPU/log.jsonl
      the per-step loss of two runs of the same steps (same seed, data and
      config; one on the CPU, one on the GPU). The first step must agree to
      1e-3 (1 + |loss|): the same numbers summed in other orders. Later
      steps must stay within 0.02 + 2% of the CPU's loss: two float orders
      drift apart step by step, but a wrong kernel diverges at once. Prints
      one line starting with PASS or FAIL.

  compare_curves.py --steps ECL.jsonl TORCH.jsonl
      the table of ecl-bench --device=cuda against bench_torch.py --device
      cuda lines, paired by shape and precision, with the ratios.
"""
import json
import sys


def read_jsonl(path, kind=None):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            if kind is None or row.get("kind") == kind:
                out.append(row)
    return out


def curves(cpu_path, gpu_path):
    try:
        c, g = read_jsonl(cpu_path, "step"), read_jsonl(gpu_path, "step")
    except (OSError, ValueError) as e:
        print("FAIL: cannot read a run's log: %s" % e)
        return
    if not c or len(c) != len(g):
        print("FAIL: %d CPU steps against %d GPU steps" % (len(c), len(g)))
        return
    if any("loss" not in r for r in c + g):
        print("FAIL: a step line without its loss (a skipped step?) in %s or %s"
              % (cpu_path, gpu_path))
        return
    worst, bad = 0.0, []
    for i, (a, b) in enumerate(zip(c, g)):
        d = abs(a["loss"] - b["loss"])
        limit = 1e-3 * (1 + abs(a["loss"])) if i == 0 else 0.02 + 0.02 * abs(a["loss"])
        worst = max(worst, d)
        if d > limit or d != d:
            bad.append(a["global_step"])
    print("%s: %d steps, max |loss diff| %.2e, first step %.2e, last loss %.4f (CPU %.4f); "
          "GPU %.0f img/s, CPU %.0f img/s%s"
          % ("PASS" if not bad else "FAIL", len(c), worst, abs(c[0]["loss"] - g[0]["loss"]),
             g[-1]["loss"], c[-1]["loss"], g[-1]["img_per_s"], c[-1]["img_per_s"],
             "; outside at steps %s" % bad[:10] if bad else ""))


def precision(row):
    if "precision" in row:
        return row["precision"]
    return "tf32" if "tf32" in row.get("gemm", "") else "fp32"


def steps(ecl_path, torch_path):
    key = lambda r: (r["channels"], r["size"], r["batch"], precision(r))
    try:
        torch_rows = {key(r): r for r in read_jsonl(torch_path)}
        ecl_rows = read_jsonl(ecl_path)
    except (OSError, ValueError) as e:
        print("cannot read the timings: %s" % e)
        return
    print("%-9s %5s %5s | %10s %10s %6s | %10s %10s %6s" % (
        "shape", "batch", "prec", "ecl trn/s", "pt trn/s", "ratio", "ecl inf/s", "pt inf/s",
        "ratio"))
    for e in ecl_rows:
        t = torch_rows.get(key(e))
        if t is None:
            print("no PyTorch line for %s" % (key(e),))
            continue
        print("%-9s %5d %5s | %10.0f %10.0f %6.2f | %10.0f %10.0f %6.2f" % (
            "%dx%dx%d" % (e["channels"], e["size"], e["size"]), e["batch"], precision(e),
            e["train_img_s"], t["train_img_s"], e["train_img_s"] / t["train_img_s"],
            e["infer_img_s"], t["infer_img_s"], e["infer_img_s"] / t["infer_img_s"]))
    print("ratio = ecl / PyTorch images per second on the same GPU (> 1: ecl faster)")


def main(argv):
    if len(argv) == 4 and argv[1] == "--steps":
        steps(argv[2], argv[3])
    elif len(argv) == 3:
        curves(argv[1], argv[2])
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
