// AMSim kernels for NVIDIA GPUs, compiled at run time by NVRTC.
//
// The table products here compute exactly what the scalar reference of
// the CPU engine computes (amsim/src/product.rs, gemm.rs, conv.rs): each
// output element is ONE dot product, one AMSim product per term,
// accumulated in FP32 in blocks of ACC_BLOCK consecutive k (accumulate.rs):
// each block in increasing k from +0.0, then the block sums in increasing
// block order from +0.0. So the results are bit-exact with the CPU engine
// at any thread count (NaN payloads aside).
// Compiled without fast-math, flush-to-zero or FMA contraction: every
// multiply and add below is an explicit round-to-nearest __fmul_rn /
// __fadd_rn.

typedef unsigned int u32;
typedef long long i64;

// Terms per accumulation block (amsim::accumulate::ACC_BLOCK).
#define ACC_BLOCK 1024

#define MODE_LUT 0
#define MODE_FP32 1
#define MODE_BF16 2

// Round to bfloat16 (nearest, ties to even) and back: the `bf16` multiplier.
__device__ __forceinline__ float bf16_round(float x) {
    u32 b = __float_as_uint(x);
    if ((b & 0x7f800000u) == 0x7f800000u) {
        if (b & 0x007fffffu) return __uint_as_float((b | 0x00400000u) & 0xffff0000u);
        return x;
    }
    b += 0x7fffu + ((b >> 16) & 1u);
    return __uint_as_float(b & 0xffff0000u);
}

// An operand as the GEMM tiles hold it.
//  off:   its table index (top `bits` fraction bits) as a byte offset into
//         the table: times the row stride for the left operand, times 1
//         for the right one (times 4 bytes), so that the entry of a pair
//         is at table + off_a + off_b;
//  scale: for a normal operand sign * 2^(e-127) (the operand with its
//         fraction cleared); for zero, subnormal, infinity and NaN the
//         operand itself;
//  safe:  exact zero, or a normal operand with biased exponent in
//         [64, 190]. When every operand of a tile is safe, every product
//         L * 2^(ea+eb-254) with L in [1, 4) is a normal float, so
//         (L * sa) * sb is exact and equals the composed product: the
//         fast path. Otherwise the exact emulation below runs.
__device__ __forceinline__ void encode(float v, int bits, int row_mul, int &off, float &scale, bool &safe) {
    u32 b = __float_as_uint(v);
    u32 e = (b >> 23) & 0xffu;
    off = (int)((b & 0x007fffffu) >> (23 - bits)) * row_mul * 4;
    if (e == 0u || e == 255u) {
        scale = v;
        safe = (b & 0x7fffffffu) == 0u;
    } else {
        scale = __uint_as_float(b & 0xff800000u);
        safe = e >= 64u && e <= 190u;
    }
}

__device__ __forceinline__ float entry(const float *tbl, int off) {
    return *(const float *)((const char *)tbl + off);
}

// The AMSim product in full (product.rs, steps 1 to 3).
__device__ __forceinline__ float amsim_exact(const float *tbl, int oa, int ob, float sa, float sb) {
    u32 ba = __float_as_uint(sa), bb = __float_as_uint(sb);
    u32 ea = (ba >> 23) & 0xffu, eb = (bb >> 23) & 0xffu;
    if (ea == 255u || eb == 255u) {
        // IEEE product. A normal partner is held as sign * 2^(e-127):
        // inf/NaN times it is the same as times the operand.
        return __fmul_rn(sa, sb);
    }
    u32 sign = (ba ^ bb) & 0x80000000u;
    if (ea == 0u || eb == 0u) return __uint_as_float(sign);
    u32 lb = __float_as_uint(entry(tbl, oa + ob));
    int e = (int)((lb >> 23) & 0xffu) + (int)ea + (int)eb - 254;
    if (e >= 255) return __uint_as_float(sign | 0x7f800000u);
    if (e <= 0) return __uint_as_float(sign);
    return __uint_as_float(sign | ((u32)e << 23) | (lb & 0x007fffffu));
}

extern __shared__ float smem_table[];

