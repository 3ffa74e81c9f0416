// The llama.cpp peer of `qforge bench-gemm`: times ggml's CPU matmul (ggml 0.25.3, driven
// through ggml-backend as llama.cpp drives it) on the weight bytes qforge passes, and prints
// one JSON line (schema qforge.ggml-peer/1, docs/bench-gemm-json.md).
//
// Two modes, each on its own weight buffers:
// - repack: the weights in the CPU backend's "extra" buffer type CPU_REPACK, picked by name
//   from ggml_backend_dev_get_extra_bufts (never AMX, which crashes on this build), when
//   ggml's CPU device accepts the product there (the test llama.cpp's loader makes);
// - plain: the weights in the plain CPU buffer (ggml's row kernels and, for q4_K/q6_K/iq4_xs
//   at m >= 8, its tiled kernel).
// Each mode builds COPIES weight copies, runs every m once (warm-up), then times REPS calls
// per m, call r on copy (r + 1) % COPIES, on a threadpool of THREADS; the outputs of the last
// call of each m go to OUT_DIR/<mode>-<m>.f32 for qforge's error check.
//
// Usage: ggml-peer TYPE N K M1,M2,... THREADS COPIES REPS WEIGHTS X OUT_DIR
//   TYPE: a ggml type name (q4_K, q6_K, q8_0, q4_0, q5_K, iq4_xs; case-insensitive);
//   WEIGHTS: N rows of K values as ggml blocks; X: for each m in order, m x K f32 values.
// Exit 0 with the JSON line; exit 2 with "error: ..." on stderr for bad arguments or input.
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_M 16

static void die(const char *msg, const char *arg) {
    fprintf(stderr, "error: %s%s\n", msg, arg ? arg : "");
    exit(2);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void *read_file(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open ", path);
    void *buf = malloc(want ? want : 1);
    if (!buf) die("out of memory reading ", path);
    if (fread(buf, 1, want, f) != want || fgetc(f) != EOF) die("wrong size: ", path);
    fclose(f);
    return buf;
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "error: cannot write %s\n", path);
        exit(1);
    }
}

// The CPU device's CPU_REPACK buffer type, or NULL.
static ggml_backend_buffer_type_t repack_buft(ggml_backend_dev_t dev) {
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    ggml_backend_dev_get_extra_bufts_t get = (ggml_backend_dev_get_extra_bufts_t)
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    if (!get) return NULL;
    for (ggml_backend_buffer_type_t *b = get(dev); b && *b; b++) {
        if (strcmp(ggml_backend_buft_name(*b), "CPU_REPACK") == 0) return *b;
    }
    return NULL;
}

// Whether the CPU device runs MUL_MAT with TYPE weights (n x k) in BUFT: llama.cpp's
// weight_buft_supported test, on a zero-sized buffer of BUFT.
static int buft_supported(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft,
                          enum ggml_type type, int64_t n, int64_t k) {
    struct ggml_init_params p = {ggml_tensor_overhead() * 8, NULL, true};
    struct ggml_context *ctx = ggml_init(p);
    struct ggml_tensor *w = ggml_new_tensor_2d(ctx, type, k, n);
    struct ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, 8);
    struct ggml_tensor *op = ggml_mul_mat(ctx, w, x);
    ggml_backend_buffer_t buf = ggml_backend_buft_alloc_buffer(buft, 0);
    w->buffer = buf;
    int ok = ggml_backend_dev_supports_op(dev, op);
    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    return ok;
}

struct args {
    enum ggml_type type;
    int64_t n, k;
    int ms[MAX_M], n_m, threads, copies, reps;
    const void *weights;
    size_t weight_bytes;
    const float *x;  // every m's activations, one after another
    const char *out_dir;
};

