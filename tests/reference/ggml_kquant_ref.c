/*
 * ggml's own K-quant reference quantizers as a filter, for tests/fixtures/gen_ggml_kquant_fixtures.py:
 *
 *     ggml_kquant_ref TYPE < values.f32 > blocks.bin
 *
 * TYPE is Q2_K, Q3_K, Q4_K, Q5_K or Q6_K. stdin holds little-endian f32 values (a whole number
 * of 256-value super-blocks; rows are just consecutive super-blocks, as in ggml), stdout gets the
 * blocks `quantize_row_<type>_ref` writes for them, unchanged. Exit status 0 on success, 1 for bad
 * usage, 2 for input that is not whole super-blocks, 3-5 if ggml calls one of the stubs below.
 *
 * Built by the generator together with ggml's ggml/src/ggml-quants.c from the llama-cpp-python
 * 0.3.36 sdist, `cc -O2 -std=c11 -ffp-contract=off` (baseline x86-64: SSE2 floats, no FMA, and
 * no contraction of a*b+c into one rounding, so every float operation rounds as the C source
 * reads; QuantLab does the same operations in Rust).
 *
 * This file is QuantLab's (MIT like the rest); ggml's sources are not committed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"
#include "ggml-quants.h"

/* ggml-quants.c links against these ggml.c functions; the _ref quantizers never call them. */
void ggml_abort(const char *file, int line, const char *fmt, ...) {
    (void)fmt;
    fprintf(stderr, "ggml_abort %s:%d\n", file, line);
    exit(3);
}
size_t ggml_row_size(enum ggml_type t, int64_t n) { (void)t; (void)n; exit(4); }
const char *ggml_type_name(enum ggml_type t) { (void)t; return "?"; }
size_t ggml_type_size(enum ggml_type t) { (void)t; exit(5); }

typedef void (*quantize_fn)(const float *, void *, int64_t);

static const struct {
    const char *name;
    size_t type_size; /* bytes per 256-value super-block */
    quantize_fn f;
} TYPES[] = {
    {"Q2_K", sizeof(block_q2_K), (quantize_fn)quantize_row_q2_K_ref},
    {"Q3_K", sizeof(block_q3_K), (quantize_fn)quantize_row_q3_K_ref},
    {"Q4_K", sizeof(block_q4_K), (quantize_fn)quantize_row_q4_K_ref},
    {"Q5_K", sizeof(block_q5_K), (quantize_fn)quantize_row_q5_K_ref},
    {"Q6_K", sizeof(block_q6_K), (quantize_fn)quantize_row_q6_K_ref},
};

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s Q2_K|Q3_K|Q4_K|Q5_K|Q6_K < f32 > blocks\n", argv[0]);
        return 1;
    }
    size_t t = 0;
    while (t < sizeof TYPES / sizeof TYPES[0] && strcmp(argv[1], TYPES[t].name)) t++;
    if (t == sizeof TYPES / sizeof TYPES[0]) {
        fprintf(stderr, "unknown type %s\n", argv[1]);
        return 1;
    }
    /* Read all of stdin (fixtures are small). */
    size_t cap = 1 << 20, len = 0;
    unsigned char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len, stdin)) > 0;) {
        len += got;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    if (!buf || len % (4 * QK_K) != 0) {
        fprintf(stderr, "%zu bytes of input: not whole super-blocks of %d f32\n", len, QK_K);
        return 2;
    }
    size_t n = len / 4, blocks = n / QK_K;
    float *x = malloc(len);
    memcpy(x, buf, len); /* aligned copy; x86-64 is little-endian like the input */
    unsigned char *y = malloc(blocks * TYPES[t].type_size + 1);
    TYPES[t].f(x, y, (int64_t)n);
    fwrite(y, 1, blocks * TYPES[t].type_size, stdout);
    return 0;
}