// C[z] (+)= A[z] * B[z] for z = blockIdx.z, with arbitrary element strides.
// BM x BN outputs per block, TM x TN per thread, BK-deep k tiles; the next
// tile's operands are fetched from global memory while the current one is
// multiplied. BK divides ACC_BLOCK, so every accumulation block is a whole
// number of k tiles: for table products `acc` sums the current block, and
// at its end it is added into `tot` (the sums of the finished blocks, in
// order, from +0.0) and reset.
template <int MODE, bool SMEM_TABLE, int BM, int BN, int BK, int TM, int TN>
__device__ __forceinline__ void gemm_body(
    int M, int N, int K,
    const float *__restrict__ A, i64 rsa, i64 csa, i64 bsa,
    const float *__restrict__ B, i64 rsb, i64 csb, i64 bsb,
    float *__restrict__ C, i64 rsc, i64 csc, i64 bsc,
    int accumulate, const float *__restrict__ table, int bits, int fast_ok)
{
    static_assert(ACC_BLOCK % BK == 0, "k tiles must not straddle accumulation blocks");
    constexpr int TX = BN / TN;
    constexpr int TY = BM / TM;
    constexpr int NT = TX * TY;
    constexpr int LA = (BM * BK + NT - 1) / NT;
    constexpr int LB = (BK * BN + NT - 1) / NT;
    __shared__ int a_off[BK][BM];
    __shared__ float a_sc[BK][BM];
    __shared__ int b_off[BK][BN];
    __shared__ float b_sc[BK][BN];

    const int tid = threadIdx.x;
    const int tx = tid % TX, ty = tid / TX;
    const int z = blockIdx.z;
    A += (i64)z * bsa;
    B += (i64)z * bsb;
    C += (i64)z * bsc;
    const int i0 = blockIdx.y * BM, j0 = blockIdx.x * BN;

    int row_mul = 1 << bits;
    if (MODE == MODE_LUT && SMEM_TABLE) {
        // Rows padded by one entry so that lanes reading different rows
        // at the same column fall into different banks.
        const int n = 1 << bits;
        row_mul = n + 1;
        for (int t = tid; t < n * n; t += NT) {
            smem_table[(t >> bits) * row_mul + (t & (n - 1))] = __ldg(&table[t]);
        }
    }

    // Only AMSim products are summed in blocks: the native fp32 / bf16
    // modes are compared with a tolerance, like the CPU's SGEMM, and keep
    // their registers. `tot` doubles the accumulator registers of the big
    // 8 x 8 tiles (ptxas for sm_90: 155 -> 219 registers with the table in
    // shared memory, 176 -> 254 without, no spills; one block of 256
    // threads per SM either way). It is one kernel for every k rather than
    // a variant without `tot` for k <= ACC_BLOCK (where +0.0 + acc is acc).
    constexpr bool BLOCKED = MODE == MODE_LUT;
    float acc[TM][TN], tot[TM][TN];
#pragma unroll
    for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int c = 0; c < TN; ++c) { acc[r][c] = 0.0f; tot[r][c] = 0.0f; }

    // Element e of a tile walks the unit-stride direction across threads
    // (coalesced global reads).
    const bool a_colmajor = rsa == 1;
    const bool b_rowmajor = csb == 1;
    float pa[LA], pb[LB];
    auto fetch = [&](int k0) {
#pragma unroll
        for (int l = 0; l < LA; ++l) {
            int e = tid + l * NT, i, k;
            if (a_colmajor) { i = e % BM; k = e / BM; } else { k = e % BK; i = e / BK; }
            int gi = i0 + i, gk = k0 + k;
            pa[l] = (e < BM * BK && gi < M && gk < K) ? A[gi * rsa + gk * csa] : 0.0f;
        }
#pragma unroll
        for (int l = 0; l < LB; ++l) {
            int e = tid + l * NT, j, k;
            if (b_rowmajor) { j = e % BN; k = e / BN; } else { k = e % BK; j = e / BK; }
            int gj = j0 + j, gk = k0 + k;
            pb[l] = (e < BK * BN && gj < N && gk < K) ? B[gk * rsb + gj * csb] : 0.0f;
        }
    };
    fetch(0);

    for (int k0 = 0; k0 < K; k0 += BK) {
        bool ok = true;
#pragma unroll
        for (int l = 0; l < LA; ++l) {
            int e = tid + l * NT, i, k;
            if (e >= BM * BK) break;
            if (a_colmajor) { i = e % BM; k = e / BM; } else { k = e % BK; i = e / BK; }
            if (MODE == MODE_LUT) {
                int o; float sc; bool sf;
                encode(pa[l], bits, row_mul, o, sc, sf);
                a_off[k][i] = o; a_sc[k][i] = sc; ok = ok && sf;
            } else {
                a_sc[k][i] = (MODE == MODE_BF16) ? bf16_round(pa[l]) : pa[l];
            }
        }
#pragma unroll
        for (int l = 0; l < LB; ++l) {
            int e = tid + l * NT, j, k;
            if (e >= BK * BN) break;
            if (b_rowmajor) { j = e % BN; k = e / BN; } else { k = e % BK; j = e / BK; }
            if (MODE == MODE_LUT) {
                int o; float sc; bool sf;
                encode(pb[l], bits, 1, o, sc, sf);
                b_off[k][j] = o; b_sc[k][j] = sc; ok = ok && sf;
            } else {
                b_sc[k][j] = (MODE == MODE_BF16) ? bf16_round(pb[l]) : pb[l];
            }
        }
        const bool fast = __syncthreads_and(ok) && fast_ok;
        const int kmax = min(BK, K - k0);
        if (k0 + BK < K) fetch(k0 + BK);
        if (MODE == MODE_LUT && !fast) {
            const float *tbl = SMEM_TABLE ? (const float *)smem_table : table;
            // Fully unrolled over r and c so that acc stays in registers.
            for (int kk = 0; kk < kmax; ++kk)
#pragma unroll
                for (int r = 0; r < TM; ++r)
#pragma unroll
                    for (int c = 0; c < TN; ++c)
                        acc[r][c] = __fadd_rn(acc[r][c], amsim_exact(tbl, a_off[kk][ty * TM + r], b_off[kk][tx * TN + c],
                                                                     a_sc[kk][ty * TM + r], b_sc[kk][tx * TN + c]));
        } else {
#pragma unroll
            for (int kk = 0; kk < BK; ++kk) {
                if (kk < kmax) {
                    float as[TM], bs[TN];
                    int ao[TM], bo[TN];
#pragma unroll
                    for (int r = 0; r < TM; ++r) { as[r] = a_sc[kk][ty * TM + r]; if (MODE == MODE_LUT) ao[r] = a_off[kk][ty * TM + r]; }
#pragma unroll
                    for (int c = 0; c < TN; ++c) { bs[c] = b_sc[kk][tx * TN + c]; if (MODE == MODE_LUT) bo[c] = b_off[kk][tx * TN + c]; }
#pragma unroll
                    for (int r = 0; r < TM; ++r)
#pragma unroll
                        for (int c = 0; c < TN; ++c) {
                            if (MODE == MODE_LUT) {
                                float l = SMEM_TABLE ? entry(smem_table, ao[r] + bo[c])
                                                     : __ldg((const float *)((const char *)table + (ao[r] + bo[c])));
                                acc[r][c] = __fadd_rn(acc[r][c], __fmul_rn(__fmul_rn(l, as[r]), bs[c]));
                            } else {
                                acc[r][c] = __fadd_rn(acc[r][c], __fmul_rn(as[r], bs[c]));
                            }
                        }
                }
            }
        }
        __syncthreads();
        if (BLOCKED && ((k0 + BK) % ACC_BLOCK == 0 || k0 + BK >= K)) {
            // The end of an accumulation block (or of k).
#pragma unroll
            for (int r = 0; r < TM; ++r)
#pragma unroll
                for (int c = 0; c < TN; ++c) {
                    tot[r][c] = __fadd_rn(tot[r][c], acc[r][c]);
                    acc[r][c] = 0.0f;
                }
        }
    }

