#!/usr/bin/env bash
# Training guards: a non-finite value stops the run with a message naming
# the tensor and the step (run.nan_policy=stop), or the step is skipped and
# counted (skip); a model that only produces NaN writes no results. The NaN
# is planted in a checkpoint's head bias, and the run resumed from it.
. "$(dirname "$0")/lib.sh"
need_mnist

args="configs/mnist_vgg4.ini --data.limit=300 --run.batch=50 --run.epochs=2 --model.width=8
      --run.threads=1 --run.kmeans_baseline=false --run.checkpoint_every=3 --run.keep_checkpoints=100"
$bin $args --run.out="$tmp/a" >/dev/null 2>&1
check "clean run exits 0" $?

# Plant a NaN in head.bias of the step-3 checkpoint; drop the later ones.
python3 - "$tmp/a/ckpt-3.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
begin = json.loads(b[8:8 + n])['head.bias']['data_offsets'][0]
b[8 + n + begin:8 + n + begin + 4] = struct.pack('<f', float('nan'))
open(p, 'wb').write(b)
PY
find "$tmp/a" -name 'ckpt-*.safetensors' ! -name ckpt-3.safetensors -delete
rm -f "$tmp/a/metrics.json" "$tmp/a/assignments.csv"
cp -r "$tmp/a" "$tmp/b"

$bin --resume "$tmp/a" >/dev/null 2>"$tmp/stop.err"
rc=$?
check "stop policy exits 1 (got $rc)" "$([ $rc -eq 1 ]; echo $?)"
check "message names the tensor, step and the way out" \
    "$(grep -q 'logits has a non-finite value' "$tmp/stop.err" && grep -q 'step 4' "$tmp/stop.err" \
       && grep -q 'nan_policy=skip' "$tmp/stop.err"; echo $?)"
check "no results written after the stop" "$([ ! -e "$tmp/a/metrics.json" ]; echo $?)"

$bin --resume "$tmp/b" --run.nan_policy=skip --allow-config-change >/dev/null 2>"$tmp/skip.err"
rc=$?
check "skip policy: NaN model gives no results, exit 1 (got $rc)" "$([ $rc -eq 1 ]; echo $?)"
check "skipped steps warned" "$(grep -q 'step skipped (run.nan_policy=skip' "$tmp/skip.err"; echo $?)"
last=$(grep '"kind": "epoch"' "$tmp/b/log.jsonl" | tail -n 1 | grep -o '"skipped_steps": [0-9]*' | awk '{print $2}')
check "epoch log counts the 9 skipped steps (got $last)" "$([ "$last" = 9 ]; echo $?)"
check "final message explains" "$(grep -q 'non-finite outputs' "$tmp/skip.err"; echo $?)"

# Collapse: one cluster's worth of data in ten clusters warns.
$bin $args --run.epochs=1 --optim.lr=1e-6 --model.clusters=10 --run.collapse_entropy=1 \
    --run.out="$tmp/c" >/dev/null 2>"$tmp/c.err"
check "collapse warning printed" "$(grep -q 'looks collapsed' "$tmp/c.err"; echo $?)"

finish test_guards
