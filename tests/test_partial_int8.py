"""Partial INT8: the search keeps the fewest most-sensitive layers in float within the mAP budget, the
chosen layers are real graph nodes kept in float by both INT8 paths, and a rerun reuses the search."""

import json

import onnx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from exporter.base.errors import CheckFailed
from exporter.base.numerics import layer_names
from exporter.pipeline.stages import partial_int8
from exporter.pipeline.stages.partial_int8 import search
from exporter.pipeline.targets.openvino.quantizer import OpenVinoQuantizer
from tests.conftest import EMBEDDED, built_once


@pytest.mark.parametrize("width", [1, 3])
@given(st.lists(st.integers(0, 100), min_size=1, max_size=40), st.integers(0, 100))
def test_search_returns_the_fewest_float_layers(width, gains, budget):
    """For any mAP that never drops as layers go float, the result is the smallest k within budget,
    whether the trials of a round are one (doubling, then bisection) or several at once."""
    maps = [0.5 + sum(gains[:k]) / 1e4 for k in range(len(gains) + 1)]
    reference = maps[-1] + 0.001
    budget_points = budget / 100
    passing = [k for k, m in enumerate(maps) if 100 * (reference - m) <= budget_points]
    calls, rounds, asked = [], [], []

    def evaluate(ks):
        assert 1 <= len(ks) <= width, "a round runs up to `width` trials"
        calls.extend(ks)
        rounds.append(ks)
        return [maps[k] for k in ks]

    def candidates():
        asked.append(len(calls))
        return len(gains)

    if not passing:
        with pytest.raises(CheckFailed, match="raise int8.accuracy_budget"):
            search(evaluate, candidates, reference, budget_points, width=width)
        return
    chosen, trials = search(evaluate, candidates, reference, budget_points, width=width)
    assert chosen == passing[0]
    assert len(asked) == (chosen > 0), "the ranking is made once, and only when full INT8 misses"
    assert len(calls) == len(set(calls)), "a trial was evaluated twice"
    assert len(rounds) <= 2 * len(gains).bit_length() + 2
    assert [t.float_layers for t in trials] == sorted(calls)


def test_wider_rounds_take_fewer_rounds():
    """Three trials a round find the same k as one a round in fewer rounds (40 candidates, k = 27)."""
    maps = [0.5 + 0.01 * k for k in range(41)]

    def rounds_of(width):
        rounds = []

        def evaluate(ks):
            rounds.append(ks)
            return [maps[k] for k in ks]

        chosen, _ = search(evaluate, lambda: 40, maps[-1], 100 * (maps[-1] - maps[27]), width=width)
        return chosen, len(rounds)

    (one, many), (three, fewer) = rounds_of(1), rounds_of(3)
    assert one == three == 27 and fewer < many, (many, fewer)


def test_search_without_candidates_fails_with_the_fix():
    with pytest.raises(CheckFailed, match="all 0 searchable layers"):
        search(lambda ks: [0.70] * len(ks), lambda: 0, 0.75, 0.5)