#pragma unroll
    for (int r = 0; r < TM; ++r) {
        int gi = i0 + ty * TM + r;
        if (gi >= M) continue;
#pragma unroll
        for (int c = 0; c < TN; ++c) {
            int gj = j0 + tx * TN + c;
            if (gj >= N) continue;
            float *p = &C[gi * rsc + gj * csc];
            const float sum = BLOCKED ? tot[r][c] : acc[r][c];
            *p = accumulate ? __fadd_rn(*p, sum) : sum;
        }
    }
}

#define GEMM_ARGS                                                         \
    int M, int N, int K,                                                  \
    const float *__restrict__ A, i64 rsa, i64 csa, i64 bsa,               \
    const float *__restrict__ B, i64 rsb, i64 csb, i64 bsb,               \
    float *__restrict__ C, i64 rsc, i64 csc, i64 bsc,                     \
    int accumulate, const float *__restrict__ table, int bits, int fast_ok
#define GEMM_PASS M, N, K, A, rsa, csa, bsa, B, rsb, csb, bsb, C, rsc, csc, bsc, accumulate, table, bits, fast_ok

// Large tiles: 128 x 128 per block of 256 threads, 8 x 8 per thread.
#define BIG 128, 128, 8, 8, 8
// Small tiles for GEMMs with few output tiles and a long k (weight
// gradients): 16 x 16 per block of 256 threads, one output per thread.
#define SMALL 16, 16, 64, 1, 1

