"""`reparam-export bench-ultralytics`: one Ultralytics checkpoint through Ultralytics' own exporter and
through ours, measured in one run on one machine.

Per artifact (ONNX FP32, OpenVINO FP32 and INT8 of each tool): the convolutions of its graph (ONNX nodes;
for OpenVINO the convolutions the CPU plugin compiles) and its weights, its outputs against the float64
reference of the model (the same probe for both tools), OpenVINO latency at batch 1 timed in alternating
rounds (ratios against Ultralytics' FP32 IR), and COCO mAP with one evaluator on the same data.

The checkpoint's pickle is checked first (exporter.models.ultralytics.read_checkpoint): Ultralytics
unpickles it freely, so it is only handed over once its globals are known to be module classes of
trusted packages. Ultralytics writes its exports beside the checkpoint: it gets a copy inside the run
directory. Its INT8 calibrates on the data's val split (its rule); ours on the train split.
"""

from __future__ import annotations

import os
import shutil
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from exporter.base import host
from exporter.base.artifacts import write_json
from exporter.base.errors import UserError, summary
from exporter.base.numerics.latency import rounds_of
from exporter.pipeline.builder import Pipeline
from exporter.pipeline.recipe import model_recipe
from exporter.pipeline.stages import ort_runner as ort_backend
from exporter.pipeline.stages.reference import reference_parity
from exporter.pipeline.stages.scoring import EvaluationSettings, Scorer
from exporter.pipeline.targets.openvino import runtime as ov_backend

ROUNDS = 3  # alternating passes over the OpenVINO artifacts (see latency.rounds_of)
OURS, THEIRS = "reparam-export", "Ultralytics"


@dataclass
class Row:
    tool: str
    artifact: str  # "ONNX FP32", "OpenVINO FP32", "OpenVINO INT8"
    path: str
    convolutions: int
    weights: int  # elements of the weight tensors of its graph
    max_abs_err: float  # against the float64 reference on the probe
    ok: bool | None  # FP32: within the model's FP32 rounding bound; INT8: measured only (None)
    p50_ms: float | None = None  # OpenVINO artifacts only: the median over the rounds of each round's p50
    ratio: float | None = None  # Ultralytics' OpenVINO FP32 p50 / this p50: the median of the rounds' ratios
    ratio_range: tuple[float, float] | None = None  # the rounds' lowest and highest ratio
    map: float | None = None


def onnx_graph(path: Path) -> tuple[int, int]:
    """(Conv nodes, weight elements) of an ONNX model."""
    model = onnx.load(str(path), load_external_data=False)
    weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer if len(t.dims) >= 2)
    return sum(n.op_type == "Conv" for n in model.graph.node), weights


