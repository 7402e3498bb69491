"""The targets this version builds: one package each, named as its target, holding its descriptor
(`descriptor.TARGET`) and, where it has recipe settings of its own, its recipe section (`section.SECTION`,
the recipe's field of the target's name). A new target is its package and its line here."""

REGISTRY = (
    "exporter.pipeline.targets.onnx",
    "exporter.pipeline.targets.openvino",
    "exporter.pipeline.targets.tensorrt",
    "exporter.pipeline.targets.onnxruntime",
)
