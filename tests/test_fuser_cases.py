"""The fuser on the cases third-party models bring: nested blocks, unreached branches, shape-dependent
paths, the field's method spellings, Ultralytics' blocks outside Ultralytics, half precision, shared
modules and a chaotic model. Never an unproved rewrite kept, never a traceback."""

import copy
import math

import pytest
import torch
from torch import nn

from exporter.blocks import RepConv
from exporter.blocks.fuse import FusionFailed, fuse_model
from tests import fixture_models as fm


def x(size=24, channels=3, seed=0):
    return torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(seed))


def norms(model):
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class LazyOuter(nn.Module):
    """Like timm's GhostBottleneckV3 at stride 1: its deploy method returns at once, its blocks inside
    keep their training form."""

    def __init__(self):
        super().__init__()
        self.inner = fm.SwitchToDeploy(8)
        self.other = fm.Reparameterize(8)

    def switch_to_deploy(self):
        return

    def forward(self, x):
        return self.other(self.inner(x))


def test_blocks_a_deploy_method_leaves_behind_are_fused():
    model = fm.randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), LazyOuter()))
    fused, report = fuse_model(model, x())
    assert report.ok and norms(fused) == 0
    assert {s.path for s in report.steps if s.status == "fused"} >= {"1", "1.inner", "1.other"}


class PartialRoot(nn.Module):
    """A model whose own fuse() handles only part of it (a whole-model method is never called)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = fm.ConvBnAct(3, 8), RepConv(8, 8)

    def fuse(self):
        self.a = nn.Identity()  # drops a layer: not a deploy form of this model
        return self

    def forward(self, x):
        return self.b(self.a(x))


def test_the_models_own_fuse_is_never_called():
    fused, report = fuse_model(fm.randomized(PartialRoot()), x())
    assert report.ok and norms(fused) == 0 and isinstance(fused.a.conv, nn.Conv2d)


class WrongDeploy(fm.ForeignRepVGG):
    def switch_to_deploy(self):
        self._deploy()
        self.reparam.weight.data *= 1.01


class BigInputsOnly(nn.Module):
    """A branch taken only for inputs larger than the probes."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.big = WrongDeploy(8)

    def forward(self, x):
        y = self.stem(x)
        return self.big(y) if x.shape[-1] > 64 else y


def test_a_block_no_probe_reaches_is_proved_on_an_input_made_for_it():
    with pytest.raises(FusionFailed) as refuted:
        fuse_model(fm.randomized(BigInputsOnly()), [x(32), x(24, seed=1)])
    report = refuted.value.report
    assert report.offender.path == "big" and report.offender.proved_on == "a generated 1x8x16x16 input"


