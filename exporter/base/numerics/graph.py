"""A detector's head tail in an exported graph: the last compute node on every path to an output (the
class and box prediction layers) and every node after it (box decoding, softmax, sigmoid). INT8 keeps
these in float. One walk serves ONNX graphs and OpenVINO models.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

import onnx

Node = TypeVar("Node")
OPENVINO_COMPUTE = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"}


def _feeds_compute(
    nodes: Sequence[Node],
    consumers: Callable[[Node], Iterable[Node]],
    is_compute: Callable[[Node], bool],
    key: Callable[[Node], Hashable] = id,
) -> list[bool]:
    """For nodes in topological order: whether a compute node lies downstream of each (`key` identifies
    a node across the wrappers a graph API hands out)."""
    position = {key(node): i for i, node in enumerate(nodes)}
    feeds = [False] * len(nodes)
    for index in reversed(range(len(nodes))):
        feeds[index] = any(
            is_compute(c) or feeds[position[key(c)]] for c in consumers(nodes[index]) if key(c) in position
        )
    return feeds


def _onnx_flags(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, bool]]:
    nodes = list(model.graph.node)  # ONNX nodes are topologically sorted
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    flags = _feeds_compute(
        nodes,
        lambda n: [c for out in n.output for c in readers.get(out, [])],
        lambda n: n.op_type == "Conv",
    )
    return list(zip(nodes, flags, strict=True))


def onnx_decode_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the ONNX nodes after the last Conv on every path to an output (Constants left out)."""
    return [n.name for n, f in _onnx_flags(model) if not f and n.op_type not in ("Conv", "Constant")]


def onnx_prediction_convs(model: onnx.ModelProto) -> list[str]:
    """The last Conv on every path to an output: a detector's class and box prediction layers."""
    return [n.name for n, f in _onnx_flags(model) if not f and n.op_type == "Conv"]


def openvino_head_tail(model) -> list[str]:
    """Friendly names of the OpenVINO ops INT8 keeps in float: the last convolution (or MatMul) on every
    path to an output and every op after it.

    Measured on the demo model (500 val images): quantizing the prediction convolutions too cost
    1.5 mAP points; keeping them in float 0.25, at the same latency."""
    ops = list(model.get_ordered_ops())
    flags = _feeds_compute(
        ops,
        lambda op: [t.get_node() for out in op.outputs() for t in out.get_target_inputs()],
        lambda op: op.get_type_name() in OPENVINO_COMPUTE,
        lambda op: op.get_friendly_name(),
    )
    skip = {"Parameter", "Constant", "Result"}
    return [
        op.get_friendly_name()
        for op, f in zip(ops, flags, strict=True)
        if not f and op.get_type_name() not in skip
    ]
