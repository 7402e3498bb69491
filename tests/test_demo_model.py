"""The shipped demo detector: loads safely, reaches its recorded mAP, fuses without losing it."""

import json

import pytest
import torch

from exporter.base.data.shapes import write_split
from exporter.blocks import RefConv, RepConv
from exporter.blocks.akconv import AKConv
from exporter.blocks.fuse import fuse_model
from exporter.models.demo import WEIGHTS, DemoDetector, GFLHead, build_demo_detector
from exporter.models.demo_train import SUBSET, demo_map

RECORD = json.loads(WEIGHTS.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def val_subset(tmp_path_factory):
    """The first SUBSET images of the val split (each image has its own seed, so they are identical)."""
    root = tmp_path_factory.mktemp("shapes")
    write_split(root, "val", SUBSET, seed=2)
    return root / "val.json"


def test_checkpoint_is_small_and_loads_without_pickle():
    assert WEIGHTS.stat().st_size <= 10 * 2**20
    blob = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    DemoDetector().load_state_dict(blob["model"], strict=True)


def test_contains_every_block_the_toolchain_handles():
    kinds = {type(m) for m in build_demo_detector().modules()}
    assert {RefConv, RepConv, AKConv, GFLHead} <= kinds


def test_recorded_map_meets_the_target():
    assert RECORD["val"]["map"] >= 0.60 and RECORD["val"]["images"] == 500


@pytest.mark.slow
def test_reaches_recorded_map_and_fusion_keeps_it(val_subset):
    model = build_demo_detector()
    unfused = demo_map(model, val_subset)
    assert unfused["images"] == SUBSET
    assert unfused["map"] == pytest.approx(RECORD[f"val_first_{SUBSET}"]["map"], abs=0.01)
    probe = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(0)) * 255
    fused, report = fuse_model(model, probe)
    assert report.ok
    assert abs(demo_map(fused, val_subset)["map"] - unfused["map"]) < 0.001
