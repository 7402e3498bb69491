"""TensorRT engine stage: ONNX → serialized engine (TensorRT 10 Python API, imported lazily), or, where
TensorRT or a CUDA GPU is missing, a deferred bundle that builds the same engine with trtexec elsewhere.

One build plan drives both: `plan()` turns the precision, the model and the settings into builder flags,
strong typing, the optimization profile and the plugin; `build_engine` applies it through the Python
API and `trtexec_command` spells the same plan as trtexec flags (recorded with every engine, and written
into the bundle's build_engine.sh).

Precisions: fp32 (TF32 off, so it matches the FP32 reference), fp16, and int8 from a Q/DQ ONNX (explicit
quantization: strongly typed on TensorRT >= 10, as its documentation asks, so the layers the Q/DQ graph
leaves in float run in the ONNX's FP32; INT8 + FP16 builder flags on older TensorRT). Implicit INT8
calibrators are deprecated since TensorRT 10.1, so the legacy IInt8EntropyCalibrator2 (cache keyed by
model and preprocessing) serves TensorRT < 10 only. Engines are not portable across GPUs or TensorRT
versions: the record names both, and a GPU other than the target (T4, compute capability 7.5) is warned
about.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from exporter.base.artifacts import atomic_output, sha256_file
from exporter.base.data.calibration import CalibrationSet
from exporter.base.errors import UserError, setting
from exporter.blocks.lowering.akconv import PLUGIN_OP
from exporter.models.families import family
from exporter.models.heads import Decoded, Yolo
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages import reference
from exporter.pipeline.stages.graph import Record
from exporter.pipeline.targets.tensorrt import compat as trt_compat
from exporter.pipeline.targets.tensorrt import nms as efficient_nms

PRECISIONS = ("fp32", "fp16", "int8")
MIN_TRT = (8, 4)  # memory pools (set_memory_pool_limit, --memPoolSize) exist since 8.4
T4 = (7, 5)
PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"
PLUGIN_SOURCES = ("AKConvSamplePlugin.cpp", "AKConvSamplePlugin.h", "akconv_sample_kernel.cu",
                  "akconv_sample_kernel.h", "CMakeLists.txt", "README.md")  # fmt: skip
PLUGIN_LIBRARY = "plugin/build/libakconv_plugin.so"  # inside a bundle
TIMING_CACHE = "timing.cache"


@dataclass(frozen=True)
class EngineSettings:
    """Builder settings shared by the Python builder and the trtexec bundle."""

    workspace_mib: int = 4096
    batch: tuple[int, int, int] | None = None  # min/opt/max of a dynamic batch; None: (1, 1, 1)
    target_gpu: tuple[int, int] = T4  # compute capability the engine is meant for

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelFacts:
    input_name: str
    input_shape: tuple[int | None, ...]  # None: a dynamic dimension
    has_qdq: bool
    needs_plugin: bool


def inspect_onnx(path: Path) -> ModelFacts:
    model = onnx.load(str(path), load_external_data=False)
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise UserError(f"{path}: the TensorRT stage expects one image input, found {len(inputs)}")
    graph_input = inputs[0]
    dims = tuple(d.dim_value or None for d in graph_input.type.tensor_type.shape.dim)
    ops = {n.op_type for n in model.graph.node}
    return ModelFacts(graph_input.name, dims, "QuantizeLinear" in ops, PLUGIN_OP in ops)


@dataclass(frozen=True)
class Plan:
    precision: str
    flags: tuple[str, ...]  # builder flags to set: FP16, INT8
    clear_flags: tuple[str, ...]  # builder flags to clear: TF32
    strongly_typed: bool
    legacy_calibrator: bool
    input_name: str
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None  # min/opt/max; None: static
    plugin: bool
    workspace_mib: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(precision: str, facts: ModelFacts, settings: EngineSettings, trt_version: tuple[int, int]) -> Plan:
    """How to build `precision` from a model with `facts` on TensorRT `trt_version` (UserError: cannot)."""
    if precision not in PRECISIONS:
        raise UserError(f"TensorRT precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    version = ".".join(map(str, trt_version))
    if trt_version < MIN_TRT:
        raise UserError(f"TensorRT {version} is too old for this builder (needs 8.4 or newer)")
    if facts.needs_plugin and trt_version < (10, 0):
        raise UserError(f"the AKConvSample plugin needs TensorRT >= 10 (IPluginV3), not {version}")
    flags: tuple[str, ...] = ()
    strongly_typed = legacy = False
    if precision == "int8" and facts.has_qdq:
        strongly_typed = trt_version >= (10, 0)
        flags = () if strongly_typed else ("INT8", "FP16")
    elif precision == "int8":
        if trt_version >= (10, 0):
            raise UserError(
                "TensorRT >= 10 builds INT8 from the Q/DQ ONNX (implicit calibration is deprecated since "
                "10.1); pass the model written by the Q/DQ stage"
            )
        flags, legacy = ("INT8", "FP16"), True
    elif facts.has_qdq:
        raise UserError(f"this model holds Q/DQ nodes: build it as int8, not {precision}")
    elif precision == "fp16":
        flags = ("FP16",)
    batch, rest = facts.input_shape[0], facts.input_shape[1:]
    if any(d is None for d in rest):
        raise UserError(
            f"input '{facts.input_name}' has dynamic dimensions besides the batch: {facts.input_shape}"
        )
    shapes = None
    if batch is None:
        low, opt, high = settings.batch or (1, 1, 1)
        if not 1 <= low <= opt <= high:
            raise UserError(f"dynamic batch needs 1 <= min <= opt <= max, got {settings.batch}")
        shapes = ((low, *rest), (opt, *rest), (high, *rest))
    elif settings.batch is not None and set(settings.batch) != {batch}:
        raise UserError(
            f"the ONNX batch is fixed at {batch}: export with dynamic batch to build {settings.batch}"
        )
    return Plan(
        precision,
        flags,
        ("TF32",) if precision == "fp32" else (),
        strongly_typed,
        legacy,
        facts.input_name,
        shapes,
        facts.needs_plugin,
        settings.workspace_mib,
    )


def trtexec_command(
    build: Plan, onnx_file: str, engine_file: str, timing_cache: str | None, plugin_library: str | None,
    trt_version: tuple[int, int], calibration_cache: str | None = None,
) -> list[str]:  # fmt: skip
    """The trtexec invocation that builds what `build_engine` builds for `build`."""
    command = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}"]
    command += ["--stronglyTyped"] if build.strongly_typed else [f"--{f.lower()}" for f in build.flags]
    command += ["--noTF32"] if "TF32" in build.clear_flags else []
    command.append(f"--memPoolSize=workspace:{build.workspace_mib}")
    command += [f"--timingCacheFile={timing_cache}"] if timing_cache else []
    if build.shapes:
        for option, shape in zip(("min", "opt", "max"), build.shapes, strict=True):
            command.append(f"--{option}Shapes={build.input_name}:{'x'.join(map(str, shape))}")
    if build.plugin:
        command.append(f"--dynamicPlugins={plugin_library}")
    if build.legacy_calibrator:
        command.append(f"--calib={calibration_cache}")
    command.append("--skipInference" if trt_version >= (8, 6) else "--buildOnly")
    return command


def require_compatible(onnx_path: Path, trt_version: str) -> trt_compat.Report:
    """The static compatibility report; UserError naming the first error when the parser would fail."""
    report = trt_compat.check_model(onnx_path, trt_version)
    if not report.ok:
        first = next(i for i in report.issues if i.severity == "error")
        where = f"{first.op} {first.node}"
        raise UserError(
            f"TensorRT {trt_version} cannot take {onnx_path}: {where}: {first.problem}; {first.fix}"
        )
    return report


def unavailable() -> str | None:
    """Why engines cannot be built on this machine (None when they can)."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means no TensorRT here
        return f"TensorRT is not installed ({type(exc).__name__}: {exc})".splitlines()[0]
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def runtime_versions() -> dict[str, str]:
    """What an engine is only valid for (it does not load on another TensorRT or GPU): cache key."""
    import tensorrt as trt
    import torch

    capability = "{}.{}".format(*torch.cuda.get_device_capability(0))
    return {"tensorrt": trt.__version__, "gpu": f"{torch.cuda.get_device_name(0)} (sm {capability})"}


