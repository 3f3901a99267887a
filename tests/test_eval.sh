#!/usr/bin/env bash
# ecl-eval end to end: a one-epoch run of ecl-train on 300 MNIST digits, then
# ecl-eval on the run folder and on the checkpoint file (same model, same data:
# the trainer's own assignments byte for byte and its ACC), on a subset, on
# image folders with and without class subfolders, and on every error case,
# each of which must exit non-zero with a message naming the problem.
set -u
cd "$(dirname "$0")/.."
eval_bin=build/ecl-eval train_bin=build/ecl-train
mnist=../shared/data/mnist-10k
for f in "$eval_bin" "$train_bin" "$mnist/images-idx3-ubyte.gz"; do
    if [ ! -e "$f" ]; then echo "test_eval: skipped: $f not found"; exit 77; fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 checks=0

# check NAME CONDITION...: one assertion, run as a command.
check() {
    local name=$1; shift
    checks=$((checks + 1))
    if ! "$@"; then fails=$((fails + 1)); echo "FAIL $name"; fi
}
# run_eval OUT ARGS...: ecl-eval, stdout to OUT.stdout, stderr to OUT.stderr; its status.
run_eval() {
    local out=$1; shift
    "$eval_bin" "$@" >"$out.stdout" 2>"$out.stderr"
}
# expect_error NAME PATTERN ARGS...: non-zero exit, stderr matching PATTERN.
expect_error() {
    local name=$1 pattern=$2; shift 2
    checks=$((checks + 1))
    run_eval "$tmp/err" "$@"
    local rc=$?
    if [ $rc -eq 0 ] || ! grep -qE -- "$pattern" "$tmp/err.stderr"; then
        fails=$((fails + 1))
        echo "FAIL $name: exit $rc, stderr:"; sed 's/^/  | /' "$tmp/err.stderr" | tail -5
    fi
}
# json_field FILE KEY: the value of "KEY": in FILE (one line per key).
json_field() { grep -o "\"$2\": [^,}]*" "$1" | head -1 | sed 's/^[^:]*: //'; }
# table_rows FILE: lines of confusion.txt after its comments and header.
table_rows() { grep -v '^#' "$1" | tail -n +2 | wc -l; }
# pgm FILE SEED: a 28 x 28 grey image (binary PGM) with a seeded pattern.
pgm() {
    local px='' oct
    for ((i = 0; i < 784; i++)); do
        printf -v oct '\\%03o' $(( (i * $2 + i / 28 * 7 + $2 * 31) % 251 + 1 ))
        px+=$oct
    done
    { printf 'P5\n28 28\n255\n'; printf "$px"; } >"$1"
}

# ---- a tiny run: one epoch, K = 10, batch 50, narrow network ----------------
run=$tmp/run
"$train_bin" configs/mnist_vgg4.ini --data.limit=300 --run.batch=50 --run.epochs=1 \
    --model.width=8 --run.kmeans_baseline=false --run.quiet=true --run.out="$run" \
    >"$tmp/train.log" 2>&1
ckpt=$(ls "$run"/ckpt-*.safetensors 2>/dev/null | head -1)
if [ -z "$ckpt" ]; then
    echo "FAIL ecl-train wrote no checkpoint into $run:"; ls "$run"; tail -5 "$tmp/train.log"
    exit 1
fi

# ---- the run folder: same model, same data -> the trainer's own results ------
check "eval of the run folder succeeds" run_eval "$tmp/e1" "$run"
check "eval_assignments.csv equals assignments.csv byte for byte" \
    cmp -s "$run/assignments.csv" "$run/eval_assignments.csv"
acc_train=$(json_field "$run/metrics.json" acc)
check "eval.json acc ($(json_field "$run/eval.json" acc)) = metrics.json acc ($acc_train)" \
    test -n "$acc_train" -a "$(json_field "$run/eval.json" acc)" = "$acc_train"
for key in nmi ari acc_majority; do
    check "eval.json $key = metrics.json $key" \
        test "$(json_field "$run/eval.json" $key)" = "$(json_field "$run/metrics.json" $key)"
done
check "eval.json n = 300" test "$(json_field "$run/eval.json" n)" = 300
check "eval.json names the head" test "$(json_field "$run/eval.json" head)" = 0
check "confusion.png is a PNG" \
    test "$(head -c 8 "$run/confusion.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a
check "confusion.txt has K = 10 rows" test "$(table_rows "$run/confusion.txt")" -eq 10
check "summary prints ACC and ACC-majority" grep -q "ACC-majority" "$tmp/e1.stdout"

