"""OpenVINO CPU backend. The inference precision is always set explicitly: on CPUs with BF16
support OpenVINO would otherwise run an FP32 model in bfloat16. An FP32 IR also carries the precision
in its layers (mark_precise), for consumers that compile it with OpenVINO's defaults."""

from __future__ import annotations

import contextlib
import math
import re
import time
from pathlib import Path

import numpy as np

from exporter.base.workers import threads_here

PRECISION_HINTS = {"fp32": "f32", "fp16": "f32", "bf16": "bf16"}  # what each float IR computes in


HINT_KEY = ["reparam_export", "inference_hint"]  # in an IR's rt_info: what our runners compile it with


def hint(precision: str, int8_float: str = "f32") -> str:
    """The inference precision our runners compile an IR of `precision` with; an INT8 IR's float layers
    (head, the search's float layers) compute in `int8_float` (recipe openvino.int8_float)."""
    return int8_float if precision == "int8" else PRECISION_HINTS[precision]


def read(path: str | Path, precision: str = "fp32"):
    """(the IR at `path`, the inference precision our runners compile it with): the one its rt_info names
    (the IR stage writes it, so the artifact carries it), else `precision`'s (an IR from elsewhere)."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    found = model.get_rt_info(HINT_KEY).astype(str) if model.has_rt_info(HINT_KEY) else hint(precision)
    return model, found


def decline_telemetry() -> None:
    """Decline OpenVINO's usage telemetry in this process; the user's own consent file is left as it is.
    OpenVINO's converter (and NNCF) send events unless a consent file in the home says no, each from a
    process forked off this multithreaded one that it waits up to 3 s for: offline, that cost 1.1 s per
    conversion, and a child deadlocked in its name lookup hung a build at exit."""
    try:
        from openvino_telemetry import Telemetry
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # OpenVINO without its telemetry package sends nothing
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED
    with contextlib.suppress(RuntimeError):  # none configured yet
        Telemetry().consent = False  # one configured before this call


def convert(onnx_path: Path):
    """The ONNX model as an openvino.Model (OpenVINO's converter, telemetry declined)."""
    import openvino as ov

    decline_telemetry()
    return ov.convert_model(str(onnx_path))


AUTO_NAME = re.compile(r"(?<![\w.:/])([A-Z][A-Za-z0-9]*)_(\d+)(?!\w)")  # OpenVINO's Type_<counter>


def canonical_names(model) -> None:
    """Renumber the names OpenVINO generates (`Type_<n>`, n counting every node the process ever made) in
    graph order, so the same model saves to the same .xml whatever the process did before."""
    numbers: dict[str, int] = {}

    def renumber(match: re.Match) -> str:
        number = numbers.setdefault(match.group(0), len(numbers))
        return f"{match.group(1)}_{number}"

    for op in model.get_ordered_ops():
        op.set_friendly_name(AUTO_NAME.sub(renumber, op.get_friendly_name()))


def settle_for_precise(model) -> None:
    """Rewrite `model` (in place, equivalently) so that the CPU plugin has no op of it left to replace when
    it compiles: OpenVINO's MOC pass (constant folding, Unsqueeze to Reshape, Slices of one tensor to a
    Split, …), then the newer op versions the plugin converts to older ones (Interpolate 11 → 4, MaxPool
    8 → 1 where its indices are unused, SoftMax 8 → 1). A node the plugin replaces loses its precise marker
    (the marker is not copied), and the replacement then computes in the consumer's precision; what is
    left to chance here the stage's check of a plain consumer finds."""
    from openvino._offline_transformations import apply_moc_transformations

    apply_moc_transformations(model, cf=True)
    for op in model.get_ordered_ops():
        older = OLDER_VERSIONS.get((op.get_type_name(), op.get_type_info().version_id))
        new = older(op) if older else None
        if new is not None:
            new.set_friendly_name(op.get_friendly_name())
            op.output(0).replace(new.output(0))


def _interpolate_4(op):
    """Opset 11's Interpolate as opset 4's (sizes and scales both given, one of them unused)."""
    import openvino as ov
    import openvino.opset10 as opset  # its interpolate is opset 4's

    a = op.get_attributes()
    modes = ("nearest", "linear", "linear_onnx", "cubic")  # opset 4's
    if a["mode"] not in modes or op.get_input_partial_shape(1).is_dynamic:
        return None
    values = op.input_values()
    count = op.get_input_shape(1)[0]
    rank = op.get_input_partial_shape(0).rank.get_length()
    axes = values[2] if len(values) > 2 else ov.op.Constant(np.arange(rank, dtype=np.int64)).output(0)
    if a["shape_calculation_mode"] == "scales":
        sizes, scales = ov.op.Constant(np.zeros(count, np.int64)).output(0), values[1]
    else:
        sizes, scales = values[1], ov.op.Constant(np.ones(count, np.float32)).output(0)
    return opset.interpolate(
        values[0], sizes, scales, a["mode"], a["shape_calculation_mode"], a["pads_begin"], a["pads_end"],
        a["coordinate_transformation_mode"], a["nearest_mode"], a["antialias"], a["cube_coeff"], axes,
    )  # fmt: skip


def _max_pool_1(op):
    """Opset 8's MaxPool whose indices nothing reads, without dilation, as opset 1's."""
    import openvino.opset1 as opset

    a = op.get_attributes()
    if op.output(1).get_target_inputs() or any(d != 1 for d in a["dilations"]):
        return None
    return opset.max_pool(
        op.input_value(0), a["strides"], a["pads_begin"], a["pads_end"], a["kernel"], a["rounding_type"],
        a["auto_pad"],
    )  # fmt: skip


def _softmax_1(op):
    """Opset 8's SoftMax (a negative axis allowed) as opset 1's (axis ≥ 0)."""
    import openvino.opset1 as opset

    rank = op.get_input_partial_shape(0).rank
    axis = op.get_attributes()["axis"]
    if axis < 0 and rank.is_dynamic:
        return None
    return opset.softmax(op.input_value(0), axis % rank.get_length() if axis < 0 else axis)


OLDER_VERSIONS = {
    ("Interpolate", "opset11"): _interpolate_4,
    ("MaxPool", "opset8"): _max_pool_1,
    ("Softmax", "opset8"): _softmax_1,
}


def mark_precise(xml: Path) -> None:
    """Mark every layer of the saved IR `xml` precise (`<attribute name="precise" version="0"/>` in its
    rt_info, OpenVINO's marker that keeps a node out of precision conversion): the CPU plugin then computes
    every node in f32 whatever inference precision a consumer compiles it with, where by default it
    would run bf16 on CPUs with BF16. Python's API cannot set the marker, so it is written in the XML;
    settle_for_precise first, so that no marked node is replaced at compile time."""
    import xml.etree.ElementTree as ET

    tree = ET.parse(xml)
    for layer in tree.getroot().iter("layer"):
        info = layer.find("rt_info")
        if info is None:
            info = ET.Element("rt_info")
            layer.insert(0, info)
        if not any(a.get("name") == "precise" for a in info.iter("attribute")):
            ET.SubElement(info, "attribute", {"name": "precise", "version": "0"})
    ET.indent(tree, "\t")
    tree.write(xml, encoding="utf-8", xml_declaration=True)


def plugin_error(error: RuntimeError) -> str:
    """OpenVINO's error in one line: its last, which says what failed (the rest is where)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


class OpenVinoRunner:
    """A compiled model: `source` is an IR path or an in-memory openvino.Model."""

    def __init__(self, source, hint: str | None = "f32", threads: int = 0):
        """`hint`: the inference precision; None compiles as a consumer that sets none does."""
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY"}
        if hint is not None:
            config["INFERENCE_PRECISION_HINT"] = hint
        threads = threads or threads_here()
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.source, self.settings = source, config
        model = source if isinstance(source, ov.Model) else str(source)
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.config = {
            k: _text(self.compiled.get_property(k))
            for k in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS")
        }

    def compiled_layers(self, layer_type: str) -> int:
        """How many layers of `layer_type` the CPU plugin runs after its own graph passes
        (BatchNorm folding, post-op fusion), e.g. "Convolution" (depthwise included)."""
        ops = self.compiled.get_runtime_model().get_ordered_ops()
        return sum(op.get_rt_info()["layerType"].astype(str) == layer_type for op in ops)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        result = self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return [np.asarray(result[output]) for output in self.compiled.outputs]

    def infer_with_orderings(self, batch: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The outputs and the indices every TopK op picked, in graph order."""
        import openvino as ov

        core = ov.Core()
        model = (
            self.source.clone() if isinstance(self.source, ov.Model) else core.read_model(str(self.source))
        )
        outputs = len(model.outputs)
        tops = [op.output(1) for op in model.get_ordered_ops() if op.get_type_name() == "TopK"]
        if tops:
            model.add_outputs(tops)
        compiled = core.compile_model(model, "CPU", self.settings)
        result = compiled.create_infer_request().infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        values = [np.asarray(result[output]) for output in compiled.outputs]
        return values[:outputs], [v.astype(np.int64) for v in values[outputs:]]


def throughput(path: Path, batch: np.ndarray, seconds: float) -> tuple[float, int]:
    """Images per second with OpenVINO's THROUGHPUT streams and its optimal number of async requests, the
    IR compiled as it says it runs (`read`)."""
    import openvino as ov

    model, inference_hint = read(path)
    compiled = ov.Core().compile_model(
        model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": inference_hint}
    )
    requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(compiled, requests)
    for _ in range(requests):  # warm-up
        queue.start_async({0: batch})
    queue.wait_all()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        queue.start_async({0: batch})  # blocks while every request is busy
        count += 1
    queue.wait_all()
    return count / (time.perf_counter() - start), requests


def conv_macs(source: str | Path) -> int:
    """Multiply-accumulates per inference of the convolutions (grouped ones too) of an IR or ONNX
    file with static shapes, counted on the graph OpenVINO reads."""
    import openvino as ov

    total = 0
    for op in ov.Core().read_model(str(source)).get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            out = op.get_output_shape(0)  # N, C_out, spatial…
            total += math.prod(out) // out[1] * math.prod(op.get_input_shape(1))
    return total


def weight_elements(source: str | Path) -> int:
    """Weight elements of an IR: its constants of rank ≥ 2 (shape constants are rank 1)."""
    import openvino as ov

    constants = [op for op in ov.Core().read_model(str(source)).get_ops() if op.get_type_name() == "Constant"]
    return sum(math.prod(op.get_output_shape(0)) for op in constants if len(op.get_output_shape(0)) >= 2)


# per image, of max(1, |y|): another batch size's kernels round differently (~1e-6); mixed-up images: ~1
BATCH_RTOL = 1e-3


def allow_any_batch(model, images: np.ndarray) -> str | None:
    """Make `model` (one input, batch 1) run any batch size, each image as it runs alone; None when done,
    else why not, with `model` left as it was. In place: a copy would list each node's consumers in
    another order, and NNCF places quantizers by that order. Reshape targets naming the batch (a leading
    1 where the data's batch is 1) copy it instead (0: "keep this dimension", the same at batch 1).
    Proved twice: the batch stays the leading, unknown dimension of every tensor computed from the input,
    and each of `images` (N ≥ 2) gives the outputs it gives alone, within BATCH_RTOL."""
    import openvino as ov

    dims = model.input(0).get_partial_shape()
    if len(model.inputs) != 1 or dims.rank.is_dynamic or dims[0] != ov.Dimension(1):
        return "the model does not have one input of batch 1"
    alone = OpenVinoRunner(model)  # compiled from the graph as it is now
    replaced = []
    for op in model.get_ordered_ops():
        target = op.input_value(1) if op.get_type_name() == "Reshape" else None
        if target is None or target.get_node().get_type_name() != "Constant":
            continue
        data, shape = op.get_input_partial_shape(0), target.get_node().get_data()
        leading_one = shape.ndim == 1 and shape.size and shape[0] == 1
        if op.get_attributes()["special_zero"] and data.rank.is_static and data[0] == dims[0] and leading_one:
            copy_batch = np.concatenate([[0], shape[1:]]).astype(shape.dtype)
            op.input(1).replace_source_output(ov.op.Constant(copy_batch).output(0))
            replaced.append((op, target))
    why = _any_batch(model, ov.PartialShape([ov.Dimension(), *list(dims)[1:]]), alone, images)
    if why is not None:
        for op, target in replaced:
            op.input(1).replace_source_output(target)
        model.reshape({model.input(0): dims})
    return why


def _any_batch(model, shape, alone: OpenVinoRunner, images: np.ndarray) -> str | None:
    try:
        model.reshape({model.input(0): shape})
    except RuntimeError as exc:
        return f"the graph fixes the batch size ({str(exc).strip().splitlines()[0][:120]})"
    fixed = _fixed_batch(model)
    if fixed:
        return f"{fixed} does not keep the batch as its leading dimension"
    together = OpenVinoRunner(model).infer(images)
    for index, image in enumerate(images):
        for a, b in zip(alone.infer(image[None]), together, strict=True):
            if np.abs(a[0] - b[index]).max() > BATCH_RTOL * max(1.0, float(np.abs(a).max())):
                return f"image {index} of a batch gives other outputs than alone"
    return None


def _fixed_batch(model) -> str | None:
    """The first op computed from the input (shape computations aside) whose output has no unknown
    leading dimension, or None."""
    seen, stack = set(), [model.get_parameters()[0]]
    while stack:
        op = stack.pop()
        if op.get_type_name() in ("ShapeOf", "Result") or op.get_name() in seen:
            continue
        seen.add(op.get_name())
        for output in op.outputs():
            shape = output.get_partial_shape()
            if shape.rank.is_dynamic or shape.rank.get_length() == 0 or shape[0].is_static:
                return f"{op.get_type_name()} '{op.get_friendly_name()}'"
            stack.extend(target.get_node() for target in output.get_target_inputs())
    return None


def _text(value) -> str:
    """OpenVINO property values as plain text (element types by their short name, e.g. 'f32')."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


def cpu_capabilities() -> str:
    """OpenVINO CPU plugin's OPTIMIZATION_CAPABILITIES on this host ('FP32 BF16 INT8 BIN EXPORT_IMPORT')."""
    import openvino as ov

    return " ".join(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def runs_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here (AVX-512 BF16 or AMX)."""
    return "BF16" in cpu_capabilities().split()


def unmeasured(inference_hint: str) -> str | None:
    """Why an IR compiled with `inference_hint` cannot be measured here: one computed in bf16 (a bf16 IR,
    an INT8 IR whose float layers compute in bf16) on a CPU that computes no bf16."""
    from exporter.base import host

    if inference_hint == "bf16" and not runs_bf16():
        return f"this CPU, {host.describe()}, computes no bf16 (it has neither AVX-512 BF16 nor AMX)"
    return None


def load(path: str | Path, precision: str = "fp32", threads: int = 0) -> OpenVinoRunner:
    """The IR at `path` compiled as it says it runs (`read`)."""
    model, inference_hint = read(path, precision)
    return OpenVinoRunner(model, inference_hint, threads)
