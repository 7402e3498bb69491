"""The fuser: turn any nn.Module into its plain inference form and prove it unchanged.

Pass 1 fuses re-parameterizable blocks: ours by type, foreign ones by protocol (the first of
PROTOCOL_METHODS a module defines, callable without arguments; never the whole model's own method),
then walks into what a deploy method left for blocks it did not fuse. Pass 2 folds every remaining
Conv+BN: adjacent pairs in an nn.Sequential and, as guesses kept only when proved, modules holding
`conv` and `bn` children and wherever a norm reads exactly a convolution's output in a forward pass
(the first reference pass; one more where a block's deploy method left a norm not paired there).

The proof is of the algebra, so it runs in float64 on a copy: the reference forward passes (one per
probe input: the model's own size and a second, smaller size and draw) record what every rewritten
module received and returned on the smallest input; each rewrite is re-run on that and must agree to
rtol·max(1, |y|) per output (a correct fusion agrees to ~1e-12 of the scale, a wrong one misses by
orders of magnitude), so a mismatch names the first offending module in execution order. The whole
model is checked last on every input, with the reference's discrete selections replayed
(numerics.selections); where it is refuted and no rewrite was, every rewrite is proved again on every
input, which names the one that is wrong at the model's own size. A rewrite no probe reaches is proved
on an input made for it, or left unfused and reported "not proved". The fused model is returned in the
model's own dtype, with its drift from the float64 reference (rounding, not a fusion error) reported.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import math
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from exporter.base.errors import CheckFailed, ExporterError, UserError, summary
from exporter.base.numerics.complexity import Complexity, Counting, count_params
from exporter.base.numerics.parity import Parity, compare, compare_within, flatten_outputs, scales
from exporter.base.numerics.selections import Selections
from exporter.blocks import OUR_BLOCKS
from exporter.blocks.akconv import AKConv, looks_like_akconv, why_not_akconv
from exporter.blocks.convbn import CONV_TYPES, fold_conv_bn, require_running_stats
from exporter.blocks.copies import copy_module
from exporter.blocks.kernels import (
    Geometry,
    NotAKernel,
    convolutions_of_input,
    fold_equivalent,
    fold_kernel,
    has_equivalent_kernel,
    holds_a_kernel,
)

PROOF_DTYPE = torch.float64
ROUNDING_DTYPE = torch.float32  # exported artifacts compute in FP32: the rounding they are held to
CPU = torch.device("cpu")  # where the proof runs, whatever device the model is on: results never depend on it
CONDITION_MARGIN = 64
PROTOCOL_METHODS = (
    "switch_to_deploy",
    "reparameterize",
    "reparametrize",
    "convert_to_deploy",
    "fuse_convs",
    "merge_kernel",
    "fuse_reparam",
    "fuse",
)
GENERATED_SIZE = 16  # spatial size of an input made for a module no probe reaches
MAX_ROUNDS = 3  # deploy methods leaving blocks behind: walks into what they left


@dataclass
class Step:
    """One rewrite of the module at `path` ('' is the root). `action`: 'block' (our block's fuse()),
    'method:<name>' (a foreign deploy method), 'kernel' (a kernel computed from weights alone, folded
    into one convolution: 'kernel:<geometry>' once found), 'akconv' (a user's AKConv computed by ours,
    so that the targets lower it), 'sequential' or 'attributes' (Conv+BN)."""

    path: str
    kind: str
    action: str
    strict: bool = True  # False: a guess, reverted when its check fails
    aliases: tuple[str, ...] = ()  # other paths of the same (shared) module


@dataclass
class StepResult:
    path: str
    kind: str
    action: str
    status: str  # fused | mismatch | reverted | not proved | failed | changes outputs | still branched
    parity: Parity | None  # None when nothing could be compared
    proved_on: str = ""  # "probes" or the input made for it
    note: str = ""
    aliases: tuple[str, ...] = ()

    def why_not(self) -> str:
        """Its entry in NOT FUSED: the module, what happened and, for a reverted guess, what refuted it."""
        line = f"{self.path or '<root>'}: {self.status}"
        if self.action == "akconv":  # a user's AKConv that ours does not compute: exported as it is
            found = (
                f"computed as AKConv, {self.parity.describe()}" if self.parity else self.note or self.status
            )
            block = self.kind.removesuffix(" as AKConv")
            return f"{self.path}: {block} looks like AKConv, NOT LOWERED: {found}"
        if self.status == "reverted" and self.parity is not None:
            return f"{line} ({self.kind} tried: {self.parity.describe()})"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "module": self.path or "<root>",
            "kind": self.kind,
            "action": self.action,
            "status": self.status,
            "parity": self.parity.as_dict() if self.parity else None,
            "proved_on": self.proved_on,
            **({"note": self.note} if self.note else {}),
            **({"aliases": list(self.aliases)} if self.aliases else {}),
        }


@dataclass
class FuseReport:
    steps: list[StepResult] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    model_parity: Parity | None = None  # float64: the proof
    drift: Parity | None = None  # the fused model in its dtype against the float64 reference
    noise: list[float] = field(default_factory=list)  # per output: the fused model's rounding (its dtype's
    # weights computing in FP32) against float64 on the probe
    reference_outputs: list[np.ndarray] = field(default_factory=list)  # float64, on the first probe
    inputs: list[str] = field(default_factory=list)
    selections: int = 0  # discrete selections replayed in the whole-model check
    flips: int = 0  # of those, where the fused model's own pick differed (a near-tie)
    skipped: list[str] = field(default_factory=list)  # blocks left as they are, and why
    complexity: Complexity | None = None  # the fused model's, counted in its rounding pass

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(s.kind for s in self.steps if s.status == "fused"))

    @property
    def offender(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == "mismatch"), None)

    @property
    def ok(self) -> bool:
        return self.offender is None and self.model_parity is not None and self.model_parity.ok

    def fused_steps(self) -> list[dict[str, Any]]:
        """What to replay to rebuild the deploy form (path, action, aliases), in order."""
        return [
            {"path": s.path, "action": s.action, "aliases": list(s.aliases)}
            for s in self.steps
            if s.status in ("fused", "still branched")  # applied to the model, though not fully fused
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "proof": "float64",
            "counts": self.counts,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "model_parity": self.model_parity.as_dict() if self.model_parity else None,
            "drift": (
                {k: getattr(self.drift, k) for k in ("max_abs_err", "max_abs_ref", "output")}
                if self.drift
                else None
            ),
            "inputs": self.inputs,
            "selections": {"replayed": self.selections, "flipped": self.flips},
            "not_fused": list(dict.fromkeys(self.skipped + [s.why_not() for s in self.unfused])),
            "steps": [s.as_dict() for s in self.steps],
        }

    @property
    def unfused(self) -> list[StepResult]:
        return [
            s
            for s in self.steps
            if s.status in ("reverted", "not proved", "failed", "changes outputs", "still branched")
        ]


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


def protocol_method(module: nn.Module) -> tuple[str | None, str | None]:
    """(the first deploy method the module defines that takes no arguments, the first that needs some)."""
    needs, cls, own = None, type(module), vars(module)
    delegates = cls.__getattr__ is not nn.Module.__getattr__  # a class that finds names its own way
    for name in PROTOCOL_METHODS:
        if not (delegates or hasattr(cls, name) or name in own):  # nn.Module's lookup of a missing name
            continue  # is slow, and finds no method
        method = getattr(module, name, None)
        if not inspect.ismethod(method):
            continue
        params = inspect.signature(method).parameters.values()
        if all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            return name, needs
        needs = needs or name
    return None, needs


def apply_action(module: nn.Module, action: str) -> nn.Module:
    """The deploy form of `module` by `action` (see Step), carrying the plain attributes its model may
    read of it (Ultralytics' layers: from-index `f`, index `i`, `type`)."""
    return _carry(module, _deploy_form(module, action))


def _carry(module: nn.Module, fused: nn.Module) -> nn.Module:
    if fused is not module:
        for name, value in vars(module).items():
            plain = isinstance(value, (int, float, str, list, tuple))
            if plain and not name.startswith("_") and not hasattr(fused, name):
                setattr(fused, name, value)
    return fused


def _deploy_form(module: nn.Module, action: str) -> nn.Module:
    if action == "block":
        return module.fuse()
    if action.startswith("kernel:"):
        return Geometry.from_action(action).deploy_form(module)
    if action == "akconv":
        return AKConv.adopt(module)
    if action == "sequential":
        return _fold_sequential(module)
    if action == "attributes":
        return _fold_attributes(module)
    if action.startswith("pairs:"):
        return _fold_pairs(module, json.loads(action.removeprefix("pairs:")))
    name = action.removeprefix("method:")
    if name not in PROTOCOL_METHODS:
        raise ValueError(f"unknown fusion action {action!r}")
    result = getattr(module, name)()
    fused = result if isinstance(result, nn.Module) else module
    if inspect.ismethod(getattr(fused, "forward_fuse", None)):  # Ultralytics' convention
        fused.forward = fused.forward_fuse
    return fused


def _is_conv_bn(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, CONV_TYPES) and isinstance(bn, _BatchNorm) and conv.out_channels == bn.num_features
    )


def after_norm(bn: _BatchNorm) -> nn.Module:
    """What is left of a BatchNorm folded into its convolution: nothing, or the modules a norm with an
    activation inside (timm's BatchNormAct2d: dropout, then activation) applies after normalizing, in the
    order it holds them (a guess the proof keeps only when right)."""
    children = list(bn.children())
    if not children:
        return nn.Identity()
    return children[0] if len(children) == 1 else nn.Sequential(*children)


def _fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    children = list(seq.children())
    for i in range(len(children) - 1):
        if _is_conv_bn(children[i], children[i + 1]):
            seq[i] = fold_conv_bn(children[i], children[i + 1])
            seq[i + 1] = after_norm(children[i + 1])
    return seq


def _fold_pairs(module: nn.Module, pairs: list[list[str]]) -> nn.Module:
    for conv_path, norm_path in pairs:
        norm = get_module(module, norm_path)
        module = set_module(module, conv_path, fold_conv_bn(get_module(module, conv_path), norm))
        module = set_module(module, norm_path, after_norm(norm))
    return module


def _fold_attributes(module: nn.Module) -> nn.Module:
    module.conv = fold_conv_bn(module.conv, module.bn)
    module.bn = after_norm(module.bn)
    return module


def _paths_by_module(root: nn.Module) -> dict[int, list[str]]:
    """Every path of each module (a shared module has several)."""
    found: dict[int, list[str]] = {}
    for path, module in root.named_modules(remove_duplicate=False):
        found.setdefault(id(module), []).append(path)
    return found


def plan_blocks(root: nn.Module, done: set[int], report: FuseReport) -> list[Step]:
    """Pass 1: our blocks by type, foreign blocks by protocol. Modules in `done` (already given their
    deploy method) are not called again; the walk goes into them instead."""
    steps: list[Step] = []
    paths = _paths_by_module(root)
    seen: set[int] = set()

    def visit(module: nn.Module, path: str) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        aliases = tuple(p for p in paths.get(id(module), []) if p != path)
        if id(module) not in done:
            if isinstance(module, OUR_BLOCKS):
                steps.append(Step(path, type(module).__name__, "block", aliases=aliases))
                return
            if path and looks_like_akconv(module):
                why = why_not_akconv(module)
                if why is None:
                    kind = f"{type(module).__name__} as AKConv"
                    steps.append(Step(path, kind, "akconv", strict=False, aliases=aliases))
                    return
                report.skipped.append(
                    f"{path}: {type(module).__name__} looks like AKConv, NOT LOWERED: {why}"
                )
            method, needs_args = protocol_method(module) if path else (None, None)  # never the model's own
            if method is not None:
                kind = f"{type(module).__name__}.{method}()"
                steps.append(Step(path, kind, f"method:{method}", aliases=aliases))
                return
            if needs_args is not None:
                report.skipped.append(f"{path}: {type(module).__name__}.{needs_args}() needs arguments")
            elif path and has_equivalent_kernel(module):
                kind = f"{type(module).__name__}.get_equivalent_kernel_bias()"
                steps.append(Step(path, kind, "equivalent", strict=False, aliases=aliases))
                return
            elif path and holds_a_kernel(module):
                steps.append(
                    Step(path, f"{type(module).__name__} kernel", "kernel", strict=False, aliases=aliases)
                )
                return
        for name, child in module.named_children():
            visit(child, _join(path, name))

    visit(root, "")
    return steps


def plan_conv_bn(root: nn.Module, executed: dict[str, list[list[str]]]) -> list[Step]:
    """Pass 2: Conv+BN pairs left after pass 1: in an nn.Sequential, as `conv`/`bn` children, and wherever
    a norm reads exactly a convolution's output in a forward pass (`executed`: ExecutedPairs.groups)."""
    steps = _named_pairs(root)
    planned = {s.path for s in steps}
    for path, pairs in executed.items():
        pairs = [(c, b) for c, b in pairs if _join(path, b).rpartition(".")[0] not in planned]
        if pairs:
            kind = f"{type(get_module(root, path)).__name__} conv→norm ×{len(pairs)}"
            steps.append(Step(path, kind, "pairs:" + json.dumps(pairs), strict=False))
    return steps


class ExecutedPairs:
    """Within `with ExecutedPairs(root) as executed:`, the Conv → BatchNorm pairs the forward passes run
    (the norm reads exactly the convolution's output), whatever their attributes are called: `groups`
    holds them by the closest module holding both (paths relative to it)."""

    def __init__(self, root: nn.Module):
        self.root = root
        self.groups: dict[str, list[list[str]]] = {}
        self._outputs: dict[int, tuple[str, nn.Module, weakref.ref]] = {}
        self._found: list[tuple[str, str]] = []
        self._handles: list = []

    @classmethod
    def found(cls, root: nn.Module, x: torch.Tensor) -> ExecutedPairs:
        """The pairs of one forward pass on `x`; a model that fails on it offers none."""
        with cls(root) as executed:
            try:
                with torch.no_grad():
                    root(x)
            except Exception:  # noqa: BLE001 - the whole-model check reports a failing forward
                executed._found.clear()
        return executed

    def __enter__(self) -> ExecutedPairs:
        for path, module in self.root.named_modules():
            if isinstance(module, CONV_TYPES):
                self._handles.append(module.register_forward_hook(self._produced(path)))
            elif isinstance(module, _BatchNorm):
                self._handles.append(module.register_forward_pre_hook(self._reads(path)))
        return self

    def _produced(self, path: str):
        def hook(module, args, out):
            if isinstance(out, torch.Tensor):  # not kept alive: the pass frees what it no longer reads
                self._outputs[id(out)] = (path, module, weakref.ref(out))

        return hook

    def _reads(self, path: str):
        def hook(module, args):
            source = self._outputs.get(id(args[0])) if args else None
            if source is not None and source[2]() is args[0] and _is_conv_bn(source[1], module):
                self._found.append((source[0], path))

        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._outputs.clear()  # the model's modules as they were: not kept past the pass
        for conv, norm in dict.fromkeys(self._found):
            a, b = conv.split("."), norm.split(".")
            common = next((i for i, (p, q) in enumerate(zip(a[:-1], b[:-1], strict=False)) if p != q), None)
            depth = min(len(a), len(b)) - 1 if common is None else common
            holder = ".".join(a[:depth])
            self.groups.setdefault(holder, []).append([".".join(a[depth:]), ".".join(b[depth:])])


def _standing_pairs(
    root: nn.Module, executed: dict[str, list[list[str]]], changed: list[str]
) -> dict[str, list[list[str]]] | None:
    """The pairs found before the blocks at `changed` were rewritten, where they are all the model needs
    now: every norm in it folds by name (_named_pairs) or lies outside those blocks, paired with a
    convolution outside them (what it reads is unchanged, and a norm reads one input, so no new pair
    can form); else None."""
    norms = {path for path, module in root.named_modules() if isinstance(module, _BatchNorm)}
    standing: dict[str, list[list[str]]] = {}
    for holder, pairs in executed.items():
        for conv, norm in pairs:
            paths = (_join(holder, conv), _join(holder, norm))
            if paths[1] in norms and not any(_within(p, block) for p in paths for block in changed):
                standing.setdefault(holder, []).append([conv, norm])
    paired = {_join(holder, norm) for holder, pairs in standing.items() for _, norm in pairs}
    return standing if norms - _named_norms(root) <= paired else None


def _named_norms(root: nn.Module) -> set[str]:
    """The paths of the norms the Conv+BN pairs of _named_pairs fold."""
    found = set()
    for step in _named_pairs(root):
        if step.action == "attributes":
            found.add(_join(step.path, "bn"))
            continue
        children = list(get_module(root, step.path).named_children())
        pairs = zip(children, children[1:], strict=False)
        found |= {_join(step.path, name) for (_, conv), (name, bn) in pairs if _is_conv_bn(conv, bn)}
    return found


def _named_pairs(root: nn.Module) -> list[Step]:
    """Conv+BN pairs in an nn.Sequential, and modules with `conv` and `bn` children."""
    steps: list[Step] = []
    paths = _paths_by_module(root)
    seen: set[int] = set()

    def visit(module: nn.Module, path: str) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        aliases = tuple(p for p in paths.get(id(module), []) if p != path)
        skip: set[str] = set()
        if isinstance(module, nn.Sequential):
            children = list(module.children())
            if any(_is_conv_bn(a, b) for a, b in zip(children, children[1:], strict=False)):
                steps.append(Step(path, "Conv+BN", "sequential", aliases=aliases))
        elif _is_conv_bn(getattr(module, "conv", None), getattr(module, "bn", None)):
            kind = f"{type(module).__name__} conv/bn"
            steps.append(Step(path, kind, "attributes", strict=False, aliases=aliases))
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


class ForwardFailed(Exception):
    """The model itself failed on probe input `index` (before any rewrite)."""

    def __init__(self, index: int, shape: tuple[int, ...], cause: BaseException):
        super().__init__(f"forward failed on input {index}")
        self.index, self.shape, self.cause = index, shape, cause


@dataclass
class Recording:
    """Per probe input: every watched module's first (args, kwargs, output), the model's outputs and its
    discrete selections."""

    calls: list[dict[str, tuple]]
    outputs: list[Any]
    picks: list[list]

    def __add__(self, other: Recording) -> Recording:
        return Recording(self.calls + other.calls, self.outputs + other.outputs, self.picks + other.picks)


def record(
    root: nn.Module,
    paths: Sequence[str],
    inputs: Sequence[torch.Tensor],
    first: int = 0,
    watched: Sequence[int] | None = None,
) -> Recording:
    """One forward pass per input with hooks on the modules at `paths` (on the inputs of index `watched`
    only, where given: the others record the model's outputs alone); ForwardFailed names the input
    (counted from `first`) the model failed on."""
    result = Recording([], [], [])
    for index, x in enumerate(inputs, first):
        calls: dict[str, tuple] = {}
        handles = []
        for path in paths if watched is None or index in watched else ():

            def hook(module, args, kwargs, output, path=path, calls=calls):
                if path not in calls:
                    calls[path] = (_clone(args), _clone(kwargs), _clone(output))

            handles.append(get_module(root, path).register_forward_hook(hook, with_kwargs=True))
        try:
            with torch.no_grad(), Selections() as selections:
                output = root(x)
        except Exception as exc:  # noqa: BLE001 - the user's model failing on an input
            raise ForwardFailed(index, tuple(x.shape), exc) from exc
        finally:
            for handle in handles:
                handle.remove()
        if not flatten_outputs(output):
            raise UserError(
                f"the model's forward returned {type(output).__name__}, no tensor: a detector returns its "
                "outputs as tensors (or a tuple, list or dict of them); check the model builder"
            )
        result.calls.append(calls)
        result.outputs.append(_clone(output))
        result.picks.append(selections.picks)
    return result


def watch(
    root: nn.Module, paths: Sequence[str], inputs: Sequence[torch.Tensor], watched: Sequence[int] | None
) -> list[dict[str, tuple]]:
    """Per input, what the modules at `paths` received and returned (record's calls); the inputs not
    `watched` (None: all are) are not run, and have none."""
    indices = range(len(inputs)) if watched is None else watched
    calls = {i: record(root, paths, inputs[i : i + 1], first=i).calls[0] for i in indices}
    return [calls.get(i, {}) for i in range(len(inputs))]


def _check_running_stats(module: nn.Module, path: str) -> None:
    for name, sub in module.named_modules():
        if isinstance(sub, _BatchNorm):
            require_running_stats(sub, _join(path, name))


def generated_input(module: nn.Module) -> torch.Tensor | None:
    """A seeded input for a module no probe reaches, shaped for its first convolution (None: unknown)."""
    conv = next((m for m in module.modules() if isinstance(m, CONV_TYPES)), None)
    if conv is None:
        return None
    dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(conv)]
    generator = torch.Generator().manual_seed(0)
    shape = (1, conv.in_channels, *([GENERATED_SIZE] * dims))
    return torch.rand(shape, generator=generator, dtype=PROOF_DTYPE)


