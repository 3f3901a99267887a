#!/usr/bin/env bash
# Fuzzes the readers of user bytes with libFuzzer (clang, ASan + UBSan).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   build, fuzz, merge, summary
#   scripts/fuzz.sh build                             build the harnesses only
#   scripts/fuzz.sh seeds                             rewrite fuzz/corpus/ (gcc)
#
# Targets: idx image config safetensors (default: all, one after the other,
# 60 s each). The library is compiled by clang with
# -fsanitize=fuzzer-no-link,address,undefined into build/fuzz/; for the image
# target stb_image itself is compiled from the system header
# (fuzz/stb_image_impl.c), so its decoders are instrumented too.
#
# Inputs: fuzz/corpus/<t>/ (seeds, committed) and fuzz/regress/<t>/
# (minimised interesting inputs, committed). Each run works in a scratch
# corpus under build/fuzz/, then rebuilds fuzz/regress/<t>/ with -merge=1 as
# the smallest set of old and new inputs that covers every edge seen (inputs
# over 4 KB are dropped to keep the repository small). Crashing inputs are copied
# to fuzz/crashes/<t>/; tests/test_fuzz_regress.c replays both folders in
# `make test`. Exit status: 1 when any target crashed, else 0.
set -u
cd "$(dirname "$0")/.."

TARGETS_ALL="idx image config safetensors"
OUT=build/fuzz
CC_FUZZ=${CC_FUZZ:-clang}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS_FUZZ="-g -O1 -fno-omit-frame-pointer -std=c11 -fopenmp -Iinclude -Wno-pass-failed $SAN"
LIBS="-linih -lstb -lz -lm -lpthread"
REGRESS_MAX_BYTES=4096      # larger minimised inputs are not kept in fuzz/regress/

# Per-target input size cap: big enough for the seeds and their mutations.
max_len() {
    case $1 in
        idx) echo 4096 ;; image) echo 16384 ;; config) echo 8192 ;;
        safetensors) echo 32768 ;;
    esac
}

die() { echo "fuzz.sh: $*" >&2; exit 2; }

