#!/usr/bin/env bash
# gpu-check.sh - every device check of ecl on a machine with an NVIDIA GPU,
# in about five minutes including the build:
#   1. finds CUDA, cuDNN and cuBLAS: $NVCC, nvcc on PATH, /usr/local/cuda*,
#      or NVIDIA's pip packages beside PyTorch (nvidia/*/include, lib), and
#      unpacks the Debian packages of scripts/gpu-deps.sh (.gpudeps/) into a
#      private prefix for the C libraries the machine may lack;
#   2. builds with make; a CPU-only build is a failure here;
#   3. runs tests/test_cuda, which must PASS (a skip is a failure): every
#      kernel and the device model against their CPU twins;
#   4. trains 20 steps on 2,000 MNIST digits on the GPU and on the CPU from
#      the same seed and compares the loss curves (scripts/compare_curves.py);
#   5. times the EM and loss kernels (bench/bench_cuda.c), and the vgg4
#      training step and inference of ecl and of PyTorch on this GPU
#      (3x32x32 and 1x28x28, batch 250, fp32 and tf32);
#   6. with the time left (GPU_CHECK_BUDGET, default 290 s in all), the
#      paper's 50 epochs of configs/mnist_vgg4.ini on the GPU, with scores.
# Logs and summary.json go to ${OUT:-./gpu-check-out}. Exit status 0 only
# when the build, test_cuda and the loss-curve comparison passed.
# Usage: scripts/gpu-check.sh (BUILD=dir to build elsewhere than build/,
# NVCC=path to pick the compiler).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-./gpu-check-out}
mkdir -p "$out"
build=${BUILD:-build}
jobs=$(nproc 2>/dev/null || echo 4)
t_start=$(date +%s)
log() { echo "gpu-check: $*" | tee -a "$out/env.log" >&2; }
: >"$out/env.log"

# ---- 1. CUDA -------------------------------------------------------------------
# NVIDIA's pip packages: the folder of the `nvidia` namespace package.
pip_nvidia_dir() {
    python3 - <<'EOF' 2>/dev/null
import os
import nvidia
f = getattr(nvidia, "__file__", None)
print(os.path.dirname(f) if f else list(nvidia.__path__)[0])
EOF
}

find_nvcc() {
    local c
    for c in "${NVCC:-}" "$(command -v nvcc 2>/dev/null)" /usr/local/cuda/bin/nvcc \
             $(ls -d /usr/local/cuda-*/bin/nvcc 2>/dev/null | sort -V -r); do
        [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return; }
    done
    [ -n "$pip_dir" ] && find "$pip_dir" -path '*/bin/nvcc' -type f 2>/dev/null | head -n 1
}

pip_dir=$(pip_nvidia_dir || true)
nvcc=$(find_nvcc)
cuda_src=system
if [ -z "$nvcc" ]; then
    log "no nvcc found (PATH, /usr/local/cuda*, pip nvidia packages at '${pip_dir:-none}')"
    log "cannot build the kernels: install the CUDA toolkit or pass NVCC=/path/to/nvcc"
    exit 1
fi
[ -n "$pip_dir" ] && case $nvcc in "$pip_dir"/*) cuda_src=pip ;; esac
cuda_home=$(cd "$(dirname "$(readlink -f "$nvcc")")/.." && pwd)

# cudart beside nvcc, else in the pip packages (maybe only libcudart.so.N).
libdir= cudart=-lcudart extra_inc=
for d in "$cuda_home/lib64" "$cuda_home/lib"; do
    [ -e "$d/libcudart.so" ] && { libdir=$d; break; }
done
if [ -z "$libdir" ] && [ -n "$pip_dir" ]; then
    lib=$(find "$pip_dir" -name 'libcudart.so*' 2>/dev/null | sort | head -n 1)
    if [ -n "$lib" ]; then
        libdir=$(dirname "$lib")
        [ -e "$libdir/libcudart.so" ] || cudart="-l:$(basename "$lib")"
    fi
fi
# Headers nvcc may not find by itself with pip packages (cuda_runtime, cublas).
if [ "$cuda_src" = pip ]; then
    for d in "$pip_dir"/*/include; do extra_inc="$extra_inc -I$d"; done
fi
[ -n "$libdir" ] || { log "no libcudart found beside $nvcc or in pip packages"; exit 1; }

{
    echo "nvcc: $nvcc ($cuda_src), CUDA home $cuda_home, cudart $cudart in $libdir"
    "$nvcc" --version | tail -n 2
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv \
        2>&1 || echo "nvidia-smi failed"
} >>"$out/env.log" 2>&1
gpu=$(nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader \
      2>/dev/null | head -n 1)
log "CUDA: $nvcc ($cuda_src); GPU: ${gpu:-unknown (nvidia-smi failed)}"

# ---- 2. build --------------------------------------------------------------------
# cuDNN and cuBLAS: beside nvcc, in the system, or in the pip packages.
cudnn_inc= cudnn_libdir= cudnn_lib=-lcudnn cublas_lib=-lcublas
for d in "$cuda_home/include" /usr/include /usr/include/x86_64-linux-gnu \
         ${pip_dir:+"$pip_dir"/cudnn/include}; do
    [ -e "$d/cudnn.h" ] && { cudnn_inc=$d; break; }