class NormOnLargeMaps(nn.Module):
    """`conv` and `bn` children, but the BatchNorm applies only to maps of 48 pixels or more."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) if y.shape[-1] >= 48 else y


def test_a_guess_right_at_one_size_and_wrong_at_another_is_not_kept():
    model = fm.randomized(nn.Sequential(NormOnLargeMaps()))
    fused, report = fuse_model(model, [x(64), x(32, seed=1)])
    (step,) = report.steps
    assert step.status == "reverted" and not step.parity.ok
    assert isinstance(fused[0].bn, nn.BatchNorm2d) and report.ok
    _, one_size = fuse_model(model, [x(64)])
    assert one_size.steps[0].status == "fused", "at one size the guess looks right: two sizes are needed"


class NormOnSmallMaps(NormOnLargeMaps):
    """The BatchNorm applies only to maps under 48 pixels: the guess holds on the small probe alone."""

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) if y.shape[-1] < 48 else y


def test_a_rewrite_the_small_probe_cannot_refute_is_refuted_by_the_whole_model_and_named():
    """Each rewrite is proved on what the smallest probe input gave it; the whole model on every input.
    Where the whole model is refuted, each rewrite is proved again on every input, naming the wrong one."""
    model = fm.randomized(nn.Sequential(NormOnSmallMaps()))
    fused, report = fuse_model(model, [x(64), x(32, seed=1)])
    (step,) = report.steps
    assert step.status == "reverted" and not step.parity.ok and report.ok
    assert isinstance(fused[0].bn, nn.BatchNorm2d)


def test_a_fused_model_that_overflows_its_half_precision_is_refused():
    """A fold past FP16's range makes the fused FP16 model overflow: refused (every export would be held
    to an infinite tolerance), the guess wrong on the large probe refuted there and reverted."""
    overflowing = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))  # folded weights ~1e5 > 65504
    model = fm.randomized(nn.Sequential(NormOnSmallMaps(), nn.Sigmoid(), overflowing))
    with torch.no_grad():  # positive inputs, weights and scales: the fused FP16 outputs are +inf, not NaN
        overflowing[0].weight.fill_(1000.0)
        overflowing[1].weight.fill_(1.0)
        overflowing[1].running_var.fill_(1e-4)
    probes = [x(64), x(32, seed=1)]
    with pytest.raises(FusionFailed, match="in float16 the fused model overflows .* model in float32"):
        fuse_model(model.half(), probes)
    _, report = fuse_model(model.half(), probes, strict=False)
    guess = next(s for s in report.steps if s.path == "0")
    assert guess.status == "reverted" and not guess.parity.ok
    assert report.noise == [math.inf] and report.offender is None and not report.ok


class ListCache(nn.Module):
    """Keeps a grid made on a call in a list, as YOLOv5's Detect keeps its grids."""

    def __init__(self):
        super().__init__()
        self.conv, self.grid = nn.Conv2d(3, 4, 3, padding=1), []

    def forward(self, x):
        if not self.grid or self.grid[0].shape[-1] != x.shape[-1]:
            self.grid = [torch.linspace(0, 1, x.shape[-1]).to(x).expand(x.shape[-2], -1)]
        return self.conv(x) + self.grid[0]


def test_caches_a_module_keeps_in_a_list_come_back_in_the_models_dtype():
    """One probe size: the grids made in float64 by the proof are cast with the model, so its rounding
    is measured in FP32 and the fused model computes in FP32."""
    fused, report = fuse_model(fm.randomized(nn.Sequential(ListCache())), x(32))
    assert fused[0].grid[0].dtype == torch.float32 and fused(x(32)).dtype == torch.float32
    assert report.ok and report.noise[0] > 0


class ArgsConv(nn.Conv2d):
    """A convolution that takes its arguments as *args and **kwargs (no `device` named), as detectron2's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)


def test_a_convolution_subclass_without_a_device_argument_folds_and_keeps_its_class():
    model = fm.randomized(nn.Sequential(ArgsConv(3, 8, 3, padding=1), nn.BatchNorm2d(8)))
    fused, report = fuse_model(model, x())
    assert report.ok and norms(fused) == 0 and type(fused[0]) is ArgsConv


class HalfwayRepConv(RepConv):
    """A user's subclass of our block whose own fuse() changes the block, then fails."""

    def fuse(self):
        self.rbr_1x1[0].weight.data.zero_()
        raise RuntimeError("failed half-way")


def test_a_subclass_fuse_that_fails_half_way_leaves_the_block_as_it_was():
    model = fm.randomized(nn.Sequential(HalfwayRepConv(3, 8)))
    with torch.no_grad():
        expected = model(x())
    fused, report = fuse_model(model, x())
    assert report.steps[0].status == "failed" and "failed half-way" in report.steps[0].note
    with torch.no_grad():
        assert torch.allclose(fused(x()), expected, atol=1e-5), "the block as it was (its pairs folded)"


class Reparametrize(fm.ForeignRepVGG):
    def reparametrize(self):  # mobileone-pytorch's spelling
        self._deploy()


