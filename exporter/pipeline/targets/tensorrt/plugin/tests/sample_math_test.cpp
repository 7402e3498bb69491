// Host-only checks of the AKConvSample sampling math (akconv_sample_kernel.h), no GPU needed.
//
//   g++ -std=c++17 -I.. sample_math_test.cpp -o sample_math_test
//   ./sample_math_test                 hand-derived cases; exit code 0 when all pass
//   ./sample_math_test IN OUT          evaluates every output element of the binary problem IN
//                                      (int32 B C H W h w N stride, then float32 x, then float32 offset)
//                                      and writes the float32 output (B, C, h*N, w) to OUT
#define AKCONV_MATH_ONLY
#include "akconv_sample_kernel.h"
#include "problem_file.h"

#include <cmath>
#include <cstdio>
#include <vector>

namespace
{

int gFailed = 0;
int gChecked = 0;

void expectNear(float got, float want, char const* what)
{
    ++gChecked;
    if (std::fabs(got - want) > 1e-5F)
    {
        ++gFailed;
        std::printf("FAIL %s: got %.7g, want %.7g\n", what, got, want);
    }
}

void expectEq(int32_t got, int32_t want, char const* what)
{
    expectNear(static_cast<float>(got), static_cast<float>(want), what);
}

void testGrid()
{
    // base = round(sqrt(N)); rows of `base` points, the remainder in an extra row.
    int32_t const ns[] = {1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13, 20, 30, 42, 56};
    int32_t const bases[] = {1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 6, 7};
    for (int k = 0; k < 15; ++k)
    {
        expectEq(akconv::gridBase(ns[k]), bases[k], "gridBase");
    }
    struct Point
    {
        int32_t n, N, row, col;
    };
    Point const points[] = {
        {0, 1, 0, 0}, {1, 2, 1, 0},                             // N = 1, 2: a single column
        {1, 3, 0, 1}, {2, 3, 1, 0},                             // N = 3: 1 row of 2, 1 extra
        {3, 5, 1, 1}, {4, 5, 2, 0},                             // N = 5: 2 rows of 2, 1 extra
        {5, 6, 2, 1},                                           // N = 6: 3 rows of 2
        {5, 7, 1, 2}, {6, 7, 2, 0},                             // N = 7: 2 rows of 3, 1 extra
        {8, 9, 2, 2},                                           // N = 9: 3 x 3
        {9, 11, 3, 0}, {10, 11, 3, 1},                          // N = 11: 3 rows of 3, 2 extra
        {12, 13, 3, 0},                                         // N = 13: 3 rows of 4, 1 extra
    };
    for (Point const& p : points)
    {
        int32_t row = -1;
        int32_t col = -1;
        akconv::initialPoint(p.n, p.N, akconv::gridBase(p.N), row, col);
        expectEq(row, p.row, "initialPoint row");
        expectEq(col, p.col, "initialPoint col");
    }
}

void testPlane()
{
    // x[r][c] = 3r + c + 1 on a 3 x 3 plane.
    float const x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    expectNear(akconv::samplePlane(x, 3, 3, 0.5F, 1.25F), 3.75F, "interior");
    expectNear(akconv::samplePlane(x, 3, 3, 1.0F, 1.0F), 5.0F, "integer point");
    expectNear(akconv::samplePlane(x, 3, 3, 1.75F, 0.5F), 6.75F, "interior 2");
    // Out of range: lo == hi and both weights 1, so the border is counted twice.
    expectNear(akconv::samplePlane(x, 3, 3, -0.7F, 1.0F), 4.0F, "top (2 x[0][1])");
    expectNear(akconv::samplePlane(x, 3, 3, 5.3F, 0.0F), 14.0F, "bottom (2 x[2][0])");
    expectNear(akconv::samplePlane(x, 3, 3, 1.0F, -3.0F), 8.0F, "left (2 x[1][0])");
    expectNear(akconv::samplePlane(x, 3, 3, 0.0F, 2.0F), 6.0F, "right edge u = W-1 (2 x[0][2])");
    expectNear(akconv::samplePlane(x, 3, 3, 0.0F, 9.5F), 6.0F, "right (2 x[0][2])");
    expectNear(akconv::samplePlane(x, 3, 3, -2.5F, 7.1F), 12.0F, "corner (4 x[0][2])");
    expectNear(akconv::samplePlane(x, 3, 3, 4.0F, -1.0F), 28.0F, "corner (4 x[2][0])");
    expectNear(akconv::samplePlane(x, 3, 3, 1.5F, -0.5F), 11.0F, "left, between rows");
    // H = 1: the row axis is always doubled.
    float const row[4] = {10, 20, 30, 40};
    expectNear(akconv::samplePlane(row, 1, 4, 0.3F, 1.75F), 55.0F, "H = 1");
    expectNear(akconv::samplePlane(row, 1, 4, 0.0F, 0.0F), 20.0F, "H = 1, origin");
    // W = 1: the column axis is always doubled.
    float const col[3] = {1, 4, 7};
    expectNear(akconv::samplePlane(col, 3, 1, 0.25F, -0.1F), 3.5F, "W = 1");
    // H = W = 1: four times the only value.
    float const one[1] = {5};
    expectNear(akconv::samplePlane(one, 1, 1, 0.4F, -2.0F), 20.0F, "H = W = 1");
}

void testIndexing()
{
    // B = 2, C = 2, H = W = 3, h = w = 2, N = 3, stride 1; x[b][c][r][q] = 100b + 10c + 3r + q.
    akconv::Shape const s{2, 2, 3, 3, 2, 2, 3, 1};
    std::vector<float> x(2 * 2 * 9);
    for (int b = 0; b < 2; ++b)
        for (int c = 0; c < 2; ++c)
            for (int k = 0; k < 9; ++k)
                x[(b * 2 + c) * 9 + k] = static_cast<float>(100 * b + 10 * c + 3 * (k / 3) + k % 3);
    std::vector<float> offset(2 * 6 * 4, 0.0F);
    int32_t const base = akconv::gridBase(3);
    auto outIndex = [&](int b, int c, int i, int n, int j) { return ((b * 2 + c) * 6 + i * 3 + n) * 2 + j; };

    // Zero offsets: point n = 2 sits at (1, 0); at i = 1, j = 1 it samples (2, 1), on the bottom border -> doubled.
    expectNear(akconv::sampleAt(x.data(), offset.data(), s, base, outIndex(1, 1, 1, 2, 1)), 2.0F * 117.0F, "border");
    // Point n = 1 at (0, 1); at i = 0, j = 0 it samples (0, 1), inside.
    expectNear(akconv::sampleAt(x.data(), offset.data(), s, base, outIndex(0, 1, 0, 1, 0)), 11.0F, "inside");

    // b = 1, n = 1, i = 0, j = 1: row offset channel 1, column offset channel N + 1 = 4.
    offset[((1 * 6 + 1) * 2 + 0) * 2 + 1] = 0.5F;   // u_r = 0 + 0 + 0.5
    offset[((1 * 6 + 4) * 2 + 0) * 2 + 1] = -0.25F; // u_c = 1 + 1 - 0.25 = 1.75
    // Bilinear at (0.5, 1.75) on x = 100 + 10c + 3r + q: 100 + 10c + 1.5 + 1.75.
    expectNear(akconv::sampleAt(x.data(), offset.data(), s, base, outIndex(1, 0, 0, 1, 1)), 103.25F, "offset b=1 c=0");
    expectNear(akconv::sampleAt(x.data(), offset.data(), s, base, outIndex(1, 1, 0, 1, 1)), 113.25F, "offset b=1 c=1");

    // Stride 2, N = 1, h = w = 2: (i, j) = (1, 0) samples (2, 0), bottom border -> 2 * x[0][0][2][0] = 12.
    akconv::Shape const s2{1, 1, 3, 3, 2, 2, 1, 2};
    std::vector<float> zeros(2 * 4, 0.0F);
    expectNear(akconv::sampleAt(x.data(), zeros.data(), s2, akconv::gridBase(1), 2), 12.0F, "stride 2");
}

int runFile(char const* inPath, char const* outPath)
{
    akconv::Shape s{};
    std::vector<float> x, offset;
    if (!problem::read(inPath, s, x, offset))
    {
        return 2;
    }
    std::vector<float> out(problem::outputSize(s));
    int32_t const base = akconv::gridBase(s.N);
    for (size_t k = 0; k < out.size(); ++k)
    {
        out[k] = akconv::sampleAt(x.data(), offset.data(), s, base, static_cast<int64_t>(k));
    }
    return problem::write(outPath, out) ? 0 : 2;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc == 3)
    {
        return runFile(argv[1], argv[2]);
    }
    testGrid();
    testPlane();
    testIndexing();
    std::printf("%d checks, %d failed\n", gChecked, gFailed);
    return gFailed == 0 ? 0 : 1;
}
