/* scratchlm's native decode engine: the decoder's forward pass over new tokens on a KV cache, in one call.
 *
 * Why it exists: at batch 1 a small decoder's step is ~30 PyTorch ops per block, each a few microseconds of
 * dispatch for a few microseconds of work, so the step is mostly overhead (profile in docs/results.md). Here the
 * whole step is one C call, one OpenMP parallel region, and GEMVs that read each weight row once for every
 * sequence of the batch. int8 weights (one scale per output row) are converted in the dot product, so they
 * cross the memory bus at a quarter of fp32's bytes: that is what makes int8 the fast form.
 *
 * Layout conventions (shared with scratchlm/infer/decode_pack.py, so the two can fill one cache):
 *   - weights are row-major (out, in); q/k output rows are in "pair order" (feature i and i + D/2 of a head side
 *     by side), so a rotary embedding is a complex multiply of adjacent pairs;
 *   - the KV cache is (n_layer, B, n_kv_head, S_max, D) float32, keys stored rotated and in pair order;
 *   - rotary tables are the model's (L, D) cos/sin buffers; column j < D/2 holds frequency j.
 * The caller (scratchlm/infer/engine.py) checks shapes and dtypes; nothing here allocates.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <omp.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

typedef struct {
    const void *w;      /* (out, in) float32, or int8 when the model's int8 flag is set */
    const float *scale; /* (out,) per output row, int8 only */
} Mat;

typedef struct {
    const float *attn_norm, *mlp_norm; /* RMSNorm gains (dim,) */
    Mat qkv;                           /* ((H + 2 KV) D, dim): q and k rows in pair order */
    Mat o;                             /* (dim, H D) */
    Mat gate_up;                       /* (2 hidden, dim): gate rows then up rows */
    Mat down;                          /* (dim, hidden) */
} Layer;

typedef struct {
    int32_t n_layer, n_head, n_kv, head_dim, dim, hidden, vocab, int8;
    float eps;
    const Layer *layers;
    Mat embed;               /* (vocab, dim) token embedding (int8: one scale per token) */
    Mat head;                /* (vocab, dim) output head; the embedding when tied */
    const float *norm;       /* final RMSNorm gain */
    const float *rope_cos, *rope_sin; /* (rope_len, D) */
    int32_t rope_len;
} Model;

/* ---- dot products: 4 accumulators hide the FMA latency ------------------------------------------------ */

#if defined(__AVX2__) && defined(__FMA__)
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

static inline float dot_f32(const float *a, const float *b, int n) {
    int i = 0;
    float s = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline float dot_i8(const int8_t *a, const float *b, int n) {
    int i = 0;
    float s = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (; i + 32 <= n; i += 32) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(a + i));
        __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        s0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))),
                             _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))),
                             _mm256_loadu_ps(b + i + 24), s3);
    }
    s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
#endif
    for (; i < n; i++) s += (float)a[i] * b[i];
    return s;
}

/* One weight row against four x rows (a batch): the widened int8 row is used for four dot products, and the
 * four accumulators are independent FMA chains. x rows are `n` apart. */
static inline void dot1x4_i8(const int8_t *w, const float *x, int n, float out[4]) {
    int i = 0;
    float s[4] = {0.f, 0.f, 0.f, 0.f};
#if defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 8 <= n; i += 8) {
        __m256 wv = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w + i))));
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + n + i), a1);
        a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 2 * n + i), a2);
        a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 3 * n + i), a3);
    }
    s[0] = hsum8(a0); s[1] = hsum8(a1); s[2] = hsum8(a2); s[3] = hsum8(a3);
#endif
    for (; i < n; i++)
        for (int k = 0; k < 4; k++) s[k] += (float)w[i] * x[k * n + i];
    for (int k = 0; k < 4; k++) out[k] = s[k];
}

