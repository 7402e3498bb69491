"""Build a model: import the builder, call it, load a checkpoint safely."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exporter.base.artifacts import sha256_file, sha256_json
from exporter.base.data.transforms import Preprocess, normalize
from exporter.base.errors import UserError, setting, summary
from exporter.models.user_code import (
    MODEL_LIBRARIES,
    in_model_library,
    in_standard_library,
    installed_library,
    user_modules,
)

BUILDER_FIX = (
    "name a function or class of your own package (package.module:function) or of a model library's "
    f"models ({', '.join(MODEL_LIBRARIES.values())}), or trust a package of yours with "
    f"{setting('model.trust', 'PACKAGE')}"
)


def _refusal(module: str, trust: tuple[str, ...], imported: bool) -> str | None:
    """Why a builder from `module` may not be called (None: it may). Before the import (`imported`
    False) a model library passes whole; after it, only a builder defined among its models."""
    package = module.split(".")[0]
    if in_standard_library(package):
        return "Python's standard library, which builds no model"
    if package in trust:
        return None
    if package in MODEL_LIBRARIES:
        inside = not imported or in_model_library(module)
        return None if inside else f"{package} but outside its models ({MODEL_LIBRARIES[package]})"
    if installed_library(package):
        return f"an installed library ('{package}'), neither your code nor a model library"
    return None


def resolve_builder(spec: str, trust: tuple[str, ...] = ()):
    """The function or class `package.module:name` names, imported as user code. A recipe may name a
    builder of the user's own code, of a package it trusts (`trust`) or among a model library's models
    (MODEL_LIBRARIES); anything else (`os:system`, `yaml:unsafe_load`, `torch:load`) is refused before it is
    imported, and a name defined elsewhere than it says (a re-export) before it is called."""
    module_name, _, func_name = spec.partition(":")
    reason = _refusal(module_name, trust, imported=False)
    if reason:
        raise UserError(
            f"model builder '{spec}': '{module_name}' is {reason}: refused before import; {BUILDER_FIX}"
        )
    try:
        with user_modules():
            module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure of user code is bad input
        raise UserError(
            f"model builder '{spec}': cannot import '{module_name}' ({summary(exc)}); "
            "check the module path and that its package is installed or on PYTHONPATH"
        ) from None
    builder = getattr(module, func_name, None)
    if not (inspect.isfunction(builder) or inspect.isclass(builder)):
        raise UserError(f"model builder '{spec}': '{module_name}' has no function or class '{func_name}'")
    reason = _refusal(builder.__module__ or "", trust, imported=True)
    if reason:
        raise UserError(
            f"model builder '{spec}' is {builder.__module__}.{builder.__qualname__}, from {reason}: refused "
            f"before it was called; {BUILDER_FIX}"
        )
    return builder


def builder_source_hash(spec: str, trust: tuple[str, ...] = ()) -> str | None:
    """sha256 of the source defining the builder, so editing the model invalidates cached stages: the
    file, or every .py file beside it when it is part of a package (a model split over modules)."""
    try:
        source = inspect.getsourcefile(resolve_builder(spec, trust))
    except TypeError:  # a builtin: no source file to watch
        return None
    if not source:
        return None
    folder = Path(source).parent
    files = sorted(folder.glob("*.py")) if (folder / "__init__.py").is_file() else [Path(source)]
    return sha256_json({f.name: sha256_file(f) for f in files})


def extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or a dict holding one under 'model', 'state_dict' or 'ema'."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"checkpoint {path}: expected a state dict (or a dict with one under 'model'), "
            f"found {type(obj).__name__}"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def require_checkpoint(path: Path) -> Path:
    if not path.is_file():
        raise UserError(
            f"checkpoint not found: {path}; pass an existing file with {setting('model.checkpoint')}"
        )
    return path


def load_checkpoint(model: nn.Module, path: Path) -> None:
    require_checkpoint(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt or pickled files are bad input
        raise UserError(
            f"checkpoint {path} cannot be loaded with weights_only=True ({type(exc).__name__}): it is not a "
            "torch file, or it pickles objects; save it as a plain state dict"
        ) from None
    state = extract_state_dict(obj, path)
    expected = model.state_dict()
    problems = [
        f"{k} has shape {tuple(v.shape)}, the model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if not problems:  # load through the modules' own hooks (AKConv fills in a missing p_n)
        result = model.load_state_dict(state, strict=False)
        problems = [f"missing {k}" for k in result.missing_keys]
        problems += [f"unexpected {k}" for k in result.unexpected_keys]
    if problems:
        shown = ", ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
        hint = getattr(model, "checkpoint_hint", lambda _state: "")(state)
        raise UserError(
            f"checkpoint {path} does not match the model: {shown}" + (f"; {hint}" if hint else "")
        )


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a builder 'package.module:function', its keyword arguments and an
    optional checkpoint (a state dict); or, without a builder, a checkpoint holding the whole model,
    which its adapter loads (trusting the packages named in `trust` for its module classes)."""

    builder: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None
    adapter: str | None = None
    trust: tuple[str, ...] = ()

    def build(self) -> nn.Module:
        """The model in eval mode, with its checkpoint loaded when one is named; its weights finite."""
        model = self._build()
        require_finite(model, self.checkpoint or self.builder)
        require_variances(model, self.checkpoint or self.builder)
        return model

    def _build(self) -> nn.Module:
        if self.builder is None:
            from exporter.models.families import family

            return family(self.adapter).load(self.checkpoint, self.trust).eval()
        builder = resolve_builder(self.builder, self.trust)
        try:
            with user_modules():
                model = builder(**self.kwargs)
        except SystemExit as exc:
            raise UserError(
                f"model builder '{self.builder}' called sys.exit({exc.code!r}) instead of returning a model"
            ) from None
        except Exception as exc:  # noqa: BLE001 - the user's builder failing is bad input
            raise UserError(f"model builder '{self.builder}' raised {summary(exc)}") from None
        if not isinstance(model, nn.Module):
            raise UserError(
                f"model builder '{self.builder}' returned {type(model).__name__}, expected a torch nn.Module"
            )
        if self.checkpoint is not None:
            load_checkpoint(model, self.checkpoint)
        return model.eval()


