// Runs the lean Q4_K one-token GEMV of kernels/cuda/qgemm.cu (-DM1_Q4K_LEAN, extracted by
// run.sh into q4k_lean.inc) on the host emulation of shim.h over random Q4_K rows, against
// (1) the f64 product of the dequantized weights and the token, (2) the f64 product with the
// token quantized as the kernel does (int8 blocks of 32, d = absmax / 127): (2) isolates the
// kernel's arithmetic from the token's quantization. Exit 1 when an error is out of bounds.
// Usage: q4k_lean N K GRID [seed]
#include "shim.h"
#include <cstdio>
#include <cstdlib>
#include <random>

#include "q4k_lean.inc"

static void scale_min(const uint8_t* q, int j, int& sc, int& mn) {  // ggml get_scale_min_k4
    if (j < 4) {
        sc = q[j] & 63;
        mn = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Row r's weights dequantized (ggml dequantize_row_q4_K).
static void dequant_row(const uint8_t* row, int k, std::vector<double>& out) {
    out.assign(k, 0.0);
    for (int sp = 0; sp < k / 256; sp++) {
        const uint8_t* b = row + 144 * sp;
        const double d = half_bits_to_float(b[0] | b[1] << 8), dmin = half_bits_to_float(b[2] | b[3] << 8);
        for (int p = 0; p < 4; p++) {
            int sc0, mn0, sc1, mn1;
            scale_min(b + 4, 2 * p, sc0, mn0);
            scale_min(b + 4, 2 * p + 1, sc1, mn1);
            for (int l = 0; l < 32; l++) {
                const uint8_t q = b[16 + 32 * p + l];
                out[256 * sp + 64 * p + l] = d * sc0 * (q & 0xF) - dmin * mn0;
                out[256 * sp + 64 * p + 32 + l] = d * sc1 * (q >> 4) - dmin * mn1;
            }
        }
    }
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: q4k_lean N K GRID [seed]\n");
        return 2;
    }
    const int n = atoi(argv[1]), k = atoi(argv[2]), grid = atoi(argv[3]);
    const unsigned seed = argc > 4 ? (unsigned)atoi(argv[4]) : 1;
    if (n <= 0 || k <= 0 || k % 256 || grid <= 0) {
        fprintf(stderr, "error: N > 0, K a multiple of 256, GRID > 0\n");
        return 2;
    }
    const int row_bytes = k / 256 * 144;
    std::mt19937 rng(seed);
    std::vector<uint8_t> w((size_t)n * row_bytes + 64);
    for (auto& b : w) b = (uint8_t)rng();
    for (int r = 0; r < n; r++)
        for (int sp = 0; sp < k / 256; sp++) {  // d, dmin: positive halves 2^-10 .. 2^-3
            uint8_t* b = w.data() + (size_t)r * row_bytes + 144 * sp;
            for (int h = 0; h < 2; h++) {
                const uint16_t bits = (uint16_t)(((5 + rng() % 8) << 10) | (rng() % 1024));
                b[2 * h] = bits & 0xff;
                b[2 * h + 1] = bits >> 8;
            }
        }
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> x(k), y(n, NAN);
    for (auto& v : x) v = nd(rng);
    for (int i = 0; i < k; i += 32 * 7) x[i] *= 20.f;  // some blocks with an outlier
    std::vector<float> xq(k);                           // the token as the kernel quantizes it
    for (int b = 0; b < k / 32; b++) {
        float amax = 0.f;
        for (int i = 0; i < 32; i++) amax = std::max(amax, std::fabs(x[32 * b + i]));
        const float inv = amax > 0.f ? 127.0f / amax : 0.f, d = amax / 127.0f;
        for (int i = 0; i < 32; i++) xq[32 * b + i] = d * (float)__float2int_rn(x[32 * b + i] * inv);
    }
    std::vector<uint8_t> smem_buf(k + k / 4 + 16);
    emu_smem = smem_buf.data();
    emu_launch(grid, 256, [&] { gemv1_q4k_lean(w.data(), x.data(), y.data(), n, k, row_bytes); });
    double e_ref = 0, e_q = 0, e_tok = 0, scale = 0;
    std::vector<double> deq;
    for (int r = 0; r < n; r++) {
        dequant_row(w.data() + (size_t)r * row_bytes, k, deq);
        double ref = 0, refq = 0;
        for (int i = 0; i < k; i++) ref += deq[i] * x[i], refq += deq[i] * xq[i];
        scale = std::max(scale, std::fabs(ref));
        e_ref = std::max(e_ref, std::fabs(y[r] - ref));
        e_q = std::max(e_q, std::fabs(y[r] - refq));
        e_tok = std::max(e_tok, std::fabs(refq - ref));
        if (!std::isfinite(y[r])) e_q = e_ref = INFINITY;
    }
    e_ref /= scale;
    e_q /= scale;
    e_tok /= scale;
    // The kernel's arithmetic within float rounding of the quantized token's product, so its
    // error against f64 is the token's quantization error.
    const bool ok = e_q < 1e-5 && e_ref <= e_tok + 1e-5;
    printf("n=%d k=%d grid=%d: max error / max |y|: %.2e against f64 (the quantized token's own: %.2e), %.2e against "
           "the quantized token (%s)\n",
           n, k, grid, e_ref, e_tok, e_q, ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
