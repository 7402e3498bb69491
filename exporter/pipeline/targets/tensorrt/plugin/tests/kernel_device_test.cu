// Runs launchAKConvSample on a CUDA device, without TensorRT, for tests/test_trt_plugin.py.
//
//   kernel_device_test --probe                      exit 0 when a CUDA device answers, else 77 (skip)
//   kernel_device_test fp32|fp16 in.bin out.bin     in.bin: int32 B C H W h w N stride, then x and
//                                                   offset as float32; out.bin: float32 (B, C, h*N, w)
// fp16 rounds x and offset to FP16 on the host, runs the FP16 kernel and widens its FP16 output.
#include "akconv_sample_kernel.h"
#include "problem_file.h"

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <vector>

namespace
{

constexpr int kSkip = 77;

bool check(cudaError_t err, char const* what)
{
    if (err != cudaSuccess)
    {
        std::printf("%s: %s\n", what, cudaGetErrorString(err));
    }
    return err == cudaSuccess;
}

//! Device buffers holding `host` converted to T; `out` receives `count` elements of T back as float.
template <typename T>
int run(akconv::Shape const& s, std::vector<float> const& x, std::vector<float> const& offset, std::vector<float>& out)
{
    auto narrow = [](std::vector<float> const& v) {
        std::vector<T> t(v.size());
        for (size_t k = 0; k < v.size(); ++k)
        {
            t[k] = static_cast<T>(v[k]);
        }
        return t;
    };
    std::vector<T> const hx = narrow(x);
    std::vector<T> const hoff = narrow(offset);
    std::vector<T> hout(out.size());
    void* dx = nullptr;
    void* doff = nullptr;
    void* dout = nullptr;
    bool ok = check(cudaMalloc(&dx, hx.size() * sizeof(T)), "cudaMalloc x")
        && check(cudaMalloc(&doff, hoff.size() * sizeof(T)), "cudaMalloc offset")
        && check(cudaMalloc(&dout, hout.size() * sizeof(T)), "cudaMalloc out")
        && check(cudaMemcpy(dx, hx.data(), hx.size() * sizeof(T), cudaMemcpyHostToDevice), "copy x")
        && check(cudaMemcpy(doff, hoff.data(), hoff.size() * sizeof(T), cudaMemcpyHostToDevice), "copy offset")
        && check(cudaMemset(dout, 0xff, hout.size() * sizeof(T)), "cudaMemset out"); // NaN where nothing is written
    bool const half = sizeof(T) == 2;
    ok = ok
        && check(static_cast<cudaError_t>(
                     launchAKConvSample(dx, doff, dout, s.B, s.C, s.H, s.W, s.h, s.w, s.N, s.stride, half, nullptr)),
            "launch")
        && check(cudaDeviceSynchronize(), "kernel")
        && check(cudaMemcpy(hout.data(), dout, hout.size() * sizeof(T), cudaMemcpyDeviceToHost), "copy out");
    cudaFree(dx);
    cudaFree(doff);
    cudaFree(dout);
    for (size_t k = 0; ok && k < out.size(); ++k)
    {
        out[k] = static_cast<float>(hout[k]);
    }
    return ok ? 0 : 1;
}

int runFile(char const* type, char const* inPath, char const* outPath)
{
    akconv::Shape s{};
    std::vector<float> x, offset;
    if (!problem::read(inPath, s, x, offset))
    {
        return 2;
    }
    std::vector<float> out(problem::outputSize(s));
    int const rc = std::strcmp(type, "fp16") == 0 ? run<__half>(s, x, offset, out) : run<float>(s, x, offset, out);
    if (rc != 0)
    {
        return rc;
    }
    return problem::write(outPath, out) ? 0 : 2;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc == 2 && std::strcmp(argv[1], "--probe") == 0)
    {
        int count = 0;
        cudaError_t const err = cudaGetDeviceCount(&count);
        std::printf("CUDA devices: %d (%s)\n", count, cudaGetErrorString(err));
        return err == cudaSuccess && count > 0 ? 0 : kSkip;
    }
    if (argc == 4 && (std::strcmp(argv[1], "fp32") == 0 || std::strcmp(argv[1], "fp16") == 0))
    {
        return runFile(argv[1], argv[2], argv[3]);
    }
    std::printf("usage: %s --probe | fp32|fp16 in.bin out.bin\n", argv[0]);
    return 2;
}
