#!/usr/bin/env bash
# gpu-deps.sh - fills .gpudeps/ (git-ignored) with what a GPU machine that
# cannot reach a package registry needs to build and check ecl, for
# scripts/gpu-check.sh to use there:
#   .gpudeps/debs/       Debian packages of the C libraries ecl links
#                        (inih, stb, zlib, oneDNN), unpacked there into a
#                        private prefix, never into /;
#   .gpudeps/mnist-10k/  the MNIST slice from ../shared/data, for the short
#                        training run when ../shared is not beside the
#                        checkout there.
# Run it here (it needs apt-get download, which needs no root), then send
# .gpudeps along with the working tree. About 11 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpudeps/debs .gpudeps/mnist-10k
(
    cd .gpudeps/debs
    apt-get download libinih-dev libinih1 libstb-dev libstb0 zlib1g-dev zlib1g \
        libdnnl-dev libdnnl2 >/dev/null
)
src=../shared/data/mnist-10k
if [ -d "$src" ]; then
    cp "$src"/*.gz .gpudeps/mnist-10k/
else
    echo "gpu-deps: $src not found; the GPU training check will need it there" >&2
fi
du -sh .gpudeps | sed 's/^/gpu-deps: /'
ls .gpudeps/debs .gpudeps/mnist-10k
