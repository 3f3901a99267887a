# ecl - build, test, demo, bench and deps targets.
#
# The CPU build always works with a C11 compiler; everything optional is
# detected and reported on one line each. One feature = one -D macro:
#   ECL_HAVE_DNNL      oneDNN's sgemm for the GEMMs (fastest, preferred)
#   ECL_HAVE_OPENBLAS  OpenBLAS's sgemm (used when oneDNN is absent)
#   (neither)          the portable C GEMM in src/gemm.c, slow but correct

CC      ?= cc
NVCC    ?= nvcc
BUILD   := build
CFLAGS  ?= -O3 -march=native
CFLAGS  += -std=c11 -Wall -Wextra -Wundef -Wshadow -fopenmp -Iinclude -MMD -MP
LDLIBS  := -lz -lm -lpthread
DEMO_ARGS ?=

# ---- optional libraries, probed once, reported once ----------------------
# CPPFLAGS / LDFLAGS point at libraries outside the system paths (see
# scripts/gpu-check.sh, which unpacks carried Debian packages).
have_hdr = $(shell printf '\#include <$(1)>\n' | $(CC) $(CPPFLAGS) -E -x c - >/dev/null 2>&1 && echo yes)

ifeq ($(call have_hdr,oneapi/dnnl/dnnl.h),yes)
  CFLAGS += -DECL_HAVE_DNNL=1
  LDLIBS += -ldnnl
  GEMM_MSG := oneDNN sgemm (libdnnl)
else ifeq ($(call have_hdr,cblas.h),yes)
  CFLAGS += -DECL_HAVE_OPENBLAS=1
  LDLIBS += -lopenblas
  GEMM_MSG := OpenBLAS sgemm (oneDNN not found: apt-get install libdnnl-dev for ~1.7x faster GEMMs)
else
  GEMM_MSG := portable C loops (slow: apt-get install libdnnl-dev)
endif

# LAPACK's dposv (from libopenblas) for newton_dense, the benchmark's naive
# baseline; without it solvers_newton.c uses its own Cholesky (slower).
have_lapack := $(shell printf 'void dposv_(void);\nint main(void){dposv_();return 0;}\n' | \
  $(CC) -x c - $(LDFLAGS) -lopenblas -o /dev/null >/dev/null 2>&1 && echo yes)
ifeq ($(have_lapack),yes)
  CFLAGS += -DECL_HAVE_LAPACK=1
  LDLIBS += $(if $(findstring -lopenblas,$(LDLIBS)),,-lopenblas)
  LAPACK_MSG := dposv from libopenblas (newton_dense)
else
  LAPACK_MSG := not found (newton_dense uses its own Cholesky: apt-get install libopenblas-dev)
endif

ifeq ($(call have_hdr,ini.h),yes)
  LDLIBS += -linih
else
  $(error libinih not found: run 'make deps' (or apt-get install libinih-dev))
endif
ifeq ($(call have_hdr,stb/stb_image.h),yes)
  LDLIBS += -lstb
else
  $(error stb_image not found: run 'make deps' (or apt-get install libstb-dev))
endif

NVCC_PATH := $(shell command -v $(NVCC) 2>/dev/null)