/* Four weight rows against one x row: x is loaded once for four dot products. */
static inline void dot4x1_f32(const float *w, const float *x, int n, float out[4]) {
    int i = 0;
    float s[4] = {0.f, 0.f, 0.f, 0.f};
#if defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), xv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + n + i), xv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 2 * n + i), xv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 3 * n + i), xv, a3);
    }
    s[0] = hsum8(a0); s[1] = hsum8(a1); s[2] = hsum8(a2); s[3] = hsum8(a3);
#endif
    for (; i < n; i++)
        for (int k = 0; k < 4; k++) s[k] += w[k * n + i] * x[i];
    for (int k = 0; k < 4; k++) out[k] = s[k];
}

static inline void dot4x1_i8(const int8_t *w, const float *x, int n, float out[4]) {
    int i = 0;
    float s[4] = {0.f, 0.f, 0.f, 0.f};
#if defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
#define W8(k) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w + (k) * n + i))))
        a0 = _mm256_fmadd_ps(W8(0), xv, a0);
        a1 = _mm256_fmadd_ps(W8(1), xv, a1);
        a2 = _mm256_fmadd_ps(W8(2), xv, a2);
        a3 = _mm256_fmadd_ps(W8(3), xv, a3);
#undef W8
    }
    s[0] = hsum8(a0); s[1] = hsum8(a1); s[2] = hsum8(a2); s[3] = hsum8(a3);
#endif
    for (; i < n; i++)
        for (int k = 0; k < 4; k++) s[k] += (float)w[k * n + i] * x[i];
    for (int k = 0; k < 4; k++) out[k] = s[k];
}

/* y[r, o] (+)= W[o, :] . x[r, :] for r < R, o < out; called inside a parallel region. Work is split over blocks
 * of 4 output rows (a contiguous run per thread); each block is read from memory once for all R rows of x.
 * Kernel choice, measured on the base model's shapes (docs/results.md):
 *   - fp32, one row of x: one weight row at a time. Interleaving four rows was 2.5x slower once the weights
 *     no longer fit the cache (the hardware prefetcher loses the stream).
 *   - fp32, several rows: four weight rows against each x row (the block stays in L1 across rows).
 *   - int8, one row: four weight rows at a time (int8 is cache-resident and bound by the int8->fp32 widening;
 *     sharing the x loads pays).
 *   - int8, several rows: one weight row against four x rows, widened once per four dot products. */
static void matmul(const Model *m, const Mat *W, int in, int out, const float *x, int R, float *y, int accumulate) {
    const int nblk = (out + 3) / 4;
    #pragma omp for schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        const int o0 = blk * 4, k = out - o0 < 4 ? out - o0 : 4;
        const int8_t *w8 = (const int8_t *)W->w + (size_t)o0 * in;
        const float *wf = (const float *)W->w + (size_t)o0 * in;
        float d[4];
#define PUT(r, j, v) do { float *dst_ = y + (size_t)(r) * out + o0 + (j); \
                          *dst_ = accumulate ? *dst_ + (v) : (v); } while (0)
        if (k == 4 && m->int8 && R == 1) {
            dot4x1_i8(w8, x, in, d);
            for (int j = 0; j < 4; j++) PUT(0, j, d[j] * W->scale[o0 + j]);
        } else if (k == 4 && !m->int8 && R > 1) {
            for (int r = 0; r < R; r++) {
                dot4x1_f32(wf, x + (size_t)r * in, in, d);
                for (int j = 0; j < 4; j++) PUT(r, j, d[j]);
            }
        } else {
            for (int j = 0; j < k; j++) {
                const float sc = m->int8 ? W->scale[o0 + j] : 1.f;
                int r = 0;
                if (m->int8)
                    for (; r + 4 <= R; r += 4) {
                        dot1x4_i8(w8 + (size_t)j * in, x + (size_t)r * in, in, d);
                        for (int q = 0; q < 4; q++) PUT(r + q, j, d[q] * sc);
                    }
                for (; r < R; r++) {
                    const float *xr = x + (size_t)r * in;
                    PUT(r, j, (m->int8 ? dot_i8(w8 + (size_t)j * in, xr, in) : dot_f32(wf + (size_t)j * in, xr, in)) * sc);
                }
            }
        }
