"""AKConv: official semantics, the three exact lowerings in onnxruntime, each target's lowering choice."""

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from exporter.base.errors import UserError
from exporter.blocks.akconv import AKConv
from exporter.blocks.lowering.akconv import coordinates, initial_grid, sample_gather, sample_gridsample
from exporter.blocks.lowering.ort_ops import akconv_sample_reference
from exporter.measure.studies.akconv import export
from exporter.models.loader import load_checkpoint
from exporter.pipeline.targets.table import TARGETS
from tests.conftest import EMBEDDED

NS = (2, 3, 5, 6, 9, 11, 13)
SHAPES = ((7, 11), (1, 9), (8, 1))


def grid_points(n):
    g = initial_grid(n).view(2, n)
    return list(zip(g[0].int().tolist(), g[1].int().tolist(), strict=True))


def test_initial_grid_layout():
    assert grid_points(1) == [(0, 0)]
    assert grid_points(2) == [(0, 0), (1, 0)]  # base round(√2)=1: one column
    assert grid_points(3) == [(0, 0), (0, 1), (1, 0)]
    assert grid_points(5) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    assert grid_points(9) == [(r, c) for r in range(3) for c in range(3)]
    assert grid_points(11) == [(r, c) for r in range(3) for c in range(3)] + [(3, 0), (3, 1)]


def test_border_counts_twice_and_interior_is_bilinear():
    x = torch.arange(12, dtype=torch.float32).view(1, 1, 3, 4)  # x[r, c] = 4r + c
    cases = {  # (row, col) unclamped -> expected sample
        (0.5, 1.25): 4 * 0.5 + 1.25,
        (-0.7, 1.25): 2 * 1.25,  # above the map: 2x the border row
        (5.0, 1.0): 2 * (8 + 1),  # below
        (1.0, -3.0): 2 * 4,  # left
        (1.5, 3.0): 2 * (6 + 3),  # exactly the last column counts twice too
        (-1.0, 9.0): 4 * 3,  # a corner: 2x2
    }
    for (r, c), expected in cases.items():
        p = torch.tensor([r, c]).view(1, 2, 1, 1)
        for sampler in (sample_gather, sample_gridsample):
            assert sampler(x, p).item() == pytest.approx(expected, abs=1e-5), (sampler.__name__, r, c)
        assert akconv_sample_reference(
            x.numpy(), (p - initial_grid(1)).numpy(), 1, 1
        ).item() == pytest.approx(expected, abs=1e-5)