// Times one mode; prints its JSON object (without a trailing comma).
static void run_mode(const struct args *a, const char *mode, ggml_backend_buffer_type_t buft,
                     ggml_backend_t backend, struct ggml_threadpool *tp) {
    int max_m = 0;
    for (int i = 0; i < a->n_m; i++) max_m = a->ms[i] > max_m ? a->ms[i] : max_m;
    // Weights: one context and one buffer of BUFT per copy.
    struct ggml_tensor **w = calloc(a->copies, sizeof *w);
    struct ggml_context **wctx = calloc(a->copies, sizeof *wctx);
    ggml_backend_buffer_t *wbuf = calloc(a->copies, sizeof *wbuf);
    size_t held = 0;
    for (int c = 0; c < a->copies; c++) {
        struct ggml_init_params p = {ggml_tensor_overhead(), NULL, true};
        wctx[c] = ggml_init(p);
        w[c] = ggml_new_tensor_2d(wctx[c], a->type, a->k, a->n);
        wbuf[c] = ggml_backend_alloc_ctx_tensors_from_buft(wctx[c], buft);
        if (!wbuf[c]) die("cannot allocate the weights in ", ggml_backend_buft_name(buft));
        ggml_backend_buffer_set_usage(wbuf[c], GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        ggml_backend_tensor_set(w[c], a->weights, 0, a->weight_bytes);  // repacks in CPU_REPACK
        held = ggml_backend_buffer_get_size(wbuf[c]);
    }
    // Activations and outputs: one plain buffer; every copy's output shares one address.
    size_t x_bytes = (size_t)max_m * a->k * sizeof(float), y_bytes = (size_t)max_m * a->n * sizeof(float);
    ggml_backend_buffer_t io = ggml_backend_buft_alloc_buffer(ggml_backend_cpu_buffer_type(), x_bytes + y_bytes + 256);
    char *base = ggml_backend_buffer_get_base(io);
    char *ybase = base + ((x_bytes + 63) / 64 * 64);
    float *y = malloc(y_bytes);
    size_t work = 0;
    printf("{\"mode\":\"%s\",\"buffer\":\"%s\",\"weight_bytes\":%zu,\"results\":[", mode,
           ggml_backend_buft_name(buft), held);
    const float *xm = a->x;
    for (int i = 0; i < a->n_m; i++) {
        int m = a->ms[i];
        struct ggml_init_params p = {ggml_tensor_overhead() * (2 * a->copies + 2) +
                                         ggml_graph_overhead_custom(4, false) * a->copies, NULL, true};
        struct ggml_context *ctx = ggml_init(p);
        struct ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, a->k, m);
        ggml_backend_tensor_alloc(io, x, base);
        ggml_backend_tensor_set(x, xm, 0, (size_t)m * a->k * sizeof(float));
        struct ggml_cgraph **gf = calloc(a->copies, sizeof *gf);
        for (int c = 0; c < a->copies; c++) {
            struct ggml_tensor *out = ggml_mul_mat(ctx, w[c], x);
            ggml_backend_tensor_alloc(io, out, ybase);
            gf[c] = ggml_new_graph_custom(ctx, 4, false);
            ggml_build_forward_expand(gf[c], out);
        }
        struct ggml_cplan plan = ggml_graph_plan(gf[0], a->threads, tp);
        if (plan.work_size > work) work = plan.work_size;
        if (ggml_backend_graph_compute(backend, gf[0]) != GGML_STATUS_SUCCESS) die("ggml graph failed", NULL);
        double *t = malloc(sizeof(double) * a->reps);
        for (int r = 0; r < a->reps; r++) {
            double t0 = now();
            ggml_backend_graph_compute(backend, gf[(r + 1) % a->copies]);
            t[r] = now() - t0;
        }
        qsort(t, a->reps, sizeof *t, cmp_double);
        double med = a->reps % 2 ? t[a->reps / 2] : 0.5 * (t[a->reps / 2 - 1] + t[a->reps / 2]);
        printf("%s{\"m\":%d,\"median_ms\":%.6f,\"min_ms\":%.6f}", i ? "," : "", m, med * 1e3, t[0] * 1e3);
        memcpy(y, ybase, (size_t)m * a->n * sizeof(float));
        char path[4096];
        snprintf(path, sizeof path, "%s/%s-%d.f32", a->out_dir, mode, m);
        write_file(path, y, (size_t)m * a->n * sizeof(float));
        free(t);
        free(gf);
        ggml_free(ctx);
        xm += (size_t)m * a->k;
    }
    printf("],\"work_bytes\":%zu,\"io_bytes\":%zu}", work, x_bytes + y_bytes);
    free(y);
    ggml_backend_buffer_free(io);
    for (int c = 0; c < a->copies; c++) {
        ggml_backend_buffer_free(wbuf[c]);
        ggml_free(wctx[c]);
    }
    free(w);
    free(wctx);
    free(wbuf);
}

