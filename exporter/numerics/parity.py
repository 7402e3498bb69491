"""Numerical parity between a reference output and a candidate output."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Parity:
    """max|y − y_ref| against the tolerance rtol·max(1, max|y_ref|), per output tensor: each output is
    held to its own scale (class scores are not allowed the error of pixel boxes beside them). The
    fields describe the output closest to (or furthest past) its tolerance: `output` is its index."""

    max_abs_err: float
    max_abs_ref: float
    rtol: float
    output: int | None = None

    @property
    def tolerance(self) -> float:
        return self.rtol * max(1.0, self.max_abs_ref)

    @property
    def ok(self) -> bool:
        return self.max_abs_err <= self.tolerance

    def describe(self) -> str:
        verdict = "ok" if self.ok else "MISMATCH"
        where = f", output {self.output}" if self.output is not None else ""
        return f"max abs err {self.max_abs_err:.3g} (tolerance {self.tolerance:.3g}{where}) {verdict}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tolerance": self.tolerance, "ok": self.ok}


def flatten_outputs(value: Any) -> list[np.ndarray]:
    """Tensors (or arrays) of a nested output, in depth-first order, as float64 numpy arrays."""
    if isinstance(value, torch.Tensor):
        return [value.detach().cpu().to(torch.float64).numpy()]
    if isinstance(value, np.ndarray):
        return [value.astype(np.float64)]
    if isinstance(value, dict):
        return [a for key in value for a in flatten_outputs(value[key])]
    if isinstance(value, (list, tuple)):
        return [a for item in value for a in flatten_outputs(item)]
    return []


def compare(reference: Any, candidate: Any, rtol: float) -> Parity:
    """Compare two (possibly nested) outputs tensor by tensor; a structural difference counts as
    infinite error. Returns the worst output relative to its own tolerance."""
    refs, cands = flatten_outputs(reference), flatten_outputs(candidate)
    if len(refs) != len(cands) or any(r.shape != c.shape for r, c in zip(refs, cands, strict=False)):
        max_ref = max((float(np.abs(r).max()) for r in refs if r.size), default=0.0)
        return Parity(float("inf"), max_ref, rtol)
    worst = Parity(0.0, 0.0, rtol)
    for index, (r, c) in enumerate(zip(refs, cands, strict=True)):
        if not r.size:
            continue
        err = float(np.abs(r - c).max())
        parity = Parity(err if np.isfinite(err) else float("inf"), float(np.abs(r).max()), rtol, index)
        if parity.max_abs_err / parity.tolerance >= worst.max_abs_err / worst.tolerance:
            worst = parity
    return worst
