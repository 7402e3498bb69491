// AKConvSample: bilinear sampling of AKConv ("official" variant, border counted twice).
//
// x (B, C, H, W) and offset (B, 2N, h, w) -> out (B, C, h*N, w), out row i*N + n.
// The per-element math below is __host__ __device__ so that it can be tested on a CPU;
// define AKCONV_MATH_ONLY to include this header without the CUDA runtime headers.
#pragma once

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define AKCONV_HD __host__ __device__
#else
#define AKCONV_HD
#endif

#ifndef AKCONV_MATH_ONLY
#include <cuda_runtime_api.h>

//! Launches the sampling kernel on `stream`; `half` selects FP16 tensors (else FP32).
//! Returns a cudaError_t value (0 = cudaSuccess).
int32_t launchAKConvSample(void const* x, void const* offset, void* out, int32_t B, int32_t C, int32_t H, int32_t W,
    int32_t h, int32_t w, int32_t N, int32_t stride, bool half, cudaStream_t stream);
#endif

namespace akconv
{

struct Shape
{
    int32_t B, C, H, W; // input x
    int32_t h, w;       // offset map
    int32_t N, stride;  // num_param, stride
};

//! round(sqrt(N)) in integers: b = floor(sqrt(N)), plus one when sqrt(N) > b + 0.5, i.e. N > b*b + b.
AKCONV_HD inline int32_t gridBase(int32_t N)
{
    int32_t b = 0;
    while (static_cast<int64_t>(b + 1) * (b + 1) <= N)
    {
        ++b;
    }
    return N > b * b + b ? b + 1 : b;
}

//! Initial position (row, col) of point n: rows of `base` points, the remainder in one extra row.
AKCONV_HD inline void initialPoint(int32_t n, int32_t N, int32_t base, int32_t& row, int32_t& col)
{
    int32_t const full = (N / base) * base;
    if (n < full)
    {
        row = n / base;
        col = n % base;
    }
    else
    {
        row = N / base;
        col = n - full;
    }
}

//! The two taps of one axis of length L at coordinate u (float32, as in the reference).
struct Taps
{
    int32_t lo, hi;
    float wLo, wHi;
};

AKCONV_HD inline Taps axisTaps(float u, int32_t L)
{
    float const top = static_cast<float>(L - 1);
    float const f = floorf(u);
    float const lo = fminf(fmaxf(f, 0.0F), top);
    float const hi = fminf(fmaxf(f + 1.0F, 0.0F), top);
    float const uc = fminf(fmaxf(u, 0.0F), top);
    return Taps{static_cast<int32_t>(lo), static_cast<int32_t>(hi), 1.0F + (lo - uc), 1.0F - (hi - uc)};
}

AKCONV_HD inline float toFloat(float v)
{
    return v;
}
#ifdef __CUDACC__
AKCONV_HD inline float toFloat(__half v)
{
    return __half2float(v);
}
#endif

//! Bilinear sample of one H x W plane at (ur, uc); corners summed in the reference's order.
template <typename T>
AKCONV_HD inline float samplePlane(T const* plane, int32_t H, int32_t W, float ur, float uc)
{
    Taps const r = axisTaps(ur, H);
    Taps const c = axisTaps(uc, W);
    auto at = [&](int32_t row, int32_t col) { return toFloat(plane[static_cast<int64_t>(row) * W + col]); };
    return r.wLo * c.wLo * at(r.lo, c.lo)    // left-top
        + r.wHi * c.wHi * at(r.hi, c.hi)     // right-bottom
        + r.wLo * c.wHi * at(r.lo, c.hi)     // left-bottom
        + r.wHi * c.wLo * at(r.hi, c.lo);    // right-top
}

//! Value of output element `idx` (flat NCHW index into out (B, C, h*N, w)); `base` = gridBase(N).
template <typename T>
AKCONV_HD inline float sampleAt(T const* x, T const* offset, Shape const& s, int32_t base, int64_t idx)
{
    int64_t t = idx;
    int32_t const j = static_cast<int32_t>(t % s.w);
    t /= s.w;
    int32_t const row = static_cast<int32_t>(t % (static_cast<int64_t>(s.h) * s.N));
    t /= static_cast<int64_t>(s.h) * s.N;
    int64_t const c = t % s.C;
    int64_t const b = t / s.C;
    int32_t const i = row / s.N;
    int32_t const n = row % s.N;

    int32_t pr = 0;
    int32_t pc = 0;
    initialPoint(n, s.N, base, pr, pc);

    int64_t const hw = static_cast<int64_t>(s.h) * s.w;
    int64_t const at = static_cast<int64_t>(i) * s.w + j;
    float const offR = toFloat(offset[(b * 2 * s.N + n) * hw + at]);
    float const offC = toFloat(offset[(b * 2 * s.N + s.N + n) * hw + at]);
    float const ur = static_cast<float>(i * s.stride + pr) + offR;
    float const uc = static_cast<float>(j * s.stride + pc) + offC;

    T const* plane = x + (b * s.C + c) * static_cast<int64_t>(s.H) * s.W;
    return samplePlane(plane, s.H, s.W, ur, uc);
}

} // namespace akconv
