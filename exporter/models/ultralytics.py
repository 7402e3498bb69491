"""Ultralytics YOLO checkpoints (`runs/train/<name>/weights/best.pt`): read without running their pickle,
and their models in export form.

A checkpoint is a pickled dict whose `model` (or `ema`) is the module, saved in FP16. It is read in two
steps: the pickle's globals are listed without executing anything; each must be a module class
(nn.Module) of torch, of ultralytics or of a package the user trusts by name (a fork's custom blocks);
then torch's weights-only unpickler loads it with exactly those classes allowed, each only as torch pickles
a module: created without calling its constructor, then its state set. Anything else — a function,
`os.system`, a class from an unnamed package, a module class called with the file's arguments
(AutoBackend('inner.pt') would load inner.pt) — is refused by name, and nothing of it runs.

Heads in export form (the output contract, exporter.models.heads): Detect (YOLOv8/YOLO11/YOLOv9)
gives (N, 4 + C, A) — centre/size boxes in input pixels, then sigmoid class scores — and needs NMS;
the end-to-end heads of YOLOv10 and YOLO26 give (N, K, 6) rows [x1, y1, x2, y2, score, class], NMS-free.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import inspect
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exporter.base.artifacts import sha256_file
from exporter.base.errors import UserError, setting, summary
from exporter.base.libraries import Library
from exporter.models.family import Family, ModelRef
from exporter.models.heads import Head
from exporter.models.user_code import in_standard_library, user_modules

EXPORT_FORMAT = "onnx"
LIBRARY = Library(
    "ultralytics",
    "ultralytics",
    "Ultralytics checkpoints (--model best.pt)",
    "pip install 'reparam-export[ultralytics]'",
)


def _allowed(name: str, path: Path, trusted: tuple[str, ...]) -> type:
    """The class a checkpoint global names, if it may be unpickled (else a one-line refusal)."""
    module_name, _, attribute = name.rpartition(".")
    package = module_name.split(".")[0]
    if in_standard_library(package):
        raise UserError(
            f"{path} needs {name}, from Python's standard library, which a model's checkpoint never needs: "
            "refused, nothing of it ran"
        )
    if package not in ("torch", "ultralytics", *trusted):
        raise UserError(
            f"{path} needs {name} to load, from the package '{package}', which is not trusted; if it is "
            f"your own (a fork's custom blocks), pass {setting('model.trust', package)}"
        )
    try:
        with user_modules():  # a trusted fork may live in the current directory
            found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        if importlib.util.find_spec(package) is not None:  # installed: the class was renamed or moved
            raise UserError(
                f"{path} needs {name}, which the installed {package} does not have (renamed or moved since "
                f"the checkpoint was saved: {summary(exc)}); load it with the version that trained it"
            ) from None
        hint = LIBRARY.hint if package == "ultralytics" else "install it"
        raise UserError(f"{path} needs {name}, which cannot be imported ({summary(exc)}); {hint}") from None
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise UserError(
            f"{path} needs {name}, which is not a module class: a model checkpoint holds modules and "
            "tensors only; it was refused and nothing of it ran"
        )
    return found


def read_checkpoint(path: Path, trusted: tuple[str, ...] = ()) -> dict[str, Any]:
    """The checkpoint dict, loaded with torch's weights-only unpickler and the classes it needs allowed.
    Unpickled once per content and trusted packages in a process (a build asks for it several times:
    recipe, fusion, head, metadata), and that one copy is what every caller reads: never change it
    (`load` gives each caller a model of its own)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"checkpoint not found: {path}; pass an existing file with {setting('model.checkpoint')}"
        )
    return _unpickled(path, sha256_file(path), tuple(trusted))


GETATTR = "builtins.getattr"  # how a pickle names a method it holds (a hook the training code registered)
# what reading the checkpoint has to say, kept in the dict read_checkpoint returns
NOTES = "reparam_export_notes"


