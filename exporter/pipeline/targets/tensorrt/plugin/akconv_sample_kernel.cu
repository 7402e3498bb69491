// CUDA kernel of the AKConvSample plugin: one thread per output element (grid-stride loop).
#include "akconv_sample_kernel.h"

#include <cuda_fp16.h>

namespace
{

__device__ inline void store(float* p, float v)
{
    *p = v;
}

__device__ inline void store(__half* p, float v)
{
    *p = __float2half_rn(v);
}

template <typename T>
__global__ void akconvSampleKernel(
    T const* __restrict__ x, T const* __restrict__ offset, T* __restrict__ out, akconv::Shape s, int32_t base, int64_t total)
{
    int64_t const step = static_cast<int64_t>(blockDim.x) * gridDim.x;
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step)
    {
        store(out + idx, akconv::sampleAt(x, offset, s, base, idx));
    }
}

template <typename T>
cudaError_t launch(void const* x, void const* offset, void* out, akconv::Shape const& s, int64_t total, cudaStream_t stream)
{
    constexpr int32_t kThreads = 256;
    constexpr int64_t kMaxBlocks = 1 << 20; // the grid-stride loop covers the rest
    int64_t blocks = (total + kThreads - 1) / kThreads;
    blocks = blocks < kMaxBlocks ? blocks : kMaxBlocks;
    akconvSampleKernel<T><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(static_cast<T const*>(x),
        static_cast<T const*>(offset), static_cast<T*>(out), s, akconv::gridBase(s.N), total);
    return cudaGetLastError();
}

} // namespace

int32_t launchAKConvSample(void const* x, void const* offset, void* out, int32_t B, int32_t C, int32_t H, int32_t W,
    int32_t h, int32_t w, int32_t N, int32_t stride, bool half, cudaStream_t stream)
{
    if (B < 0 || C < 0 || h < 0 || w < 0 || H < 1 || W < 1 || N < 1 || stride < 1)
    {
        return static_cast<int32_t>(cudaErrorInvalidValue);
    }
    int64_t const total = static_cast<int64_t>(B) * C * h * N * w;
    if (total == 0)
    {
        return static_cast<int32_t>(cudaSuccess);
    }
    if (x == nullptr || offset == nullptr || out == nullptr)
    {
        return static_cast<int32_t>(cudaErrorInvalidValue);
    }
    akconv::Shape const s{B, C, H, W, h, w, N, stride};
    cudaError_t const err = half ? launch<__half>(x, offset, out, s, total, stream)
                                 : launch<float>(x, offset, out, s, total, stream);
    return static_cast<int32_t>(err);
}
