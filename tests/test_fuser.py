"""The fuser on whole models: protocols, heuristics, refusals and the traps of public code."""

import numpy as np
import pytest
import torch
from torch import nn

from exporter.base.errors import UserError
from exporter.base.numerics.parity import compare
from exporter.blocks import ConvBN, fold_conv_bn
from exporter.blocks.fuse import FusionFailed, fuse_model
from tests import fixture_models as fm


def probe(channels=3, size=24, seed=0):
    return torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_user_model_all_protocols_fused_and_proved():
    model = fm.build_user_model()
    fused, report = fuse_model(model, probe())
    assert report.ok, report.as_dict()
    counts = report.counts
    for method in ("switch_to_deploy()", "reparameterize()", "fuse_convs()", "merge_kernel()", "fuse()"):
        assert any(kind.endswith(method) for kind in counts), (method, counts)
    assert counts["ConvBN"] == 1 and counts["RepConv"] == 1 and counts["Conv+BN"] == 1
    assert counts["ConvBnAct conv/bn"] == 1
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused[:7].modules())
    assert report.params_after < report.params_before
    assert report.model_parity.max_abs_err <= report.model_parity.tolerance


def test_heuristic_conv_bn_reverted_when_forward_differs():
    _, report = fuse_model(fm.build_user_model(), probe())
    prenorm = next(s for s in report.steps if s.path == "7")
    assert prenorm.status == "reverted" and not prenorm.parity.ok
    assert report.ok
    (entry,) = [e for e in report.as_dict()["not_fused"] if e.startswith("7: ")]
    assert entry.startswith(f"7: reverted ({prenorm.kind} tried: max abs err"), "NOT FUSED names it and why"


def test_original_model_untouched():
    model = fm.build_user_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fuse_model(model, probe())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_grouped_identity_trap_caught_and_ours_correct():
    """YOLOv7's fuse_repvgg_block builds the identity with fill_diagonal_: wrong for groups > 1."""
    trap = fm.randomized(nn.Sequential(fm.YOLOv7HelperRepConv(8, groups=2)))
    with pytest.raises(FusionFailed, match="fusion changed the output of module '0'") as refuted:
        fuse_model(trap, probe(8))
    assert refuted.value.report.offender.path == "0"
    control = fm.randomized(nn.Sequential(fm.YOLOv7HelperRepConv(8, groups=1)))
    assert fuse_model(control, probe(8))[1].ok, "the same helper is right for groups=1"
    from exporter.blocks import YOLOv7RepConv

    ours = fm.randomized(nn.Sequential(YOLOv7RepConv(8, 8, 3, 1, g=2)))
    assert ours[0].rbr_identity is not None
    assert fuse_model(ours, probe(8))[1].ok


def test_blog_sum_of_raw_weights_fails_check_naming_module():
    """A refuted model is never handed back by default: FusionFailed names the module; strict=False
    returns it with its report (ok False) for tools that tabulate failures."""
    with pytest.raises(FusionFailed, match=r"module '1' \(BlogRepConv.switch_to_deploy\(\)\)"):
        fuse_model(fm.build_blog_model(), probe())
    _, report = fuse_model(fm.build_blog_model(), probe(), strict=False)
    assert not report.ok
    assert report.offender.path == "1"
    assert report.offender.kind == "BlogRepConv.switch_to_deploy()"
    assert report.offender.parity.max_abs_err > 0.1


def test_dilation_preserved_by_conv_bn_folding():
    block = fm.randomized(ConvBN(4, 6, 3, dilation=3))
    folded = fold_conv_bn(block.conv, block.bn)
    assert folded.dilation == (3, 3) and folded.padding == (3, 3)
    x = probe(4)
    expected = block.bn(block.conv(x))
    assert compare(expected, folded(x), 1e-4).ok
    dropped = nn.Conv2d(4, 6, 3, padding=3, bias=True)  # a helper that loses dilation
    dropped.load_state_dict(folded.state_dict())
    assert not compare(expected, dropped(x), 1e-4).ok


def test_bn_without_running_stats_refused_with_its_name():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    with pytest.raises(UserError, match=r"cannot fold BatchNorm '1': it has no running statistics"):
        fuse_model(model, probe())


def test_bn_affine_false_folds():
    model = fm.randomized(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False)))
    fused, report = fuse_model(model, probe())
    assert report.ok and isinstance(fused[1], nn.Identity)


def test_module_no_probe_reaches_is_proved_on_an_input_made_for_it():
    class Partial(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = ConvBN(3, 4)
            self.unused = ConvBN(3, 4)

        def forward(self, x):
            return self.used(x)

    _, report = fuse_model(fm.randomized(Partial()), probe())
    unused = next(s for s in report.steps if s.path == "unused")
    assert unused.status == "fused" and unused.parity.ok
    assert unused.proved_on == "a generated 1x3x16x16 input"
    assert report.ok


def test_fusion_tolerance_is_relative_to_output_scale():
    parity = compare(torch.tensor([1000.0]), torch.tensor([1000.05]), 1e-4)
    assert parity.tolerance == pytest.approx(0.1) and parity.ok
    assert not compare(torch.tensor([0.5]), torch.tensor([0.5002]), 1e-4).ok
    assert not compare(torch.tensor([1.0]), torch.tensor([float("nan")]), 1e-4).ok
    assert not compare([torch.ones(2)], [torch.ones(3)], 1e-4).ok


def test_parity_holds_each_output_to_its_own_scale():
    scores, boxes = np.full((1, 10), 0.5), np.full((1, 4), 640.0)
    wrong_scores = compare([scores, boxes], [scores + 0.06, boxes], 1e-4)
    assert not wrong_scores.ok and wrong_scores.output == 0, "boxes must not widen the scores' tolerance"
    assert "tolerance 0.0001, output 0" in wrong_scores.describe()
    close = compare([scores, boxes], [scores + 1e-5, boxes + 0.01], 1e-4)
    assert close.ok and close.output == 1 and close.tolerance == pytest.approx(0.064)
    assert not compare([scores, boxes], [scores], 1e-4).ok, "a missing output is a mismatch"


def test_guessed_fold_on_a_path_the_probe_skips_is_reverted():
    """conv/bn attributes suggest a fold, but this forward puts a ReLU between them; the probe never
    runs the module, so the fold is tried on an input made for it, fails there and is not kept."""

    class Guess(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(torch.relu(self.conv(x)))

    class Root(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Conv2d(3, 4, 1), Guess()

        def forward(self, x, branch: bool = False):
            return self.unused(x) if branch else self.used(x)

    torch.manual_seed(0)
    model = Root().eval()
    model.unused.bn.running_mean.uniform_(-1, 1)
    fused, report = fuse_model(model, torch.rand(1, 3, 8, 8))
    (step,) = [s for s in report.steps if s.path == "unused"]
    assert step.status == "reverted" and not step.parity.ok, "disproved on an input made for it"
    assert step.proved_on == "a generated 1x3x16x16 input"
    assert isinstance(fused.unused.bn, nn.BatchNorm2d)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(fused(x, branch=True), model(x, branch=True))