def test_the_fields_spellings_and_a_method_that_needs_arguments():
    model = fm.randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Reparametrize(8), fm.NeedsMode(8)))
    fused, report = fuse_model(model, x())
    assert report.ok and report.counts["Reparametrize.reparametrize()"] == 1
    assert "2: NeedsMode.switch_to_deploy() needs arguments" in report.as_dict()["not_fused"]
    assert fused[2].reparam is None, "left as it is"


def test_ultralytics_blocks_outside_an_ultralytics_model():
    modules = pytest.importorskip(
        "ultralytics.nn.modules", reason="pip install 'reparam-export[ultralytics]'"
    )
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        modules.RepConv(16, 16, 3),
        modules.RepVGGDW(16),
        modules.RepC3(16, 16),
        modules.C2fCIB(16, 16, lk=True),
        modules.RepNCSPELAN4(16, 16, 16, 8),
    )
    model = fm.randomized(model)
    fused, report = fuse_model(model, x(32))
    assert report.ok and report.as_dict()["not_fused"] == []
    assert norms(fused) == 0
    assert report.counts["RepConv.fuse_convs()"] >= 2 and report.counts["RepVGGDW.fuse()"] >= 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_are_proved_in_float64_and_keep_their_dtype(dtype):
    model = fm.randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), RepConv(8, 8)))
    model = model.to(dtype).train()
    fused, report = fuse_model(model, x())
    assert report.ok and report.model_parity.ratio < 1e-3
    assert all(p.dtype == dtype for p in fused.parameters())
    assert model.training and all(p.dtype == dtype for p in model.parameters()), (
        "the caller's model as it was"
    )


def test_a_shared_block_is_fused_once_and_stays_shared():
    shared = RepConv(8, 8, identity=True)
    model = fm.randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), shared, nn.ReLU(), shared))
    fused, report = fuse_model(model, x())
    assert report.ok and fused[1] is fused[3]
    assert [s.path for s in report.steps if s.kind == "RepConv"] == ["1"]
    single = fuse_model(fm.randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), RepConv(8, 8))), x())[0]
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in single.parameters())


def chaotic_repvgg(timm):
    """RepVGG-D2se's 48 blocks and SE at 0.4 of its width (64-128-256-1024 channels, 21M parameters),
    BatchNorm γ ~ U(0.7, 1.7) and σ² ~ U(0.5, 1): each block amplifies, and a change of 1e-7 in the input
    moves the output by about its own size."""
    from timm.models.byobnet import ByoBlockCfg, ByobNet, ByoModelCfg

    depths, widths = (8, 14, 24, 1), (64, 128, 256, 1024)
    stages = [ByoBlockCfg(type="rep", d=d, c=c) for d, c in zip(depths, widths, strict=True)]
    se = {"rd_ratio": 0.0625, "rd_divisor": 1}
    torch.manual_seed(0)
    model = ByobNet(
        ByoModelCfg(blocks=tuple(stages), stem_type="rep", stem_chs=64, attn_layer="se", attn_kwargs=se),
        num_classes=10,
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.7)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
    return model.eval()


def test_a_chaotic_model_is_proved_where_fp32_cannot_tell_and_a_wrong_fusion_still_fails(monkeypatch):
    timm = pytest.importorskip("timm", reason="pip install timm (a test dependency)")
    model = chaotic_repvgg(timm)
    probes = [x(32), x(16, seed=1)]
    with torch.no_grad():
        y = model(probes[0])
        nudged = model(probes[0] + 1e-7)
    assert (y - nudged).abs().max() > 0.5 * y.abs().max(), "chaotic: a 1e-7 nudge moves the output"
    _, report = fuse_model(model, probes)
    assert report.ok and report.model_parity.ratio < 0.1, report.model_parity
    assert report.counts["RepVggBlock.reparameterize()"] == 48

    block = type(model.stages[1][0])
    deploy = block.reparameterize

    def off_by_1e3(self):
        deploy(self)
        self.reparam_conv.weight.data *= 1 + 1e-3

    monkeypatch.setattr(block, "reparameterize", off_by_1e3)
    with pytest.raises(FusionFailed) as refuted:
        fuse_model(model, probes)
    assert refuted.value.report.offender.path == "stem"


