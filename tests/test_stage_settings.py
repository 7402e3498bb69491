"""Each stage's settings are its only input and its cache key: change any recipe field and exactly the
stages that read it (directly, or through an artifact they read) run again.

The stage graph is planned without running a stage: what is compared is the settings object every stage
would be called with and what it reads. A stage function takes its settings and the
artifacts it reads, never the recipe, so a stage whose settings and inputs are unchanged provably does
not read the field that changed.
"""

import dataclasses
import inspect
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from exporter.base.artifacts import plain
from exporter.base.data.shapes import write_split
from exporter.models.embedded import build_embedded_detector
from exporter.pipeline.builder import Pipeline, targets_of
from exporter.pipeline.recipe import Recipe, load_recipe
from exporter.pipeline.stages import export_onnx, fuse, partial_int8, scoring, sensitivity, simplify
from exporter.pipeline.stages.graph import Node, Record, Result
from exporter.pipeline.targets.openvino import ir as openvino
from exporter.pipeline.targets.tensorrt import engine as tensorrt
from exporter.pipeline.targets.tensorrt import qdq as quantize_qdq
from tests.conftest import EMBEDDED

BUILD = {
    "fuse",
    *("export", "simplify", "openvino.export", "openvino.simplify", "tensorrt.export", "tensorrt.simplify"),
    *("openvino.fp32", "openvino.fp16", "openvino.int8", "sensitivity", "openvino.int8_search"),
    *("tensorrt.int8_search", "tensorrt.qdq", "tensorrt.bundle"),
    *("tensorrt.end2end.fp32", "tensorrt.end2end.fp16", "tensorrt.end2end.int8"),
}
ALL = BUILD | {"eval"}  # eval: the settings `reparam-export eval` scores the run with
EXPORTED = BUILD - {"fuse", "sensitivity"}  # the stages an ONNX export feeds
END2END = {"tensorrt.end2end.fp32", "tensorrt.end2end.fp16", "tensorrt.end2end.int8", "tensorrt.bundle"}
INT8 = {"openvino.int8", "openvino.int8_search", "tensorrt.int8_search", "tensorrt.qdq"}
INT8 |= {"tensorrt.end2end.int8", "tensorrt.bundle"}
TENSORRT = {"tensorrt.export", "tensorrt.simplify", "tensorrt.int8_search", "tensorrt.qdq"} | END2END

# field -> (another valid value, the stages that run again): every field of the recipe
CASES = {
    "name": ("other", EXPORTED),  # the ONNX metadata names the model
    "model.builder": ("tests.fixture_models:build_user_model", BUILD),
    "model.kwargs": ({"num_classes": 3, "width": 16, "seed": 1}, BUILD),
    "model.checkpoint": ("CHECKPOINT", BUILD),
    "model.adapter": ("damoyolo", INT8 | END2END | {"eval"}),  # NMS thresholds of scoring and EfficientNMS
    "model.trust": (["mypkg"], BUILD),  # whose code may run: the builder's, a checkpoint's classes
    "input_size": ([64, 64], ALL),
    "class_names": (["a", "b", "c"], EXPORTED | {"eval"}),
    "preprocess.color": ("bgr", ALL),
    "preprocess.scale": (1.0, ALL),
    "preprocess.mean": ([1, 2, 3], ALL),
    "preprocess.std": ([2, 2, 2], ALL),
    "preprocess.resize": ("letterbox", ALL),
    "targets": (["openvino", "tensorrt"], {"export", "simplify"}),  # the onnx target's two stages go
    "precisions": (["fp32", "int8"], {"openvino.fp16", "tensorrt.end2end.fp16", "tensorrt.bundle"}),
    "export.opset": (16, EXPORTED),
    "export.dynamic_batch": (True, BUILD),  # the reference probe has two images
    "export.simplify": (False, EXPORTED - {"export", "openvino.export", "tensorrt.export"}),
    "export.output_names": (["s", "b"], EXPORTED),
    "export.akconv_lowering": ("gather", EXPORTED),
    "thresholds.fuse_rtol": (1e-10, BUILD),
    "thresholds.fp32_noise_factor": (4.0, EXPORTED),  # every FP32 check; the rest via their inputs
    "calibration.source": ("OTHER_IMAGES", INT8 | {"sensitivity"}),
    "calibration.count": (3, INT8),  # the first two images, which sensitivity scores, stay the same
    "calibration.seed": (1, INT8 | {"sensitivity"}),
    "calibration.allow_fewer": (True, set()),  # acts only on a source with too few images
    "calibration.folder": ("OTHER_FOLDER", set()),  # where records and range caches live, not what is built
    "tensorrt.version": ("8.4", TENSORRT),  # AKConv: GridSample → gather
    "tensorrt.workspace_mib": (1024, {"tensorrt.bundle"}),
    "tensorrt.calibration_method": (
        "entropy",
        {"tensorrt.int8_search", "tensorrt.qdq", "tensorrt.end2end.int8", "tensorrt.bundle"},
    ),
    "tensorrt.plugin_library": ("/opt/libakconv_plugin.so", set()),  # read by engines; none is built here
    "tensorrt.end2end_nms": (False, END2END),
    "tensorrt.max_output_boxes": (50, END2END),
    "openvino.int8_preset": ("performance", {"openvino.int8", "openvino.int8_search"}),
    "openvino.int8_float": ("bf16", {"openvino.int8", "openvino.int8_search"}),
    "openvino.bf16_for": ("another-host", set()),  # whether a bf16 IR may be built on a CPU without BF16
    "int8.accuracy_budget": (0.25, INT8),
    "int8.sensitivity_images": (1, INT8 | {"sensitivity"}),
    "evaluation.data": ("OTHER_IMAGES", INT8 | {"eval"}),
    "evaluation.limit": (2, INT8 | {"eval"}),
    "seed": (1, BUILD),  # of the probe input every check runs on
}


