// Writes ggml's own quantization of fixtures/golden/ggml/input.f32 (rows x cols float32) for one
// ggml type, with or without the importance weights of imatrix.f32, exactly as a GGUF tensor holds
// it: `gen TYPE_ID ROWS COLS INPUT IMATRIX|- OUTPUT`. Linked against libggml-base of ggml 0.25.3
// (the llama-cpp-python 0.3.36 sdist); see make.sh. Never built by cargo.
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"

static float *read_f32(const char *path, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    float *v = malloc(n * sizeof(float));
    if (fread(v, sizeof(float), n, f) != n) { fprintf(stderr, "%s: short read\n", path); exit(1); }
    fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 7) { fprintf(stderr, "usage: gen TYPE_ID ROWS COLS INPUT IMATRIX|- OUTPUT\n"); return 2; }
    enum ggml_type type = (enum ggml_type) atoi(argv[1]);
    int64_t rows = atoll(argv[2]), cols = atoll(argv[3]);
    float *src = read_f32(argv[4], (size_t)(rows * cols));
    float *imatrix = argv[5][0] == '-' ? NULL : read_f32(argv[5], (size_t) cols);
    size_t size = ggml_row_size(type, cols) * (size_t) rows;
    void *dst = calloc(1, size);
    size_t written = ggml_quantize_chunk(type, src, dst, 0, rows, cols, imatrix);
    if (written != size) { fprintf(stderr, "wrote %zu of %zu bytes\n", written, size); return 1; }
    FILE *out = fopen(argv[6], "wb");
    if (!out || fwrite(dst, 1, size, out) != size || fclose(out) != 0) { perror(argv[6]); return 1; }
    ggml_quantize_free();
    return 0;
}
