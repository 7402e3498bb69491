// Host-only checks of the AKConvSample plugin classes against the TensorRT 10 headers, no TensorRT library
// and no GPU: the kernel launcher is replaced by a stub that records its arguments.
//
//   g++ -std=c++17 -isystem $TENSORRT_ROOT/include -isystem $CUDA_HOME/include -I..
//       plugin_host_test.cpp ../AKConvSamplePlugin.cpp -o plugin_host_test && ./plugin_host_test
#include "AKConvSamplePlugin.h"

#include <NvInferImpl.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>

using namespace nvinfer1;

namespace
{

int gFailed = 0;
int gChecked = 0;

void check(bool ok, char const* what)
{
    ++gChecked;
    if (!ok)
    {
        ++gFailed;
        std::printf("FAIL %s\n", what);
    }
}

// Arguments of the last launcher call.
struct LaunchArgs
{
    void const* x;
    void const* offset;
    void* out;
    int32_t B, C, H, W, h, w, N, stride;
    bool half;
    int32_t calls;
} gLaunch{};

// Minimal stand-ins for TensorRT's dimension expressions (constants only).
class ConstExprImpl : public apiv::VDimensionExpr
{
public:
    explicit ConstExprImpl(int64_t v)
        : mValue(v)
    {
    }
    bool isConstant() const override
    {
        return true;
    }
    int64_t getConstantValue() const override
    {
        return mValue;
    }
    bool isSizeTensor() const override
    {
        return false;
    }

private:
    int64_t mValue;
};

class ConstExpr : public IDimensionExpr
{
public:
    explicit ConstExpr(int64_t v)
        : mValueImpl(v)
    {
        mImpl = &mValueImpl;
    }

private:
    ConstExprImpl mValueImpl;
};

class BuilderImpl : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override
    {
        return &mExprs.emplace_back(value);
    }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override
    {
        int64_t const x = a.getConstantValue();
        int64_t const y = b.getConstantValue();
        return constant(op == DimensionOperation::kPROD ? x * y : op == DimensionOperation::kSUM ? x + y : -1);
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr;
    }

private:
    std::deque<ConstExpr> mExprs;
};

class Builder : public IExprBuilder
{
public:
    Builder()
    {
        mImpl = &mBuilderImpl;
    }

private:
    BuilderImpl mBuilderImpl;
};

Dims dims4(int64_t a, int64_t b, int64_t c, int64_t d)
{
    Dims r{};
    r.nbDims = 4;
    r.d[0] = a;
    r.d[1] = b;
    r.d[2] = c;
    r.d[3] = d;
    return r;
}

PluginTensorDesc desc(Dims const& d, DataType type, TensorFormat format = TensorFormat::kLINEAR)
{
    PluginTensorDesc r{};
    r.dims = d;
    r.type = type;
    r.format = format;
    r.scale = 1.0F;
    return r;
}

DynamicPluginTensorDesc dyn(Dims const& d, DataType type, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc r{};
    r.desc = desc(d, type, format);
    r.min = d;
    r.opt = d;
    r.max = d;
    return r;
}

IPluginV3* create(IPluginCreatorV3One& creator, std::initializer_list<PluginField> fields,
    TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    std::vector<PluginField> v(fields);
    PluginFieldCollection fc{static_cast<int32_t>(v.size()), v.data()};
    return creator.createPlugin("akconv_node", &fc, phase);
}

int64_t readField(PluginFieldCollection const* fc, char const* name)
{
    for (int32_t k = 0; fc != nullptr && k < fc->nbFields; ++k)
    {
        if (std::strcmp(fc->fields[k].name, name) == 0 && fc->fields[k].type == PluginFieldType::kINT32)
        {
            return *static_cast<int32_t const*>(fc->fields[k].data);
        }
    }
    return -1;
}

} // namespace

int32_t launchAKConvSample(void const* x, void const* offset, void* out, int32_t B, int32_t C, int32_t H, int32_t W,
    int32_t h, int32_t w, int32_t N, int32_t stride, bool half, cudaStream_t /*stream*/)
{
    gLaunch = LaunchArgs{x, offset, out, B, C, H, W, h, w, N, stride, half, gLaunch.calls + 1};
    return 0;
}