def ultralytics_exports(
    checkpoint: Path, folder: Path, size: tuple[int, int], data: Path, calib_count: int
) -> dict[str, Path]:
    """Ultralytics' ONNX, OpenVINO FP32 and INT8 exports of a copy of the checkpoint in `folder`."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")  # never pip install from inside a benchmark
    os.environ.setdefault("YOLO_VERBOSE", "False")
    import logging

    from ultralytics import YOLO

    logging.getLogger("nncf").setLevel(logging.WARNING)
    ov_backend.decline_telemetry()  # Ultralytics converts with OpenVINO's converter too

    from exporter.base.data.yolo import split_images

    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / checkpoint.name
    shutil.copyfile(checkpoint, copy)
    fraction = min(1.0, calib_count / len(split_images(data, "val")))
    model = YOLO(str(copy), task="detect")
    imgsz = list(size)
    try:
        onnx_path = model.export(format="onnx", imgsz=imgsz, simplify=True, verbose=False)
        fp32 = model.export(format="openvino", imgsz=imgsz, verbose=False)
        int8 = model.export(format="openvino", imgsz=imgsz, int8=True, data=str(data), fraction=fraction)
    except Exception as exc:  # noqa: BLE001 - the other tool failing is a result to report, in one line
        raise UserError(f"Ultralytics' exporter failed on {checkpoint}: {summary(exc)}") from None
    return {
        "ONNX FP32": Path(onnx_path),
        "OpenVINO FP32": next(Path(fp32).glob("*.xml")),
        "OpenVINO INT8": next(Path(int8).glob("*.xml")),
    }


def bench(
    checkpoint: Path,
    data: Path,
    trust: tuple[str, ...],
    run: Path,
    threads: int = 2,
    min_seconds: float = 2.0,
    calib_count: int = 300,
    eval_limit: int | None = None,
) -> dict[str, Any]:
    """Both tools' artifacts of `checkpoint`, measured side by side; written to RUN/bench_ultralytics.json."""
    from exporter.models.ultralytics import read_checkpoint

    read_checkpoint(checkpoint, trust)  # refuses a hostile pickle before Ultralytics unpickles it
    overrides = {
        "targets": ["onnx", "openvino"],
        "precisions": ["fp32", "int8"],
        "calibration.source": str(data),
        "calibration.count": calib_count,
    }  # no evaluation stage: every artifact of both tools is scored below, by one scorer
    recipe = model_recipe(str(checkpoint), list(trust), overrides)
    pipeline = Pipeline(recipe, run / "ours")
    built = pipeline.build()
    fused = run / "ours" / "fused.pt"
    ours = {
        "ONNX FP32": built["onnx.fp32"].output,
        "OpenVINO FP32": built["openvino.fp32"].output,
        "OpenVINO INT8": built["openvino.int8"].output,
    }
    theirs = ultralytics_exports(checkpoint, run / "ultralytics", tuple(recipe.input_size), data, calib_count)
    noise = recipe.thresholds.fp32_noise_factor
    score = Scorer(EvaluationSettings.from_recipe(recipe, data, eval_limit))
    rows, calls = [], {}
    for tool, artifacts in ((OURS, ours), (THEIRS, theirs)):
        for artifact, path in artifacts.items():
            if artifact.startswith("ONNX"):
                runner = ort_backend.load(path, threads)
                convolutions, weights = onnx_graph(path)
            else:
                precision = "int8" if artifact.endswith("INT8") else "fp32"
                runner = ov_backend.load(path, precision, threads)
                convolutions, weights = (
                    runner.compiled_layers("Convolution"),
                    ov_backend.weight_elements(path),
                )
                probe = np.zeros((1, 3, *recipe.input_size), np.float32)
                calls[(tool, artifact)] = lambda runner=runner, probe=probe: runner.infer(probe)
            parity = reference_parity(fused, runner, noise)
            fp32 = artifact.endswith("FP32")
            rows.append(
                Row(
                    tool,
                    artifact,
                    str(path),
                    convolutions,
                    weights,
                    parity.max_abs_err,
                    parity.ok if fp32 else None,
                    map=score(runner.infer, 1)["map"],
                )
            )
    with host.LoadMeter() as meter:
        timings = rounds_of(calls, ROUNDS, min_seconds)
    base = timings[(THEIRS, "OpenVINO FP32")]
    for row in rows:
        if (row.tool, row.artifact) in timings:
            p50s = timings[(row.tool, row.artifact)]
            ratios = [b / t for b, t in zip(base, p50s, strict=True)]
            row.p50_ms, row.ratio = statistics.median(p50s), statistics.median(ratios)
            row.ratio_range = (min(ratios), max(ratios))
    report = {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "images": score.images,
        "input_size": list(recipe.input_size),
        "threads": threads,
        "rounds": ROUNDS,
        "host": host.describe(),
        "load": None if meter.load is None else meter.load.as_dict(),
        "calibration_images": calib_count,
        "rows": [asdict(r) for r in rows],
    }
    write_json(run / "bench_ultralytics.json", report)
    return report
