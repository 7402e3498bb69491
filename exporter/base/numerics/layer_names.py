"""Which node of an exported graph carries a given convolution of the fused torch model.

Convolutions are matched by their weights: the export copies the fused kernels bit for bit into
ONNX initializers and OpenVINO constants, whatever the exporter named the nodes (TorchScript scope
names, OpenVINO's '/WithoutBiases' suffixes). Kernels with identical weights pair up in order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from exporter.base.errors import CheckFailed, setting

if TYPE_CHECKING:
    import onnx

OPENVINO_CONVS = ("Convolution", "GroupConvolution")
OPENVINO_PASS_THROUGH = ("Reshape", "Convert", "Unsqueeze")


def _digest(weight: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(weight, dtype=np.float32).tobytes()).hexdigest()


def _index(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """digest -> names carrying that weight, in order of appearance."""
    index: dict[str, list[str]] = {}
    for digest, name in pairs:
        index.setdefault(digest, []).append(name)
    return index


def torch_convs(model: nn.Module) -> dict[str, list[str]]:
    return _index(
        (_digest(m.weight.detach().cpu().numpy()), name)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    )


def onnx_convs(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Conv nodes whose weight is an initializer (directly or through Identity, as the exporter
    writes a weight shared with another layer)."""
    from onnx import numpy_helper  # here: importing onnx takes a second a CLI start skips

    weights = {t.name: t for t in model.graph.initializer}
    aliases = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}

    def weight(name: str):
        while name in aliases:
            name = aliases[name]
        return weights.get(name)

    pairs = []
    for node in model.graph.node:
        tensor = weight(node.input[1]) if node.op_type == "Conv" else None
        if tensor is not None:
            pairs.append((_digest(numpy_helper.to_array(tensor)), node.name))
    return _index(pairs)


def openvino_convs(model) -> dict[str, list[str]]:
    """Convolutions of an FP32 OpenVINO model whose weights are constants (through reshapes)."""

    def weight(op):
        source = op.input_value(1).get_node()
        while source.get_type_name() in OPENVINO_PASS_THROUGH:
            source = source.input_value(0).get_node()
        return source.get_data() if source.get_type_name() == "Constant" else None

    pairs = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in OPENVINO_CONVS:
            data = weight(op)
            if data is not None:
                pairs.append((_digest(data), op.get_friendly_name()))
    return _index(pairs)


def graph_names(
    layers: list[str], torch_index: dict[str, list[str]], graph_index: dict[str, list[str]]
) -> dict[str, str]:
    """torch layer name -> graph node name for each of `layers`; CheckFailed naming any layer the
    graph does not carry."""
    mapping: dict[str, str] = {}
    for digest, names in torch_index.items():
        mapping.update(zip(names, graph_index.get(digest, []), strict=False))
    missing = [layer for layer in layers if layer not in mapping]
    if missing:
        raise CheckFailed(
            f"layer {missing[0]!r} has no convolution with its weights in the exported graph; "
            f"rebuild the run (build with {setting('force')}) so the graph and the fused model agree"
        )
    return {layer: mapping[layer] for layer in layers}