# ---- CUDA, when nvcc is found: kernels/*.cu -> $(BUILD)/libecl_cuda.a -------
# C code then sees ECL_HAVE_CUDA=1 and every program and test links cudart.
# CUDA 13 dropped sm_70 (`nvcc --list-gpu-arch` starts at sm_75), so the
# machine code is for sm_75 (Turing), sm_80 (Ampere) and sm_90 (Hopper),
# plus compute_90 PTX that newer GPUs compile when loading. CUDA_LIBDIR and
# CUDART say where cudart is (scripts/gpu-check.sh sets them for NVIDIA's
# pip packages). Without nvcc none of this applies: the CPU build as before.
CUDA_ARCHS := 75 80 90
CUDA_SRC   := $(wildcard kernels/*.cu)
CUDA_OBJ   := $(CUDA_SRC:kernels/%.cu=$(BUILD)/cuda/%.o)
CUDA_LIB   :=
# cuDNN and cuBLAS are needed too (the device model): without them the
# build is CPU-only and says why. CUDNN_INC / CUDNN_LIBDIR / CUDNN_LIB and
# CUBLAS_LIB point elsewhere (scripts/gpu-check.sh does, for pip packages).
ifneq ($(NVCC_PATH),)
  CUDA_HOME    ?= $(patsubst %/bin/nvcc,%,$(realpath $(NVCC_PATH)))
  CUDNN_INC    ?= $(patsubst %/cudnn.h,%,$(firstword $(wildcard $(CUDA_HOME)/include/cudnn.h \
                    /usr/include/cudnn.h /usr/include/x86_64-linux-gnu/cudnn.h)))
  CUDNN_LIBDIR ?= $(patsubst %/libcudnn.so,%,$(firstword $(wildcard \
                    $(CUDA_HOME)/lib64/libcudnn.so /usr/lib/x86_64-linux-gnu/libcudnn.so)))
  ifeq ($(CUDNN_INC),)
    CUDA_SKIP := nvcc found at $(NVCC_PATH) but not cudnn.h (install cuDNN or set CUDNN_INC)
  else ifeq ($(CUDNN_LIBDIR),)
    CUDA_SKIP := nvcc found at $(NVCC_PATH) but not libcudnn.so (set CUDNN_LIBDIR)
  endif
  ifneq ($(CUDA_SKIP),)
    NVCC_PATH :=
  endif
endif
ifneq ($(NVCC_PATH),)
  CUDA_LIBDIR ?= $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib))
  CUDNN_LIB   ?= -lcudnn
  CUBLAS_LIB  ?= -lcublas
  CUDART      ?= -lcudart
  CUDA_PTX    := $(lastword $(CUDA_ARCHS))
  NVCCFLAGS   ?= -O3
  NVCCFLAGS   += -std=c++17 -Iinclude -I$(CUDNN_INC) -MMD -MP -Xcompiler -Wall,-Wextra,-Wshadow,-ffp-contract=off \
                 $(foreach a,$(CUDA_ARCHS),--generate-code arch=compute_$(a),code=sm_$(a)) \
                 --generate-code arch=compute_$(CUDA_PTX),code=compute_$(CUDA_PTX)
  CUDA_LIB    := $(BUILD)/libecl_cuda.a
  CFLAGS      += -DECL_HAVE_CUDA=1
  LDLIBS      += $(CUDA_LIB) -L$(CUDNN_LIBDIR) -Wl,-rpath,$(CUDNN_LIBDIR) $(CUDNN_LIB) \
                 -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) $(CUBLAS_LIB) $(CUDART) -lstdc++ -lm
  CUDA_MSG    := nvcc found at $(NVCC_PATH): kernels/*.cu for $(CUDA_ARCHS:%=sm_%) + \
                 compute_$(CUDA_PTX) PTX, cudart and cuBLAS from $(CUDA_LIBDIR), \
                 cuDNN from $(CUDNN_LIBDIR)
endif

# ---- sources ---------------------------------------------------------------
LIB_SRC   := $(filter-out src/main_%.c,$(wildcard src/*.c))
LIB_OBJ   := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
# main_bench_em.c builds ecl-bench-em (the name DESIGN.md gives it).
PROGS     := $(subst ecl-bench_em,ecl-bench-em,\
               $(patsubst src/main_%.c,$(BUILD)/ecl-%,$(wildcard src/main_*.c)))
TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all deps demo test test-fast bench bench-em clean report sanitize fuzz golden
all: report $(PROGS) $(TEST_BINS)

report:
	@echo "ecl build: GEMM       = $(GEMM_MSG)"
	@echo "ecl build: LAPACK     = $(LAPACK_MSG)"
	@echo "ecl build: zlib, inih, stb_image found"
	@if [ -n "$(NVCC_PATH)" ]; then \
	  echo "ecl build: CUDA       = $(CUDA_MSG)"; \
	elif [ -n "$(CUDA_SKIP)" ]; then echo "ecl build: CUDA       = $(CUDA_SKIP): CPU build only"; \
	else echo "ecl build: CUDA       = nvcc not found (CPU build only)"; fi

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/libecl.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

ifneq ($(CUDA_LIB),)
$(BUILD)/cuda/%.o: kernels/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(CUDA_LIB): $(CUDA_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Every program and test links the CUDA archive (LDLIBS), so depends on it.
$(PROGS) $(TEST_BINS): $(CUDA_LIB)

# The kernels' timings (scripts/gpu-check.sh runs it).
all: $(BUILD)/bench_cuda
$(BUILD)/bench_cuda: bench/bench_cuda.c $(BUILD)/libecl.a $(CUDA_LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) $< $(BUILD)/libecl.a $(LDFLAGS) $(LDLIBS) -o $@
-include $(CUDA_OBJ:.o=.d)
endif

$(BUILD)/ecl-%: src/main_%.c $(BUILD)/libecl.a
	$(CC) $(CPPFLAGS) $(CFLAGS) $< $(BUILD)/libecl.a $(LDFLAGS) $(LDLIBS) -o $@

$(BUILD)/ecl-bench-em: src/main_bench_em.c $(BUILD)/libecl.a
	$(CC) $(CPPFLAGS) $(CFLAGS) $< $(BUILD)/libecl.a $(LDFLAGS) $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/%.c tests/check.h $(BUILD)/libecl.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Itests $< $(BUILD)/libecl.a $(LDFLAGS) $(LDLIBS) -o $@

deps:
	@scripts/deps.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh $(DEMO_ARGS)

test: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-tests.sh

# ---- sanitizers and fuzzing --------------------------------------------------
# `make sanitize`: everything rebuilt with ASan + UBSan (UB halts, so it fails
# its test) into build/asan/, then every test run against that build, leak
# checks on (oneDNN and libgomp gave no false leak reports here). Slow: the
# end-to-end test alone takes 8-12 minutes under ASan on 2 cores.
SAN_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
              -fno-omit-frame-pointer
sanitize: deps
	@CFLAGS="$(SAN_CFLAGS)" $(MAKE) --no-print-directory BUILD=build/asan all
	@BUILD=build/asan ASAN_OPTIONS=detect_leaks=1 \
	  UBSAN_OPTIONS=print_stacktrace=1 scripts/run-tests.sh

# `make fuzz FUZZ_SECONDS=N`: libFuzzer on every reader (needs clang; scripts/fuzz.sh).
FUZZ_SECONDS ?= 60
fuzz:
	@scripts/fuzz.sh $(FUZZ_SECONDS)

bench-em: all
	@scripts/bench-em.sh $(BENCH_EM_ARGS)

# `make bench`: ecl against PyTorch on the CPU, training step and inference
# (scripts/bench.sh; BENCH_ARGS=--quick checks the script in a minute).
bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory $(BUILD)/ecl-bench
	@BUILD=$(BUILD) scripts/bench.sh $(BENCH_ARGS)

# `make golden`: rewrites tests/golden/ (PyTorch reference of one training step,
# read by tests/test_golden.c). Needs Debian's python3-torch, hence the
# system python; the files are committed, so tests never need torch.
golden:
	@scripts/deps.sh bench
	/usr/bin/python3 scripts/make_golden.py

clean:
	rm -rf $(BUILD)

-include $(LIB_OBJ:.o=.d)