# The library (every src/*.c but the mains) into build/fuzz/libecl-fuzz.a.
build_lib() {
    mkdir -p "$OUT/obj"
    local objs=() src obj
    for src in src/*.c; do
        case $src in src/main_*) continue ;; esac
        obj=$OUT/obj/$(basename "$src" .c).o
        objs+=("$obj")
        if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] ||
           [ -n "$(find include src -name '*.h' -newer "$obj" -print -quit)" ]; then
            $CC_FUZZ $CFLAGS_FUZZ -fsanitize=fuzzer-no-link -c "$src" -o "$obj" ||
                die "compiling $src failed"
        fi
    done
    rm -f "$OUT/libecl-fuzz.a"
    ar rcs "$OUT/libecl-fuzz.a" "${objs[@]}"
}

# One harness per target, linked with libFuzzer's main.
build_harnesses() {
    command -v "$CC_FUZZ" >/dev/null || die "$CC_FUZZ not found (apt-get install clang)"
    build_lib
    # stb's integer arithmetic overflows and over-shifts on junk headers in ways
    # its own checks then catch: reported in the log, not stopping the run.
    $CC_FUZZ $CFLAGS_FUZZ -fsanitize-recover=signed-integer-overflow,shift \
        -fsanitize=fuzzer-no-link -c fuzz/stb_image_impl.c -o "$OUT/stb_image_impl.o" ||
        die "compiling fuzz/stb_image_impl.c failed"
    local t
    for t in $TARGETS_ALL; do
        $CC_FUZZ $CFLAGS_FUZZ -fsanitize=fuzzer -Iinclude "fuzz/fuzz_$t.c" \
            "$OUT/stb_image_impl.o" "$OUT/libecl-fuzz.a" $LIBS -o "$OUT/fuzz_$t" ||
            die "linking fuzz_$t failed (libclang-rt-14-dev has libFuzzer)"
    done
    echo "fuzz.sh: built $(for t in $TARGETS_ALL; do printf '%s ' "$OUT/fuzz_$t"; done)"
}

# Seeds: make_seeds writes idx, image and safetensors; configs are copied.
make_seeds() {
    mkdir -p "$OUT"
    local t
    for t in idx image safetensors config; do
        rm -rf "fuzz/corpus/$t"
        mkdir -p "fuzz/corpus/$t"
    done
    gcc -std=c11 -O1 -Wall -Wextra -Wundef -Wshadow -fopenmp -Iinclude fuzz/make_seeds.c \
        $(ls src/*.c | grep -v '/main_') $LIBS -o "$OUT/make_seeds" ||
        die "building fuzz/make_seeds failed"
    "$OUT/make_seeds" fuzz/corpus || die "make_seeds failed"
    cp configs/*.ini fuzz/corpus/config/
    printf -- '--model.clusters=5\n[run]\nseed = 3\nepochs = 1\n' \
        >fuzz/corpus/config/override-first.ini
    du -sh fuzz/corpus
}

# Fuzzes one target for $1 seconds; prints one summary line.
fuzz_one() {
    local t=$1 secs=$2
    local work=$OUT/work/$t art=$OUT/artifacts/$t/ log=$OUT/fuzz_$t.log
    rm -rf "$work" "$art"
    mkdir -p "$work" "$art" "fuzz/regress/$t"
    cp fuzz/corpus/$t/* fuzz/regress/$t/* "$work"/ 2>/dev/null

    # The run: ASan must also halt on leaks it finds at exit of each input.
    OMP_NUM_THREADS=1 ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
        "$OUT/fuzz_$t" "$work" -max_total_time="$secs" -max_len="$(max_len "$t")" \
        -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$art" -print_final_stats=1 \
        >"$log" 2>&1
    local rc=$?

    # Keep crashes (also timeouts and OOMs) where the replay test finds them.
    local n_crash=0 f
    for f in "$art"*; do
        [ -f "$f" ] || continue
        mkdir -p "fuzz/crashes/$t"
        cp "$f" "fuzz/crashes/$t/"
        n_crash=$((n_crash + 1))
    done

    # Merge into a fresh folder: the smallest set of what regress/ had and what
    # this run found that keeps every edge covered (edges, not hit counts, so
    # the set stays small), then it replaces regress/.
    local fresh=$OUT/regress-new/$t
    rm -rf "$fresh"
    mkdir -p "$fresh"
    OMP_NUM_THREADS=1 "$OUT/fuzz_$t" -merge=1 -use_counters=0 -max_len="$(max_len "$t")" \
        -timeout=10 -rss_limit_mb=2048 "$fresh" "fuzz/regress/$t" "$work" \
        >"$OUT/merge_$t.log" 2>&1 &&
        rm -rf "fuzz/regress/$t" && mv "$fresh" "fuzz/regress/$t"
    # The repo stays small: big finds are dropped (the seeds cover big files).
    find "fuzz/regress/$t" -type f -size +"$REGRESS_MAX_BYTES"c -delete
    local execs cov ub
    ub=$(grep 'runtime error' "$log" | sort -u | wc -l)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*')
    printf '%-12s %5ss  execs %-9s cov %-5s regress %3s  crashes %s  UB notes %s  (exit %d, %s)\n' \
        "$t" "$secs" "${execs:-?}" "${cov:-?}" "$(ls "fuzz/regress/$t" | wc -l)" "$n_crash" \
        "$ub" "$rc" "$log"
    [ "$n_crash" -eq 0 ]
}

case ${1:-} in
    build) build_harnesses; exit ;;
    seeds) make_seeds; exit ;;
esac
secs=${1:-60}
shift || true
targets=${*:-$TARGETS_ALL}
case $secs in *[!0-9]*|'') die "SECONDS_PER_TARGET must be a number, got '$secs'" ;; esac
for t in $targets; do
    case " $TARGETS_ALL " in *" $t "*) ;; *) die "unknown target '$t' ($TARGETS_ALL)" ;; esac
done

build_harnesses
status=0
for t in $targets; do
    fuzz_one "$t" "$secs" || status=1
done
echo "regression corpus: $(find fuzz/regress -type f -printf '%s\n' | awk '{s += $1}
    END {print s + 0}') bytes; crashes kept in" \
     "fuzz/crashes/ (replayed by make test: build/tests/test_fuzz_regress)"
exit $status