# the key a module class itself is allowed under: no pickle can name it (a pickle's global is one line)
UNNAMEABLE = "\n(state only)"


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _rebuilt_only(cls: type, path: Path) -> type:
    """What the checkpoint gets under module class `cls`'s name: a stand-in that makes a `cls` the way torch
    pickles a module (`cls.__new__(cls)`, its state set afterwards) and refuses, before anything of `cls`
    runs, to be called as its constructor with the file's arguments. A subclass of `cls`, so that a method
    the file takes of it (a hook, `_method_getter`) is `cls`'s."""

    def refuse(*_args, **_kwargs):
        raise UserError(
            f"{path} calls the constructor {_name(cls)}(…): a checkpoint's modules are rebuilt from their "
            "state, never constructed by the file; refused, nothing of it ran"
        )

    def new(_stand_in, *args):
        if args:
            refuse()
        return cls.__new__(cls)

    meta = type(f"RebuiltOnly{type(cls).__name__}", (type(cls),), {"__call__": refuse})
    return meta(
        cls.__name__, (cls,), {"__new__": new, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    )


def _method_getter(classes: dict[type, type], path: Path, taken: list[str]):
    """The checkpoint's `getattr`, narrowed: a method defined by one of the module classes it was allowed
    (`classes`: stand-in -> class; the official AKConv registers its staticmethod `_set_lr` as a backward
    hook, pickled as getattr(AKConv, '_set_lr')), taken by name and returned, never called; anything else
    is refused."""

    def method_of(owner, name):
        owner = classes.get(owner, owner) if isinstance(owner, type) else owner
        cls = owner if isinstance(owner, type) else type(owner)
        found = inspect.getattr_static(cls, name, None) if isinstance(name, str) else None
        method = isinstance(found, (types.FunctionType, staticmethod, classmethod))
        if cls not in classes.values() or not method or name.startswith("__"):
            raise UserError(
                f"{path} takes {name!r} of {getattr(cls, '__qualname__', cls)!r} by getattr, which is not a "
                "method of a module class it may load: refused, nothing of it ran"
            )
        taken.append(f"{_name(cls)}.{name}")
        return getattr(owner, name)

    return method_of


@functools.lru_cache(maxsize=2)
def _unpickled(path: Path, sha256: str, trusted: tuple[str, ...]) -> dict[str, Any]:
    """read_checkpoint's unpickling, keyed by the file's content (`sha256`): a changed file is read again."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # noqa: BLE001 - not a torch file at all
        raise UserError(f"{path} is not a torch checkpoint ({summary(exc)})") from None
    classes = {
        _rebuilt_only(cls, path): cls for cls in (_allowed(n, path, trusted) for n in names if n != GETATTR)
    }
    taken: list[str] = []
    allowed: list = [
        *((stand_in, _name(cls)) for stand_in, cls in classes.items()),
        *((cls, _name(cls) + UNNAMEABLE) for cls in classes.values()),
        *([(_method_getter(classes, path, taken), GETATTR)] if GETATTR in names else []),
    ]
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file
        raise UserError(f"{path} cannot be loaded ({summary(exc)})") from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path} is not an Ultralytics checkpoint (a dict with 'model' or 'ema')")
    if taken:
        methods = ", ".join(sorted(set(taken)))
        checkpoint[NOTES] = [
            f"{path.name} holds {methods} (a hook its training code registered): kept as that method, "
            "nothing of it called"
        ]
    return checkpoint


def trained_module(checkpoint: dict[str, Any], path: Path) -> nn.Module:
    """The trained module of a checkpoint (its EMA where the trainer kept one), as it was saved."""
    model = checkpoint.get("ema") or checkpoint.get("model")
    if not isinstance(model, nn.Module):
        raise UserError(f"{path} holds no model (neither 'model' nor 'ema' is a module)")
    return model


def export_form(model: nn.Module) -> nn.Module:
    """Heads in export form: decoded outputs alone. A head with both branches (YOLOv10, YOLO26) keeps the
    one the checkpoint selects (`end2end`), as Ultralytics' own exporter and validator do by default:
    one-to-many with NMS unless the model was set end to end (`model.end2end = True`: one-to-one top-k)."""
    from ultralytics.nn.modules.head import Detect, RTDETRDecoder

    for module in model.modules():
        if isinstance(module, (Detect, RTDETRDecoder)):
            module.export, module.format, module.dynamic = True, EXPORT_FORMAT, False
    return model


def load(checkpoint: Path, trusted: tuple[str, ...] = ()) -> nn.Module:
    """An Ultralytics checkpoint's model, the caller's own copy, in FP32, eval mode and export form."""
    saved = trained_module(read_checkpoint(checkpoint, trusted), checkpoint)
    return export_form(copy.deepcopy(saved).float().eval())


def saved_model(checkpoint: Path, trusted: tuple[str, ...] = ()) -> nn.Module:
    """The checkpoint's trained module as saved, to read its attributes (head, stride, names) without
    copying it: the process's one copy, never change it."""
    return trained_module(read_checkpoint(checkpoint, trusted), checkpoint)


def export_metadata(model: nn.Module, names: list[str], input_size: tuple[int, int]) -> dict[str, Any]:
    """What Ultralytics' predictor reads of an export (its ONNX metadata_props, the metadata.yaml beside
    an OpenVINO IR): task, stride, input size, class names and whether the head is end to end."""
    stride = getattr(model, "stride", None)
    return {
        "author": "reparam-export",
        "task": "detect",
        "stride": int(max(stride)) if stride is not None else 32,
        "batch": 1,
        "imgsz": [int(v) for v in input_size],
        "names": dict(enumerate(names)),
        "channels": 3,
        "end2end": head_mode(model) != "yolo",
        "args": {"batch": 1, "dynamic": False, "nms": False},
    }


def head_mode(model: nn.Module) -> str:
    """The output contract of the model's head (exporter.models.heads)."""
    from ultralytics.nn.modules.head import Detect, RTDETRDecoder

    if any(isinstance(m, RTDETRDecoder) for m in model.modules()):
        return "rtdetr"
    end2end = any(isinstance(m, Detect) and getattr(m, "end2end", False) for m in model.modules())
    return "yolo_end2end" if end2end else "yolo"


def recipe_fields(checkpoint: Path, trusted: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the checkpoint says of itself: input size (its training imgsz, where it records one), class
    names, preprocessing (Ultralytics': letterbox, RGB, /255)."""
    content = read_checkpoint(checkpoint, trusted)
    model = trained_module(content, checkpoint)
    args = content.get("train_args") or getattr(model, "args", None) or {}
    size = args.get("imgsz") if isinstance(args, dict) else None
    names = getattr(model, "names", None) or {}
    fields: dict[str, Any] = {
        "class_names": [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names),
        "preprocess": {"color": "rgb", "resize": "letterbox", "scale": 1 / 255},
    }
    if size is not None:  # absent from files YOLO.save() wrote and older layouts: then the user says it
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        fields["input_size"] = [int(height), int(width)]
    return fields


ULTRALYTICS_CONF, ULTRALYTICS_IOU, ULTRALYTICS_MAX_DET = 0.001, 0.7, 300  # its validation defaults


class UltralyticsFamily(Family):
    """Ultralytics checkpoints: the whole model in the checkpoint, with its class names; its predictor
    reads a metadata file beside an export."""

    name = "ultralytics"
    libraries = (LIBRARY,)
    loads_checkpoints = True

    def head(self, model: ModelRef) -> Head:
        """Detect: NMS at Ultralytics' validation thresholds; YOLOv10/YOLO26 end to end and RT-DETR: none."""
        mode = head_mode(saved_model(model.checkpoint, model.trust))
        return Head.of(mode, ULTRALYTICS_CONF, ULTRALYTICS_IOU, max_detections=ULTRALYTICS_MAX_DET)

    def load(self, checkpoint: Path, trust: tuple[str, ...]) -> nn.Module:
        return load(checkpoint, trust)

    def names(self, model: ModelRef) -> list[str]:
        return recipe_fields(model.checkpoint, model.trust)["class_names"]

    def metadata(self, model: ModelRef, names: list[str], input_size: tuple[int, int]) -> dict[str, Any]:
        return export_metadata(saved_model(model.checkpoint, model.trust), names, input_size)

    def notes(self, model: ModelRef) -> list[str]:
        return list(read_checkpoint(model.checkpoint, model.trust).get(NOTES, []))


FAMILY = UltralyticsFamily()
