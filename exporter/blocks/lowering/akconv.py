"""AKConv sampling: coordinates and the three exact lowerings (DESIGN.md §4).

All samplers take the input x (B, C, H, W) and the p_conv offsets (B, 2N, h, w; row offsets first)
and return the samples stacked as the mixing conv expects: (B, C, h·N, w), row i·N + n.

* gather      the reference: floor of the unclamped coordinate, clamped corners, gathered by index;
* gridsample  GridSample(bilinear, border, align_corners) at the clamped coordinate, times the
              factor m = m_row·m_col (2 on an axis whose unclamped coordinate is outside [0, L−1));
* plugin      one custom node `AKConvSample` for a TensorRT plugin (CPU kernel: ort_ops.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOWERINGS = ("gather", "gridsample", "plugin")
PLUGIN_DOMAIN = "reparam_export"
PLUGIN_OP = "AKConvSample"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""


def initial_grid(num_param: int) -> torch.Tensor:
    """Initial sample offsets p_n, shape (1, 2N, 1, 1): rows of round(√N) points, anchored top-left,
    the remainder in one extra row; row coordinates first, then columns."""
    base = round(math.sqrt(num_param))
    rows, extra = divmod(num_param, base)
    points = [(r, c) for r in range(rows) for c in range(base)] + [(rows, c) for c in range(extra)]
    grid = torch.tensor([p[0] for p in points] + [p[1] for p in points], dtype=torch.float32)
    return grid.view(1, 2 * num_param, 1, 1)


def coordinates(offset: torch.Tensor, p_n: torch.Tensor, stride: int) -> torch.Tensor:
    """Unclamped sample coordinates p = p_0 + p_n + offset, (B, 2N, h, w), rows first."""
    n = offset.shape[1] // 2
    h, w = offset.shape[2], offset.shape[3]
    rows = torch.arange(h, dtype=offset.dtype, device=offset.device).view(1, 1, h, 1) * stride
    cols = torch.arange(w, dtype=offset.dtype, device=offset.device).view(1, 1, 1, w) * stride
    base = torch.cat([rows.expand(1, n, h, w), cols.expand(1, n, h, w)], 1)
    return base + p_n.to(offset.dtype) + offset


def _stack_rows(samples: torch.Tensor) -> torch.Tensor:
    """(B, C, N, h, w) -> (B, C, h·N, w) with row i·N + n."""
    b, c, n, h, w = samples.shape
    return samples.permute(0, 1, 3, 2, 4).reshape(b, c, h * n, w)


def sample_gather(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    b, c, height, width = x.shape
    n, h, w = p.shape[1] // 2, p.shape[2], p.shape[3]

    def axis(u: torch.Tensor, length: int):
        floor = u.detach().floor()
        lo, hi = floor.clamp(0, length - 1), (floor + 1).clamp(0, length - 1)
        clamped = u.clamp(0, length - 1)
        return lo, hi, 1 + (lo - clamped), 1 - (hi - clamped)

    r_lo, r_hi, wr_lo, wr_hi = axis(p[:, :n], height)
    c_lo, c_hi, wc_lo, wc_hi = axis(p[:, n:], width)
    flat = x.reshape(b, c, height * width)

    def take(r: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        index = (r.long() * width + q.long()).reshape(b, 1, n * h * w).expand(b, c, n * h * w)
        return flat.gather(2, index).reshape(b, c, n, h, w)

    samples = (
        (wr_lo * wc_lo).unsqueeze(1) * take(r_lo, c_lo)
        + (wr_hi * wc_hi).unsqueeze(1) * take(r_hi, c_hi)
        + (wr_lo * wc_hi).unsqueeze(1) * take(r_lo, c_hi)
        + (wr_hi * wc_lo).unsqueeze(1) * take(r_hi, c_lo)
    )
    return _stack_rows(samples)


def sample_gridsample(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    height, width = x.shape[2], x.shape[3]
    n = p.shape[1] // 2
    rows, cols = p[:, :n], p[:, n:]

    def factor(u: torch.Tensor, length: int) -> torch.Tensor:
        return 1 + ((u < 0) | (u >= length - 1)).to(u.dtype)

    def normalized(u: torch.Tensor, length: int) -> torch.Tensor:
        return u.clamp(0, length - 1) * (2.0 / max(length - 1, 1)) - 1

    grid = torch.stack([normalized(cols, width), normalized(rows, height)], -1)  # (B, N, h, w, 2)
    grid = grid.permute(0, 2, 1, 3, 4).flatten(1, 2)  # (B, h·N, w, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    scale = _stack_rows((factor(rows, height) * factor(cols, width)).unsqueeze(1))
    return sampled * scale


@torch.library.custom_op("reparam_export::akconv_sample", mutates_args=())
def akconv_sample(x: torch.Tensor, offset: torch.Tensor, num_param: int, stride: int) -> torch.Tensor:
    """The plugin lowering: computed like `gather` in torch, exported as one `AKConvSample` node."""
    return sample_gather(x, coordinates(offset, initial_grid(num_param).to(offset), stride))


@akconv_sample.register_fake
def _(x, offset, num_param, stride):
    return x.new_empty(x.shape[0], x.shape[1], offset.shape[2] * num_param, offset.shape[3])


def _plugin_symbolic(g, x, offset, num_param, stride):
    from torch.onnx import symbolic_helper

    return g.op(
        f"{PLUGIN_DOMAIN}::{PLUGIN_OP}",
        x,
        offset,
        num_param_i=symbolic_helper._get_const(num_param, "i", "num_param"),
        stride_i=symbolic_helper._get_const(stride, "i", "stride"),
        plugin_version_s=PLUGIN_VERSION,
        plugin_namespace_s=PLUGIN_NAMESPACE,
    ).setType(x.type().with_sizes(None))


torch.onnx.register_custom_op_symbolic("reparam_export::akconv_sample", _plugin_symbolic, 9)


def sample(lowering: str, x: torch.Tensor, offset: torch.Tensor, p_n: torch.Tensor, stride: int):
    """Samples (B, C, h·N, w) by the named lowering; p_n is the module's initial grid buffer."""
    if lowering == "plugin":
        return akconv_sample(x, offset, int(p_n.numel()) // 2, stride)
    p = coordinates(offset, p_n, stride)
    return sample_gridsample(x, p) if lowering == "gridsample" else sample_gather(x, p)