#undef PUT
    }
}

static void rmsnorm_rows(const float *x, const float *gain, float *out, int R, int dim, float eps) {
    #pragma omp for schedule(static)
    for (int r = 0; r < R; r++) {
        const float *xr = x + (size_t)r * dim;
        float ss = 0.f;
        for (int i = 0; i < dim; i++) ss += xr[i] * xr[i];
        float inv = 1.f / sqrtf(ss / dim + eps);
        for (int i = 0; i < dim; i++) out[(size_t)r * dim + i] = xr[i] * inv * gain[i];
    }
}

size_t sl_work_floats(const Model *m, int B, int T, int S_max, int n_threads) {
    size_t R = (size_t)B * T, D = m->head_dim;
    size_t nqkv = (size_t)(m->n_head + 2 * m->n_kv) * D;
    return R * m->dim * 2 + R * nqkv + R * m->n_head * D + R * 3 * m->hidden + (size_t)n_threads * S_max
           + (size_t)B * m->dim;
}

/* Run B sequences' T new tokens (cache columns start .. start+T-1) through the model and write the logits of
 * each sequence's last new token to logits (B, vocab).
 *   tokens, pos: (B, T); pos = rotary position of each token (a left-padded row starts at 0).
 *   valid: (B, start + T) bytes, 0 = padding key never attended to (a token always sees itself); NULL = all.
 * Returns 0, or -1 when a position is outside the rotary table or the cache. */
