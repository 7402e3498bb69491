"""INT8 sensitivity: a layer with injected weight outliers ranks most sensitive; names are real layers."""

import json

import pytest
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


class Counted(torch.nn.Conv2d):
    runs = 0

    def forward(self, x):
        Counted.runs += 1
        return super().forward(x)


class Block(torch.nn.Module):
    """A residual block that changes its convolution's output in place, with an in-place activation."""

    def __init__(self, channels):
        super().__init__()
        self.conv = Counted(channels, channels, 3, padding=1)
        self.act = torch.nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.conv(x)
        out += x
        return self.act(out)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = Counted(3, 8, 3, padding=1)
        self.blocks = torch.nn.Sequential(Block(8), Block(8))
        self.shared = Counted(8, 8, 1)  # called twice
        self.heads = torch.nn.ModuleList([Counted(8, 2, 1), Counted(8, 3, 1)])

    def forward(self, x):
        x = self.shared(self.shared(self.blocks(torch.relu(self.stem(x)))))
        return [head(x) for head in self.heads]  # a list: not replayable itself


def test_a_replayed_forward_is_the_whole_forward_and_runs_only_from_its_start():
    from exporter.base.numerics.replay import Replay

    torch.manual_seed(0)
    model, x = Net().eval(), torch.rand(2, 3, 16, 16)
    replay = Replay(model, x)
    convs = [m for m in model.modules() if isinstance(m, Counted)]
    skipped = []
    for conv in convs:
        weight = conv.weight.detach().clone()
        with torch.no_grad():
            conv.weight.mul_(1.01)  # a change from this convolution on
            Counted.runs = 0
            whole = model(x)
            runs, Counted.runs = Counted.runs, 0
            replayed = replay.run(replay.first_call(conv))
            conv.weight.copy_(weight)
        assert all(torch.equal(a, b) for a, b in zip(whole, replayed, strict=True)), conv
        skipped.append(runs - Counted.runs)
    # the convolutions that ran before each one's first call were replayed, not run (the shared one twice)
    assert skipped == [0, 1, 2, 3, 5, 6]
    whole = model(x)
    for start in range(len(replay.calls)):  # from any call: outputs changed in place are run, not replayed
        assert all(torch.equal(a, b) for a, b in zip(whole, replay.run(start), strict=True)), start
    everything = replay.run(len(replay.calls))
    assert all(a is b for a, b in zip(everything, replay.reference, strict=True)), "nothing ran"
    held = Replay(model, x, budget=0)  # no output kept: every call runs, the same outputs
    Counted.runs = 0
    assert all(torch.equal(a, b) for a, b in zip(whole, held.run(len(held.calls)), strict=True))
    assert Counted.runs == 7


def test_a_forward_that_calls_other_modules_than_recorded_is_refused_and_ranked_whole():
    from exporter.base.numerics.replay import Replay, ReplayRefused

    class Wavering(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return (self.a if self.calls % 2 else self.b)(x)

    torch.manual_seed(0)
    model, x = Wavering().eval(), torch.rand(1, 3, 8, 8)
    with pytest.raises(ReplayRefused, match="not the recorded one"):
        Replay(model, x).run(1)
    assert {s.layer for s in layer_sensitivity(model, [x.numpy()])} == {"a", "b"}
