#!/usr/bin/env bash
# CPU speed of ecl against PyTorch on the same vgg4 training step (forward,
# EM, loss, backward, Adam) and inference pass: build/ecl-bench and
# scripts/bench_torch.py, one process per case (so peak memory is per case),
# for each shape at 1 thread and at every core. Prints images/s of both, the
# ratio ecl / PyTorch, conv GFLOP/s and peak memory; writes the JSON lines of
# both sides and build/bench/bench.json (with CPU, versions, threads).
#
# usage: scripts/bench.sh [--quick] [--steps N] [--threads "1 2"]
#   --quick   batches / 10 and one timed step: checks the script in seconds
#             (not numbers to quote)
# Numbers from a machine that runs other jobs are noisy: compare ratios
# measured in the same run, and rerun before believing a small difference.
set -euo pipefail
cd "$(dirname "$0")/.."

steps=3 warmup=1 div=1 threads="1 $(nproc)"
while [ $# -gt 0 ]; do
    case $1 in
        --quick) steps=1; warmup=0; div=10; shift ;;
        --steps) steps=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        *) echo "bench.sh: unknown option '$1' (see the header of $0)" >&2; exit 2 ;;
    esac
done

py=/usr/bin/python3
bench=${BUILD:-build}/ecl-bench
[ -x "$bench" ] || { echo "bench.sh: $bench missing: run 'make $bench'" >&2; exit 1; }
"$py" -c 'import torch' 2>/dev/null || {
    echo "bench.sh: PyTorch missing for $py: apt-get install -y python3-torch" >&2; exit 1; }

out=build/bench
mkdir -p "$out"
: >"$out/ecl.jsonl"
: >"$out/torch.jsonl"

# channels size batch, as in DESIGN.md's data sets (MNIST, CIFAR, STL).
cases="1 28 250
3 32 250
3 96 160"

echo "bench.sh: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $steps timed step(s)" >&2
while read -r c s b; do
    b=$(( b / div > 1 ? b / div : 2 ))
    for t in $threads; do
        args="--channels=$c --size=$s --batch=$b --threads=$t --steps=$steps --warmup=$warmup"
        echo "bench.sh: ${c}x${s}x${s} batch $b, $t thread(s)" >&2
        "$bench" $args >>"$out/ecl.jsonl"
        "$py" scripts/bench_torch.py run ${args//=/ } >>"$out/torch.jsonl"
    done
done <<<"$cases"

"$py" scripts/bench_torch.py report --ecl "$out/ecl.jsonl" --torch "$out/torch.jsonl" \
    --out "$out/bench.json"
