/* conv2d.c: a 2-D convolution layer (stride 1, zero padding) served to gradcheck over the
 * external-layer protocol, version 1. Plain C99.
 *
 *   cc -O2 -std=c99 -o conv2d conv2d.c -lm              the correct layer
 *   cc -O2 -std=c99 -DBUGGY -o conv2d_buggy conv2d.c -lm  its buggy twin
 *
 * Shapes (per request, batch N first, row-major):
 *   x (N, C, H, W), W (F, C, K, K), b (F), y (N, F, H + 2P - K + 1, W + 2P - K + 1)
 * Options: filters F (required), kernel K (default 3), padding P (default 0).
 *
 * The buggy twin flips the kernel in the input gradient: it back-propagates with the
 * convolution where the forward computed a cross-correlation (the classic mix-up between the
 * two). Its weight and bias gradients are right, so gradcheck must blame dL/dinput of this layer.
 */
#include <math.h>

#include "gc_protocol.h"

static long C, H, W, F, K, P, HO, WO;
static gc_message msg; /* static: a message holds its field lines inline */

/* splitmix64: a tiny deterministic generator, so the same seed gives the same weights. */
static uint64_t rng_state;
static double uniform01(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0; /* in (0, 1) */
}
static double normal(void) {
    return sqrt(-2.0 * log(uniform01())) * cos(6.283185307179586 * uniform01());
}

#define X(n, c, i, j) x[(((n) * C + (c)) * H + (i)) * W + (j)]
#define WT(f, c, u, v) w[(((f) * C + (c)) * K + (u)) * K + (v)]
#define Y(n, f, i, j) y[(((n) * F + (f)) * HO + (i)) * WO + (j)]

static void build(void) {
    long ndim = 0;
    const char *shape = gc_field(&msg, "input_shape");
    const char *seed = gc_field(&msg, "seed");
    if (!shape || sscanf(shape, "%ld %ld %ld %ld", &ndim, &C, &H, &W) != 4 || ndim != 3) {
        gc_error("conv2d needs a (channels, height, width) input, got input_shape '%s'",
                 shape ? shape : "");
        return;
    }
    F = gc_option(&msg, "filters", 0);
    K = gc_option(&msg, "kernel", 3);
    P = gc_option(&msg, "padding", 0);
    if (F < 1 || K < 1 || P < 0) {
        gc_error("options: filters >= 1 (required), kernel >= 1, padding >= 0");
        return;
    }
    HO = H + 2 * P - K + 1;
    WO = W + 2 * P - K + 1;
    if (HO < 1 || WO < 1) {
        gc_error("kernel %ld is larger than the padded input %ldx%ld", K, H + 2 * P, W + 2 * P);
        return;
    }
    rng_state = seed ? strtoull(seed, NULL, 10) : 0;
    long wdims[4] = {F, C, K, K}, bdims[1] = {F};
    double *w = malloc(sizeof(double) * F * C * K * K), *b = malloc(sizeof(double) * F);
    double scale = 1.0 / sqrt((double)(C * K * K));
    for (long i = 0; i < F * C * K * K; i++) w[i] = scale * normal();
    for (long f = 0; f < F; f++) b[f] = 0.1 * normal();
    gc_ok();
    printf("output_shape 3 %ld %ld %ld\n", F, HO, WO);
    gc_write_array("W", 4, wdims, w);
    gc_write_array("b", 1, bdims, b);
    gc_end();
    free(w);
    free(b);
}

/* The arrays every forward/backward request carries, checked against the build. */
static int inputs(gc_array **xa, gc_array **wa, gc_array **ba) {
    *xa = gc_get(&msg, "x");
    *wa = gc_get(&msg, "W");
    *ba = gc_get(&msg, "b");
    if (!*xa || !*wa || !*ba || (*xa)->ndim != 4 || (*xa)->dims[1] != C || (*xa)->dims[2] != H ||
        (*xa)->dims[3] != W) {
        gc_error("%s needs arrays x (N, %ld, %ld, %ld), W and b", msg.verb, C, H, W);
        return 0;
    }
    return 1;
}

static void forward(void) {
    gc_array *xa, *wa, *ba;
    if (!inputs(&xa, &wa, &ba)) return;
    const double *x = xa->data, *w = wa->data, *b = ba->data;
    long N = xa->dims[0], ydims[4] = {N, F, HO, WO};
    double *y = malloc(sizeof(double) * (N * F * HO * WO + 1));
    for (long n = 0; n < N; n++)
        for (long f = 0; f < F; f++)
            for (long i = 0; i < HO; i++)
                for (long j = 0; j < WO; j++) {
                    double sum = b[f];
                    for (long c = 0; c < C; c++)
                        for (long u = 0; u < K; u++)
                            for (long v = 0; v < K; v++) {
                                long ii = i + u - P, jj = j + v - P;
                                if (ii >= 0 && ii < H && jj >= 0 && jj < W)
                                    sum += WT(f, c, u, v) * X(n, c, ii, jj);
                            }
                    Y(n, f, i, j) = sum;
                }
    gc_ok();
    gc_write_array("y", 4, ydims, y);
    gc_end();
    free(y);
}

static void backward(void) {
    gc_array *xa, *wa, *ba, *ga = gc_get(&msg, "grad_out");
    if (!inputs(&xa, &wa, &ba)) return;
    long N = xa->dims[0];
    if (!ga || ga->size != N * F * HO * WO) {
        gc_error("backward needs grad_out (N, %ld, %ld, %ld)", F, HO, WO);
        return;
    }
    const double *x = xa->data, *w = wa->data, *y = ga->data; /* Y() indexes grad_out */
    double *gx = calloc((size_t)(N * C * H * W + 1), sizeof(double));
    double *gw = calloc((size_t)(F * C * K * K), sizeof(double));
    double *gb = calloc((size_t)F, sizeof(double));
    for (long n = 0; n < N; n++)
        for (long f = 0; f < F; f++)
            for (long i = 0; i < HO; i++)
                for (long j = 0; j < WO; j++) {
                    double g = Y(n, f, i, j);
                    gb[f] += g;
                    for (long c = 0; c < C; c++)
                        for (long u = 0; u < K; u++)
                            for (long v = 0; v < K; v++) {
                                long ii = i + u - P, jj = j + v - P;
                                if (ii < 0 || ii >= H || jj < 0 || jj >= W) continue;
                                gw[((f * C + c) * K + u) * K + v] += g * X(n, c, ii, jj);
#ifdef BUGGY
                                /* BUG: flipped kernel (convolution instead of correlation). */
                                gx[((n * C + c) * H + ii) * W + jj] += g * WT(f, c, K - 1 - u, K - 1 - v);
#else
                                gx[((n * C + c) * H + ii) * W + jj] += g * WT(f, c, u, v);
#endif
                            }
                }
    long wdims[4] = {F, C, K, K}, bdims[1] = {F};
    gc_ok();
    gc_write_array("grad_x", 4, xa->dims, gx);
    gc_write_array("W", 4, wdims, gw);
    gc_write_array("b", 1, bdims, gb);
    gc_end();
    free(gx);
    free(gw);
    free(gb);
}

int main(void) {
    gc_handshake();
    while (gc_read(&msg)) {
        if (strcmp(msg.verb, "build") == 0) build();
        else if (strcmp(msg.verb, "forward") == 0) forward();
        else if (strcmp(msg.verb, "backward") == 0) backward();
        else gc_error("unknown request '%s'", msg.verb);
        gc_free(&msg);
    }
    return 0;
}
