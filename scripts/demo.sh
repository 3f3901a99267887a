#!/usr/bin/env bash
# make demo: trains VGG4 on a slice of real Fashion-MNIST (Debian's
# dataset-fashion-mnist) and prints ACC / NMI / ARI beside a K-means
# baseline on the same images. Extra arguments are config overrides, e.g.
#   make demo DEMO_ARGS="--data.limit=0 --run.epochs=8"   (the full run)
set -euo pipefail
cd "$(dirname "$0")/.."

data=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$data" ]; then
    echo "demo: $data not found; run 'make deps' (package dataset-fashion-mnist)" >&2
    exit 1
fi
# runs/demo is the demo's scratch folder: each demo starts it afresh,
# unless the arguments send the run elsewhere (--run.out=...).
case " $* " in
    *" --run.out="*) ;;
    *) rm -rf runs/demo ;;
esac
exec build/ecl-train configs/demo_fashion_mnist.ini "$@"