def gpu_facts(target: tuple[int, int] = T4) -> dict[str, Any]:
    """The current GPU, its compute capability, and whether it is the target's (engines are not portable)."""
    import torch

    capability = torch.cuda.get_device_capability(0)
    facts = {
        "name": torch.cuda.get_device_name(0),
        "compute_capability": "{}.{}".format(*capability),
        "target_compute_capability": "{}.{}".format(*target),
        "matches_target": tuple(capability) == tuple(target),
    }
    if not facts["matches_target"]:
        facts["warning"] = (
            f"engine built on {facts['name']} (compute capability {facts['compute_capability']}), not on the "
            f"target (compute capability {facts['target_compute_capability']}): rebuild it on the target GPU"
        )
    return facts


def _entropy_calibrator(trt, calibration: CalibrationSet, cache: Path, batch: int):
    """IInt8EntropyCalibrator2 over the shared calibration stream (TensorRT < 10); batches of exactly
    `batch` images, the remainder dropped."""
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.batches = calibration.batches(batch)
            self.device_batch = None

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names):
            images = next(self.batches, None)
            if images is None or len(images) != batch:
                return None
            self.device_batch = torch.from_numpy(images).cuda()  # kept alive until the next call
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            with atomic_output(cache) as tmp:
                tmp.write_bytes(bytes(data))

    return EntropyCalibrator()