class KernelOnly(nn.Module):
    """A RepVGG block as posts write it without a deploy method: 3x3 and 1x1 conv-BN branches and a BN
    identity, summed, then ReLU; it only says its kernel (get_equivalent_kernel_bias)."""

    def __init__(self, channels=8, stride=1):
        super().__init__()
        self.dense = nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride, 1, bias=False), nn.BatchNorm2d(channels)
        )
        self.one = nn.Sequential(
            nn.Conv2d(channels, channels, 1, stride, 0, bias=False), nn.BatchNorm2d(channels)
        )
        self.identity = nn.BatchNorm2d(channels) if stride == 1 else None
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.dense(x) + self.one(x)
        return self.act(y + self.identity(x) if self.identity is not None else y)

    @staticmethod
    def _fold(conv, bn):
        std = (bn.running_var + bn.eps).sqrt()
        return conv.weight * (bn.weight / std).reshape(
            -1, 1, 1, 1
        ), bn.bias - bn.running_mean * bn.weight / std

    def get_equivalent_kernel_bias(self):
        k3, b3 = self._fold(*self.dense)
        k1, b1 = self._fold(*self.one)
        kernel, bias = k3 + nn.functional.pad(k1, [1, 1, 1, 1]), b3 + b1
        if self.identity is not None:
            bn = self.identity
            std = (bn.running_var + bn.eps).sqrt()
            eye = torch.zeros_like(k3)
            eye[range(eye.shape[0]), range(eye.shape[0]), 1, 1] = 1
            kernel = kernel + eye * (bn.weight / std).reshape(-1, 1, 1, 1)
            bias = bias + bn.bias - bn.running_mean * bn.weight / std
        return kernel, bias


class FuseReparam(KernelOnly):
    """The `fuse_reparam()` spelling, fusing properly."""

    def fuse_reparam(self):
        kernel, bias = self.get_equivalent_kernel_bias()
        conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, self.dense[0].stride, 1)
        conv.weight.data, conv.bias.data = kernel, bias
        return nn.Sequential(conv, self.act)


class HalfFused(KernelOnly):
    """A deploy method that folds each branch's BN into its conv but keeps the branches."""

    def fuse_reparam(self):
        for branch in (self.dense, self.one):
            kernel, bias = self._fold(*branch)
            conv = branch[0]
            branch[0] = nn.Conv2d(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding
            )
            branch[0].weight.data, branch[0].bias.data = kernel, bias
            branch[1] = nn.Identity()


@pytest.mark.parametrize("stride", [1, 2])
def test_a_block_that_only_says_its_kernel_becomes_one_convolution(stride):
    model = fm.randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), KernelOnly(8, stride)))
    fused, report = fuse_model(model, x())
    assert report.ok and report.counts == {"KernelOnly.get_equivalent_kernel_bias()": 1}, report.as_dict()
    block = fused[1]
    assert (
        isinstance(block, nn.Sequential) and isinstance(block[0], nn.Conv2d) and isinstance(block[1], nn.ReLU)
    )
    assert block[0].stride == (stride, stride) and norms(fused) == 0


def test_fuse_reparam_is_a_deploy_spelling_and_a_half_fused_block_is_named():
    model = fm.randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), FuseReparam(8)))
    fused, report = fuse_model(model, x())
    assert report.ok and report.counts == {"FuseReparam.fuse_reparam()": 1}
    assert sum(isinstance(m, nn.Conv2d) for m in fused.modules()) == 2
    half = fm.randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), HalfFused(8)))
    _, report = fuse_model(half, x())
    (step,) = [s for s in report.steps if s.kind == "HalfFused.fuse_reparam()"]
    assert step.status == "still branched" and "2 convolutions of its input, as before it" in step.note
    assert "1: still branched" in report.as_dict()["not_fused"]