def _first_three(tensors: list[str]) -> str:
    """The first three tensors named, and how many more."""
    return ", ".join(tensors[:3]) + (f" (+{len(tensors) - 3} more tensors)" if len(tensors) > 3 else "")


def require_finite(model: nn.Module, source: object) -> None:
    """Refuse NaN or infinite weights and statistics, naming them (before anything blames fusion)."""
    bad = []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            nan = int(torch.isnan(tensor).sum())
            bad.append(f"{name} ({nan} NaN, {int(torch.isinf(tensor).sum())} infinite of {tensor.numel()})")
    if bad:
        raise UserError(
            f"the model from {source} has non-finite weights: {_first_three(bad)}; the checkpoint is damaged "
            "or its training diverged: use an earlier checkpoint"
        )


def require_variances(model: nn.Module, source: object) -> None:
    """Refuse BatchNorm running variances below zero, naming them (a norm divides by their square root)."""
    bad = []
    for name, norm in model.named_modules():
        variance = norm.running_var if isinstance(norm, nn.modules.batchnorm._NormBase) else None
        if variance is not None and bool((variance < 0).any()):
            bad.append(f"{name}.running_var ({int((variance < 0).sum())} negative of {variance.numel()})")
    if bad:
        raise UserError(
            f"the model from {source} has negative BatchNorm variances: {_first_three(bad)}; a variance is "
            "never below 0: the checkpoint is damaged or was edited: use the file its training wrote"
        )


def probe_input(
    input_size: tuple[int, int], preprocess: Preprocess, seed: int = 0, batch: int = 2
) -> torch.Tensor:
    """Seeded random images (0–255 pixels) after `preprocess`, NCHW float32."""
    height, width = input_size
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch, 3, height, width, generator=generator) * 255.0
    return torch.from_numpy(normalize(pixels.numpy(), preprocess))
