#include "AKConvSamplePlugin.h"

#include "akconv_sample_kernel.h"

#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <string>

using namespace nvinfer1;

namespace
{

// Logger handed over by TensorRT through setLoggerFinder().
std::mutex gLoggerMutex;
ILoggerFinder* gLoggerFinder{nullptr};

void logError(char const* message) noexcept
{
    try
    {
        std::lock_guard<std::mutex> lock(gLoggerMutex);
        ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(ILogger::Severity::kERROR, (std::string("AKConvSample: ") + message).c_str());
        }
    }
    catch (...)
    {
    }
}

//! Reads an integer plugin field (the ONNX parser passes INT attributes as kINT32).
bool readInt(PluginField const& field, int64_t& value) noexcept
{
    if (field.data == nullptr || field.length < 1)
    {
        return false;
    }
    switch (field.type)
    {
    case PluginFieldType::kINT8: value = *static_cast<int8_t const*>(field.data); return true;
    case PluginFieldType::kINT16: value = *static_cast<int16_t const*>(field.data); return true;
    case PluginFieldType::kINT32: value = *static_cast<int32_t const*>(field.data); return true;
    case PluginFieldType::kINT64: value = *static_cast<int64_t const*>(field.data); return true;
    default: return false;
    }
}

bool fitsInt32(Dims const& dims) noexcept
{
    for (int32_t k = 0; k < dims.nbDims; ++k)
    {
        if (dims.d[k] < 0 || dims.d[k] > std::numeric_limits<int32_t>::max())
        {
            return false;
        }
    }
    return true;
}

} // namespace

namespace akconv
{

// ---------------------------------------------------------------------------------------------- plugin

AKConvSamplePlugin::AKConvSamplePlugin(int32_t numParam, int32_t stride)
    : mNumParam(numParam)
    , mStride(stride)
{
}

AKConvSamplePlugin::AKConvSamplePlugin(AKConvSamplePlugin const& other)
    : AKConvSamplePlugin(other.mNumParam, other.mStride)
{
}

IPluginCapability* AKConvSamplePlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* AKConvSamplePlugin::clone() noexcept
{
    return new (std::nothrow) AKConvSamplePlugin(*this);
}

char const* AKConvSamplePlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* AKConvSamplePlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* AKConvSamplePlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

int32_t AKConvSamplePlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t AKConvSamplePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || (inputTypes[0] != DataType::kFLOAT && inputTypes[0] != DataType::kHALF))
    {
        logError("expects inputs (x, offset) of type FP32 or FP16 and one output");
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t AKConvSamplePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || inputs[0].nbDims != 4 || inputs[1].nbDims != 4)
    {
        logError("expects 4-D inputs x (B, C, H, W) and offset (B, 2N, h, w)");
        return -1;
    }
    // (B, C, h*N, w)
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = inputs[0].d[1];
    outputs[0].d[2] = exprBuilder.operation(DimensionOperation::kPROD, *inputs[1].d[2], *exprBuilder.constant(mNumParam));
    outputs[0].d[3] = inputs[1].d[3];
    return 0;
}

bool AKConvSamplePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || pos < 0 || pos >= 3)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == 0)
    {
        return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    }
    return desc.type == inOut[0].desc.type; // offset and output follow x
}

bool AKConvSamplePlugin::validDims(Dims const& x, Dims const& offset) const noexcept
{
    if (x.nbDims != 4 || offset.nbDims != 4)
    {
        return false;
    }
    bool const channelsOk = offset.d[1] == -1 || offset.d[1] == 2 * static_cast<int64_t>(mNumParam);
    bool const batchOk = x.d[0] == -1 || offset.d[0] == -1 || x.d[0] == offset.d[0];
    return channelsOk && batchOk;
}

int32_t AKConvSamplePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || !validDims(in[0].desc.dims, in[1].desc.dims))
    {
        logError("offset must have shape (B, 2*num_param, h, w) with the batch of x");
        return -1;
    }
    return 0;
}

size_t AKConvSamplePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

int32_t AKConvSamplePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || !validDims(in[0].dims, in[1].dims) || !fitsInt32(in[0].dims)
        || !fitsInt32(in[1].dims))
    {
        logError("unsupported input shapes");
        return -1;
    }
    return 0;
}

int32_t AKConvSamplePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    Dims const& x = inputDesc[0].dims;
    Dims const& offset = inputDesc[1].dims;
    DataType const type = inputDesc[0].type;
    bool const typesOk = (type == DataType::kFLOAT || type == DataType::kHALF) && inputDesc[1].type == type
        && outputDesc[0].type == type;
    if (!typesOk || !validDims(x, offset) || !fitsInt32(x) || !fitsInt32(offset))
    {
        return -1;
    }
    auto const dim = [](Dims const& dims, int32_t k) { return static_cast<int32_t>(dims.d[k]); };
    bool const half = type == DataType::kHALF;
    return launchAKConvSample(inputs[0], inputs[1], outputs[0], dim(x, 0), dim(x, 1), dim(x, 2), dim(x, 3),
        dim(offset, 2), dim(offset, 3), mNumParam, mStride, half, stream);
}

IPluginV3* AKConvSamplePlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* AKConvSamplePlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mFields.clear();
        mFields.emplace_back("num_param", &mNumParam, PluginFieldType::kINT32, 1);
        mFields.emplace_back("stride", &mStride, PluginFieldType::kINT32, 1);
        mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
        mFieldCollection.fields = mFields.data();
        return &mFieldCollection;
    }
    catch (...)
    {
        return nullptr;
    }
}

// --------------------------------------------------------------------------------------------- creator

AKConvSamplePluginCreator::AKConvSamplePluginCreator()
{
    mFieldNames.emplace_back("num_param", nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.emplace_back("stride", nullptr, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

char const* AKConvSamplePluginCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* AKConvSamplePluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* AKConvSamplePluginCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

PluginFieldCollection const* AKConvSamplePluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

IPluginV3* AKConvSamplePluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    int64_t numParam = -1;
    int64_t stride = 1;
    for (int32_t k = 0; fc != nullptr && k < fc->nbFields; ++k)
    {
        PluginField const& field = fc->fields[k];
        if (field.name == nullptr)
        {
            continue;
        }
        bool const isNumParam = std::strcmp(field.name, "num_param") == 0;
        bool const isStride = std::strcmp(field.name, "stride") == 0;
        if ((isNumParam || isStride) && !readInt(field, isNumParam ? numParam : stride))
        {
            logError("fields num_param and stride must be integers");
            return nullptr;
        }
        // Other fields (plugin_version, plugin_namespace, ...) are ignored.
    }
    int64_t const kMax = std::numeric_limits<int32_t>::max() / 2;
    if (numParam < 1 || numParam > kMax || stride < 1 || stride > kMax)
    {
        logError("needs num_param >= 1 and stride >= 1");
        return nullptr;
    }
    return new (std::nothrow) AKConvSamplePlugin(static_cast<int32_t>(numParam), static_cast<int32_t>(stride));
}

} // namespace akconv

// ------------------------------------------------------------------------------------- library entry points

extern "C" AKCONV_EXPORT IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static akconv::AKConvSamplePluginCreator creator;
    static IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}

extern "C" AKCONV_EXPORT void setLoggerFinder(ILoggerFinder* finder)
{
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    gLoggerFinder = finder;
}
