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
have_hdr = $(shell printf '\#include <$(1)>\n' | $(CC) -E -x c - >/dev/null 2>&1 && echo yes)

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

# ---- sources ---------------------------------------------------------------
LIB_SRC   := $(filter-out src/main_%.c,$(wildcard src/*.c))
LIB_OBJ   := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
PROGS     := $(patsubst src/main_%.c,$(BUILD)/ecl-%,$(wildcard src/main_*.c))
TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all deps demo test test-fast bench clean report
all: report $(PROGS) $(TEST_BINS)

report:
	@echo "ecl build: GEMM       = $(GEMM_MSG)"
	@echo "ecl build: zlib, inih, stb_image found"
	@if [ -n "$(NVCC_PATH)" ]; then \
	  echo "ecl build: CUDA       = nvcc found at $(NVCC_PATH); no CUDA sources in this version, CPU build only"; \
	else echo "ecl build: CUDA       = nvcc not found (CPU build only)"; fi

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libecl.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/ecl-%: src/main_%.c $(BUILD)/libecl.a
	$(CC) $(CFLAGS) $< $(BUILD)/libecl.a $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/%.c tests/check.h $(BUILD)/libecl.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< $(BUILD)/libecl.a $(LDLIBS) -o $@

deps:
	@scripts/deps.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh $(DEMO_ARGS)

test: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-tests.sh

clean:
	rm -rf $(BUILD)

-include $(LIB_OBJ:.o=.d)
