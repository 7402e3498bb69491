"""DAMO-YOLO models: official checkpoint layout, strict loading, published size anchors (checked on the
fused models by tests/test_proof.py)."""

import hashlib

import pytest
import torch
from torch import nn

from exporter.base.errors import UserError
from exporter.models.damoyolo import VARIANTS, build_damoyolo
from exporter.models.embedded import randomize_batchnorm
from exporter.models.loader import load_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

# Layout of the official models (tinyvision/damo-yolo at 319572e, built from its configs with
# build_local_model): (number of keys, number of elements, sha256[:16] of the sorted "key:shape" lines).
OFFICIAL_LAYOUT = {
    ("t", False): (586, 8899311, "c9fa013466b81022"),
    ("t", True): (586, 8903346, "c0e98e8c9cddb0cb"),
    ("s", False): (640, 16971256, "215c6a09ed57148b"),
    ("s", True): (640, 16979323, "f0d0ef51289882ef"),
    ("m", False): (844, 29290074, "e15f0d832aa41dff"),
    ("m", True): (844, 29298141, "050d55c08a4128d6"),
    ("l", False): (1114, 43927943, "33360b3fa973ac00"),
    ("l", True): (1114, 43936010, "d8aadf7ce82393eb"),
    ("ns", False): (526, 1432568, "ddcf5e902133f808"),
    ("ns", True): (526, 1432851, "04f2bb1371d34008"),
    ("nm", False): (526, 2745008, "0bd2ce37c011252d"),
    ("nm", True): (526, 2745459, "dc69998304806215"),
    ("nl", False): (544, 5746931, "87257068d7b30a3e"),
    ("nl", True): (544, 5747494, "b0ededcd6b97a9fe"),
}

# A few keys and shapes read off the official models, so that a layout failure is legible.
OFFICIAL_KEYS = {
    "t": {
        "backbone.block_list.0.conv.conv.weight": (24, 12, 3, 3),  # Focus stem
        "backbone.block_list.1.block_list.0.conv2.rbr_1x1.conv.weight": (64, 24, 1, 1),
        "backbone.block_list.5.block_list.1.conv2.bn.running_var": (384,),  # SPP after block 0
    },
    "m": {
        "backbone.csp_stage.1.downsampler.conv.bn1.running_mean": (128,),
        "backbone.csp_stage.3.convstem.6.conv1.conv1.weight": (256, 128, 3, 3),
        "backbone.csp_stage.4.spp.conv1.conv.weight": (256, 512, 1, 1),
        "neck.merge_3.convs.3.conv2.rbr_dense.conv.weight": (256, 256, 3, 3),  # n = round(4.5) = 4
    },
    "ns": {
        "backbone.block_list.0.conv.conv1.weight": (16, 3, 3, 3),
        "backbone.block_list.1.block_list.0.conv.8.running_mean": (24,),  # after the SE slot
        "neck.bu_conv13.pwnorm.weight": (80,),
        "neck.merge_3.convs.1.conv.conv.7.weight": (80,),  # neck block: no SE slot
        "head.integral.project": (8,),
    },
}


def layout(state):
    text = "\n".join(f"{k}:{tuple(t.shape)}" for k, t in sorted(state.items()))
    return len(state), sum(t.numel() for t in state.values()), hashlib.sha256(text.encode()).hexdigest()[:16]


def damo(variant, seed=0, **kwargs):
    """A seeded model with non-trivial BatchNorm statistics, so loading and fusion see real numbers."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_damoyolo(variant, **kwargs)
    with torch.no_grad():
        randomize_batchnorm(model, torch.Generator().manual_seed(seed))
    return model


def images(variant, batch=1, seed=0):
    size = VARIANTS[variant]["input_size"]
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_dict_layout_is_official(variant, legacy):
    state = build_damoyolo(variant, legacy=legacy).state_dict()
    for key, shape in OFFICIAL_KEYS.get(variant, {}).items():
        assert tuple(state[key].shape) == shape, key
    assert layout(state) == OFFICIAL_LAYOUT[(variant, legacy)]


def test_every_batchnorm_has_eps_1e3():
    for variant in VARIANTS:
        norms = [m for m in build_damoyolo(variant).modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(m.eps == 1e-3 for m in norms), variant


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_official_format_checkpoint_round_trips_strict(variant, tmp_path):
    source = damo(variant, seed=1)
    path = tmp_path / "damoyolo.pth"
    torch.save({"model": source.state_dict(), "epoch": 300}, path)
    target = build_damoyolo(variant)
    load_checkpoint(target, path)
    loaded, expected = target.state_dict(), source.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_bare_and_ddp_prefixed_state_dicts_load(tmp_path):
    source = damo("ns", seed=2)
    x = images("ns")
    for name, state in [
        ("bare.pth", source.state_dict()),
        ("ddp.pth", {f"module.{k}": v for k, v in source.state_dict().items()}),
    ]:
        torch.save(state, tmp_path / name)
        target = build_damoyolo("ns")
        load_checkpoint(target, tmp_path / name)
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(source(x), target(x), strict=True))


def test_legacy_checkpoint_needs_legacy_flag(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"model": damo("t", legacy=True).state_dict()}, path)
    with pytest.raises(UserError, match=r"81 class channels, the model 80: set legacy: true") as info:
        load_checkpoint(build_damoyolo("t"), path)
    assert "\n" not in str(info.value)
    model = build_damoyolo("t", legacy=True, head_mode="decoded")
    load_checkpoint(model, path)
    with torch.no_grad():
        scores, boxes = model(images("t"))
    assert scores.shape[-1] == 80 and boxes.shape[-1] == 4


def test_unknown_variant_and_head_mode_are_user_errors():
    with pytest.raises(
        UserError, match=r"unknown DAMO-YOLO variant 'x'; choose one of t, s, m, l, ns, nm, nl"
    ):
        build_damoyolo("x")
    with pytest.raises(UserError, match=r"head_mode must be one of raw, decoded, nms"):
        build_damoyolo("t", head_mode="boxes")