extern "C" __global__ void __launch_bounds__(256) gemm_lut_smem_big(GEMM_ARGS) { gemm_body<MODE_LUT, true, BIG>(GEMM_PASS); }
extern "C" __global__ void __launch_bounds__(256) gemm_lut_gmem_big(GEMM_ARGS) { gemm_body<MODE_LUT, false, BIG>(GEMM_PASS); }
extern "C" __global__ void __launch_bounds__(256) gemm_fp32_big(GEMM_ARGS) { gemm_body<MODE_FP32, false, BIG>(GEMM_PASS); }
extern "C" __global__ void __launch_bounds__(256) gemm_bf16_big(GEMM_ARGS) { gemm_body<MODE_BF16, false, BIG>(GEMM_PASS); }
extern "C" __global__ void __launch_bounds__(256) gemm_lut_smem_small(GEMM_ARGS) { gemm_body<MODE_LUT, true, SMALL>(GEMM_PASS); }
extern "C" __global__ void __launch_bounds__(256) gemm_lut_gmem_small(GEMM_ARGS) { gemm_body<MODE_LUT, false, SMALL>(GEMM_PASS); }
extern "C" __global__ void __launch_bounds__(256) gemm_fp32_small(GEMM_ARGS) { gemm_body<MODE_FP32, false, SMALL>(GEMM_PASS); }
extern "C" __global__ void __launch_bounds__(256) gemm_bf16_small(GEMM_ARGS) { gemm_body<MODE_BF16, false, SMALL>(GEMM_PASS); }

// ---------------------------------------------------------------------------
// Convolution lowering (conv.rs, "Lowering to GEMM"): the same column
// matrices as the CPU engine, built on the device, one thread per element.

struct ConvGeom {
    int n, c, h, w;        // input
    int o, kh, kw;         // output channels, kernel
    int sh, sw, ph, pw, dh, dw;
    int oh, ow;            // output size
    int groups;
};

// col[(c, kh, kw)][(n, oh, ow)] = xp(n, c, oh*s - p + kh*d, ow*s - p + kw*d)
extern "C" __global__ void im2col_t(ConvGeom g, const float *__restrict__ x, float *__restrict__ col) {
    const i64 rows = (i64)g.n * g.oh * g.ow;
    const i64 total = rows * g.c * g.kh * g.kw;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        i64 r = t % rows, kidx = t / rows;
        int kw = (int)(kidx % g.kw), kh = (int)((kidx / g.kw) % g.kh), c = (int)(kidx / ((i64)g.kw * g.kh));
        int ow = (int)(r % g.ow), oh = (int)((r / g.ow) % g.oh), n = (int)(r / ((i64)g.ow * g.oh));
        int ih = oh * g.sh - g.ph + kh * g.dh, iw = ow * g.sw - g.pw + kw * g.dw;
        float v = 0.0f;
        if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) v = x[(((i64)n * g.c + c) * g.h + ih) * g.w + iw];
        col[t] = v;
    }
}

// One phase of the input gradient (conv.rs, "Lowering to GEMM", and
// AxisPhase there): the input rows ih = ih0 + i*sh (i < nh) and columns
// iw = iw0 + j*sw (j < nw), whose terms come through the kernel rows
// kh = kh0 + th*kh_step (th < nkh) and columns kw = kw0 + tw*kw_step
// (tw < nkw), and through no other taps.
struct ConvPhase {
    int ih0, nh, iw0, nw;
    int kh0, kh_step, nkh;
    int kw0, kw_step, nkw;
};