def test_layers_map_to_graph_nodes_by_weights(tmp_path):
    """Every convolution of a fused model is found in its ONNX export and OpenVINO model, even two
    with identical (zero) weights, which pair up in order."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)).eval()
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[3].weight)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17)
    graph = onnx.load(str(path))
    layers = ["0", "2", "3"]
    names = layer_names.graph_names(layers, layer_names.torch_convs(model), layer_names.onnx_convs(graph))
    conv_nodes = [n.name for n in graph.graph.node if n.op_type == "Conv"]
    assert list(names.values()) == conv_nodes
    ov = pytest.importorskip("openvino")
    ov_model = ov.convert_model(str(path))
    ov_names = layer_names.graph_names(
        layers, layer_names.torch_convs(model), layer_names.openvino_convs(ov_model)
    )
    ops = [o.get_friendly_name() for o in ov_model.get_ordered_ops() if o.get_type_name() == "Convolution"]
    assert list(ov_names.values()) == ops


def test_a_layer_missing_from_the_graph_is_an_error(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 1))
    other = nn.Sequential(nn.Conv2d(3, 4, 1))
    with pytest.raises(CheckFailed, match="'0' has no convolution with its weights"):
        layer_names.graph_names(["0"], layer_names.torch_convs(model), layer_names.torch_convs(other))


def test_budget_needs_int8_and_evaluation_data(run_cli, tmp_path):
    code, _, err = run_cli("build", "--recipe", str(EMBEDDED), "--int8-accuracy-budget", "0.5")
    assert code == 2 and "add --precision int8" in err, err
    code, _, err = run_cli(
        "build", "--recipe", str(EMBEDDED), "--target", "openvino", "--precision", "int8",
        "--int8-accuracy-budget", "0.5",
    )  # fmt: skip
    assert code == 2 and "needs evaluation data" in err, err
    assert not (tmp_path / "runs").exists()


SEARCH = ("--precision", "int8", "--calib-count", "64", "--eval-limit", "100")
BUDGET = {"openvino": 0.5, "tensorrt": 0.3}
# OpenVINO's performance preset (symmetric activations) quantizes the demo about 1 point below FP32 on
# these images on the hosts measured, so a 0.5 budget needs a float layer or two; under the mixed preset
# full INT8 is within 0.2 and a tighter budget takes the search many trials through the noise of 100 images
PRESET = {"openvino": ["--ov-int8-preset", "performance"], "tensorrt": []}
BUDGETS: dict[str, float] = {}  # the budget each target was searched with on this host


@pytest.fixture(scope="module")
def searched(shared_root):
    """The demo model's INT8 for OpenVINO and TensorRT Q/DQ with budgets tighter than full INT8 meets
    on these 100 images. INT8 kernels differ by CPU (VNNI or not), so full INT8's drop does too: where it
    meets BUDGET on this host, the search runs again with 80% of that drop as the budget. Built once a
    session; BUDGETS and OPENVINO_MODELS are read back from it."""
    pytest.importorskip("openvino")
    from exporter.cli import main

    base = shared_root / "partial"
    run, seen = base / "run", base / "searched.json"
    with built_once(base) as to_build:
        if to_build:
            args = ["--run-dir", str(run), *SEARCH]
            models: list = []
            budgets: dict[str, float] = {}
            with pytest.MonkeyPatch.context() as patch:  # latency is recorded, not what these tests check
                patch.chdir(base)  # calibration/ records land here, not in the checkout
                patch.setattr(partial_int8, "LATENCY_SECONDS", 0.2)
                runner = OpenVinoQuantizer.runner

                def counted(quantizer, float_nodes):
                    models.append(float_nodes)
                    return runner(quantizer, float_nodes)

                patch.setattr(OpenVinoQuantizer, "runner", counted)
                for target, budget in BUDGET.items():
                    for _ in range(2):
                        if target == "openvino":
                            models.clear()
                        budgeted = ["--int8-accuracy-budget", f"{budget:g}", *PRESET[target]]
                        assert main(["build", "--target", target, *budgeted, *args]) == 0
                        budgets[target] = budget
                        full_int8 = _stages(run)[f"{target}.int8_search"]["trials"][0]["drop_points"]
                        if full_int8 > budget or full_int8 < 0.05:
                            break
                        budget = round(0.8 * full_int8, 2)
            seen.write_text(json.dumps({"budgets": budgets, "openvino_models": models}))
    recorded = json.loads(seen.read_text())
    BUDGETS.update(recorded["budgets"])
    OPENVINO_MODELS[:] = recorded["openvino_models"]
    return run


OPENVINO_MODELS: list = []  # the float nodes of each OpenVINO model the last search built (None: FP32)


def _stages(run):
    return json.loads((run / "manifest.json").read_text())["stages"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "tensorrt"])
def test_search_respects_the_budget_with_the_fewest_layers(searched, backend):
    record = _stages(searched)[f"{backend}.int8_search"]
    trials = {t["float_layers"]: t for t in record["trials"]}
    chosen, budget = len(record["float_layers"]), BUDGETS[backend]
    assert record["drop_points"] <= record["budget_points"] == pytest.approx(budget, abs=1e-3)
    assert trials[chosen]["drop_points"] <= budget
    if trials[0]["drop_points"] < 0.05:
        drop = trials[0]["drop_points"]
        pytest.skip(f"full INT8 is {drop:.2f} points from FP32 on this host: no budget to search below it")
    assert chosen >= 1 and trials[0]["drop_points"] > budget, "full INT8 already met the budget"
    assert trials[chosen - 1]["drop_points"] > budget, "one layer fewer also met the budget"
    assert (
        json.loads((searched / record["output"]["path"]).read_text())["float_layers"]
        == record["float_layers"]
    )


@pytest.mark.slow
def test_openvino_search_times_the_models_it_scored(searched):
    """FP32, full INT8 and the chosen partial INT8 timed side by side, each model built once."""
    record = _stages(searched)["openvino.int8_search"]
    assert set(record["latency_ms"]) == {"fp32", "int8_full", "int8_partial"}
    assert record["speedup_kept"] is not None
    assert len(OPENVINO_MODELS) == 1 + len(record["trials"]), "FP32 and one model per trial, none rebuilt"
    assert sorted(len(nodes) for nodes in OPENVINO_MODELS[1:]) == sorted(
        t["float_layers"] for t in record["trials"]
    )


@pytest.mark.slow
def test_openvino_int8_keeps_the_chosen_layers_in_float(searched):
    import openvino as ov

    stages = _stages(searched)
    nodes = stages["openvino.int8_search"]["float_nodes"]
    assert stages["openvino.int8"]["int8"]["float_layers"] == nodes
    model = ov.Core().read_model(str(searched / "openvino" / "model_int8.xml"))
    convs = {
        op.get_friendly_name(): op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"
    }
    assert set(nodes) <= set(convs), "a chosen layer is not a convolution of the IR"
    quantized = {
        name for name, op in convs.items() if op.input_value(0).get_node().get_type_name() == "FakeQuantize"
    }
    assert not quantized & set(nodes)
    assert quantized, "nothing else was quantized"


@pytest.mark.slow
def test_qdq_model_leaves_the_chosen_layers_without_qdq(searched):
    stages = _stages(searched)
    nodes = stages["tensorrt.int8_search"]["float_nodes"]
    graph = onnx.load(str(searched / "tensorrt" / "model.qdq.onnx"))
    assert set(nodes) <= {n.name for n in graph.graph.node if n.op_type == "Conv"}
    quantized = set(stages["tensorrt.qdq"]["quantized_nodes"])
    assert quantized and not quantized & set(nodes)


@pytest.mark.slow
def test_rerun_reuses_the_search_and_reports_it(searched, run_cli):
    from exporter.measure.report.render import write_report
    from exporter.pipeline.evaluate import evaluate_run

    before = _stages(searched)
    code, out, err = run_cli(
        "bench-int8", "--target", "tensorrt", "--int8-accuracy-budget", f"{BUDGETS['tensorrt']:g}",
        "--run-dir", str(searched),
        "--calib-count", "64", "--eval-limit", "100",
    )  # fmt: skip
    assert code == 0, err
    assert "cached search" in err and "partial INT8" in out
    assert f"within {BUDGETS['tensorrt']:g} points of FP32" in out
    assert _stages(searched)["tensorrt.int8_search"]["wall_s"] == before["tensorrt.int8_search"]["wall_s"]
    results = evaluate_run(searched, progress=False)["results"]
    assert results["tensorrt.qdq (onnxruntime)"]["map"] == pytest.approx(
        before["tensorrt.int8_search"]["partial_int8_map"], abs=1e-9
    )
    markdown = write_report(searched)["markdown"].read_text()
    assert f"## Partial INT8 (openvino, budget {BUDGETS['openvino']:g} mAP points)" in markdown
    assert "## INT8 sensitivity" in markdown and "float (prediction conv)" in markdown


def test_excluded_conv_reads_float_where_a_quantized_sibling_shares_its_input():
    """quantize_static puts one Q → DQ on a tensor read by two Convs; excluding one must hand it the
    float tensor (and drop the pair once nobody reads it)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from exporter.pipeline.stages.qdq import check_qdq_structure, float_inputs_for
    from exporter.pipeline.targets.tensorrt.qdq import SCHEME

    rng = np.random.default_rng(0)

    def init(name, array):
        return numpy_helper.from_array(array, name)

    initializers = [
        init("scale", np.float32(0.1)),
        init("zero", np.int8(0)),
        init("w_scale", np.full(2, 0.01, np.float32)),
        *(init(f"w{i}", rng.normal(size=(2, 2, 1, 1)).astype(np.float32)) for i in "ab"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["xq"], name="q")]
    nodes.append(helper.make_node("DequantizeLinear", ["xq", "scale", "zero"], ["xdq"], name="dq"))
    for i in "ab":
        nodes += [
            helper.make_node(
                "QuantizeLinear", [f"w{i}", "w_scale", "zero"], [f"w{i}q"], name=f"wq{i}", axis=0
            ),
            helper.make_node(
                "DequantizeLinear", [f"w{i}q", "w_scale", "zero"], [f"w{i}dq"], name=f"wdq{i}", axis=0
            ),
            helper.make_node("Conv", ["xdq", f"w{i}dq"], [f"y{i}"], name=f"conv_{i}"),
        ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in "ab"]
    graph = helper.make_graph(nodes, "g", [x], outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert check_qdq_structure(model, SCHEME)["quantized_nodes"] == ["conv_a", "conv_b"]

    # conv_b excluded: it reads the float input and the float weight; conv_a keeps the shared pair
    one = float_inputs_for(onnx.ModelProto.FromString(model.SerializeToString()), {"conv_b"})
    conv_b = next(n for n in one.graph.node if n.name == "conv_b")
    assert list(conv_b.input) == ["x", "wb"]
    assert {"q", "dq"} <= {n.name for n in one.graph.node}
    assert check_qdq_structure(one, SCHEME)["quantized_nodes"] == ["conv_a"]

    both = float_inputs_for(model, {"conv_a", "conv_b"})
    assert not [n for n in both.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
