"""Every block: the deploy form equals the train form (property-based over its geometry)."""

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from exporter.base.numerics.parity import compare
from exporter.blocks import ConvAct, ConvBN, QARepVGG, RefConv, RepConv, YOLOv7RepConv, fold_conv_bn
from tests.fixture_models import randomized

RTOL = 1e-4


@st.composite
def geometry(draw, kernels=(1, 3, 5, 7)):
    groups = draw(st.sampled_from([1, 2, 4]))
    return {
        "in_channels": groups * draw(st.integers(1, 3)),
        "out_channels": groups * draw(st.integers(1, 3)),
        "groups": groups,
        "kernel_size": draw(st.sampled_from(kernels)),
        "stride": draw(st.sampled_from([1, 2])),
        "dilation": draw(st.sampled_from([1, 2])),
        "seed": draw(st.integers(0, 2**16)),
        "size": (draw(st.integers(5, 12)), draw(st.integers(5, 12))),
    }


def assert_fuses(block: nn.Module, g: dict) -> nn.Module:
    block = randomized(block, g["seed"])
    x = torch.randn(2, g["in_channels"], *g["size"], generator=torch.Generator().manual_seed(g["seed"]))
    with torch.no_grad():
        expected = block(x)
        fused = block.fuse().eval()
        parity = compare(expected, fused(x), RTOL)
    assert parity.ok, parity.describe()
    return fused


def single_conv(fused: nn.Module) -> nn.Conv2d:
    assert isinstance(fused, ConvAct)
    assert isinstance(fused.conv, nn.Conv2d) and fused.conv.bias is not None
    return fused.conv


@given(geometry(), st.booleans(), st.booleans())
def test_convbn(g, bias, affine):
    block = ConvBN(
        g["in_channels"],
        g["out_channels"],
        g["kernel_size"],
        g["stride"],
        g["groups"],
        g["dilation"],
        bias=bias,
        act=nn.SiLU(),
        bn_affine=affine,
    )
    conv = single_conv(assert_fuses(block, g))
    assert conv.dilation == (g["dilation"],) * 2


@given(geometry(), st.booleans(), st.booleans())
def test_repconv(g, identity, affine):
    square = dict(g, out_channels=g["in_channels"]) if identity else g
    block = RepConv(
        square["in_channels"],
        square["out_channels"],
        g["kernel_size"],
        g["stride"],
        g["groups"],
        g["dilation"],
        identity=identity,
        act=nn.ReLU(),
        bn_affine=affine,
    )
    has_identity = identity and g["stride"] == 1
    assert (block.rbr_identity is not None) == has_identity
    conv = single_conv(assert_fuses(block, square))
    assert conv.groups == g["groups"] and conv.stride == (g["stride"],) * 2


@given(geometry(kernels=(3,)))
def test_yolov7_repconv(g):
    c = g["in_channels"]
    block = YOLOv7RepConv(c, c, 3, g["stride"], g["groups"])
    assert (block.rbr_identity is not None) == (g["stride"] == 1)
    single_conv(assert_fuses(block, dict(g, out_channels=c)))


@given(geometry(kernels=(3, 5)), st.booleans(), st.booleans())
def test_qarepvgg(g, identity, affine):
    c = g["in_channels"]
    out = c if identity else g["out_channels"]
    block = QARepVGG(
        c,
        out,
        g["kernel_size"],
        g["stride"],
        g["groups"],
        g["dilation"],
        identity=identity,
        act=nn.ReLU(),
        bn_affine=affine,
    )
    single_conv(assert_fuses(block, dict(g, out_channels=out)))


@given(geometry(kernels=(3, 5)), st.sampled_from([1, 3]), st.booleans())
def test_refconv_then_bn(g, map_k, affine):
    ref = RefConv(
        g["in_channels"],
        g["out_channels"],
        g["kernel_size"],
        g["stride"],
        None,
        g["groups"],
        g["dilation"],
        map_k,
    )
    bn = nn.BatchNorm2d(g["out_channels"], affine=affine)
    model = randomized(nn.Sequential(ref, bn), g["seed"])
    x = torch.randn(2, g["in_channels"], *g["size"], generator=torch.Generator().manual_seed(g["seed"]))
    with torch.no_grad():
        expected = model(x)
        plain = ref.fuse()
        assert type(plain) is nn.Conv2d
        folded = fold_conv_bn(plain, bn)
        parity = compare(expected, folded(x), RTOL)
    assert parity.ok, parity.describe()


def test_refconv_kernel_is_base_plus_convmap():
    ref = RefConv(4, 6, 3, groups=2)
    with torch.no_grad():
        ref.convmap.weight.zero_()
        assert torch.equal(ref.kernel(), ref.weight)
        ref.convmap.weight.fill_(0.1)
        assert not torch.equal(ref.kernel(), ref.weight)
    assert "weight" in dict(ref.named_buffers()), "the base kernel is a frozen buffer"
    assert ref.convmap.groups == 6 * 4 // 2 // 2, "convmap mixes the O·I/g kernels in groups of g"
    double = RefConv(4, 6, 3, groups=2).double().eval()
    x = torch.rand(1, 4, 8, 8, dtype=torch.float64)
    fused = double.fuse()
    assert fused.weight.dtype == torch.float64, "the deploy conv keeps the model's dtype"
    with torch.no_grad():
        assert torch.allclose(fused(x), double(x))


def test_embedded_detector_contains_every_block_type():
    from exporter.models.embedded import build_embedded_detector

    kinds = {type(m) for m in build_embedded_detector().modules()}
    assert {ConvBN, RepConv, YOLOv7RepConv, QARepVGG, RefConv} <= kinds
    has_conv_bn_pair = any(
        isinstance(m, nn.Sequential) and isinstance(m[0], RefConv) and isinstance(m[1], nn.BatchNorm2d)
        for m in build_embedded_detector().modules()
    )
    assert has_conv_bn_pair