def _version(trt) -> tuple[int, int]:
    return tuple(int(p) for p in trt.__version__.split(".")[:2])


def build_engine(
    onnx_path: Path,
    out: Path,
    precision: str,
    settings: EngineSettings | None = None,
    timing_cache: Path | None = None,
    plugin_library: Path | None = None,
    calibration: CalibrationSet | None = None,
    calibration_cache: Path | None = None,
) -> dict[str, Any]:
    """Build the engine of `onnx_path` into `out`; returns the record for the manifest.

    `timing_cache` is loaded when it exists and saved after the build; `plugin_library` is
    libakconv_plugin.so, needed when the graph has AKConvSample nodes; `calibration` and
    `calibration_cache` serve the legacy INT8 calibrator (TensorRT < 10, model without Q/DQ)."""
    reason = unavailable()
    if reason:
        raise UserError(f"cannot build a TensorRT engine here: {reason}; write the deferred bundle instead")
    import tensorrt as trt

    version = _version(trt)
    report = require_compatible(onnx_path, ".".join(map(str, version)))
    settings = settings or EngineSettings()
    facts = inspect_onnx(onnx_path)
    build = plan(precision, facts, settings, version)
    if build.legacy_calibrator and (calibration is None or calibration_cache is None):
        raise UserError("INT8 without Q/DQ nodes needs calibration images and a calibration cache path")
    gpu = gpu_facts(settings.target_gpu)
    warnings = [gpu["warning"]] if "warning" in gpu else []
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # EfficientNMS_TRT and the other shipped plugins
    if build.plugin:
        if plugin_library is None or not Path(plugin_library).is_file():
            raise UserError(
                f"{onnx_path} has AKConvSample nodes: build libakconv_plugin.so "
                f"({PLUGIN_DIR}/README.md) and set tensorrt.plugin_library in the recipe to its path"
            )
        trt.get_plugin_registry().load_library(str(plugin_library))
    builder = trt.Builder(logger)
    flags = 0
    if version < (10, 0):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if build.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UserError(
            f"TensorRT's ONNX parser rejected {onnx_path}: {errors[0] if errors else 'no details'}"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, build.workspace_mib << 20)
    for flag in build.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in build.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    cache = config.create_timing_cache(
        timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    )
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # made on another GPU or TensorRT
        warnings.append(f"timing cache {timing_cache} does not match this GPU/TensorRT: started a new one")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    if build.shapes:
        profile = builder.create_optimization_profile()
        profile.set_shape(build.input_name, *build.shapes)
        config.add_optimization_profile(profile)
    if build.legacy_calibrator:
        batch = build.shapes[1][0] if build.shapes else facts.input_shape[0]
        if build.shapes:
            calibration_profile = builder.create_optimization_profile()
            calibration_profile.set_shape(build.input_name, *[build.shapes[1]] * 3)
            config.set_calibration_profile(calibration_profile)
        config.int8_calibrator = _entropy_calibrator(trt, calibration, calibration_cache, batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(
            f"TensorRT {trt.__version__} could not build {precision} from {onnx_path} (see its log)"
        )
    out.write_bytes(memoryview(serialized))
    if timing_cache:
        with atomic_output(timing_cache) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    command = trtexec_command(
        build,
        onnx_path.name,
        out.name,
        timing_cache.name if timing_cache else None,
        str(plugin_library) if build.plugin else None,
        version,
        str(calibration_cache),
    )
    return {
        "engine": str(out),
        "deferred": False,
        "precision": precision,
        "tensorrt": trt.__version__,
        "gpu": gpu,
        "warnings": warnings,
        "plan": build.as_dict(),
        "settings": settings.as_dict(),
        "trtexec_equivalent": shlex.join(command),
        "compat": report.as_dict(),
        "calibration_cache": str(calibration_cache) if build.legacy_calibrator else None,
    }


@dataclass(frozen=True)
class EngineStageSettings:
    """One engine: the builder settings, the TensorRT it is for, and how it is checked."""

    engine: EngineSettings
    version: str  # tensorrt.version: the TensorRT the graph was prepared for
    precision: str
    plugin_library: Path | None
    end2end: bool  # EfficientNMS_TRT appended: no parity with the NMS-free reference
    noise_factor: float  # the FP32 check's bound (exporter.pipeline.stages.reference)

    @classmethod
    def from_recipe(cls, recipe: Recipe, precision: str) -> EngineStageSettings:
        spec = recipe.tensorrt
        return cls(
            engine_settings(recipe),
            spec.version,
            precision,
            spec.plugin_library,
            spec.end2end_nms,
            recipe.thresholds.fp32_noise_factor,
        )


@dataclass(frozen=True)
class BundleSettings:
    """The deferred trtexec build, where no engine can be built here (`reason`)."""

    engine: EngineSettings
    version: str
    reason: str

    @classmethod
    def from_recipe(cls, recipe: Recipe, reason: str) -> BundleSettings:
        return cls(engine_settings(recipe), recipe.tensorrt.version, reason)


@dataclass(frozen=True)
class End2EndSettings:
    """EfficientNMS_TRT appended to the outputs: their layout ('decoded' scores and corner boxes, or
    Ultralytics' Detect 'yolo'), the adapter's NMS thresholds, the box cap."""

    layout: str
    score_threshold: float
    iou_threshold: float
    max_output_boxes: int

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> End2EndSettings:
        head = family(recipe.model.adapter).head(recipe.model.ref())
        if not isinstance(head, (Decoded, Yolo)):
            raise UserError(
                f"{setting('tensorrt.end2end_nms')}: the model's head ({head.mode}) does not output scores "
                "and boxes for NMS: it selects its detections itself (NMS-free or in-graph NMS); leave "
                f"{setting('tensorrt.end2end_nms')} off"
            )
        return cls(head.mode, head.score_threshold, head.iou_threshold, recipe.tensorrt.max_output_boxes)


@dataclass(frozen=True)
class End2EndRecord(Record):
    op: str
    attributes: dict[str, Any]  # the NMS node's
    check: None = None  # it runs only inside TensorRT
    note: str = "EfficientNMS_TRT runs only inside TensorRT: not checked on CPU"

    def describe(self) -> str:
        coding = self.attributes["box_coding"]
        spelt = {efficient_nms.BOX_CORNERS: "corners", efficient_nms.BOX_CENTRE_SIZE: "centre/size"}[coding]
        return f"EfficientNMS_TRT appended, box_coding {coding} ({spelt}); {self.note}"


def end2end_stage(settings: End2EndSettings, onnx_path: Path, out: Path) -> End2EndRecord:
    """The model with EfficientNMS_TRT appended (it runs only inside TensorRT: no CPU check)."""
    return End2EndRecord(**efficient_nms.end2end_stage(onnx_path, out, **asdict(settings)))


def engine_settings(recipe: Recipe) -> EngineSettings:
    """Builder settings of the recipe: workspace, and the batch profile of a dynamic batch."""
    batch = (1, 1, 8) if recipe.export.dynamic_batch else None
    return EngineSettings(workspace_mib=recipe.tensorrt.workspace_mib, batch=batch)


@dataclass(frozen=True)
class EngineRecord(Record):
    """An engine's build (build_engine's record) and its check."""

    precision: str
    check: dict[str, Any] | None  # None: an end-to-end engine, whose outputs are detections
    note: str | None = None
    engine: str | None = None
    deferred: bool = False
    tensorrt: str | None = None
    gpu: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    trtexec_equivalent: str | None = None
    compat: dict[str, Any] | None = None
    calibration_cache: str | None = None

    def describe(self) -> str:
        if self.check is None:
            return f"{self.precision.upper()} engine; {self.note}"
        error = reference.describe_check(self.check, measured=self.precision != "fp32")
        return f"{self.precision.upper()} engine; {error}"


def engine_stage(
    settings: EngineStageSettings,
    onnx_path: Path,
    fused_pt: Path,
    out: Path,
    timing_cache: Path | None = None,
) -> dict[str, Any]:
    """Build the engine and measure it on the probe against the FP32 reference in fused.pt: FP32 must
    pass the recipe's tolerance; FP16 and INT8 errors are recorded. An end-to-end engine (with
    EfficientNMS_TRT) has other outputs than the reference and gets no parity check."""
    from exporter.pipeline.targets.tensorrt import runner as trt_backend

    plugin = settings.plugin_library
    record = build_engine(onnx_path, out, settings.precision, settings.engine, timing_cache, plugin)
    if settings.end2end:
        note = "end-to-end NMS engine: outputs are detections, not the reference's: no parity check"
        return EngineRecord(**record, check=None, note=note)
    runner = trt_backend.load(out, plugin if record["plan"]["plugin"] else None)
    parity = reference.reference_parity(fused_pt, runner, settings.noise_factor)
    if settings.precision == "fp32":
        reference.require_parity("TensorRT FP32 engine output", parity)
    return EngineRecord(**record, check=parity.as_dict())


README = """\
NO TENSORRT ENGINE WAS BUILT ON THIS MACHINE.
Reason: {reason}

This folder holds what is needed to build the engine(s) on the deployment host (TensorRT {trt},
CUDA GPU; engines are not portable, so build on the GPU that will run them, target: compute
capability {target}):

{files}

Build:

    ./build_engine.sh            # uses trtexec from PATH, or TRTEXEC=/path/to/trtexec
{plugin_note}
It runs trtexec with the settings reparam-export's own builder uses (precision, workspace,
timing cache, optimization profile, plugin), then leaves model_<precision>.engine here.
Check the result with `trtexec --loadEngine=model_<precision>.engine{load_plugin}`.
"""

PLUGIN_NOTE = """
The graph has AKConvSample nodes: the script first builds plugin/ with CMake (CUDA toolkit,
CMake >= 3.18, TensorRT 10 headers; set TENSORRT_ROOT and CUDA_ARCHS, default 75 = T4) and
loads plugin/build/libakconv_plugin.so. Load the same library before deserializing the engine.
"""


def write_bundle(
    script: Path,
    models: dict[str, Path],
    settings: EngineSettings,
    reason: str,
    trt_version: str = trt_compat.DEFAULT_TRT_VERSION,
) -> BundleRecord:
    """Write the deferred build into script's folder: each precision's ONNX (the Q/DQ one for int8), the
    plugin sources when needed, README.txt, and `script` (build_engine.sh, written last). Returns the
    record: no engine, deferred, why, and the files."""
    version = trt_compat.parse_trt_version(trt_version)
    folder = script.parent
    folder.mkdir(parents=True, exist_ok=True)
    lines, files, needs_plugin = [], [], False
    for precision, onnx_path in models.items():
        require_compatible(onnx_path, trt_version)
        facts = inspect_onnx(onnx_path)
        build = plan(precision, facts, settings, version.version)
        if build.legacy_calibrator:
            raise UserError("the bundle builds INT8 from the Q/DQ ONNX only; pass the Q/DQ stage's model")
        name = "model.qdq.onnx" if facts.has_qdq else "model.onnx"
        if name not in files:
            shutil.copyfile(onnx_path, folder / name)
            files.append(name)
        elif sha256_file(folder / name) != sha256_file(onnx_path):
            raise UserError(f"the bundle's precisions need two different {name} files; write one bundle each")
        needs_plugin |= build.plugin
        command = trtexec_command(
            build, name, f"model_{precision}.engine", TIMING_CACHE, PLUGIN_LIBRARY, version.version
        )
        lines.append('"$TRTEXEC" ' + shlex.join(command[1:]))
    header = [
        "#!/usr/bin/env bash",
        f"# Builds this bundle's TensorRT engine(s) with trtexec (TensorRT {trt_version}); see README.txt.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-trtexec}"',
    ]
    if needs_plugin:
        plugin = folder / "plugin"
        plugin.mkdir(exist_ok=True)
        for source in PLUGIN_SOURCES:
            shutil.copyfile(PLUGIN_DIR / source, plugin / source)
        files += [f"plugin/{s}" for s in PLUGIN_SOURCES]
        header += [
            'cmake -S plugin -B plugin/build -DTENSORRT_ROOT="${TENSORRT_ROOT:-/usr/src/tensorrt}" '
            '-DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-75}"',
            "cmake --build plugin/build",
        ]
    (folder / "README.txt").write_text(
        README.format(
            reason=reason,
            trt=trt_version,
            target="{}.{}".format(*settings.target_gpu),
            files="\n".join(f"    {f}" for f in [*files, "build_engine.sh"]),
            plugin_note=PLUGIN_NOTE if needs_plugin else "",
            load_plugin=f" --dynamicPlugins={PLUGIN_LIBRARY}" if needs_plugin else "",
        )
    )
    script.write_text("\n".join([*header, *lines]) + "\n")
    script.chmod(0o755)
    return BundleRecord(
        reason,
        str(folder),
        trt_version,
        list(models),
        {f: sha256_file(folder / f) for f in [*files, "README.txt"]},
        lines,
        settings.as_dict(),
    )


@dataclass(frozen=True)
class BundleRecord(Record):
    """The deferred build: no engine here, why, and the bundle that builds it where TensorRT runs."""

    reason: str
    bundle: str
    trt_version: str
    precisions: list[str]
    files: dict[str, str]  # path in the bundle -> sha256
    commands: list[str]
    settings: dict[str, Any]
    engine: None = None
    deferred: bool = True

    def describe(self) -> str:
        return f"NO ENGINE BUILT here ({self.reason}); trtexec bundle for {', '.join(self.precisions)}"
