#!/usr/bin/env bash
# gpu-check.sh - every device check of ecl on a machine with an NVIDIA GPU,
# in under five minutes including the build:
#   1. finds CUDA: $NVCC, nvcc on PATH, /usr/local/cuda*/bin, or NVIDIA's
#      pip packages beside PyTorch (nvidia/*/bin, include, lib);
#   2. builds: `make all` with that CUDA; when make cannot run here (it
#      stops on a missing libinih or stb, which a GPU image often lacks),
#      a direct build of the kernels, tests/test_cuda and the bench only;
#   3. runs tests/test_cuda, which must PASS here (a skip is a failure);
#   4. times em_solve_cuda vs em_solve_cpu (B=250, K=10 and 100, lambda
#      100) and the fused loss kernel (bench/bench_cuda.c).
# Logs and summary.json go to ${OUT:-./gpu-check-out}. Exit status 0 only
# when the build and test_cuda passed. Usage: scripts/gpu-check.sh
# (BUILD=dir to build elsewhere than build/, NVCC=path to pick the compiler).
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
# The direct build repeats the Makefile's NVCCFLAGS and archs: keep them in step.
nvcc_flags="-O3 -std=c++17 -Iinclude $extra_inc"
nvcc_flags="$nvcc_flags -Xcompiler -Wall,-Wextra,-Wshadow,-ffp-contract=off"
for a in 75 80 90; do nvcc_flags="$nvcc_flags --generate-code arch=compute_$a,code=sm_$a"; done
nvcc_flags="$nvcc_flags --generate-code arch=compute_90,code=compute_90"
cuda_link="$build/libecl_cuda.a -L$libdir -Wl,-rpath,$libdir $cudart -lstdc++ -lm"
cflags="-O3 -march=native -std=c11 -Wall -Wextra -Wundef -Wshadow -fopenmp -Iinclude \
-DECL_HAVE_CUDA=1"

direct_build() {
    mkdir -p "$build/cuda" "$build/tests"
    local f pids=()
    for f in kernels/*.cu; do
        "$nvcc" $nvcc_flags -c "$f" -o "$build/cuda/$(basename "$f" .cu).o" & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || return 1; done
    rm -f "$build/libecl_cuda.a"
    ar rcs "$build/libecl_cuda.a" "$build"/cuda/*.o || return 1
    cc $cflags -Itests tests/test_cuda.c src/em.c src/loss.c src/ops_cpu.c src/gemm.c \
        src/optim.c src/core.c src/rng.c $cuda_link -o "$build/tests/test_cuda"
}

# GPU_CHECK_DIRECT=1 skips make (to test the direct build on a full machine).
build_mode=make
: >"$out/build.log"
if [ -n "${GPU_CHECK_DIRECT:-}" ]; then
    log "GPU_CHECK_DIRECT set: direct build, make not tried"
    build_mode=direct
elif ! NVCCFLAGS="-O3 $extra_inc" CUDA_LIBDIR="$libdir" CUDART="$cudart" \
     timeout 240 make -j"$jobs" --no-print-directory BUILD="$build" NVCC="$nvcc" all \
     >"$out/build.log" 2>&1; then
    log "make all failed (tail of build.log below); trying the direct build"
    tail -n 5 "$out/build.log" | sed 's/^/    | /' >&2
    build_mode=direct
fi
if [ "$build_mode" = direct ]; then
    echo "---- direct build ----" >>"$out/build.log"
    timeout 240 bash -c "$(declare -f direct_build); $(declare -p nvcc nvcc_flags build \
        cflags cuda_link); direct_build" >>"$out/build.log" 2>&1 || build_mode=failed
fi
if [ "$build_mode" != failed ]; then
    { [ -f "$build/libecl.a" ] &&
      cc $cflags bench/bench_cuda.c "$build/libecl.a" $cuda_link -o "$build/bench_cuda" \
          >>"$out/build.log" 2>&1; } ||
    cc $cflags bench/bench_cuda.c src/em.c src/loss.c src/core.c src/rng.c $cuda_link \
        -o "$build/bench_cuda" >>"$out/build.log" 2>&1 || log "bench build failed"
fi
log "build: $build_mode ($(( $(date +%s) - t_start )) s so far)"

# ---- 3. test_cuda ----------------------------------------------------------------
test_status=not_run test_line=
if [ "$build_mode" != failed ]; then
    timeout 120 "$build/tests/test_cuda" >"$out/test_cuda.log" 2>&1
    rc=$?
    case $rc in
        0) test_status=pass ;;
        77) test_status=skipped_on_gpu_machine ;;
        *) test_status="fail (exit $rc)" ;;
    esac
    test_line=$(grep -E 'checks passed|skipped:' "$out/test_cuda.log" | tail -n 1)
    log "test_cuda: $test_status: $test_line"
fi

# ---- 4. timings -------------------------------------------------------------------
bench_status=not_run
if [ -x "$build/bench_cuda" ]; then
    if timeout 90 "$build/bench_cuda" >"$out/bench.jsonl" 2>"$out/bench.log"; then
        bench_status=ok
    else
        bench_status="failed (see bench.log)"
    fi
    cat "$out/bench.log" >&2
fi

# ---- summary ------------------------------------------------------------------------
json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
bench_json=$(paste -sd, "$out/bench.jsonl" 2>/dev/null)
{
    echo "{"
    echo "  \"gpu\": $(json_str "$gpu"),"
    echo "  \"nvcc\": $(json_str "$nvcc"), \"cuda_from\": $(json_str "$cuda_src"),"
    echo "  \"cuda_version\": $(json_str "$("$nvcc" --version | tail -n 1)"),"
    echo "  \"archs_built\": \"sm_75 sm_80 sm_90 + compute_90 PTX\","
    echo "  \"build\": $(json_str "$build_mode"),"
    echo "  \"test_cuda\": $(json_str "$test_status"), \"test_cuda_line\": $(json_str "$test_line"),"
    echo "  \"bench\": $(json_str "$bench_status"), \"timings\": [${bench_json}],"
    echo "  \"not_checked\": ["
    echo "    \"training on the GPU: the trainer has no --device cuda path yet (train.c is CPU only)\","
    echo "    \"cuDNN/cuBLAS layers: none are written yet\","
    echo "    \"multi-GPU / NCCL: nothing written yet\""
    echo "  ],"
    echo "  \"elapsed_s\": $(( $(date +%s) - t_start ))"
    echo "}"
} >"$out/summary.json"
log "summary in $out/summary.json ($(( $(date +%s) - t_start )) s)"
[ "$build_mode" != failed ] && [ "$test_status" = pass ]