def _prove(fused: nn.Module, calls: list[tuple], rtol: float) -> tuple[Parity, bool]:
    """The worst parity over the recorded calls, and whether the outputs' structure changed."""
    worst, reshaped = None, False
    for args, kwargs, expected in calls:
        with torch.no_grad():
            got = fused(*args, **kwargs)
        reshaped |= _structure(got) != _structure(expected)
        parity = compare(expected, got, rtol)
        if worst is None or parity.ratio >= worst.ratio:
            worst = parity
    return worst, reshaped


def _structure(value: Any) -> list[tuple[int, ...]]:
    return [a.shape for a in flatten_outputs(value)]


@dataclass
class _Proof:
    """What the rewrites of one fusion share: the tolerance, the report, the modules already given their
    deploy form (not called again), and each block given to a deploy method with how to get it back as it
    was and what it received (checked once everything is fused: _name_still_branched)."""

    rtol: float
    report: FuseReport
    done: set[int] = field(default_factory=set)
    methods: list[tuple[StepResult, Callable[[], nn.Module], tuple, dict]] = field(default_factory=list)


def _run_steps(
    root: nn.Module, steps: list[Step], recording: Recording, proof: _Proof, source: nn.Module | None = None
) -> nn.Module:
    """Each step applied, proved on what its module received, and kept or reverted. `source`: the model
    the steps' modules are still float64 copies of, where a reverted module is copied from again (a
    deploy method changes its module in place: otherwise it is copied before the rewrite)."""
    order: dict[str, int] = {}
    for calls in recording.calls:
        for path in calls:
            order.setdefault(path, len(order))
    for step in sorted(steps, key=lambda s: order.get(s.path, len(order))):
        original = get_module(root, step.path)
        _check_running_stats(original, step.path)
        restore = _restorer(original, step, source)
        calls = [c[step.path] for c in recording.calls if step.path in c]
        proved_on = "probes" if calls else ""
        if not calls:
            x = generated_input(original)
            if x is not None:
                try:
                    with torch.no_grad():
                        calls = [((x,), {}, original(x))]
                    proved_on = f"a generated {'x'.join(map(str, x.shape))} input"
                except Exception:  # noqa: BLE001 - the module does not take such an input
                    calls = []
        action = step.action
        try:
            with torch.no_grad(), default_dtype(PROOF_DTYPE):  # what a deploy method creates: float64 too
                if action in ("kernel", "equivalent"):
                    if not calls:
                        raise NotAKernel("no input reaches it")
                    fold = fold_kernel if action == "kernel" else fold_equivalent
                    fused, geometry = fold(original, *calls[0][:2])
                    action = geometry.action()
                    fused = _carry(original, fused)
                else:
                    fused = apply_action(original, action).to(PROOF_DTYPE).eval()
            root = _place(root, step, fused)
            parity, reshaped = _prove(fused, calls, proof.rtol) if calls else (None, False)
        except NotAKernel:  # a module holding some 4-D tensor: not a convolution kernel after all
            root = _keep(root, step, restore(), proof)
            continue
        except Exception as exc:  # noqa: BLE001 - a block the fuser cannot handle is left as it is
            root = _keep(root, step, restore(), proof)
            text = str(exc).strip().splitlines()
            note = f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
            failed = StepResult(step.path, step.kind, step.action, "failed", None, note=note)
            proof.report.steps.append(failed)
            continue
        status, note = "fused", ""
        if parity is None:
            status, note = "not proved", "no probe reaches it and no input could be made for it"
        elif reshaped:
            status, note = (
                "changes outputs",
                "its deploy method changes the module's outputs: not a deploy form",
            )
        elif not parity.ok:
            status = "mismatch" if step.strict else "reverted"
        result = StepResult(step.path, step.kind, action, status, parity, proved_on, note, step.aliases)
        if status in ("fused", "mismatch"):
            proof.done.add(id(fused))
            if action.startswith("method:") and calls:
                proof.methods.append((result, restore, *calls[0][:2]))
        else:  # keep the original; walk into it instead
            root = _keep(root, step, restore(), proof)
        proof.report.steps.append(result)
    return root


