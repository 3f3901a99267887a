#!/usr/bin/env bash
# ecl-train on bad input: every case must exit non-zero with a message that
# names the culprit, and leave no file under a final name in the run folder.
set -u
cd "$(dirname "$0")/.."
bin=${BUILD:-build}/ecl-train
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 checks=0
mnist=../shared/data/mnist-10k

# expect_error NAME PATTERN ARGS...: non-zero exit, stderr matching PATTERN.
expect_error() {
    local name=$1 pattern=$2; shift 2
    checks=$((checks + 1))
    "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ $rc -eq 0 ] || ! grep -qE -- "$pattern" "$tmp/err"; then
        fails=$((fails + 1))
        echo "FAIL $name: exit $rc, stderr:"; sed 's/^/  | /' "$tmp/err" | tail -5
    fi
}

# A small valid config to break one piece at a time.
cat >"$tmp/ok.ini" <<INI
[data]
path = $mnist/images-idx3-ubyte.gz
labels = $mnist/labels-idx1-ubyte.gz
limit = 200
[run]
epochs = 1
batch = 50
out = $tmp/run
INI

expect_error "no config"        "no config file"               
expect_error "missing config"   "nope.ini"                     "$tmp/nope.ini"
expect_error "unknown key"      "frobnicate"                   "$tmp/ok.ini" --run.frobnicate=1
expect_error "unknown section"  "\[bogus\]|bogus"              "$tmp/ok.ini" --bogus.x=1
expect_error "bad number"       "run.epochs|epochs"            "$tmp/ok.ini" --run.epochs=two
expect_error "nan value"        "lambda"                       "$tmp/ok.ini" --loss.lambda=nan
expect_error "bad choice"       "sgd"                          "$tmp/ok.ini" --optim.name=rmsprop
expect_error "K > batch"        "64.*50|50.*64"                "$tmp/ok.ini" --model.clusters=64
expect_error "missing data"     "missing-images"               "$tmp/ok.ini" --data.path=$tmp/missing-images.gz --run.out=$tmp/r2
: > "$tmp/empty.gz"
expect_error "empty data file"  "empty.gz"                     "$tmp/ok.ini" --data.path=$tmp/empty.gz --run.out=$tmp/r3
head -c 1000 <(zcat $mnist/images-idx3-ubyte.gz) > "$tmp/cut.idx"
expect_error "truncated data"   "cut.idx"                      "$tmp/ok.ini" --data.path=$tmp/cut.idx --run.out=$tmp/r4
expect_error "labels as images" "magic|labels"                 "$tmp/ok.ini" --data.path=$mnist/labels-idx1-ubyte.gz --run.out=$tmp/r5
expect_error "device no value"  "--device needs cpu, auto or cuda" "$tmp/ok.ini" --device --run.out=$tmp/r10
expect_error "device choice"    "gpu.*cpu/auto/cuda"          "$tmp/ok.ini" --device gpu --run.out=$tmp/r8
# Where no GPU is usable (no CUDA build, no driver, no device), cuda must
# say which; on a GPU machine it trains.
if ! "${BUILD:-build}/tests/test_cuda" >/dev/null 2>&1; then
    expect_error "cuda device"  "no GPU is usable: .+|no CUDA backend" "$tmp/ok.ini" --run.device=cuda --run.out=$tmp/r7
    expect_error "--device cuda" "no GPU is usable: .+|no CUDA backend" "$tmp/ok.ini" --device cuda --run.out=$tmp/r9
fi
expect_error "batch > data"     "larger than the data set"     "$tmp/ok.ini" --data.limit=30 --run.batch=40 --run.out=$tmp/r6

# Failed runs leave no metrics or assignments under their final names.
for d in "$tmp"/r*; do
    checks=$((checks + 1))
    if [ -e "$d/metrics.json" ] || [ -e "$d/assignments.csv" ]; then
        fails=$((fails + 1)); echo "FAIL $d holds result files after a failed run"
    fi
done

echo "test_cli: $((checks - fails)) checks passed, $fails failed"
[ $fails -eq 0 ]
