"""Simplify stage: onnxsim (which runs the ONNX checker on its result), node counts, then our
numerical check: onnxruntime parity with the fused torch model again.

If onnxsim fails, the unsimplified model is kept as this stage's output and the failure recorded.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages import reference
from exporter.pipeline.stages.graph import Record

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class SimplifySettings:
    noise_factor: float  # the FP32 check's bound (exporter.pipeline.stages.reference)

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> SimplifySettings:
        return cls(recipe.thresholds.fp32_noise_factor)


@contextlib.contextmanager
def native_output(lines: list[str]) -> Iterator[None]:
    """Collect into `lines` what native code prints on stdout/stderr (onnxsim's folding notes)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            lines.extend(line for line in sink.read().decode(errors="replace").splitlines() if line.strip())


def run_onnxsim(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None, list[str]]:
    """(simplified model, None, notes) or (the original model, why onnxsim failed, notes)."""
    import onnxsim

    notes: list[str] = []
    try:
        with native_output(notes):
            simplified, check_ok = onnxsim.simplify(model)
    except Exception as exc:  # noqa: BLE001 - any onnxsim failure falls back to the original
        return model, f"onnxsim raised {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}", notes
    if not check_ok:
        return model, "onnxsim's result failed its ONNX model check", notes
    return simplified, None, notes


@dataclass(frozen=True)
class SimplifyRecord(Record):
    check: dict[str, Any]  # onnxruntime against the fused model
    nodes_before: int
    nodes_after: int
    simplified: bool
    failure: str | None  # why onnxsim's result was not kept
    onnxsim_notes: list[str]

    def describe(self) -> str:
        detail = f"nodes {self.nodes_before} → {self.nodes_after}; {reference.describe_check(self.check)}"
        if self.failure:
            detail += f"; NOT simplified, kept the exported model: {self.failure}"
        return detail


def run(settings: SimplifySettings, onnx_path: Path, fused_pt: Path, out: Path) -> SimplifyRecord:
    import onnx  # here: importing it takes a second a CLI start skips

    model = onnx.load(onnx_path)
    simplified, failure, notes = run_onnxsim(model)
    onnx.checker.check_model(simplified, full_check=True)
    onnx.save(simplified, out)
    parity = reference.onnxruntime_parity("the simplified model", out, fused_pt, settings.noise_factor)
    return SimplifyRecord(
        parity.as_dict(),
        len(model.graph.node),
        len(simplified.graph.node),
        failure is None,
        failure,
        notes[:50],
    )