def test_a_half_fused_block_is_replayed_as_it_was_applied():
    from exporter.blocks.fuse import replay

    model = fm.randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), HalfFused(8)))
    fused, report = fuse_model(model, x())
    rebuilt = replay(copy.deepcopy(model), report.fused_steps())
    rebuilt.load_state_dict(fused.state_dict())
    assert torch.equal(rebuilt(x()), fused(x()))


class LeavesANorm(nn.Module):
    """Two convolutions summed, then a norm: its deploy method merges them into one and keeps the norm,
    which then reads a convolution's output (a pair the first pass could not see)."""

    names = ("a", "norm")  # the convolution it keeps and the norm

    def __init__(self, channels=8):
        super().__init__()
        conv, norm = self.names
        setattr(self, conv, nn.Conv2d(channels, channels, 3, padding=1))
        self.b = nn.Conv2d(channels, channels, 3, padding=1)
        setattr(self, norm, nn.BatchNorm2d(channels))

    def forward(self, x):
        conv, norm = (getattr(self, name) for name in self.names)
        return norm(conv(x) + self.b(x) if self.b is not None else conv(x))

    def switch_to_deploy(self):
        conv = getattr(self, self.names[0])
        conv.weight.data += self.b.weight.data
        conv.bias.data += self.b.bias.data
        self.b = None


class LeavesANamedPair(LeavesANorm):
    """The same, with the convolution and the norm it keeps named `conv` and `bn`: a pair by name."""

    names = ("conv", "bn")


@pytest.mark.parametrize(
    ("block", "passes"),
    [
        (None, [32, 16, 32, 16, 32]),
        (FuseReparam, [32, 16, 32, 16, 32]),
        (LeavesANorm, [32, 16, 16, 16, 32, 16, 32]),
        (LeavesANamedPair, [32, 16, 16, 32, 16, 32]),
    ],
)
def test_the_proof_runs_the_whole_model_five_times_and_more_where_a_block_leaves_a_norm(block, passes):
    """The reference on each probe (the first pass also finds the Conv+BN pairs the forward runs), the
    fused model in float64 on each, its FP32 rounding on the first (on the second only where rtol alone
    fails); where a block's deploy method leaves a norm, one more pass on the small probe finds the pair
    it may now form (not where it is a pair by name) and one more records what that pair receives. The
    copies of the model carry its hook, so every pass is counted."""
    stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    model = fm.randomized(nn.Sequential(stem, *([block(8)] if block else [])))
    sizes = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[-1]))
    fused, report = fuse_model(model, [x(32), x(16, seed=1)])
    assert report.ok and report.counts["Conv+BN"] == 1 and norms(fused) == 0, report.counts
    assert sizes == passes


class MaskedConv(nn.Conv2d):
    """A convolution returning its output with a mask (partial convolutions do): no tensor to pair."""

    def forward(self, x):
        return super().forward(x), torch.ones_like(x[:, :1])


class MaskedStem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm = MaskedConv(3, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x):
        y, mask = self.conv(x)
        return self.norm(y) * mask


def test_a_convolution_that_returns_a_tuple_is_run_and_proved_not_paired():
    model = fm.randomized(nn.Sequential(MaskedStem(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)))
    fused, report = fuse_model(model, [x(32), x(16, seed=1)])
    assert report.ok and report.counts == {"Conv+BN": 1}
    assert isinstance(fused[0].norm, nn.BatchNorm2d), "its norm reads a tuple's part: left as it is"


