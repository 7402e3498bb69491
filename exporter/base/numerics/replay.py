"""A model's forward on one input, recorded module call by module call and then run again from any call
on: every call that ended before it returns what it returned when recorded, unrun, so only the modules
from that call onwards compute. Exact: a call that ended earlier cannot have read anything computed at
or after the starting call, so it returns what it returned then; a call whose output is not a tensor (or
a tuple of them), or was changed in place after it returned, or comes after the recording held
`budget` bytes, always runs; a run whose calls are not the recorded ones, or that changes a recorded
output in place, is refused (`ReplayRefused`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

KEPT_BYTES = 2**30  # recorded outputs a replay holds at most (beyond them, calls run)


class ReplayRefused(RuntimeError):
    """The model's forward cannot be replayed exactly: run it whole."""


@dataclass
class Call:
    module: nn.Module
    last: int  # the index of the last call made within this one (its own where it makes none)
    output: Any  # what it returned; None where that cannot be handed out again
    versions: tuple[int, ...]  # the in-place version of each tensor of `output` when it returned


def tensors(value: Any) -> list[torch.Tensor] | None:
    """The tensors of a tensor or a (nested) tuple of tensors; None for anything else."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple):
        found: list[torch.Tensor] = []
        for item in value:
            inner = tensors(item)
            if inner is None:
                return None
            found += inner
        return found
    return None


def versions(value: Any) -> tuple[int, ...]:
    return tuple(t._version for t in tensors(value) or [])


class Replay:
    """`Replay(model, x)` runs `model(x)` (without gradients) and records its calls: `reference` is its
    output. `run(start)` runs it again on `x`, calls that ended before call `start` replayed;
    `first_call(module)` is the index of a module's first call (past the last call if it is never
    called: everything replayed)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, budget: int = KEPT_BYTES):
        self.model, self.x = model, x
        self.calls: list[Call] = []
        self.held: set[int] = set()  # the storages recorded outputs hold
        self.held_bytes, self.budget = 0, budget
        self.start: int | None = None  # None: recording
        self.next = 0
        self.reference = self._forward()
        for call in self._changed():
            call.output = None  # changed in place by a later call: run it each time
        self.first: dict[int, int] = {}
        for index, call in enumerate(self.calls):
            self.first.setdefault(id(call.module), index)
        self.start = 0

    def first_call(self, module: nn.Module) -> int:
        return self.first.get(id(module), len(self.calls))

    def run(self, start: int) -> Any:
        """The model's output on `x`, run from call `start` on."""
        self.start = start
        output = self._forward()
        if self.next != len(self.calls):
            raise ReplayRefused(f"a run made {self.next} module calls, the recording {len(self.calls)}")
        changed = next(self._changed(), None)
        if changed is not None:
            raise ReplayRefused(f"a run changed the recorded output of {type(changed.module).__name__}")
        return output

    def _changed(self) -> Iterator[Call]:
        """The calls whose kept output was changed in place since it was returned."""
        return (c for c in self.calls if c.output is not None and versions(c.output) != c.versions)

    def _forward(self) -> Any:
        self.next = 0
        with self._wrapped(), torch.no_grad():
            return self.model(self.x)

    @contextlib.contextmanager
    def _wrapped(self) -> Iterator[None]:
        """Within the block, every module's forward goes through `_wrapper`'s call."""
        modules = list(self.model.modules())
        own = [module.__dict__.get("forward") for module in modules]
        try:
            for module in modules:
                try:
                    module.forward = self._wrapper(module, module.forward)
                except (AttributeError, TypeError, RuntimeError) as error:  # e.g. a scripted module
                    name = type(module).__name__
                    raise ReplayRefused(f"{name}'s forward cannot be wrapped: {error}") from None
            yield
        finally:
            for module, forward in zip(modules, own, strict=True):
                if forward is None:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = forward

    def _wrapper(self, module: nn.Module, forward):
        def call(*args, **kwargs):
            index = self.next
            self.next += 1
            if self.start is None:  # recording
                self.calls.append(Call(module, index, None, ()))
                output = forward(*args, **kwargs)
                kept = output if self._hold(tensors(output)) else None
                self.calls[index] = Call(module, self.next - 1, kept, versions(output))
                return output
            recorded = self.calls[index] if index < len(self.calls) else None
            if recorded is None or recorded.module is not module:
                raise ReplayRefused(f"call {index} is not the recorded one ({type(module).__name__})")
            if recorded.last < self.start and recorded.output is not None:
                self.next = recorded.last + 1
                return recorded.output
            return forward(*args, **kwargs)

        return call

    def _hold(self, found: list[torch.Tensor] | None) -> bool:
        """Whether an output of these tensors is kept: a tuple of tensors within the budget."""
        if found is None:
            return False
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in found}
        new = {ptr: size for ptr, size in storages.items() if ptr not in self.held}
        added = sum(new.values())
        if self.held_bytes + added > self.budget:
            return False
        self.held.update(new)
        self.held_bytes += added
        return True
