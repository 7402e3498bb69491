"""INT8 sensitivity: a layer with injected weight outliers ranks most sensitive; names are real layers."""

import json

import torch

from exporter.base.numerics.int8_sensitivity import fake_quant_per_channel, layer_sensitivity
from exporter.pipeline.recipe import load_recipe
from exporter.pipeline.stages.fuse import FuseSettings, fuse
from tests.conftest import EMBEDDED


def fused_embedded():
    settings = FuseSettings.from_recipe(load_recipe(EMBEDDED, {"input_size": [64, 96]}))
    model, _, probe = fuse(settings)
    return model, [probe.numpy()]


def test_corrupted_layer_ranks_most_sensitive():
    model, batches = fused_embedded()
    clean = layer_sensitivity(model, batches)
    target = clean[len(clean) // 2].layer  # a layer of middling sensitivity
    conv = model.get_submodule(target)
    with torch.no_grad():  # one huge weight per output channel: the rest quantize to zero
        flat = conv.weight.view(conv.weight.shape[0], -1)
        flat[:, 0] = flat.abs().amax(1) * 200
    scores = layer_sensitivity(model, batches)
    assert scores[0].layer == target
    assert scores[0].outlier_share > 0 and scores[0].snr_db < clean[0].snr_db


def test_scores_cover_every_conv_with_real_names():
    model, batches = fused_embedded()
    convs = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    scores = layer_sensitivity(model, batches)
    assert {s.layer for s in scores} == convs
    assert [s.snr_db for s in scores] == sorted(s.snr_db for s in scores)
    assert all(s.channel_range_ratio >= 1 for s in scores)


def test_per_channel_fake_quant_keeps_channel_scales():
    weight = torch.tensor([[[[1.0, 0.5]]], [[[100.0, -50.0]]]])
    assert torch.allclose(fake_quant_per_channel(weight), weight, rtol=1e-2)


def test_sensitivity_command(run_cli, tmp_path):
    from exporter.base.data.shapes import write_split

    calib = write_split(tmp_path / "shapes", "calib", 4, seed=3)
    code, out, err = run_cli(
        "sensitivity",
        "--recipe",
        str(EMBEDDED),
        "--input-size",
        "64",
        "96",
        "--calib-data",
        str(calib),
        "--calib-count",
        "4",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert code == 0, err
    layers = json.loads((tmp_path / "run" / "sensitivity.json").read_text())["layers"]
    model, _ = fused_embedded()
    assert {layer["layer"] for layer in layers} == {
        n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)
    }
    assert layers[0]["layer"] in out
    # 4 calibration images, 32 asked to score by default: said, and recorded in the manifest
    assert "warning: sensitivity scores 4 images, the whole calibration set, not 32" in err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert any("not 32" in warning for warning in manifest["sensitivity_warnings"])