def leaf_fields(model=Recipe, prefix="") -> list[str]:
    fields = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if inspect.isclass(annotation) and hasattr(annotation, "model_fields"):
            fields += leaf_fields(annotation, f"{prefix}{name}.")
        else:
            fields.append(prefix + name)
    return fields


@pytest.fixture(autouse=True)
def cpu_with_bf16(monkeypatch):
    """The plan on a CPU that computes bf16, whatever this one does: every recipe field is planned, none
    refused (a bf16 INT8 search is refused on a CPU without BF16: tests/test_openvino.py)."""
    from exporter.pipeline.targets.openvino import runtime

    monkeypatch.setattr(runtime, "runs_bf16", lambda: True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    checkpoint = root / "weights.pt"
    torch.save(build_embedded_detector(seed=3).state_dict(), checkpoint)
    return {
        "calib": write_split(root / "a", "calib", 6, seed=3),
        "other": write_split(root / "b", "val", 6, seed=4),
        "checkpoint": checkpoint,
        "root": root,
    }


def base_overrides(data) -> dict:
    return {
        "input_size": [64, 96],
        "targets": ["onnx", "openvino", "tensorrt"],
        "precisions": ["fp32", "fp16", "int8"],
        "calibration.source": str(data["calib"]),
        "calibration.count": 4,
        "calibration.folder": str(data["root"] / "calibration"),
        "evaluation.data": str(data["calib"]),
        "int8.accuracy_budget": 0.5,
        "int8.sensitivity_images": 2,
        "tensorrt.end2end_nms": True,
    }


def graph(recipe: Recipe, run: Path) -> dict[str, Node]:
    """Every node `build` plans for `recipe`, by name, upstream first."""
    pipeline = Pipeline(recipe, run)
    pipeline.check()
    goals = [node for target in targets_of(recipe) for node in target.nodes(pipeline.plan).values()]
    goals += pipeline.plan.extras
    return {node.name: node for goal in goals for node in (*goal.upstream(), goal)}


def plan(recipe: Recipe, run: Path) -> dict[str, tuple[object, dict[str, str]]]:
    """stage -> (its settings as JSON, input -> the stage that writes it or the file), as `build` plans
    them (the INT8 search's record stands in with no float layers)."""
    nodes = graph(recipe, run)
    searched = SimpleNamespace(float_nodes=[])  # the search's record, as the INT8 stages read it
    planned = {}
    for name, node in nodes.items():
        upstream = {
            key: Result(each.name, run / each.output, searched, False, 0.0)
            for key, each in node.reads.items()
        }
        inputs = {key: each.name for key, each in node.reads.items()} | {
            k: str(p) for k, p in node.files.items()
        }
        planned[name] = (plain(node.settings(upstream)), inputs)
    if recipe.evaluation.data is not None:
        planned["eval"] = (plain(scoring.EvaluationSettings.from_recipe(recipe)), {})
    return planned


def reruns(before: dict, after: dict) -> set[str]:
    """Stages that appeared or vanished, whose settings or inputs changed, or that read an artifact of
    a stage that reruns."""
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    while True:
        more = {name for name, (_, inputs) in after.items() if set(inputs.values()) & changed} - changed
        if not more:
            return changed
        changed |= more


def value(field: str, data) -> object:
    alternative = CASES[field][0]
    special = {
        "CHECKPOINT": str(data["checkpoint"]),
        "OTHER_IMAGES": str(data["other"]),
        "OTHER_FOLDER": str(data["root"] / "elsewhere"),
    }
    return special.get(alternative, alternative) if isinstance(alternative, str) else alternative


def test_every_recipe_field_has_a_case():
    assert sorted(leaf_fields()) == sorted(CASES)


def test_each_field_reruns_exactly_the_stages_that_read_it(data, tmp_path):
    base = base_overrides(data)
    reference = plan(load_recipe(EMBEDDED, base), tmp_path / "base")
    assert set(reference) == ALL
    wrong = {}
    for index, (field, (_, expected)) in enumerate(CASES.items()):
        recipe = load_recipe(EMBEDDED, {**base, field: value(field, data)})
        found = reruns(reference, plan(recipe, tmp_path / f"run{index}"))
        if found != expected:
            wrong[field] = {"unexpected": sorted(found - expected), "missing": sorted(expected - found)}
    assert wrong == {}


def test_every_stage_has_its_own_typed_record(data, tmp_path):
    nodes = graph(load_recipe(EMBEDDED, base_overrides(data)), tmp_path)
    assert set(nodes) == BUILD
    for node in nodes.values():
        kind = node.record
        assert issubclass(kind, Record) and kind is not Record, node.name
        assert kind.describe is not Record.describe, f"{node.name}: {kind.__name__} says nothing"
        assert kind.__dataclass_params__.frozen and dataclasses.fields(kind), node.name


def test_stage_functions_take_settings_not_the_recipe():
    """A stage's run function receives its settings and the artifacts it reads: it cannot read a recipe
    field that is not in its key."""
    runs = [
        fuse.run,
        export_onnx.run,
        simplify.run,
        openvino.run,
        sensitivity.run,
        partial_int8.run,
        quantize_qdq.run,
        tensorrt.engine_stage,
        tensorrt.end2end_stage,
        tensorrt.write_bundle,
    ]
    for function in runs:
        hints = typing.get_type_hints(function)
        assert "recipe" not in inspect.signature(function).parameters, function.__qualname__
        assert Recipe not in hints.values(), function.__qualname__