def _keep(root: nn.Module, step: Step, original: nn.Module, proof: _Proof) -> nn.Module:
    """`original` put back in place of its rewrite, to be walked into instead."""
    proof.done.add(id(original))
    return _place(root, step, original)


def _restorer(original: nn.Module, step: Step, source: nn.Module | None) -> Callable[[], nn.Module]:
    """How to get `original` back as it is now, once its rewrite has run, at the least cost the rewrite
    allows: itself where the rewrite makes a new module; its table of children put back where a Conv+BN
    fold only swaps children; a float64 copy of `source`'s module where `original` is still one and
    keeps no tensors of an earlier call (those of `source` were made on other inputs); else a copy made
    now."""
    if _leaves_as_it_was(original, step.action):
        return lambda: original
    if step.action in ("sequential", "attributes") or step.action.startswith("pairs:"):
        tables = [(module, dict(module._modules)) for module in original.modules()]

        def put_back() -> nn.Module:
            for module, children in tables:
                module._modules.clear()
                module._modules.update(children)
            return original

        return put_back
    if source is not None and not _holds_tensors(original):
        return lambda: proof_copy(get_module(source, step.path))
    backup = copy_module(original)
    return lambda: backup


def _leaves_as_it_was(module: nn.Module, action: str) -> bool:
    """Whether `action` makes a new module and leaves `module` unchanged: an adopted AKConv, or one of
    our blocks' own fuse() (not a subclass's override)."""
    if action == "akconv":
        return True
    return action == "block" and any(type(module).fuse is block.fuse for block in OUR_BLOCKS)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def _within(path: str, block: str) -> bool:
    return not block or path == block or path.startswith(block + ".")


