"""Numerical parity between a reference output and a candidate output, tensor by tensor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Parity:
    """max|y − y_ref| of the output closest to (or furthest past) its own tolerance: each output is held
    to its own bound (class scores are not allowed the error of pixel boxes beside them). `output` is
    its index; `ratio` = error / tolerance, the margin a pass or a failure has."""

    max_abs_err: float
    max_abs_ref: float
    tolerance: float
    output: int | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.max_abs_err <= self.tolerance

    @property
    def ratio(self) -> float:
        if self.tolerance > 0:
            return self.max_abs_err / self.tolerance
        return 0.0 if self.max_abs_err == 0 else float("inf")

    def describe(self) -> str:
        verdict = "ok" if self.ok else "MISMATCH"
        where = f", output {self.output}" if self.output is not None else ""
        note = f"; {self.note}" if self.note else ""
        return (
            f"max abs err {self.max_abs_err:.3g} (tolerance {self.tolerance:.3g}{where}; "
            f"err/tol {self.ratio:.2g}{note}) {verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "ok": self.ok}


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


def scales(value: Any) -> list[float]:
    """max|y| of each output tensor (0 for an empty one)."""
    return [float(np.abs(a).max()) if a.size else 0.0 for a in flatten_outputs(value)]


def compare(reference: Any, candidate: Any, rtol: float) -> Parity:
    """Each output held to rtol·max(1, max|y_ref|)."""
    return compare_within(reference, candidate, [rtol * max(1.0, s) for s in scales(reference)])


def compare_within(reference: Any, candidate: Any, tolerances: Sequence[float]) -> Parity:
    """Compare two (possibly nested) outputs tensor by tensor, output i within tolerances[i]; a
    structural difference counts as infinite error. Returns the worst output relative to its bound."""
    refs, cands = flatten_outputs(reference), flatten_outputs(candidate)
    if len(refs) != len(cands) or any(r.shape != c.shape for r, c in zip(refs, cands, strict=False)):
        max_ref = max((float(np.abs(r).max()) for r in refs if r.size), default=0.0)
        return Parity(float("inf"), max_ref, min(tolerances, default=0.0))
    worst = None
    for index, (r, c, tolerance) in enumerate(zip(refs, cands, tolerances, strict=True)):
        if not r.size:
            continue
        err = float(np.abs(r - c).max())
        parity = Parity(err if np.isfinite(err) else float("inf"), float(np.abs(r).max()), tolerance, index)
        if worst is None or parity.ratio >= worst.ratio:
            worst = parity
    return worst or Parity(0.0, 0.0, 0.0)
