#!/usr/bin/env bash
# Runs the pseudo-label solver benchmark (paper Table I): build/ecl-bench-em
# over its default sweep (or the options given, passed through), then the
# NumPy EM reference on the same sigma files on one thread, then the merged
# table and a PNG plot. Outputs in build/bench/. ecl runs on one thread too
# (ECL_BENCH_THREADS=N to change), so EM against NumPy is like for like. The Python parts are
# optional: without numpy/matplotlib it prints the install line and stops
# after the C table.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/bench
mkdir -p "$out"

OMP_NUM_THREADS=${ECL_BENCH_THREADS:-1} build/ecl-bench-em --csv="$out/bench_em.csv" --json="$out/bench_em.json" \
    --sigma-dir="$out/sigma" "$@" | tee "$out/bench_em_table.txt"

# The first Python that has both (a pyenv shim may hide Debian's packages).
py=
for cand in python3 /usr/bin/python3; do
    if "$cand" -c 'import numpy, matplotlib' 2>/dev/null; then py=$cand; break; fi
done
if [ -z "$py" ]; then
    echo "bench-em: NumPy reference and plot skipped; to add them run as root:" >&2
    echo "  apt-get install -y python3-numpy python3-matplotlib" >&2
    exit 0
fi
tol=1e-6
for a in "$@"; do case $a in --tol=*) tol=${a#--tol=} ;; esac; done
echo
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    "$py" scripts/bench_em_numpy.py --csv="$out/bench_em.csv" --sigma-dir="$out/sigma" \
    --out="$out/bench_em_numpy.csv" --tol="$tol" | tee "$out/bench_em_merged.txt"
"$py" scripts/plot_bench_em.py --csv="$out/bench_em.csv" \
    --numpy-csv="$out/bench_em_numpy.csv" --out="$out/bench_em.png"
rm -rf "$out/sigma"
