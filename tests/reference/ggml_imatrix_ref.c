/*
 * ggml's quantizers with an importance matrix as a filter, for
 * tests/fixtures/gen_ggml_imatrix_fixtures.py:
 *
 *     ggml_imatrix_ref TYPE N_PER_ROW < (importance.f32, values.f32) > blocks.bin
 *
 * TYPE is Q4_0, Q4_1, Q5_0, Q5_1, Q3_K, Q4_K or Q5_K. stdin holds N_PER_ROW little-endian f32
 * importances (one per column, llama.cpp's imatrix entry for the tensor) followed by whole rows of
 * N_PER_ROW f32 values; stdout gets what `quantize_<type>(src, dst, nrow, n_per_row,
 * quant_weights)` writes, unchanged. Exit status 0 on success, 1 for bad usage, 2 for input that
 * is not whole rows, 3-5 if ggml calls one of the stubs below.
 *
 * Built by the generator together with ggml's ggml/src/ggml-quants.c from the llama-cpp-python
 * 0.3.36 sdist, `cc -O2 -std=c11 -ffp-contract=off -DNDEBUG`, as tests/reference/ggml_kquant_ref.c.
 *
 * This file is QuantLab's (MIT like the rest); ggml's sources are not committed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"
#include "ggml-quants.h"

typedef size_t (*quantize_fn)(const float *, void *, int64_t, int64_t, const float *);

static const struct {
    const char *name;
    enum ggml_type type;
    size_t block, type_size;
    quantize_fn f;
} TYPES[] = {
    {"Q4_0", GGML_TYPE_Q4_0, QK4_0, sizeof(block_q4_0), quantize_q4_0},
    {"Q4_1", GGML_TYPE_Q4_1, QK4_1, sizeof(block_q4_1), quantize_q4_1},
    {"Q5_0", GGML_TYPE_Q5_0, QK5_0, sizeof(block_q5_0), quantize_q5_0},
    {"Q5_1", GGML_TYPE_Q5_1, QK5_1, sizeof(block_q5_1), quantize_q5_1},
    {"Q3_K", GGML_TYPE_Q3_K, QK_K, sizeof(block_q3_K), quantize_q3_K},
    {"Q4_K", GGML_TYPE_Q4_K, QK_K, sizeof(block_q4_K), quantize_q4_K},
    {"Q5_K", GGML_TYPE_Q5_K, QK_K, sizeof(block_q5_K), quantize_q5_K},
};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])

/* ggml-quants.c links against these ggml.c functions; the quantize_* above call ggml_row_size. */
void ggml_abort(const char *file, int line, const char *fmt, ...) {
    (void)fmt;
    fprintf(stderr, "ggml_abort %s:%d\n", file, line);
    exit(3);
}
size_t ggml_row_size(enum ggml_type t, int64_t n) {
    for (size_t i = 0; i < NTYPES; i++)
        if (TYPES[i].type == t) return TYPES[i].type_size * (size_t)n / TYPES[i].block;
    exit(4);
}
const char *ggml_type_name(enum ggml_type t) { (void)t; return "?"; }
size_t ggml_type_size(enum ggml_type t) { (void)t; exit(5); }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s Q4_0|Q4_1|Q5_0|Q5_1|Q3_K|Q4_K|Q5_K N_PER_ROW < f32 > blocks\n", argv[0]);
        return 1;
    }
    size_t t = 0;
    while (t < NTYPES && strcmp(argv[1], TYPES[t].name)) t++;
    long n = strtol(argv[2], NULL, 10);
    if (t == NTYPES || n <= 0 || n % (long)TYPES[t].block) {
        fprintf(stderr, "bad type %s or row length %s\n", argv[1], argv[2]);
        return 1;
    }
    size_t cap = 1 << 20, len = 0;
    unsigned char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len, stdin)) > 0;) {
        len += got;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    size_t row_bytes = 4 * (size_t)n;
    if (!buf || len % row_bytes != 0 || len < 2 * row_bytes) {
        fprintf(stderr, "%zu bytes of input: not importances and whole rows of %ld f32\n", len, n);
        return 2;
    }
    size_t nrow = len / row_bytes - 1;
    float *all = malloc(len);
    memcpy(all, buf, len); /* aligned copy; x86-64 is little-endian like the input */
    size_t out_bytes = nrow * ggml_row_size(TYPES[t].type, n);
    unsigned char *y = malloc(out_bytes + 1);
    TYPES[t].f(all + n, y, (int64_t)nrow, (int64_t)n, all);
    fwrite(y, 1, out_bytes, stdout);
    return 0;
}
