"""The onnxruntime target: FP32 and a static INT8 Q/DQ ONNX for onnxruntime's CPU kernels (uint8
activations with their own zero point, int8 weights per channel, the head in float), evaluated, benchmarked
and searched like the other targets."""

import json
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from exporter.base.numerics.graph import onnx_prediction_convs
from exporter.pipeline.stages.qdq import check_qdq_structure
from exporter.pipeline.targets.onnxruntime.int8 import SCHEME
from exporter.pipeline.targets.table import TARGETS


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from exporter.cli import main

    base = tmp_path_factory.mktemp("onnxruntime")
    run, cwd = base / "run", os.getcwd()
    os.chdir(base)  # calibration/ records land here, not in the checkout
    try:
        args = ["--target", "onnxruntime", "--precision", "fp32", "--precision", "int8"]
        assert (
            main(["build", *args, "--calib-count", "64", "--eval-limit", "100", "--run-dir", str(run)]) == 0
        )
    finally:
        os.chdir(cwd)
    return run


def _manifest(run):
    return json.loads((run / "manifest.json").read_text())


def test_builds_fp32_and_int8_in_its_folder(built):
    assert _manifest(built)["artifacts"] == {
        "onnxruntime.fp32": "onnxruntime/model.sim.onnx",
        "onnxruntime.int8": "onnxruntime/model_int8.onnx",
    }
    assert "onnxruntime" in TARGETS and TARGETS["onnxruntime"].quantizer is not None


def test_int8_is_uint8_activations_int8_weights_with_the_head_in_float(built):
    model = onnx.load(str(built / "onnxruntime" / "model_int8.onnx"))
    structure = check_qdq_structure(model, SCHEME)  # raises where the form is not onnxruntime's
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    points = [init[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    activations = [p for p in points if p.dtype == np.uint8]
    assert activations and any(np.any(p != 0) for p in activations), "asymmetric uint8 activations"
    assert any(p.dtype == np.int8 for p in points), "int8 weights"
    source = onnx.load(str(built / "onnxruntime" / "model.sim.onnx"))
    head = set(onnx_prediction_convs(source))
    assert head and not head & set(structure["quantized_nodes"])
    record = _manifest(built)["stages"]["onnxruntime.int8"]
    assert record["scheme"] == {
        "name": "onnxruntime",
        "activation_type": "QUInt8",
        "activation_symmetric": False,
    }
    assert record["calibration_images"] == 64 and record["collapse"]


def test_int8_keeps_accuracy_and_is_evaluated_like_the_others(built):
    """Within 2 mAP points of the fused model (a wrong scale or zero point costs tens), yet not FP32."""
    results = json.loads((built / "eval.json").read_text())["results"]
    drop = 100 * (results["torch.fp32"]["map"] - results["onnxruntime.int8"]["map"])
    assert results["onnxruntime.fp32"]["map"] == pytest.approx(results["torch.fp32"]["map"], abs=1e-3)
    assert drop < 2.0, drop
    record = _manifest(built)["stages"]["onnxruntime.int8"]
    assert (
        record["check"]["max_abs_err"]
        > 1e3 * _manifest(built)["stages"]["onnxruntime.simplify"]["check"]["max_abs_err"]
    ), "quantized: its error is INT8's, not FP32's"


def test_bench_times_both_artifacts(built, run_cli):
    code, out, err = run_cli("bench", "--artifacts", str(built), "--min-seconds", "0.2")
    assert code == 0, err
    results = json.loads((built / "bench.json").read_text())["results"]
    assert {"onnxruntime.fp32", "onnxruntime.int8"} <= set(results)
    assert all(results[k]["p50_ms"] > 0 for k in ("onnxruntime.fp32", "onnxruntime.int8"))


def test_int8_search_runs_on_its_quantizer_and_times_its_trials(built, run_cli):
    """bench-int8 offers the target; its trials run on this CPU, so the search times them."""
    code, out, err = run_cli(
        "bench-int8", "--target", "onnxruntime", "--int8-accuracy-budget", "2", "--run-dir", str(built),
        "--calib-count", "64", "--eval-limit", "100",
    )  # fmt: skip
    assert code == 0, err
    record = _manifest(built)["stages"]["onnxruntime.int8_search"]
    assert record["backend"] == "onnxruntime" and record["float_layers"] == []
    assert set(record["latency_ms"]) == {"fp32", "int8_full", "int8_partial"}


def test_trials_scored_at_once_score_as_the_search_scores_them_here(built, tmp_path, request):
    """The INT8 search's trials of one round in processes of their own (--trial-workers), or as Ray tasks
    (a matrix on Ray): each trial's mAP is the one this process finds for the same float layers."""
    from exporter.pipeline.builder import Pipeline
    from exporter.pipeline.evaluate import run_recipe
    from exporter.pipeline.recipe import recipe_from_dict
    from exporter.pipeline.stages.scoring import Scorer
    from exporter.pipeline.targets.trials import scored_at_once

    recipe = run_recipe(built)
    recipe = recipe_from_dict(
        recipe.model_dump(mode="json"), recipe.name, {"evaluation.data": "demo", "evaluation.limit": 16}
    )
    plan = Pipeline(recipe, tmp_path / "run").plan
    target, model = TARGETS["onnxruntime"], built / "onnxruntime" / "model.sim.onnx"
    method, ranges = target.search_method(recipe), plan.ranges(model)
    quantizer = target.quantizer(model, plan.calibration_set, method, ranges)
    convs = [names[0] for names in quantizer.graph_index.values() if names[0] not in quantizer.always_float]
    trials = [[], convs[:3]]
    here = [Scorer(plan.evaluation)(quantizer.runner(nodes).infer, 1)["map"] for nodes in trials]
    arguments = (target.quantizer, model, plan.calibration_set, method, ranges, plan.evaluation, 2)
    with scored_at_once(*arguments) as scores:
        assert scores(trials) == here and here[0] > 0.3, "the trained demo: the comparison means something"
        assert scores(trials[::-1]) == here[::-1], "a worker's kept quantizer scores its next trial alike"
    request.getfixturevalue("ray_cluster")
    with scored_at_once(*arguments, on_ray=True) as scores:
        assert scores(trials) == here
