"""The fuser: turn any nn.Module into its plain inference form and prove it unchanged.

Pass 1 fuses re-parameterizable blocks: ours by type, foreign ones by protocol (the first of
PROTOCOL_METHODS a module defines, callable without arguments). Pass 2 folds every remaining
Conv+BN: adjacent pairs in an nn.Sequential, and modules holding `conv` and `bn` children (a
heuristic, kept only when the module's output is unchanged).

Every rewritten module is checked on the input it received during a reference forward pass, so a
mismatch names the first offending module in execution order; the whole model is checked last.
"""

from __future__ import annotations

import copy
import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from exporter.blocks import OUR_BLOCKS
from exporter.blocks.convbn import CONV_TYPES, fold_conv_bn, require_running_stats
from exporter.numerics.complexity import count_params
from exporter.numerics.parity import Parity, compare

PROTOCOL_METHODS = ("switch_to_deploy", "reparameterize", "fuse_convs", "merge_kernel", "fuse")


@dataclass
class Step:
    """One rewrite of the module at `path` ('' is the root)."""

    path: str
    kind: str
    apply: Callable[[nn.Module], nn.Module]
    strict: bool = True  # False: a heuristic, reverted when its check fails


@dataclass
class StepResult:
    path: str
    kind: str
    status: str  # fused | mismatch | reverted
    parity: Parity | None  # None when the forward pass never ran this module

    def as_dict(self) -> dict[str, Any]:
        return {
            "module": self.path or "<root>",
            "kind": self.kind,
            "status": self.status,
            "parity": self.parity.as_dict() if self.parity else None,
        }


@dataclass
class FuseReport:
    steps: list[StepResult] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    model_parity: Parity | None = None

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(s.kind for s in self.steps if s.status == "fused"))

    @property
    def offender(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == "mismatch"), None)

    @property
    def ok(self) -> bool:
        return self.offender is None and self.model_parity is not None and self.model_parity.ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "model_parity": self.model_parity.as_dict() if self.model_parity else None,
            "steps": [s.as_dict() for s in self.steps],
        }


def get_module(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root


def set_module(root: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put `module` at `path`; returns the (possibly new) root."""
    if not path:
        return module
    parent_path, _, name = path.rpartition(".")
    setattr(get_module(root, parent_path), name, module)
    return root


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def protocol_method(module: nn.Module) -> str | None:
    """Name of the first deploy protocol method the module defines, callable with no arguments."""
    for name in PROTOCOL_METHODS:
        method = getattr(module, name, None)
        if not inspect.ismethod(method):
            continue
        params = inspect.signature(method).parameters.values()
        if all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            return name
    return None


def _call_protocol(name: str) -> Callable[[nn.Module], nn.Module]:
    def apply(module: nn.Module) -> nn.Module:
        result = getattr(module, name)()
        return result if isinstance(result, nn.Module) else module

    return apply


def plan_blocks(root: nn.Module) -> list[Step]:
    """Pass 1: our blocks by type, foreign blocks by protocol; no descent into a fused block."""
    steps: list[Step] = []

    def visit(module: nn.Module, path: str) -> None:
        if isinstance(module, OUR_BLOCKS):
            steps.append(Step(path, type(module).__name__, lambda m: m.fuse()))
            return
        method = protocol_method(module)
        if method is not None:
            steps.append(Step(path, f"{type(module).__name__}.{method}()", _call_protocol(method)))
            return
        for name, child in module.named_children():
            visit(child, _join(path, name))

    visit(root, "")
    return steps


def _is_conv_bn(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, CONV_TYPES) and isinstance(bn, _BatchNorm) and conv.out_channels == bn.num_features
    )


def _fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    children = list(seq.children())
    for i in range(len(children) - 1):
        if _is_conv_bn(children[i], children[i + 1]):
            seq[i] = fold_conv_bn(children[i], children[i + 1])
            seq[i + 1] = nn.Identity()
    return seq


def _fold_attributes(module: nn.Module) -> nn.Module:
    module.conv = fold_conv_bn(module.conv, module.bn)
    module.bn = nn.Identity()
    return module


def plan_conv_bn(root: nn.Module) -> list[Step]:
    """Pass 2: Conv+BN pairs left after pass 1."""
    steps: list[Step] = []

    def visit(module: nn.Module, path: str) -> None:
        skip: set[str] = set()
        if isinstance(module, nn.Sequential):
            children = list(module.children())
            if any(_is_conv_bn(a, b) for a, b in zip(children, children[1:], strict=False)):
                steps.append(Step(path, "Conv+BN", _fold_sequential))
        elif _is_conv_bn(getattr(module, "conv", None), getattr(module, "bn", None)):
            kind = f"{type(module).__name__} conv/bn"
            steps.append(Step(path, kind, _fold_attributes, strict=False))
            skip = {"conv", "bn"}
        for name, child in module.named_children():
            if name not in skip:
                visit(child, _join(path, name))

    visit(root, "")
    return steps


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value) if not hasattr(value, "_fields") else value
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def record_io(root: nn.Module, paths: list[str], probe: torch.Tensor) -> dict[str, tuple]:
    """Run the model once; return, per module path, its first (args, kwargs, output), in call order."""
    records: dict[str, tuple] = {}
    handles = []
    for path in paths:

        def hook(module, args, kwargs, output, path=path):
            if path not in records:
                records[path] = (_clone(args), _clone(kwargs), _clone(output))

        handles.append(get_module(root, path).register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            root(probe)
    finally:
        for handle in handles:
            handle.remove()
    return records


def _check_running_stats(module: nn.Module, path: str) -> None:
    for name, sub in module.named_modules():
        if isinstance(sub, _BatchNorm):
            require_running_stats(sub, _join(path, name))


def _run_steps(
    root: nn.Module, steps: list[Step], probe: torch.Tensor, rtol: float, report: FuseReport
) -> nn.Module:
    records = record_io(root, [s.path for s in steps], probe)
    order = {path: i for i, path in enumerate(records)}
    for step in sorted(steps, key=lambda s: order.get(s.path, len(order))):
        original = get_module(root, step.path)
        _check_running_stats(original, step.path)
        backup = None if step.strict else copy.deepcopy(original)
        with torch.no_grad():
            fused = step.apply(original).eval()
        root = set_module(root, step.path, fused)
        parity, status = None, "fused"
        if step.path in records:
            args, kwargs, expected = records[step.path]
            with torch.no_grad():
                parity = compare(expected, fused(*args, **kwargs), rtol)
            if not parity.ok:
                status = "mismatch" if step.strict else "reverted"
        elif not step.strict:
            status = "reverted"  # a guessed rewrite the probe never runs cannot be proved: keep the original
        if status == "reverted":
            root = set_module(root, step.path, backup)
        report.steps.append(StepResult(step.path, step.kind, status, parity))
    return root


def fuse_model(model: nn.Module, probe: torch.Tensor, rtol: float = 1e-4) -> tuple[nn.Module, FuseReport]:
    """Return a fused copy of `model` and the report proving (or refuting) its equality.

    Tolerance: max|y_fused − y| ≤ rtol·max(1, max|y|), per rewritten module and for the model.
    """
    model = model.eval()
    report = FuseReport(params_before=count_params(model))
    with torch.no_grad():
        reference = model(probe)
    fused = copy.deepcopy(model)
    fused = _run_steps(fused, plan_blocks(fused), probe, rtol, report)
    fused = _run_steps(fused, plan_conv_bn(fused), probe, rtol, report)
    fused.eval()
    with torch.no_grad():
        report.model_parity = compare(reference, fused(probe), rtol)
    report.params_after = count_params(fused)
    return fused, report