// col[(o, th, tw)][(n, i, j)] = dyp(n, o, (ih + ph - kh*dh)/sh, (iw + pw - kw*dw)/sw)
// for the phase's positions and taps (the divisions are exact); +0.0
// outside the output.
extern "C" __global__ void dy2col_phase_t(ConvGeom g, ConvPhase p, const float *__restrict__ dy, float *__restrict__ col) {
    const i64 rows = (i64)g.n * p.nh * p.nw;
    const i64 total = rows * g.o * p.nkh * p.nkw;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        i64 r = t % rows, kidx = t / rows;
        int tw = (int)(kidx % p.nkw), th = (int)((kidx / p.nkw) % p.nkh), o = (int)(kidx / ((i64)p.nkw * p.nkh));
        int j = (int)(r % p.nw), i = (int)((r / p.nw) % p.nh), n = (int)(r / ((i64)p.nw * p.nh));
        int kh = p.kh0 + th * p.kh_step, kw = p.kw0 + tw * p.kw_step;
        int oh = (p.ih0 + i * g.sh + g.ph - kh * g.dh) / g.sh;
        int ow = (p.iw0 + j * g.sw + g.pw - kw * g.dw) / g.sw;
        float val = 0.0f;
        if (oh >= 0 && oh < g.oh && ow >= 0 && ow < g.ow) val = dy[(((i64)n * g.o + o) * g.oh + oh) * g.ow + ow];
        col[t] = val;
    }
}

// wt[grp][(ol, th, tw)][cl] = w[grp*opg + ol][cl][kh][kw] over the phase's taps.
extern "C" __global__ void weight_phase_t(ConvGeom g, ConvPhase p, const float *__restrict__ w, float *__restrict__ wt) {
    const int cpg = g.c / g.groups, ntap = p.nkh * p.nkw;
    const i64 total = (i64)g.o * ntap * cpg;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        int cl = (int)(t % cpg);
        int tap = (int)((t / cpg) % ntap);
        int o = (int)(t / ((i64)cpg * ntap));
        int kh = p.kh0 + (tap / p.nkw) * p.kh_step, kw = p.kw0 + (tap % p.nkw) * p.kw_step;
        // o = grp*opg + ol, so t is the index ((o * ntap + tap) * cpg + cl).
        wt[t] = w[(((i64)o * cpg + cl) * g.kh + kh) * g.kw + kw];
    }
}

// dx[n][c][ih0 + i*sh][iw0 + j*sw] = out[c][(n, i, j)], or +0.0 when out is
// null (a phase without taps: empty sums).
extern "C" __global__ void phase_to_nchw(ConvGeom g, ConvPhase p, const float *__restrict__ out, float *__restrict__ dx) {
    const i64 rows = (i64)g.n * p.nh * p.nw;
    const i64 total = rows * g.c;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        i64 r = t % rows;
        int c = (int)(t / rows);
        int j = (int)(r % p.nw), i = (int)((r / p.nw) % p.nh), n = (int)(r / ((i64)p.nw * p.nh));
        int ih = p.ih0 + i * g.sh, iw = p.iw0 + j * g.sw;
        dx[(((i64)n * g.c + c) * g.h + ih) * g.w + iw] = out ? out[t] : 0.0f;
    }
}

// dst[(n, ch, s)] = src[(ch, n, s)]  (channels-major GEMM output to NCHW),
// and the inverse when `inverse` is set (NCHW dy to [o][(n, s)]).
extern "C" __global__ void nchw_swap(int n, int ch, i64 spatial, const float *__restrict__ src, float *__restrict__ dst, int inverse) {
    const i64 total = (i64)n * ch * spatial;
    for (i64 t = blockIdx.x * (i64)blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        i64 s = t % spatial;
        int c = (int)((t / spatial) % ch);
        int b = (int)(t / (spatial * ch));
        i64 cm = ((i64)c * n + b) * spatial + s;
        if (inverse) dst[cm] = src[t]; else dst[t] = src[cm];
    }
}

// Integer table GEMM (amsim/src/int_gemm.rs): C[i][j] = sum_p
// T[A[i][p] << 8 | B[p][j]], row-major 8-bit operand codes, the 256 x 256
// int32 table T in global memory (256 KiB, resident in L2 and the read-only
// cache). One thread per output element. The sums wrap in 32 bits
// (unsigned arithmetic, which C++ defines), as the CPU engine's
// wrapping_add: integer sums do not depend on their order, so this is
// bit-exact with int_gemm_reference at any launch shape.
extern "C" __global__ void __launch_bounds__(256) int_gemm_lut(
    const unsigned char *__restrict__ a, const unsigned char *__restrict__ b,
    const int *__restrict__ table, int *__restrict__ c, int m, int n, int k) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int i = blockIdx.y;
    if (i >= m || j >= n) return;
    const unsigned char *a_row = a + (i64)i * k;
    u32 sum = 0;
    for (int p = 0; p < k; ++p) {
        sum += (u32)__ldg(&table[((int)a_row[p] << 8) | b[(i64)p * n + j]]);
    }
    c[(i64)i * n + j] = (int)sum;
}