def layer_pushing_outside(n, stride, height, width, seed):
    """An AKConv whose offsets send samples past every side of an height x width map."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layer = AKConv(3, 4, n, stride).eval()
    reach = max(height, width) + 3
    with torch.no_grad():
        layer.p_conv.weight.copy_(torch.randn(layer.p_conv.weight.shape, generator=generator) * reach / 5)
        layer.p_conv.bias.copy_(torch.randn(2 * n, generator=generator))
        bn = layer.conv[1]
        bn.running_mean.copy_(torch.randn(4, generator=generator) * 0.1)
        bn.running_var.copy_(torch.rand(4, generator=generator) + 0.5)
    x = torch.randn(2, 3, height, width, generator=generator)
    with torch.no_grad():
        p = coordinates(layer.p_conv(x), layer.p_n, stride)
    rows, cols = p[:, :n], p[:, n:]
    sides = [(rows < 0).any(), (rows >= height - 1).any(), (cols < 0).any(), (cols >= width - 1).any()]
    assert all(sides), "the test must push samples outside on every side"
    if height > 2 and width > 2:
        inside = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
        assert inside.any(), "and keep some samples inside"
    return layer, x


@pytest.mark.parametrize("lowering", ["gather", "gridsample", "plugin"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("n", NS)
def test_onnx_lowering_equals_torch_module(tmp_path, n, stride, lowering):
    from exporter.pipeline.stages import ort_runner as ort_backend

    for i, (height, width) in enumerate(SHAPES):
        layer, x = layer_pushing_outside(n, stride, height, width, seed=100 * n + 10 * stride + i)
        with torch.no_grad():
            expected = layer(x).numpy()
        path = tmp_path / f"{lowering}_{height}x{width}.onnx"
        export(layer, lowering, x, path)
        got = ort_backend.load(path).infer(x.numpy())[0]
        assert np.abs(got - expected).max() <= 1e-5, (height, width)


@pytest.mark.parametrize("n", NS)
def test_torch_samplers_agree(n):
    for stride in (1, 2):
        for i, (height, width) in enumerate(SHAPES):
            layer, x = layer_pushing_outside(n, stride, height, width, seed=7 * n + i)
            with torch.no_grad():
                offset = layer.p_conv(x)
                p = coordinates(offset, layer.p_n, stride)
                gather = sample_gather(x, p)
                assert (sample_gridsample(x, p) - gather).abs().max() <= 1e-5
                ref = akconv_sample_reference(x.numpy(), offset.numpy(), n, stride)
                assert np.abs(ref - gather.numpy()).max() <= 1e-5


def test_plugin_node_is_a_tensorrt_plugin_not_a_builtin(tmp_path):
    layer, x = layer_pushing_outside(5, 1, 6, 6, seed=0)
    export(layer, "plugin", x, tmp_path / "p.onnx")
    model = onnx.load(tmp_path / "p.onnx")
    (node,) = [n for n in model.graph.node if n.op_type == "AKConvSample"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert node.domain == "reparam_export"
    assert attrs == {"num_param": 5, "stride": 1, "plugin_version": b"1", "plugin_namespace": b""}
    assert not onnx.defs.has("AKConvSample"), "never named like a built-in op"
    onnx.checker.check_model(model, full_check=True)


def test_gridsample_graph_uses_native_op(tmp_path):
    layer, x = layer_pushing_outside(5, 1, 6, 6, seed=0)
    export(layer, "gridsample", x, tmp_path / "g.onnx", opset=17)
    ops = {n.op_type for n in onnx.load(tmp_path / "g.onnx").graph.node}
    assert "GridSample" in ops and "GatherElements" not in ops


def test_openvino_runs_native_lowerings_exactly(tmp_path):
    ov = pytest.importorskip("openvino")
    layer, x = layer_pushing_outside(5, 2, 7, 11, seed=3)
    expected = layer(x).detach().numpy()
    for lowering in ("gather", "gridsample"):
        export(layer, lowering, x, tmp_path / f"{lowering}.onnx")
        compiled = ov.Core().compile_model(
            str(tmp_path / f"{lowering}.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        )
        assert np.abs(compiled({0: x.numpy()})[0] - expected).max() <= 1e-5, lowering


def test_checkpoints_with_and_without_p_n_load_strict(tmp_path):
    source = AKConv(4, 6, 5)
    with_buffer = source.state_dict()
    without = {k: v for k, v in with_buffer.items() if k != "p_n"}
    assert "p_n" in with_buffer and set(with_buffer) - set(without) == {"p_n"}
    for state in (with_buffer, without):
        AKConv(4, 6, 5).load_state_dict(state, strict=True)
    # and through the checkpoint loader (--checkpoint), which checks keys before loading
    path = tmp_path / "first_release.pth"
    torch.save({f"block.{k}": v for k, v in without.items()}, path)
    model = nn.Sequential()
    model.add_module("block", AKConv(4, 6, 5))
    load_checkpoint(model, path)
    assert torch.equal(model.block.p_n, source.p_n)
    assert torch.equal(model.block.p_conv.weight, source.p_conv.weight)
    keys = {k for k in with_buffer if not k.endswith("num_batches_tracked")}
    assert keys == {
        "p_n",
        "p_conv.weight",
        "p_conv.bias",
        "conv.0.weight",
        "conv.1.weight",
        "conv.1.bias",
        "conv.1.running_mean",
        "conv.1.running_var",
    }


def lowering_recipe(requested: str, opset: int = 17, trt: str = "10.x"):
    from exporter.pipeline.recipe import load_recipe

    overrides = {"export.akconv_lowering": requested, "export.opset": opset, "tensorrt.version": trt}
    return load_recipe(EMBEDDED, overrides)


@pytest.mark.parametrize(
    "target, opset, trt, expected",
    [
        ("onnx", 17, "10.x", "gather"),
        ("onnx", 13, "10.x", "gather"),
        ("openvino", 17, "10.x", "gridsample"),
        ("openvino", 15, "10.x", "gather"),
        ("tensorrt", 17, "10.3", "gridsample"),
        ("tensorrt", 17, "8.5", "gridsample"),
        ("tensorrt", 17, "8.4", "gather"),
        ("tensorrt", 17, "8.2.1", "gather"),  # the plugin is IPluginV3: TensorRT >= 10 only
        ("tensorrt", 13, "8.6", "gather"),
    ],
)
def test_each_target_picks_its_auto_lowering(target, opset, trt, expected):
    choice = TARGETS[target].akconv(lowering_recipe("auto", opset, trt))
    assert choice.lowering == expected and choice.reason


def test_explicit_requests_validated():
    assert TARGETS["tensorrt"].akconv(lowering_recipe("plugin")).lowering == "plugin"
    with pytest.raises(UserError, match="needs opset >= 16"):
        TARGETS["onnx"].akconv(lowering_recipe("gridsample", 15))
    with pytest.raises(UserError, match="openvino cannot run the AKConvSample plugin"):
        TARGETS["openvino"].akconv(lowering_recipe("plugin"))
    with pytest.raises(UserError, match="'ten' is not a TensorRT version"):
        TARGETS["tensorrt"].akconv(lowering_recipe("auto", trt="ten"))


@pytest.mark.parametrize("lowering", ["auto", "gather", "gridsample", "plugin"])
def test_pipeline_records_choice_and_proves_parity(tmp_path, lowering):
    from exporter.pipeline.builder import Pipeline
    from exporter.pipeline.recipe import load_recipe

    recipe = load_recipe(EMBEDDED, {"input_size": [64, 96], "export.akconv_lowering": lowering})
    Pipeline(recipe, tmp_path).build()
    export_record = json.loads((tmp_path / "manifest.json").read_text())["stages"]["export"]
    akconv = export_record["akconv"]
    assert akconv["layers"] == 1
    assert akconv["lowering"] == ("gather" if lowering == "auto" else lowering)
    assert akconv["reason"] and export_record["check"]["ok"]
    ops = {n.op_type for n in onnx.load(tmp_path / "model.sim.onnx").graph.node}
    assert ("AKConvSample" in ops) == (lowering == "plugin")
    assert ("GridSample" in ops) == (lowering == "gridsample")


def test_bench_command_reports_ratios_and_auto_verdict(run_cli):
    code, out, _ = run_cli("bench-akconv", "--channels", "8", "--size", "12", "--min-seconds", "0.02")
    assert code == 0
    assert "1.00x" in out and "gridsample" in out and "plugin" in out
    assert "auto on onnxruntime: gather" in out


def akconv_user_recipe(tmp_path, variant: str):
    recipe = tmp_path / f"{variant}.yaml"
    recipe.write_text(
        "name: akconv-user\n"
        "model: {builder: 'tests.fixture_models:build_akconv_user', kwargs: {variant: " + variant + "}}\n"
        "input_size: [32, 32]\ntargets: [onnx]\nprecisions: [fp32]\n"
    )
    return recipe


def test_a_users_copy_of_the_official_akconv_is_computed_by_ours_and_lowered(run_cli, tmp_path):
    """The official code's layout under the user's class name: the fuser proves ours equal to it in float64
    (exactly equal here) and the export lowers it as asked, to GridSample, within the FP32 check."""
    from tests.fixture_models import PostAKConv

    run = tmp_path / "run"
    recipe = akconv_user_recipe(tmp_path, "post")
    code, _, err = run_cli(
        "build", "--recipe", str(recipe), "--akconv-lowering", "gridsample", "--run-dir", str(run)
    )
    assert code == 0, err
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    adopted = next(s for s in stages["fuse"]["check"]["steps"] if s["action"] == "akconv")
    assert adopted["kind"] == f"{PostAKConv.__name__} as AKConv" and adopted["status"] == "fused"
    assert adopted["parity"]["max_abs_err"] <= 1e-12 * adopted["parity"]["max_abs_ref"]
    assert (
        stages["export"]["akconv"]["layers"] == 1 and stages["export"]["akconv"]["lowering"] == "gridsample"
    )
    assert stages["export"]["check"]["ok"] and "NOT LOWERED" not in err
    ops = {node.op_type for node in onnx.load(run / stages["export"]["output"]["path"]).graph.node}
    assert "GridSample" in ops and "GatherElements" not in ops


@pytest.mark.parametrize(
    ("variant", "why"),
    [
        ("centred", "looks like AKConv, NOT LOWERED: computed as AKConv, max abs err"),
        ("ldconv", "looks like AKConv, NOT LOWERED: it has no integer num_param"),
    ],
)
def test_a_block_like_akconv_that_ours_does_not_compute_is_named_not_lowered(run_cli, tmp_path, variant, why):
    """A variant whose sampling differs (refuted by the proof) or that lacks what the lowering needs is
    exported as traced, and the build output, the manifest and the report say so, with why."""
    run = tmp_path / "run"
    code, _, err = run_cli(
        "build", "--recipe", str(akconv_user_recipe(tmp_path, variant)), "--run-dir", str(run)
    )
    assert code == 0, err
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["export"]["akconv"] == {
        "layers": 0,
        "not_lowered": [stages["export"]["akconv"]["not_lowered"][0]],
    } and stages["export"]["akconv"]["not_lowered"][0].startswith("1 (")
    assert stages["export"]["check"]["ok"], "exported as traced: still the same numbers"
    assert [line for line in stages["fuse"]["check"]["not_fused"] if why in line], "the fuse record names it"
    assert "AKConv NOT LOWERED: 1 (" in err and why in err
    code, _, err = run_cli("report", "--artifacts", str(run))
    assert code == 0, err
    assert "AKConv NOT LOWERED (exported as traced): 1 (" in (run / "report" / "report.md").read_text()
