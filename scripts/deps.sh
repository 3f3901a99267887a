#!/usr/bin/env bash
# Installs the Debian packages ecl needs when run as root; otherwise prints
# the exact command to run. Exits 0 when everything is present.
#   scripts/deps.sh          what building, testing and the demo need
#   scripts/deps.sh bench    that, plus PyTorch (python3-torch) for the
#                            reference side of `make bench` and `make golden`
set -euo pipefail

packages=(gcc make pkg-config zlib1g-dev libdnnl-dev libopenblas-dev libinih-dev
          libstb-dev dataset-fashion-mnist python3)
[ "${1:-}" = bench ] && packages+=(python3-torch)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all packages present (${packages[*]})"
    exit 0
fi

line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: ${missing[*]}" >&2
    echo "deps: run as root:  apt-get update && $line" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
$line