int main(int argc, char **argv) {
    if (argc != 11) {
        die("usage: ggml-peer TYPE N K M1,M2,... THREADS COPIES REPS WEIGHTS X OUT_DIR", NULL);
    }
    struct args a = {0};
    a.type = GGML_TYPE_COUNT;
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        const char *name = ggml_type_name((enum ggml_type)t);
        if (name && strcasecmp(name, argv[1]) == 0 && ggml_blck_size((enum ggml_type)t) > 0) a.type = t;
    }
    if (a.type == GGML_TYPE_COUNT) die("ggml has no type ", argv[1]);
    a.n = atoll(argv[2]);
    a.k = atoll(argv[3]);
    for (char *s = argv[4]; *s && a.n_m < MAX_M; a.n_m++) {
        a.ms[a.n_m] = (int)strtol(s, &s, 10);
        if (a.ms[a.n_m] <= 0) die("bad token count in ", argv[4]);
        if (*s == ',') s++;
    }
    a.threads = atoi(argv[5]);
    a.copies = atoi(argv[6]);
    a.reps = atoi(argv[7]);
    if (a.n <= 0 || a.k <= 0 || a.k % ggml_blck_size(a.type) || a.n_m == 0 || a.threads <= 0 ||
        a.copies <= 0 || a.reps <= 0) {
        die("bad shape, token counts, threads, copies or reps", NULL);
    }
    a.weight_bytes = ggml_row_size(a.type, a.k) * a.n;
    a.weights = read_file(argv[8], a.weight_bytes);
    size_t x_values = 0;
    for (int i = 0; i < a.n_m; i++) x_values += (size_t)a.ms[i] * a.k;
    a.x = read_file(argv[9], x_values * sizeof(float));
    a.out_dir = argv[10];

    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) die("ggml has no CPU device", NULL);
    ggml_backend_t backend = ggml_backend_dev_init(dev, NULL);
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(a.threads);
    struct ggml_threadpool *tp = ggml_threadpool_new(&tpp);
    ggml_backend_cpu_set_threadpool(backend, tp);
    ggml_backend_cpu_set_n_threads(backend, a.threads);

    printf("{\"schema\":\"qforge.ggml-peer/1\",\"ggml_version\":\"%s\",\"ggml_type\":\"%s\","
           "\"n\":%lld,\"k\":%lld,\"threads\":%d,\"copies\":%d,\"reps\":%d,\"modes\":[",
           ggml_version(), ggml_type_name(a.type), (long long)a.n, (long long)a.k, a.threads, a.copies,
           a.reps);
    ggml_backend_buffer_type_t repack = repack_buft(dev);
    if (!repack) {
        printf("{\"mode\":\"repack\",\"skipped\":\"this ggml build has no CPU_REPACK buffer type\"},");
    } else if (!buft_supported(dev, repack, a.type, a.n, a.k)) {
        printf("{\"mode\":\"repack\",\"skipped\":\"ggml's CPU_REPACK has no layout for %s (n=%lld) on this CPU\"},",
               ggml_type_name(a.type), (long long)a.n);
    } else {
        run_mode(&a, "repack", repack, backend, tp);
        printf(",");
    }
    run_mode(&a, "plain", ggml_backend_cpu_buffer_type(), backend, tp);
    printf("]}\n");
    fflush(stdout);
    ggml_threadpool_free(tp);
    ggml_backend_free(backend);
    return 0;
}
