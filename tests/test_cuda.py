"""On a CUDA device (skipped without one): a model on CUDA is fused and proved as on the CPU, every block's
deploy form computes on CUDA what the model did, and AKConv's lowerings sample on CUDA as the reference."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from exporter.base.numerics.parity import compare, flatten_outputs
from exporter.blocks.fuse import fuse_model, replay
from exporter.blocks.lowering.akconv import (
    akconv_sample,
    coordinates,
    initial_grid,
    sample_gather,
    sample_gridsample,
)
from exporter.blocks.lowering.ort_ops import akconv_sample_reference
from exporter.models.embedded import build_embedded_detector

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICE = torch.device("cuda")
FP32_RTOL = 1e-4  # FP32 rounding of the model is ~1e-6 of its scale; a wrong fusion misses by > 1e-2
SIZE = 96


@pytest.fixture(autouse=True)
def fp32_without_tf32():
    """CUDA convolutions and matrix products in FP32 proper (TF32 rounds to 10 mantissa bits)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _probes() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(1, 3, SIZE, SIZE, generator=generator), torch.rand(2, 3, 64, 128, generator=generator)]


def _devices(module: torch.nn.Module) -> set[str]:
    tensors = [*module.parameters(), *module.buffers()]
    tensors += [v for m in module.modules() for v in vars(m).values() if isinstance(v, torch.Tensor)]
    return {t.device.type for t in tensors}


def _error(expected, got) -> float:
    pairs = zip(flatten_outputs(expected), flatten_outputs(got), strict=True)
    return max(float(np.abs(a - b).max()) / max(1.0, float(np.abs(a).max())) for a, b in pairs)


def test_fuser_proves_a_cuda_model_as_on_the_cpu():
    model = build_embedded_detector().eval()
    _, on_cpu = fuse_model(model, _probes())
    on_device = model.to(DEVICE)
    fused, report = fuse_model(on_device, [x.to(DEVICE) for x in _probes()])
    assert report.ok, report.as_dict()
    assert [(s.path, s.status) for s in report.steps] == [(s.path, s.status) for s in on_cpu.steps]
    assert report.model_parity.max_abs_err == on_cpu.model_parity.max_abs_err  # the same CPU proof
    assert _devices(fused) == {DEVICE.type} and _devices(on_device) == {DEVICE.type}
    assert len(list(fused.parameters())) < len(list(on_device.parameters()))
    x = _probes()[0].to(DEVICE)
    with torch.no_grad():
        error = _error(on_device(x), fused(x))
    print(f"fused vs model on {DEVICE}, FP32: {error:.3g} of the scale (tolerance {FP32_RTOL})")
    assert error <= FP32_RTOL


def test_deploy_forms_replayed_on_cuda():
    """Each block's fuse() on CUDA tensors (RepConv's identity kernel, RefConv's map, Conv+BN folds)."""
    model = build_embedded_detector().eval()
    fused, report = fuse_model(model, _probes())
    replayed = replay(copy.deepcopy(model).to(DEVICE), report.fused_steps())
    assert _devices(replayed) == {DEVICE.type}
    x = _probes()[0]
    with torch.no_grad():
        error = _error(fused(x), replayed(x.to(DEVICE)))
    print(f"replayed on {DEVICE} vs fused on the CPU: {error:.3g} of the scale (tolerance {FP32_RTOL})")
    assert error <= FP32_RTOL


def test_fused_fp16_on_cuda_is_as_accurate_as_the_model():
    """Half precision, as a TensorRT FP16 engine runs it: fusion must not add rounding error."""
    model = build_embedded_detector().eval()
    fused, _ = fuse_model(model, _probes())
    x = _probes()[0]
    with torch.no_grad():
        reference = copy.deepcopy(model).double()(x.double())
        x16 = x.to(DEVICE).half()
        half = [_error(reference, copy.deepcopy(m).to(DEVICE).half()(x16)) for m in (model, fused)]
    print(f"FP16 error on {DEVICE}: model {half[0]:.3g}, fused {half[1]:.3g} of the scale")
    assert half[1] <= 2 * half[0] + 1e-3


@pytest.mark.parametrize("num_param,stride", [(5, 1), (9, 2), (11, 1)])
def test_akconv_lowerings_on_cuda_match_the_reference(num_param, stride):
    generator = torch.Generator().manual_seed(num_param)
    x = torch.randn(2, 4, 13, 11, generator=generator)
    h, w = -(-13 // stride), -(-11 // stride)
    offset = torch.empty(2, 2 * num_param, h, w).uniform_(-6, 6, generator=generator)  # past every border
    expected = akconv_sample_reference(x.numpy(), offset.numpy(), num_param, stride)
    x, offset = x.to(DEVICE), offset.to(DEVICE)
    p = coordinates(offset, initial_grid(num_param).to(DEVICE), stride)
    with torch.no_grad():
        outputs = {
            "gather": sample_gather(x, p),
            "gridsample": sample_gridsample(x, p),
            "plugin": akconv_sample(x, offset, num_param, stride),
        }
    for name, out in outputs.items():
        assert out.device.type == DEVICE.type
        parity = compare(expected, out, 1e-5)
        assert parity.ok, f"{name}: {parity.describe()}"
