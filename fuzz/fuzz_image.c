/*
 * fuzz_image.c - libFuzzer harness: one image file in a flat folder
 * through dataset_load_folder (stb_image).
 * The entry and its contract checks live in fuzz_entry.c (shared with
 * tests/test_fuzz_regress.c); built and run by scripts/fuzz.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_entry.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A broken contract is a finding: abort so libFuzzer keeps the input. */
    fuzz_image(data, size);
    if (fuzz_n_violations > 0)
        abort();
    return 0;
}
