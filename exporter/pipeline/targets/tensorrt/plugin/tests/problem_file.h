// The binary problem files of tests/test_trt_plugin.py: int32 B C H W h w N stride, then float32 x
// (B, C, H, W), then float32 offset (B, 2N, h, w); the answer file is float32 out (B, C, h*N, w).
#pragma once

#include "akconv_sample_kernel.h"

#include <cstdio>
#include <vector>

namespace problem
{

//! Reads `path` into `s`, `x` and `offset`; prints why and returns false when it cannot.
inline bool read(char const* path, akconv::Shape& s, std::vector<float>& x, std::vector<float>& offset)
{
    std::FILE* in = std::fopen(path, "rb");
    if (in == nullptr)
    {
        std::printf("cannot open %s\n", path);
        return false;
    }
    int32_t d[8];
    bool ok = std::fread(d, sizeof(int32_t), 8, in) == 8;
    s = akconv::Shape{d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]};
    x.resize(ok ? static_cast<size_t>(s.B) * s.C * s.H * s.W : 0);
    offset.resize(ok ? static_cast<size_t>(s.B) * 2 * s.N * s.h * s.w : 0);
    ok = ok && std::fread(x.data(), sizeof(float), x.size(), in) == x.size()
        && std::fread(offset.data(), sizeof(float), offset.size(), in) == offset.size();
    std::fclose(in);
    if (!ok)
    {
        std::printf("short input %s\n", path);
    }
    return ok;
}

//! Elements of the output (B, C, h*N, w).
inline size_t outputSize(akconv::Shape const& s)
{
    return static_cast<size_t>(s.B) * s.C * s.h * s.N * s.w;
}

//! Writes `out` to `path`; false when it cannot.
inline bool write(char const* path, std::vector<float> const& out)
{
    std::FILE* o = std::fopen(path, "wb");
    bool const ok = o != nullptr && std::fwrite(out.data(), sizeof(float), out.size(), o) == out.size();
    if (o != nullptr)
    {
        std::fclose(o);
    }
    return ok;
}

} // namespace problem
