# lib.sh - what the shell tests share; source it first thing:
#   . "$(dirname "$0")/lib.sh"
# It moves to the repository root, names the programs (BUILD picks the
# build folder, e.g. build-asan), makes a temporary folder removed on exit,
# and provides check / need_mnist / strip_timing / finish.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${BUILD:-build}/ecl-train
eval_bin=${BUILD:-build}/ecl-eval
mnist=../shared/data/mnist-10k
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 checks=0

# check NAME STATUS: one assertion; STATUS 0 passes.
check() {
    checks=$((checks + 1))
    if [ "$2" -ne 0 ]; then fails=$((fails + 1)); echo "FAIL $1"; fi
}

# Skips the test (exit 77) when the shared real MNIST slice is missing.
need_mnist() {
    if [ ! -f "$mnist/images-idx3-ubyte.gz" ]; then
        echo "skipped: $mnist not found (the shared real-data folder)"; exit 77
    fi
}

# A log or metrics file without its timing fields, the only ones allowed
# to differ between two runs of the same seed.
strip_timing() {
    sed -E 's/"(seconds|img_per_s|train_img_per_s|elapsed_s)": [0-9.e+-]*//g' "$1"
}

# The closing line and the verdict.
finish() {
    echo "$1: $((checks - fails)) checks passed, $fails failed"
    [ $fails -eq 0 ]
}
