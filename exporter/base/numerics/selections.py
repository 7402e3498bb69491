"""Discrete selections inside a forward pass (top-k, sort, arg-max/min, max/min along a dimension):
recorded in a reference run and replayed in a candidate run.

Two computations of the same function that differ by rounding can pick differently at a near-tie, and
everything downstream of the pick then differs by far more than rounding. Replaying the reference's
picks in the candidate makes the outputs comparable again: what is compared is the continuous
computation, and a candidate that is wrong still differs (in the tensors the selection reads and in
everything computed from them).
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

# function -> (name, index of `dim` among the positional arguments after the input)
SELECTIONS = {
    torch.topk: ("topk", 2),
    torch.Tensor.topk: ("topk", 2),
    torch.sort: ("sort", 1),
    torch.Tensor.sort: ("sort", 1),
    torch.argsort: ("argsort", 1),
    torch.Tensor.argsort: ("argsort", 1),
    torch.argmax: ("argmax", 1),
    torch.Tensor.argmax: ("argmax", 1),
    torch.argmin: ("argmin", 1),
    torch.Tensor.argmin: ("argmin", 1),
    torch.max: ("max", 1),
    torch.Tensor.max: ("max", 1),
    torch.min: ("min", 1),
    torch.Tensor.min: ("min", 1),
}
INDICES_ONLY = {"argsort", "argmax", "argmin"}
ORDERINGS = ("topk", "sort", "argsort")  # what a graph's TopK nodes compute
KINDS = tuple(sorted({name for name, _ in SELECTIONS.values()}))


class Selections(TorchFunctionMode):
    """Within `with Selections() as s:` every selection is recorded in `s.picks`; within
    `with Selections(replay=picks) as s:` the recorded picks are used instead of the candidate's own,
    counted in `s.flips` where they differ. A run whose selections do not line up with the recording
    (another count, kind or shape) is left to its own picks and flagged `s.misaligned`. `kinds` limits
    both to some kinds of selection (ORDERINGS: those a graph's TopK nodes make)."""

    def __init__(self, replay: list[tuple[str, torch.Tensor]] | None = None, kinds: tuple[str, ...] = KINDS):
        super().__init__()
        self.replay = replay
        self.kinds = set(kinds)
        self.picks: list[tuple[str, torch.Tensor]] = []
        self.flips = 0
        self.misaligned = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        entry = SELECTIONS.get(func)
        if (
            entry is None
            or entry[0] not in self.kinds
            or (entry[0] in ("max", "min") and not _has_dim(args, kwargs))
        ):
            return result
        name, dim_at = entry
        indices = result if name in INDICES_ONLY else result[1]
        if self.replay is None:
            self.picks.append((name, indices.detach().clone()))
            return result
        position = len(self.picks)
        self.picks.append((name, indices))
        if position >= len(self.replay):
            self.misaligned = True
            return result
        recorded_name, recorded = self.replay[position]
        if _family(recorded_name) != _family(name) or recorded.shape != indices.shape:
            self.misaligned = True
            return result
        if torch.equal(recorded, indices):
            return result
        self.flips += 1
        if name in INDICES_ONLY:
            return recorded
        dim = kwargs.get("dim", args[dim_at] if len(args) > dim_at else -1)
        source = args[0]
        if recorded.dim() < source.dim():  # max/min without keepdim
            values = source.gather(dim, recorded.unsqueeze(dim)).squeeze(dim)
        else:
            values = source.gather(dim, recorded)
        return type(result)((values, recorded))


def _family(name: str) -> str:
    """Orderings are one family: a graph's TopK serves torch's topk, sort and argsort alike."""
    return "ordering" if name in ORDERINGS else name


def _has_dim(args, kwargs) -> bool:
    """max/min select only along a dimension (max(x) is a value; max(x, y) is elementwise)."""
    return "dim" in kwargs or (len(args) > 1 and isinstance(args[1], int))
