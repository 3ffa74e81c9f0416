// llama.cpp's CUDA backend as bench-gemm's peer: times ggml_mul_mat (its own activation
// quantization included) for each type and m, with the weights rotated past the L2 as
// bench-gemm --device cuda does (copies = max(4, ceil(256 MiB / weight bytes))), one graph
// holding one mul_mat per copy; median over the reps of (graph time / copies).
// Build: see scripts/cuda-bench.sh. Output: one JSON line per type and m.
#include "ggml-backend.h"
#include "ggml-cuda.h"
#include "ggml.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    const int n = argc > 1 ? atoi(argv[1]) : 14336, k = argc > 2 ? atoi(argv[2]) : 4096;
    const int reps = argc > 3 ? atoi(argv[3]) : 40;
    const int ms[] = {1, 8, 512};
    const ggml_type types[] = {GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
                               GGML_TYPE_IQ4_XS};
    ggml_backend_t be = ggml_backend_cuda_init(0);
    if (!be) { fprintf(stderr, "no CUDA backend\n"); return 1; }
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.f, 0.02f);
    std::vector<float> f((size_t)n * k);
    for (auto& v : f) v = nd(rng);
    for (ggml_type ty : types) {
        const size_t wbytes = ggml_row_size(ty, k) * n;
        std::vector<uint8_t> q(wbytes);
        ggml_quantize_chunk(ty, f.data(), q.data(), 0, n, k, nullptr);
        const int copies = std::max<int>(4, (int)((256ull << 20) / wbytes + ((256ull << 20) % wbytes != 0)));
        for (int m : ms) {
            ggml_init_params ip = {ggml_tensor_overhead() * (2 * copies + 8) + ggml_graph_overhead(), nullptr, true};
            ggml_context* ctx = ggml_init(ip);
            std::vector<ggml_tensor*> w(copies);
            ggml_tensor* x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
            ggml_cgraph* gf = ggml_new_graph(ctx);
            for (int c = 0; c < copies; c++) {
                w[c] = ggml_new_tensor_2d(ctx, ty, k, n);
                ggml_build_forward_expand(gf, ggml_mul_mat(ctx, w[c], x));
            }
            ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, be);
            for (int c = 0; c < copies; c++) ggml_backend_tensor_set(w[c], q.data(), 0, wbytes);
            std::vector<float> xv((size_t)m * k);
            std::normal_distribution<float> xn(0.f, 1.f);
            for (auto& v : xv) v = xn(rng);
            ggml_backend_tensor_set(x, xv.data(), 0, xv.size() * 4);
            for (int i = 0; i < 3; i++) ggml_backend_graph_compute(be, gf);
            std::vector<double> t;
            for (int i = 0; i < reps; i++) {
                const auto t0 = std::chrono::steady_clock::now();
                ggml_backend_graph_compute(be, gf);  // synchronous
                const auto t1 = std::chrono::steady_clock::now();
                t.push_back(std::chrono::duration<double>(t1 - t0).count() / copies);
            }
            std::sort(t.begin(), t.end());
            const double med = t[t.size() / 2];
            printf("{\"peer\":\"llama.cpp-cuda\",\"type\":\"%s\",\"m\":%d,\"n\":%d,\"k\":%d,\"copies\":%d,"
                   "\"weight_bytes\":%zu,\"median_us\":%.3f,\"min_us\":%.3f,\"gbs\":%.1f,\"tflops\":%.2f}\n",
                   ggml_type_name(ty), m, n, k, copies, wbytes, med * 1e6, t[0] * 1e6,
                   (wbytes + 4.0 * m * (k + n)) / med / 1e9, 2.0 * m * n * k / med / 1e12);
            fflush(stdout);
            ggml_backend_buffer_free(buf);
            ggml_free(ctx);
        }
    }
    ggml_backend_free(be);
    return 0;
}
