#!/usr/bin/env bash
# Exact resume: a run stopped (by SIGINT, or cut back to an earlier
# mid-epoch checkpoint as after a crash) and resumed must end with the same
# weights, log and assignments as one that ran straight through.
. "$(dirname "$0")/lib.sh"
need_mnist

# Tensor bytes of a checkpoint (header metadata names the run folder).
tensors() {
    python3 - "$1" <<'PY'
import json, struct, sys, hashlib
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n]); h.pop('__metadata__', None)
print(hashlib.sha256(json.dumps(h, sort_keys=True).encode() + b[8 + n:]).hexdigest())
PY
}
same_run() {  # same_run NAME DIR_A DIR_B
    check "$1: same assignments" "$(cmp -s "$2/assignments.csv" "$3/assignments.csv"; echo $?)"
    check "$1: same log" "$(diff <(strip_timing "$2/log.jsonl") <(strip_timing "$3/log.jsonl") >/dev/null; echo $?)"
    check "$1: same final weights" "$([ "$(tensors "$2/ckpt-48.safetensors")" = \
        "$(tensors "$3/ckpt-48.safetensors")" ]; echo $?)"
}

args="configs/mnist_vgg4.ini --data.limit=1200 --run.batch=50 --run.epochs=2 --model.width=16
      --model.heads=2 --em.warm_start=true --run.log_every=5 --run.threads=1
      --run.kmeans_baseline=false --run.checkpoint_every=7 --run.keep_checkpoints=100"

# The reference: straight through.
$bin $args --run.out="$tmp/a" >/dev/null 2>"$tmp/a.err"
check "reference run exits 0" $?

# After a crash: keep only the mid-epoch checkpoint of step 14, resume.
$bin $args --run.out="$tmp/b" >/dev/null 2>&1
for f in "$tmp"/b/ckpt-*.safetensors; do
    [ "$(basename "$f")" = ckpt-14.safetensors ] || rm -f "$f"
done
rm -f "$tmp/b/assignments.csv" "$tmp/b/metrics.json"
$bin --resume "$tmp/b" >/dev/null 2>"$tmp/b.err"
check "resume after crash exits 0" $?
grep -q "global step 14" "$tmp/b.err"
check "resumed from step 14" $?
same_run "crash at step 14" "$tmp/a" "$tmp/b"

# SIGINT: finish the step, checkpoint, exit 130 with how to resume.
$bin $args --run.out="$tmp/c" >/dev/null 2>"$tmp/c.err" &
pid=$!
sleep 2
kill -INT $pid
wait $pid
rc=$?
if [ $rc -eq 130 ]; then
    grep -q -- "--resume $tmp/c" "$tmp/c.err"
    check "signal message says how to resume" $?
    $bin --resume "$tmp/c" >/dev/null 2>&1
    check "resume after SIGINT exits 0" $?
else
    check "SIGINT run ends 130 or finished first (rc $rc)" "$([ $rc -eq 0 ]; echo $?)"
    [ $rc -eq 0 ] || tail -n 5 "$tmp/c.err"
fi
same_run "SIGINT" "$tmp/a" "$tmp/c"

# Refusals: another K is not this run; a fresh run will not clobber one.
$bin --resume "$tmp/a" --model.clusters=7 >/dev/null 2>"$tmp/k.err"
check "other K refused" "$([ $? -ne 0 ] && grep -q "model.clusters" "$tmp/k.err"; echo $?)"
$bin $args --run.out="$tmp/a" >/dev/null 2>"$tmp/f.err"
check "fresh run into a used folder refused" "$([ $? -ne 0 ] && grep -q -- "--resume" "$tmp/f.err"; echo $?)"
$bin --resume "$tmp/nothing" >/dev/null 2>"$tmp/n.err"
check "missing resume path refused" "$([ $? -ne 0 ] && grep -q "nothing" "$tmp/n.err"; echo $?)"

finish test_resume