class _Hooked(nn.Module):
    """Children shared twice, a tensor and a list kept as plain attributes, a hook bound to itself."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.again = self.conv
        self.anchors = [torch.zeros(2)]
        self.calls = 0
        self.register_forward_hook(self.count)

    def count(self, module, args, output):
        self.calls += 1

    def forward(self, x):
        return self.again(x)


class _OwnCopy(nn.Module):
    """A class that copies itself its own way."""

    def __deepcopy__(self, memo):
        copied = _OwnCopy()
        copied.made_by_its_deepcopy = True
        return copied


def test_a_model_is_copied_as_deepcopy_copies_it():
    from exporter.blocks.copies import copy_module

    torch.manual_seed(0)
    model = nn.Sequential(_Hooked(), _OwnCopy(), nn.Identity())
    model[0].cache = torch.ones(3)
    model[0].registry = model[2].registry = {}  # empty now, filled by a forward later
    copied = copy_module(model)
    assert copied[0].registry is copied[2].registry and copied[0].registry is not model[0].registry
    hooked = copied[0]
    assert type(hooked) is _Hooked and hooked.again is hooked.conv  # sharing kept
    assert hooked.conv.weight is not model[0].conv.weight and torch.equal(
        hooked.conv.weight, model[0].conv.weight
    )
    assert hooked.anchors is not model[0].anchors and hooked.cache is not model[0].cache
    assert hooked._forward_hooks is not model[0]._forward_hooks
    hooked(torch.rand(1, 3, 8, 8))
    assert (hooked.calls, model[0].calls) == (1, 0)  # the hook is bound to the copy
    assert copied[1].made_by_its_deepcopy
    hooked.anchors.append(1)
    assert len(model[0].anchors) == 1


class _Endless(nn.Module):
    """A block whose deploy method hands back another block like it inside a Sequential, every time."""

    def __init__(self, conv=None):
        super().__init__()
        self.conv = conv or nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x)

    def switch_to_deploy(self):
        return nn.Sequential(_Endless(self.conv))


def test_a_block_left_after_the_last_round_of_deploy_methods_is_named():
    torch.manual_seed(0)
    fused, report = fuse_model(nn.Sequential(_Endless()).eval(), torch.rand(1, 3, 8, 8))
    assert report.ok
    assert report.as_dict()["not_fused"] == [
        "0.0.0.0: _Endless.switch_to_deploy() not called: each of 3 rounds of deploy methods left a "
        "block to fuse"
    ]


class _DropsItsCache(nn.Module):
    """Keeps what a forward computed in a dict, dropped by its own conversion (`_apply`)."""

    def __init__(self):
        super().__init__()
        self.conv, self.cache = nn.Conv2d(3, 3, 1), {}

    def forward(self, x):
        self.cache.setdefault("scale", torch.ones(1))
        return self.conv(x) * self.cache["scale"]

    def _apply(self, fn, *args, **kwargs):
        self.cache.clear()
        return super()._apply(fn, *args, **kwargs)


def test_the_proof_copy_gives_a_module_its_own_conversion():
    from exporter.blocks.fuse import proof_copy

    model = _DropsItsCache().eval()
    model(torch.rand(1, 3, 4, 4))
    copied = proof_copy(model)
    assert copied.cache == {} and model.cache, "a float32 cache never reaches the float64 proof"
    assert copied.conv.weight.dtype == torch.float64


class _Delegating(nn.Module):
    """A wrapper whose class finds names on an object it is not a parent of."""

    def __init__(self, inner):
        super().__init__()
        self.__dict__["inner"] = inner

    def __getattr__(self, name):
        return getattr(self.__dict__["inner"], name)

    def forward(self, x):
        return self.inner(x)


def test_a_deploy_method_a_class_finds_its_own_way_is_found():
    from exporter.blocks.fuse import protocol_method

    assert protocol_method(_Delegating(FuseReparam(3))) == ("fuse_reparam", None)
    assert protocol_method(nn.Conv2d(3, 3, 1)) == (None, None)