done
for d in "$cuda_home/lib64" /usr/lib/x86_64-linux-gnu ${pip_dir:+"$pip_dir"/cudnn/lib}; do
    lib=$(ls "$d"/libcudnn.so* 2>/dev/null | sort | head -n 1)
    if [ -n "$lib" ]; then
        cudnn_libdir=$d
        [ -e "$d/libcudnn.so" ] || cudnn_lib="-l:$(basename "$lib")"
        break
    fi
done
if [ ! -e "$libdir/libcublas.so" ] && [ -n "$pip_dir" ]; then
    lib=$(find "$pip_dir" -name 'libcublas.so*' 2>/dev/null | sort | head -n 1)
    [ -n "$lib" ] &&
        cublas_lib="-L$(dirname "$lib") -Wl,-rpath,$(dirname "$lib") -l:$(basename "$lib")"
fi
log "cuDNN: include ${cudnn_inc:-not found}, lib ${cudnn_libdir:-not found} ($cudnn_lib);" \
    "cuBLAS: $cublas_lib"

# The C libraries this machine may lack, from the carried Debian packages
# (scripts/gpu-deps.sh), unpacked into a private prefix.
cppflags= ldflags=
if ls .gpudeps/debs/*.deb >/dev/null 2>&1; then
    prefix=/tmp/ecl-gpudeps
    rm -rf "$prefix" && mkdir -p "$prefix"
    for f in .gpudeps/debs/*.deb; do
        dpkg -x "$f" "$prefix" 2>>"$out/env.log" ||
            (cd "$prefix" && ar p "$OLDPWD/$f" data.tar.xz | tar xJ) 2>>"$out/env.log"
    done
    lib=$prefix/usr/lib/x86_64-linux-gnu
    cppflags="-I$prefix/usr/include"
    ldflags="-L$lib -Wl,-rpath,$lib"
    export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    log "unpacked $(ls .gpudeps/debs/*.deb | wc -l) carried Debian packages into $prefix"
fi

build_mode=make
: >"$out/build.log"
if ! CPPFLAGS="$cppflags" LDFLAGS="$ldflags" NVCCFLAGS="-O3 $extra_inc" \
     CUDA_LIBDIR="$libdir" CUDART="$cudart" CUDNN_INC="$cudnn_inc" \
     CUDNN_LIBDIR="$cudnn_libdir" CUDNN_LIB="$cudnn_lib" CUBLAS_LIB="$cublas_lib" \
     timeout 300 make -j"$jobs" --no-print-directory BUILD="$build" NVCC="$nvcc" all \
     >"$out/build.log" 2>&1; then
    build_mode=failed
    log "make all failed (tail of build.log below)"
    tail -n 8 "$out/build.log" | sed 's/^/    | /' >&2
elif ! grep -q 'CUDA       = nvcc found' "$out/build.log"; then
    build_mode=failed
    log "make built the CPU-only ecl: $(grep 'ecl build: CUDA' "$out/build.log")"
fi
log "build: $build_mode ($(( $(date +%s) - t_start )) s so far)"

# ---- 3. test_cuda ----------------------------------------------------------------
test_status=not_run test_line=
if [ "$build_mode" != failed ]; then
    timeout 180 "$build/tests/test_cuda" >"$out/test_cuda.log" 2>&1
    rc=$?
    case $rc in
        0) test_status=pass ;;
        77) test_status="skipped: no usable GPU (a failure here)" ;;
        *) test_status="fail (exit $rc)" ;;
    esac
    test_line=$(grep -E 'checks passed|skipped:' "$out/test_cuda.log" | tail -n 1)
    log "test_cuda: $test_status: $test_line"
    grep -E '^FAIL' "$out/test_cuda.log" | head -n 10 >&2
fi

# Without a passing test_cuda the GPU runs below would only fail again.
run_gpu=0
if [ "$test_status" = pass ]; then
    run_gpu=1
elif [ "$build_mode" != failed ]; then
    log "test_cuda did not pass: the training comparison and the timings are skipped"
fi
# The python3 that has PyTorch (NVIDIA's images: the first on PATH).
py=python3
for p in python3 /usr/bin/python3; do
    "$p" -c 'import torch' 2>/dev/null && { py=$p; break; }
done

# ---- 4. the same 20 steps on the GPU and on the CPU --------------------------------
data=../shared/data/mnist-10k
[ -e "$data/images-idx3-ubyte.gz" ] || data=.gpudeps/mnist-10k
curve_status=not_run curve_line=
if [ "$run_gpu" = 1 ] && [ -e "$data/images-idx3-ubyte.gz" ]; then
    short="--data.path=$data/images-idx3-ubyte.gz --data.labels=$data/labels-idx1-ubyte.gz
           --data.limit=2000 --run.epochs=1 --run.batch=100 --run.log_every=1
           --run.kmeans_baseline=false --run.seed=0"
    for dev in cpu cuda; do
        rm -rf "$out/train_$dev"
        timeout 150 "$build/ecl-train" configs/mnist_vgg4.ini $short --device $dev \
            --run.out="$out/train_$dev" >"$out/train_$dev.log" 2>&1 ||
            log "short training on $dev failed (see train_$dev.log)"
    done
    curve_line=$("$py" scripts/compare_curves.py "$out/train_cpu/log.jsonl" \
                 "$out/train_cuda/log.jsonl" 2>&1)
    case $curve_line in PASS*) curve_status=pass ;; *) curve_status=fail ;; esac
    log "loss curve GPU vs CPU: $curve_line"
elif [ "$run_gpu" = 1 ]; then
    curve_status="no data (../shared/data/mnist-10k or .gpudeps/mnist-10k)"
    log "loss curve: $curve_status"
fi

# ---- 5. timings -----------------------------------------------------------------------
bench_status=not_run
: >"$out/bench.jsonl"
if [ "$run_gpu" = 1 ] && [ -x "$build/bench_cuda" ]; then
    if timeout 90 "$build/bench_cuda" >"$out/bench.jsonl" 2>"$out/bench.log"; then
        bench_status=ok
    else
        bench_status="failed (see bench.log)"
    fi
    cat "$out/bench.log" >&2
fi
# ecl and PyTorch doing the same vgg4 step on this GPU, fp32 and tf32.
: >"$out/step_ecl.jsonl"
: >"$out/step_torch.jsonl"
if [ "$run_gpu" = 1 ]; then
    for shape in "3 32 250" "1 28 250"; do
        set -- $shape
        for prec in fp32 tf32; do
            args="--channels=$1 --size=$2 --batch=$3 --steps=20 --warmup=3"
            timeout 60 "$build/ecl-bench" $args --device=cuda --precision=$prec \
                >>"$out/step_ecl.jsonl" 2>>"$out/bench.log" ||
                log "ecl-bench $shape $prec failed"
            timeout 90 "$py" scripts/bench_torch.py run ${args//=/ } --device cuda \
                --precision $prec >>"$out/step_torch.jsonl" 2>>"$out/bench.log" ||
                log "PyTorch bench $shape $prec failed"
        done
    done
    "$py" scripts/compare_curves.py --steps "$out/step_ecl.jsonl" "$out/step_torch.jsonl" \
        >"$out/step_table.txt" 2>&1
    cat "$out/step_table.txt" >&2
fi

# ---- 6. a full-length run with the time left ---------------------------------------------
budget=${GPU_CHECK_BUDGET:-290}
full_line=
left=$(( budget - ($(date +%s) - t_start) ))
if [ "$curve_status" = pass ] && [ "$left" -gt 60 ]; then
    log "full run: configs/mnist_vgg4.ini, 50 epochs, on the GPU (up to $left s)"
    timeout "$left" "$build/ecl-train" configs/mnist_vgg4.ini --device cuda --run.epochs=50 \
        --data.path="$data/images-idx3-ubyte.gz" --data.labels="$data/labels-idx1-ubyte.gz" \
        --run.out="$out/full" --run.quiet=true >"$out/full.log" 2>&1
    full_line=$(grep -E '^(trained|ecl|k-means)' "$out/full.log" | tr '\n' ';')
    log "full run: ${full_line:-did not finish in time (see full.log)}"
fi

# ---- summary ------------------------------------------------------------------------
# One JSON string: backslash, quote and every control character escaped.
json_str() {
    local v
    v=$(printf '%s' "$1" | tr '\n\t\r' '   ' | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')
    printf '"%s"' "$v"
}
{
    echo "{"
    echo "  \"gpu\": $(json_str "$gpu"),"
    echo "  \"nvcc\": $(json_str "$nvcc"), \"cuda_from\": $(json_str "$cuda_src"),"
    echo "  \"cuda_version\": $(json_str "$("$nvcc" --version | tail -n 1)"),"
    echo "  \"archs_built\": \"sm_75 sm_80 sm_90 + compute_90 PTX\","
    echo "  \"build\": $(json_str "$build_mode"),"
    echo "  \"test_cuda\": $(json_str "$test_status"), \"test_cuda_line\": $(json_str "$test_line"),"
    echo "  \"loss_curve\": $(json_str "$curve_status"), \"loss_curve_line\": $(json_str "$curve_line"),"
    echo "  \"bench\": $(json_str "$bench_status"), \"timings\": [$(paste -sd, "$out/bench.jsonl")],"
    echo "  \"step_ecl\": [$(paste -sd, "$out/step_ecl.jsonl")],"
    echo "  \"step_torch\": [$(paste -sd, "$out/step_torch.jsonl")],"
    echo "  \"full_run\": $(json_str "$full_line"),"
    echo "  \"not_checked\": [\"several GPUs (NCCL): not written\", \"bf16 activations: not written\"],"
    echo "  \"elapsed_s\": $(( $(date +%s) - t_start ))"
    echo "}"
} >"$out/summary.json"
log "summary in $out/summary.json ($(( $(date +%s) - t_start )) s)"
[ "$build_mode" != failed ] && [ "$test_status" = pass ] && [ "$curve_status" = pass ]