def _place(root: nn.Module, step: Step, module: nn.Module) -> nn.Module:
    for path in (step.path, *step.aliases):
        root = set_module(root, path, module)
    return root


def cast(model: nn.Module, dtype: torch.dtype, device: torch.device | None = None) -> nn.Module:
    """`model` in `dtype` (and on `device`, if given): its parameters and buffers, and the tensors modules
    keep as plain attributes, alone or in a list or tuple (caches such as anchors or YOLOv5's grids made
    on an earlier call, which would otherwise keep their precision and device)."""
    return _cast_caches(model.to(device=device, dtype=dtype), dtype, device)


def _cast_caches(model: nn.Module, dtype: torch.dtype, device: torch.device | None) -> nn.Module:
    """`model` with the tensors its modules keep as plain attributes (cast) in `dtype` and on `device`."""

    def moved(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device=device, dtype=dtype if value.is_floating_point() else None)
        return type(value)(moved(v) for v in value) if _is_cache(value) else value

    for module in model.modules():
        for name, value in list(vars(module).items()):
            new = moved(value)
            if new is not value:
                setattr(module, name, new)
    return model


def proof_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of `model` on the CPU in eval mode, each parameter and buffer converted as it is
    copied (not copied, then converted); a module with a conversion of its own (`_apply`: Ultralytics'
    models move their anchors, others drop caches) is given it too."""
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        dtype = PROOF_DTYPE if tensor.is_floating_point() else None
        converted = tensor.detach().to(CPU, dtype, copy=True)
        is_parameter = isinstance(tensor, nn.Parameter)
        memo[id(tensor)] = nn.Parameter(converted, tensor.requires_grad) if is_parameter else converted
    copied = copy_module(model, memo)
    if any(type(m)._apply is not nn.Module._apply for m in copied.modules()):
        copied.to(device=CPU, dtype=PROOF_DTYPE)
    return _cast_caches(copied, PROOF_DTYPE, CPU).eval()


def _is_cache(value: Any) -> bool:
    """A tensor a module keeps as a plain attribute, or a list or tuple holding some."""
    if isinstance(value, torch.Tensor):
        return True
    return type(value) in (list, tuple) and any(isinstance(v, torch.Tensor) for v in value)


def _holds_tensors(model: nn.Module) -> bool:
    """Whether a module keeps tensors as plain attributes (caches of an earlier call)."""
    return any(_is_cache(v) for m in model.modules() for v in vars(m).values())


def model_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def model_device(model: nn.Module) -> torch.device:
    return next((t.device for t in (*model.parameters(), *model.buffers())), CPU)


class FusionFailed(CheckFailed):
    """The proof refuted the fused model, so none is returned; `report` says where and by how much."""

    def __init__(self, report: FuseReport):
        self.report = report
        offender = report.offender
        if offender is not None:
            where = f"module '{offender.path or '<root>'}' ({offender.kind})"
            super().__init__(f"fusion changed the output of {where}: {offender.parity.describe()}")
        else:
            super().__init__(f"fused model output differs: {report.model_parity.describe()}")


def fuse_model(
    model: nn.Module,
    probes: torch.Tensor | Sequence[torch.Tensor],
    rtol: float = 1e-9,
    *,
    strict: bool = True,
) -> tuple[nn.Module, FuseReport]:
    """A fused copy of `model` proved equal on `probes` (see _fuse_model) and its report. Where the proof
    fails, FusionFailed is raised (its `report` says why): a refuted model is never handed back, unless
    `strict=False` (the report then says ok False), for tools that tabulate failures."""
    with flush_denormals():
        fused, report = _fuse_model(model, probes, rtol, each_on_all=False)
        if not report.ok and report.offender is None:  # the whole model refuted: each rewrite on every input
            fused, report = _fuse_model(model, probes, rtol, each_on_all=True)
    if strict and not report.ok:
        raise FusionFailed(report)
    return fused, report


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Subnormal numbers (below 2.2e-308 in float64, which an activation like SiLU(-720) produces)
    flushed to zero while the proof runs: on x86 CPUs arithmetic on them is tens of times slower, and
    at that size they change no comparison."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _fuse_model(
    model: nn.Module, probes: torch.Tensor | Sequence[torch.Tensor], rtol: float, each_on_all: bool
) -> tuple[nn.Module, FuseReport]:
    """A fused copy of `model` (in its dtype, on its device; `model` is left as it was) and the report
    proving or refuting its equality in float64, on the CPU: per rewritten module max|y_fused − y| ≤
    rtol·max(1, max|y|) on what it received from the last probe input (the smallest: the second is a
    tenth of the model's size), or from every probe input where `each_on_all`; for the whole model on
    each probe input the same, or CONDITION_MARGIN times the float64 rounding the model amplifies,
    whichever is larger (the fused model's FP32 rounding scaled by eps64/eps32: a chaotic model amplifies
    float64 rounding as it does FP32's)."""
    inputs = [x.detach().cpu() for x in ([probes] if isinstance(probes, torch.Tensor) else probes)]
    dtype, device = model_dtype(model), model_device(model)
    work = proof_copy(model)
    inputs64 = [x.to(PROOF_DTYPE) for x in inputs]
    report = FuseReport(
        params_before=count_params(work), inputs=["x".join(map(str, x.shape)) for x in inputs]
    )
    proof = _Proof(rtol, report)
    steps = plan_blocks(work, proof.done, report)
    blocks = [s.path for s in steps]  # and, in the same passes, the Conv+BN pairs no block holds
    if _holds_tensors(model):  # caches of an earlier call (anchors by input size): made anew in
        record(work, [], inputs64[-1:], first=len(inputs64) - 1)  # float64, as the final check finds them
    watched = None if each_on_all else [len(inputs64) - 1]
    with ExecutedPairs(work) as executed:  # found on the first reference pass where it watches nothing
        head = record(work, [], inputs64[:1])
    executed_pairs = executed.groups
    planned = plan_conv_bn(work, executed_pairs)
    pairs = [s.path for s in planned if not any(_within(s.path, b) for b in blocks)]
    if watched is None or 0 in watched:
        reference = record(work, blocks + pairs, inputs64, watched=watched)
    else:
        reference = head + record(work, blocks + pairs, inputs64[1:], first=1, watched=watched)
    try:
        recording = reference
        for depth in range(MAX_ROUNDS):  # a deploy method may leave blocks behind: walk into what it left
            if not steps:
                break
            if depth:
                recording = Recording(watch(work, [s.path for s in steps], inputs64, watched), [], [])
            work = _run_steps(work, steps, recording, proof, None if depth else model)
            steps = plan_blocks(work, proof.done, report)
        report.skipped += [
            f"{s.path}: {s.kind} not called: each of {MAX_ROUNDS} rounds of deploy methods left a block "
            "to fuse"
            for s in steps
        ]
        changed = [s.path for s in report.steps if s.status in ("fused", "mismatch")]
        if changed:  # the pairs of the model as it is now
            standing = _standing_pairs(work, executed_pairs, changed)
            executed_pairs = (
                standing if standing is not None else ExecutedPairs.found(work, inputs64[-1]).groups
            )
        steps = plan_conv_bn(work, executed_pairs)
        unrecorded = [s.path for s in steps if s.path not in pairs]
        if steps:
            calls = reference.calls
            if unrecorded:  # pairs a deploy method left: their inputs in the model as fused so far
                found = watch(work, unrecorded, inputs64, watched)
                calls = [{**a, **b} for a, b in zip(calls, found, strict=True)]
            work = _run_steps(work, steps, Recording(calls, [], []), proof)
        _name_still_branched(work, proof.methods)
        parities = _whole_model(work, dtype, inputs, reference, rtol, report)
    except ExporterError:
        raise
    except Exception as exc:  # noqa: BLE001 - a rewrite broke the model in a way no module check saw
        cause = exc.cause if isinstance(exc, ForwardFailed) else exc
        parities = [Parity(float("inf"), 0.0, 0.0, note=f"the fused model raised {summary(cause)}")]
    report.model_parity = max(parities, key=lambda p: p.ratio)
    overflows = [i for i, error in enumerate(report.noise) if math.isinf(error)]
    if report.ok and overflows:  # every export would be held to an infinite tolerance
        name = str(dtype).removeprefix("torch.")
        report.model_parity = Parity(
            math.inf,
            0.0,
            0.0,
            overflows[0],
            note=f"in {name} the fused model overflows where float64 does not (folded weights past "
            f"{name}'s range): fuse the model in float32",
        )
    report.params_after = count_params(work)
    report.reference_outputs = flatten_outputs(reference.outputs[0])
    if report.ok:  # the fused model's rounding on the probe: the scale of an export's tolerance
        report_scales, errors = scales(report.reference_outputs), report.noise
        worst = max(range(len(errors)), key=lambda i: errors[i] / max(1.0, report_scales[i]))
        report.drift = Parity(errors[worst], report_scales[worst], 0.0, worst)
    if model_dtype(work) != dtype or device != CPU:  # else _whole_model left it so
        work = cast(work, dtype, device)
    return work, report


def _name_still_branched(
    work: nn.Module, methods: list[tuple[StepResult, Callable[[], nn.Module], tuple, dict]]
) -> None:
    """A block given to its own deploy method that, once everything inside it is fused too, runs as many
    convolutions of its input as it did before its method (two or more) was not re-parameterized: named,
    not counted as fused (a shortcut convolution beside a merged branch is one fewer, and passes)."""
    for step, original, args, kwargs in methods:
        if step.status != "fused":
            continue
        with torch.no_grad():
            after = convolutions_of_input(get_module(work, step.path), args, kwargs)
            if after < 2:
                continue
            before = convolutions_of_input(original(), args, kwargs)
        if after >= before:
            step.status = "still branched"
            method = step.action.removeprefix("method:")
            step.note = f"after {method}() it still runs {after} convolutions of its input, as before it"


def _pairs(a: Any, b: Any):
    return zip(flatten_outputs(a), flatten_outputs(b), strict=True)


def _whole_model(
    work: nn.Module,
    dtype: torch.dtype,
    inputs: list[torch.Tensor],
    reference: Recording,
    rtol: float,
    report: FuseReport,
) -> list[Parity]:
    """The fused model (float64) against the reference on each input, the reference's selections
    replayed: within rtol·max(1, |y|) or CONDITION_MARGIN × eps64/eps32 × the fused model's rounding
    (its weights in `dtype`, computing in FP32); where that fails, within CONDITION_MARGIN × its response to
    a 1-ulp nudge of the input (a chaotic model amplifies float64 rounding as it amplifies the nudge).
    A wrong rewrite adds its error to that rounding too, but scaled by eps64/eps32 (2e-9) it stays far
    below the error itself. `work` is left in `dtype`; the report gets its rounding on the probe (noise)
    and its complexity. The rounding is measured on the first input, and on another only where rtol
    alone does not hold there."""
    ratio = torch.finfo(PROOF_DTYPE).eps / torch.finfo(ROUNDING_DTYPE).eps
    outputs, responses = [], []
    for x, expected, picks in zip(inputs, reference.outputs, reference.picks, strict=True):
        x = x.to(PROOF_DTYPE)
        with torch.no_grad(), Selections(replay=picks) as replayed:
            output = work(x)
        response = None
        if not compare_within(expected, output, [rtol * max(1.0, s) for s in scales(expected)]).ok:
            with torch.no_grad(), Selections(replay=picks):  # kept in case the rounding bound fails too
                nudged = work(x * (1 + torch.finfo(PROOF_DTYPE).eps))
            response = [float(np.abs(a - b).max()) if a.size else 0.0 for a, b in _pairs(output, nudged)]
        outputs.append(output)
        responses.append(response)
        report.selections += len(picks)
        report.flips += replayed.flips
    rounding_model = _in_rounding_dtype(cast(work, dtype))  # float64 no longer needed
    runs = list(zip(inputs, reference.outputs, reference.picks, strict=True))
    with Counting(rounding_model) as counting:
        rounding = [_rounding(rounding_model, *runs[0])]
    report.complexity, report.noise = counting.result(), rounding[0]
    rounding += [  # on the other inputs, only where rtol alone does not hold
        _rounding(rounding_model, *run) if response is not None else None
        for run, response in zip(runs[1:], responses[1:], strict=True)
    ]
    parities = []
    for expected, output, errors, response in zip(
        reference.outputs, outputs, rounding, responses, strict=True
    ):
        bounds = [  # a rounding that is not finite (folded weights past FP16's range) bounds nothing
            max(rtol * max(1.0, scale), CONDITION_MARGIN * ratio * error if math.isfinite(error) else 0.0)
            for scale, error in zip(scales(expected), errors or [0.0] * len(scales(expected)), strict=True)
        ]
        parity = compare_within(expected, output, bounds)
        if not parity.ok and response is not None:
            bounds = [max(b, CONDITION_MARGIN * r) for b, r in zip(bounds, response, strict=True)]
            parity = compare_within(expected, output, bounds)
        parities.append(parity)
    return parities


def _in_rounding_dtype(model: nn.Module) -> nn.Module:
    """`model` itself where it is already an FP32 model on the CPU in eval mode, else such a copy of it."""
    if not model.training and model_dtype(model) == ROUNDING_DTYPE and model_device(model) == CPU:
        return model
    return cast(copy_module(model), ROUNDING_DTYPE, CPU).eval()


def _rounding(model: nn.Module, x: torch.Tensor, expected: Any, picks: list) -> list[float]:
    """Per output, max|y − y_float64| of `model` in its dtype, the reference's selections replayed."""
    with torch.no_grad(), Selections(replay=picks):
        output = model(x.to(model_dtype(model)))
    pairs = zip(flatten_outputs(expected), flatten_outputs(output), strict=True)
    return [float(np.abs(r - c).max()) if r.size else 0.0 for r, c in pairs]


def replay(model: nn.Module, steps: Sequence[dict[str, Any]]) -> nn.Module:
    """The deploy form of `model` by the fused steps of an earlier proof (FuseReport.fused_steps),
    without proving them again."""
    root = model.eval()
    with torch.no_grad():
        for step in steps:
            fused = apply_action(get_module(root, step["path"]), step["action"]).eval()
            for path in (step["path"], *step.get("aliases", [])):
                root = set_module(root, path, fused)
    return root