# ---- the checkpoint file, into another folder -------------------------------
check "eval of the checkpoint file succeeds" run_eval "$tmp/e2" "$ckpt" --out "$tmp/o2"
check "same assignments from the file" cmp -s "$run/assignments.csv" "$tmp/o2/eval_assignments.csv"
check "same acc from the file" test "$(json_field "$tmp/o2/eval.json" acc)" = "$acc_train"

# ---- a subset: scored on its own -------------------------------------------
check "eval with --data.limit=100 succeeds" run_eval "$tmp/e3" "$run" --data.limit=100 --out "$tmp/o3"
check "subset: n = 100" test "$(json_field "$tmp/o3/eval.json" n)" = 100
check "subset: 100 assignment rows" test "$(wc -l <"$tmp/o3/eval_assignments.csv")" -eq 101
check "subset: the differing key is reported" grep -q "data.limit" "$tmp/e3.stderr"

# ---- a labelled image folder: class names, overclustering (K 10 > 2) ---------
mkdir -p "$tmp/classes/circle" "$tmp/classes/stripe"
for s in 1 2 3 4 5 6; do
    pgm "$tmp/classes/circle/c$s.pgm" $s; pgm "$tmp/classes/stripe/s$s.pgm" $((s + 40))
done
check "eval of a class folder succeeds" run_eval "$tmp/e5" "$run" --data.format=folder \
    --data.path="$tmp/classes" --out "$tmp/o5"
check "class folder: names in confusion.txt" grep -q "circle.*stripe" "$tmp/o5/confusion.txt"
check "class folder: 10 table rows" test "$(table_rows "$tmp/o5/confusion.txt")" -eq 10
check "class folder: 8 clusters unmatched" \
    test "$(json_field "$tmp/o5/eval.json" unmatched_clusters)" = 8
check "class folder: overclustering explained" grep -q "overclustering" "$tmp/e5.stdout"
check "class folder: file names in the assignments" \
    grep -q "^0,circle/c1.pgm," "$tmp/o5/eval_assignments.csv"

# ---- an unlabelled flat folder: assignments and sizes only -------------------
mkdir -p "$tmp/flat"
for s in 1 2 3 4 5 6 7 8; do pgm "$tmp/flat/img$s.pgm" $((s * 3)); done
check "eval of a flat folder succeeds" run_eval "$tmp/e4" "$run" --data.format=folder \
    --data.path="$tmp/flat" --out "$tmp/o5"
check "flat folder: says there are no labels" grep -q "no labels" "$tmp/e4.stdout"
check "flat folder: not labelled" test "$(json_field "$tmp/o5/eval.json" labelled)" = false
check "flat folder: no scores" test -z "$(json_field "$tmp/o5/eval.json" acc)"
check "flat folder: 8 rows with names" \
    test "$(grep -c ',img[0-9].pgm,' "$tmp/o5/eval_assignments.csv")" -eq 8
check "flat folder: the earlier table is gone" \
    test ! -e "$tmp/o5/confusion.png" -a ! -e "$tmp/o5/confusion.txt"

# ---- errors -------------------------------------------------------------------
mkdir -p "$tmp/empty" "$tmp/bad"
head -c 4000 "$ckpt" >"$tmp/bad/ckpt-6.safetensors"
expect_error "missing path"       "nowhere.*(No such|pass a run folder)" "$tmp/nowhere"
expect_error "no checkpoint"      "no checkpoint.*ecl-train"  "$tmp/empty"
expect_error "truncated file"     "ckpt-6.safetensors.*truncated" "$tmp/bad"
expect_error "model mismatch"     "model.clusters"            "$run" --model.clusters=7 --out "$tmp/o6"
expect_error "channels mismatch"  "data.channels"             "$run" --data.channels=3 --out "$tmp/o6"
expect_error "head out of range"  "head.*1 head"              "$run" --head 1 --out "$tmp/o6"
expect_error "unknown option"     "unknown option --frob"     "$run" --frob
expect_error "unknown key"        "frobnicate"                "$run" --run.frobnicate=1
expect_error "missing data"       "missing.gz"                "$run" --out "$tmp/o6" \
    --data.path="$tmp/missing.gz"
check "failed evaluations wrote nothing" test ! -e "$tmp/o6/eval.json"

echo "test_eval: $((checks - fails)) checks passed, $fails failed"
[ $fails -eq 0 ]