int main()
{
    // Library entry point and creator identity.
    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    check(nb == 1 && creators != nullptr && creators[0] != nullptr, "getCreators returns one creator");
    check(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0, "creator kind is V3One");
    auto& creator = *static_cast<IPluginCreatorV3One*>(creators[0]);
    check(std::strcmp(creator.getPluginName(), "AKConvSample") == 0, "creator name");
    check(std::strcmp(creator.getPluginVersion(), "1") == 0, "creator version");
    check(std::strcmp(creator.getPluginNamespace(), "") == 0, "creator namespace");
    PluginFieldCollection const* names = creator.getFieldNames();
    check(names != nullptr && names->nbFields == 2 && std::strcmp(names->fields[0].name, "num_param") == 0
            && std::strcmp(names->fields[1].name, "stride") == 0 && names->fields[0].type == PluginFieldType::kINT32,
        "field names num_param, stride (INT32)");
    setLoggerFinder(nullptr);

    // Field parsing: unknown fields and the parser's string attributes are ignored; bad values refused.
    int32_t const five = 5;
    int32_t const two = 2;
    int32_t const zero = 0;
    int64_t const seven = 7;
    float const real = 2.0F;
    char const version[] = "1";
    char const ns[] = "";
    std::unique_ptr<IPluginV3> plugin(create(creator,
        {PluginField("num_param", &five, PluginFieldType::kINT32, 1), PluginField("stride", &two, PluginFieldType::kINT32, 1),
            PluginField("plugin_version", version, PluginFieldType::kCHAR, 1),
            PluginField("plugin_namespace", ns, PluginFieldType::kCHAR, 0),
            PluginField("unknown", &real, PluginFieldType::kFLOAT32, 1)}));
    check(plugin != nullptr, "createPlugin with extra fields");
    std::unique_ptr<IPluginV3> p64(create(creator, {PluginField("num_param", &seven, PluginFieldType::kINT64, 1)}));
    check(p64 != nullptr, "createPlugin with an INT64 num_param and default stride");
    check(create(creator, {PluginField("stride", &two, PluginFieldType::kINT32, 1)}) == nullptr, "num_param required");
    check(create(creator, {PluginField("num_param", &zero, PluginFieldType::kINT32, 1)}) == nullptr, "num_param >= 1");
    check(create(creator,
              {PluginField("num_param", &five, PluginFieldType::kINT32, 1),
                  PluginField("stride", &zero, PluginFieldType::kINT32, 1)})
            == nullptr,
        "stride >= 1");
    check(create(creator, {PluginField("num_param", &real, PluginFieldType::kFLOAT32, 1)}) == nullptr,
        "num_param must be an integer");
    check(creator.createPlugin("n", nullptr, TensorRTPhase::kBUILD) == nullptr, "no fields");
    if (plugin == nullptr)
    {
        std::printf("%d checks, %d failed\n", gChecked, gFailed);
        return 1;
    }

    // Capabilities.
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    check(core && std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0, "core capability");
    check(build && std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0, "build capability");
    check(runtime && std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0, "runtime capability");
    check(std::strcmp(core->getPluginName(), "AKConvSample") == 0 && std::strcmp(core->getPluginVersion(), "1") == 0
            && std::strcmp(core->getPluginNamespace(), "") == 0,
        "plugin identity");

    // Types and formats.
    check(build->getNbOutputs() == 1, "one output");
    DataType in32[2] = {DataType::kFLOAT, DataType::kFLOAT};
    DataType in16[2] = {DataType::kHALF, DataType::kHALF};
    DataType inInt[2] = {DataType::kINT32, DataType::kINT32};
    DataType outType = DataType::kINT8;
    check(build->getOutputDataTypes(&outType, 1, in32, 2) == 0 && outType == DataType::kFLOAT, "FP32 -> FP32");
    check(build->getOutputDataTypes(&outType, 1, in16, 2) == 0 && outType == DataType::kHALF, "FP16 -> FP16");
    check(build->getOutputDataTypes(&outType, 1, inInt, 2) != 0, "INT32 refused");

    Dims const xd = dims4(2, 3, 7, 6);
    Dims const od = dims4(2, 10, 4, 3);
    Dims const yd = dims4(2, 3, 20, 3);
    DynamicPluginTensorDesc io[3] = {dyn(xd, DataType::kHALF), dyn(od, DataType::kHALF), dyn(yd, DataType::kHALF)};
    check(build->supportsFormatCombination(0, io, 2, 1), "x FP16 linear");
    check(build->supportsFormatCombination(1, io, 2, 1) && build->supportsFormatCombination(2, io, 2, 1),
        "offset, out FP16 like x");
    io[1].desc.type = DataType::kFLOAT;
    check(!build->supportsFormatCombination(1, io, 2, 1), "mixed types refused");
    io[0] = dyn(xd, DataType::kFLOAT, TensorFormat::kCHW4);
    check(!build->supportsFormatCombination(0, io, 2, 1), "non-linear format refused");
    io[0] = dyn(xd, DataType::kINT8);
    check(!build->supportsFormatCombination(0, io, 2, 1), "INT8 refused");
    io[0] = dyn(xd, DataType::kFLOAT);
    io[2] = dyn(yd, DataType::kFLOAT);
    check(build->supportsFormatCombination(0, io, 2, 1) && build->supportsFormatCombination(1, io, 2, 1)
            && build->supportsFormatCombination(2, io, 2, 1),
        "all FP32 linear");

    // Shapes: (B, C, H, W), (B, 2N, h, w) -> (B, C, h*N, w).
    Builder exprs;
    DimsExprs inExprs[2];
    inExprs[0].nbDims = 4;
    inExprs[1].nbDims = 4;
    for (int32_t k = 0; k < 4; ++k)
    {
        inExprs[0].d[k] = exprs.constant(xd.d[k]);
        inExprs[1].d[k] = exprs.constant(od.d[k]);
    }
    DimsExprs outExprs{};
    check(build->getOutputShapes(inExprs, 2, nullptr, 0, &outExprs, 1, exprs) == 0 && outExprs.nbDims == 4,
        "getOutputShapes");
    check(outExprs.d[0]->getConstantValue() == 2 && outExprs.d[1]->getConstantValue() == 3
            && outExprs.d[2]->getConstantValue() == 20 && outExprs.d[3]->getConstantValue() == 3,
        "output shape (2, 3, 4*5, 3)");
    inExprs[1].nbDims = 3;
    check(build->getOutputShapes(inExprs, 2, nullptr, 0, &outExprs, 1, exprs) != 0, "3-D offset refused");

    // configurePlugin / onShapeChange check the offset channels (2N = 10) and batch.
    check(build->configurePlugin(io, 2, io + 2, 1) == 0, "configure (B, 10, h, w)");
    io[1] = dyn(dims4(-1, -1, -1, -1), DataType::kFLOAT);
    check(build->configurePlugin(io, 2, io + 2, 1) == 0, "configure with dynamic dims");
    io[1] = dyn(dims4(2, 8, 4, 3), DataType::kFLOAT);
    check(build->configurePlugin(io, 2, io + 2, 1) != 0, "configure refuses 8 offset channels");
    PluginTensorDesc in[2] = {desc(xd, DataType::kFLOAT), desc(od, DataType::kFLOAT)};
    PluginTensorDesc out[1] = {desc(yd, DataType::kFLOAT)};
    check(runtime->onShapeChange(in, 2, out, 1) == 0, "onShapeChange");
    in[1].dims.d[0] = 1;
    check(runtime->onShapeChange(in, 2, out, 1) != 0, "onShapeChange refuses a batch mismatch");
    in[1].dims.d[0] = 2;
    check(build->getWorkspaceSize(io, 2, io + 2, 1) == 0, "no workspace");

    // enqueue forwards shapes, attributes and dtype to the launcher.
    float xb = 0;
    float ob = 0;
    float yb = 0;
    void const* inputs[2] = {&xb, &ob};
    void* outputs[1] = {&yb};
    check(runtime->enqueue(in, out, inputs, outputs, nullptr, nullptr) == 0 && gLaunch.calls == 1, "enqueue FP32");
    check(gLaunch.x == &xb && gLaunch.offset == &ob && gLaunch.out == &yb, "enqueue buffers");
    check(gLaunch.B == 2 && gLaunch.C == 3 && gLaunch.H == 7 && gLaunch.W == 6 && gLaunch.h == 4 && gLaunch.w == 3,
        "enqueue dims");
    check(gLaunch.N == 5 && gLaunch.stride == 2 && !gLaunch.half, "enqueue attributes, FP32");
    in[0].type = in[1].type = out[0].type = DataType::kHALF;
    check(runtime->enqueue(in, out, inputs, outputs, nullptr, nullptr) == 0 && gLaunch.half, "enqueue FP16");
    out[0].type = DataType::kFLOAT;
    check(runtime->enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0 && gLaunch.calls == 2,
        "enqueue refuses mixed types");
    out[0].type = DataType::kHALF;
    in[1].dims.d[1] = 12;
    check(runtime->enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0 && gLaunch.calls == 2,
        "enqueue refuses 12 offset channels");

    // Serialization round trip (the runtime phase recreates the plugin from these fields), clone, attach.
    PluginFieldCollection const* fields = runtime->getFieldsToSerialize();
    check(readField(fields, "num_param") == 5 && readField(fields, "stride") == 2, "fields to serialize");
    std::unique_ptr<IPluginV3> restored(creator.createPlugin("akconv_node", fields, TensorRTPhase::kRUNTIME));
    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    std::unique_ptr<IPluginV3> attached(runtime->attachToContext(nullptr));
    plugin.reset(); // copies must not depend on the original
    for (IPluginV3* copy : {restored.get(), cloned.get(), attached.get()})
    {
        check(copy != nullptr, "copy exists");
        if (copy == nullptr)
        {
            continue;
        }
        auto* rt = static_cast<IPluginV3OneRuntime*>(copy->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        PluginFieldCollection const* f = rt->getFieldsToSerialize();
        check(readField(f, "num_param") == 5 && readField(f, "stride") == 2, "copy keeps num_param, stride");
    }

    std::printf("%d checks, %d failed\n", gChecked, gFailed);
    return gFailed == 0 ? 0 : 1;
}
