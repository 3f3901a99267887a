#!/usr/bin/env bash
# Runs every test: the C test binaries in $BUILD/tests (BUILD defaults to
# build; `make sanitize` sets build/asan) and the shell tests tests/test_*.sh
# (which run $BUILD/ecl-train), each from the repository root. A test's exit
# status is its verdict: 0 passed, 77 skipped (it prints why), anything else failed.
# Prints one line per test and a final "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."

passed=0 failed=0 skipped=0 failed_names=()
build=${BUILD:-build}
log_dir=$build/test-logs
mkdir -p "$log_dir"

run_one() {
    local name=$1; shift
    local t0=$(date +%s%N)
    timeout 1200 "$@" >"$log_dir/$name.log" 2>&1
    local rc=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    local dt="$((ms / 1000)).$(( (ms % 1000) / 100 ))"
    case $rc in
        0)  passed=$((passed + 1)); printf 'PASS  %-28s %6ss\n' "$name" "$dt" ;;
        77) skipped=$((skipped + 1)); printf 'SKIP  %-28s %6ss  %s\n' "$name" "$dt" \
                "$(tail -n 1 "$log_dir/$name.log")" ;;
        *)  failed=$((failed + 1)); failed_names+=("$name")
            printf 'FAIL  %-28s %6ss  (exit %d)\n' "$name" "$dt" "$rc"
            tail -n 30 "$log_dir/$name.log" | sed 's/^/      | /' ;;
    esac
}

for t in "$build"/tests/test_*; do
    [ -x "$t" ] && run_one "$(basename "$t")" "$t"
done
for t in tests/test_*.sh; do
    [ -f "$t" ] && run_one "$(basename "$t" .sh)" bash "$t"
done

echo
[ ${#failed_names[@]} -gt 0 ] && echo "failed: ${failed_names[*]} (logs in $log_dir/)"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