int sl_forward(const Model *m, int B, int T, const int64_t *tokens, const int64_t *pos, int start,
               const uint8_t *valid, float *kc, float *vc, int S_max, float *logits, float *work, int n_threads) {
    const int H = m->n_head, KV = m->n_kv, D = m->head_dim, dim = m->dim, hid = m->hidden;
    const int R = B * T, nqkv = (H + 2 * KV) * D, L = start + T, half = D / 2;
    if (L > S_max) return -1;
    for (int r = 0; r < R; r++)
        if (pos[r] < 0 || pos[r] >= m->rope_len || tokens[r] < 0 || tokens[r] >= m->vocab) return -1;
    float *x = work, *xn = x + (size_t)R * dim, *qkv = xn + (size_t)R * dim, *att = qkv + (size_t)R * nqkv;
    float *hb = att + (size_t)R * H * D, *act = hb + (size_t)R * 2 * hid, *scores = act + (size_t)R * hid;
    float *last = scores + (size_t)n_threads * S_max;
    const float qscale = 1.f / sqrtf((float)D);
    const size_t layer_stride = (size_t)B * KV * S_max * D;

    #pragma omp parallel num_threads(n_threads)
    {
        float *sc = scores + (size_t)omp_get_thread_num() * S_max;
        #pragma omp for schedule(static)
        for (int r = 0; r < R; r++) {
            int64_t t = tokens[r];
            if (m->int8) {
                const int8_t *e = (const int8_t *)m->embed.w + (size_t)t * dim;
                float s = m->embed.scale[t];
                for (int i = 0; i < dim; i++) x[(size_t)r * dim + i] = e[i] * s;
            } else {
                memcpy(x + (size_t)r * dim, (const float *)m->embed.w + (size_t)t * dim, dim * sizeof(float));
            }
        }
        for (int l = 0; l < m->n_layer; l++) {
            const Layer *ly = &m->layers[l];
            float *kl = kc + l * layer_stride, *vl = vc + l * layer_stride;
            rmsnorm_rows(x, ly->attn_norm, xn, R, dim, m->eps);
            matmul(m, &ly->qkv, dim, nqkv, xn, R, qkv, 0);
            /* rotary on q and k heads (pair order), q scaled by 1/sqrt(D); k and v into the cache */
            #pragma omp for schedule(static)
            for (int rh = 0; rh < R * (H + KV); rh++) {
                int r = rh / (H + KV), h = rh % (H + KV), b = r / T, t = r % T;
                float *v = qkv + (size_t)r * nqkv + (size_t)h * D;
                const float *c = m->rope_cos + pos[r] * D, *s = m->rope_sin + pos[r] * D;
                float f = h < H ? qscale : 1.f;
                for (int j = 0; j < half; j++) {
                    float a = v[2 * j], bb = v[2 * j + 1];
                    v[2 * j] = (a * c[j] - bb * s[j]) * f;
                    v[2 * j + 1] = (a * s[j] + bb * c[j]) * f;
                }
                if (h >= H) {
                    int g = h - H;
                    size_t at = (((size_t)b * KV + g) * S_max + start + t) * D;
                    memcpy(kl + at, v, D * sizeof(float));
                    memcpy(vl + at, qkv + (size_t)r * nqkv + (size_t)(H + KV + g) * D, D * sizeof(float));
                }
            }
            /* attention: one (row, head) per iteration, over keys 0 .. start + t */
            #pragma omp for schedule(static)
            for (int rh = 0; rh < R * H; rh++) {
                int r = rh / H, h = rh % H, b = r / T, t = r % T, g = h / (H / KV), n = start + t + 1;
                const float *q = qkv + (size_t)r * nqkv + (size_t)h * D;
                const float *kb = kl + ((size_t)b * KV + g) * S_max * D, *vb = vl + ((size_t)b * KV + g) * S_max * D;
                const uint8_t *ok = valid ? valid + (size_t)b * L : NULL;
                float mx = -INFINITY;
                for (int j = 0; j < n; j++) {
                    if (ok && !ok[j] && j != n - 1) { sc[j] = -INFINITY; continue; }
                    sc[j] = dot_f32(q, kb + (size_t)j * D, D);
                    if (sc[j] > mx) mx = sc[j];
                }
                float sum = 0.f;
                for (int j = 0; j < n; j++) { sc[j] = sc[j] == -INFINITY ? 0.f : expf(sc[j] - mx); sum += sc[j]; }
                float *y = att + (size_t)r * H * D + (size_t)h * D, inv = 1.f / sum;
                for (int i = 0; i < D; i++) y[i] = 0.f;
                for (int j = 0; j < n; j++) {
                    if (sc[j] == 0.f) continue;
                    float p = sc[j] * inv;
                    const float *vv = vb + (size_t)j * D;
                    for (int i = 0; i < D; i++) y[i] += p * vv[i];
                }
            }
            matmul(m, &ly->o, H * D, dim, att, R, x, 1);
            rmsnorm_rows(x, ly->mlp_norm, xn, R, dim, m->eps);
            matmul(m, &ly->gate_up, dim, 2 * hid, xn, R, hb, 0);
            #pragma omp for schedule(static)
            for (int ri = 0; ri < R * hid; ri++) {
                const int r = ri / hid, i = ri % hid;
                const float g = hb[(size_t)r * 2 * hid + i], u = hb[(size_t)r * 2 * hid + hid + i];
                act[ri] = g / (1.f + expf(-g)) * u;
            }
            matmul(m, &ly->down, hid, dim, act, R, x, 1);
        }
        /* the final norm and the head, for each sequence's last token only */
        #pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            const float *xr = x + ((size_t)b * T + T - 1) * dim;
            float ss = 0.f;
            for (int i = 0; i < dim; i++) ss += xr[i] * xr[i];
            float inv = 1.f / sqrtf(ss / dim + m->eps);
            for (int i = 0; i < dim; i++) last[(size_t)b * dim + i] = xr[i] * inv * m->norm[i];
        }
        matmul(m, &m->head, dim, m->vocab, last, B, logits, 0);
    }
    return 0;
}
