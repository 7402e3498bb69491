"""`reparam-export bench-fuse`: what fusing and proving a model costs, in forward passes of that model,
and what rebuilding the fused model from fused.pt costs against building the model.

All in one process on this machine, over alternating rounds (each round times every step once; a ratio
is taken within a round, then its median): a forward pass in FP32 and in float64 (the proof's
precision), fusion and its float64 proof on the probe and a second input, the fuse stage around them
(building the model, writing fused.pt), loading fused.pt (build the model, replay the proved rewrites,
load the weights).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from exporter.base.errors import UserError
from exporter.blocks.fuse import cast, fuse_model, proof_copy
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages import fuse, reference


@dataclass(frozen=True)
class FuseCost:
    """Seconds per call over alternating rounds (each round times every call once)."""

    model: str
    input: str
    seconds: dict[str, list[float]]  # build, forward32, forward64, fuse (+ proof), stage, load

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, name: str, unit: str) -> float:
        """The median over the rounds of `name` / `unit`, each pair timed in the same round."""
        return statistics.median(a / b for a, b in zip(self.seconds[name], self.seconds[unit], strict=True))

    def describe(self) -> str:
        m = self.median
        return (
            f"fuse + proof {m('fuse'):.2f} s = {self.ratio('fuse', 'forward32'):.1f} FP32 forward passes "
            f"({m('forward32'):.3f} s) = {self.ratio('fuse', 'forward64'):.1f} float64 forward passes "
            f"({m('forward64'):.3f} s); the whole stage (building the model, writing fused.pt too) "
            f"{m('stage'):.2f} s = {self.ratio('stage', 'forward64'):.1f} float64 passes; loading fused.pt "
            f"{m('load'):.2f} s = {self.ratio('load', 'build'):.2f} × building the model ({m('build'):.2f} s)"
        )


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(recipe: Recipe, runs: int = 3) -> FuseCost:
    """Each call timed once per round, `runs` rounds in turn: a host whose speed drifts favours none."""
    settings = fuse.FuseSettings.from_recipe(recipe)
    model = settings.source.build()
    probe = settings.probe()
    model64, probe64 = cast(settings.source.build(), torch.float64), probe.double()
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fused.pt"
        calls = {
            "build": settings.source.build,
            "forward32": torch.no_grad()(lambda: model(probe)),
            "forward64": torch.no_grad()(lambda: model64(probe64)),
            "fuse": lambda: fuse.prove(settings, model),
            "stage": lambda: fuse.run(settings, out),
            "load": lambda: reference.load_fused(out),
        }
        for _ in range(runs):
            for name, call in calls.items():
                seconds.setdefault(name, []).append(_seconds(call))
    return FuseCost(recipe.name, "x".join(map(str, probe.shape)), seconds)


# Models of the field's libraries, built without weights: (library, name, input size, second input
# size; the vision transformers of ONE_SIZE take one size only)
ZOO = [
    ("timm", "repvgg_a0", 64, 32),
    ("timm", "mobileone_s0", 64, 32),
    ("timm", "fastvit_t8", 64, 32),
    ("timm", "repghostnet_050", 64, 32),
    ("timm", "ghostnetv3_050", 64, 64),  # its pooling needs 64
    ("timm", "repvit_m0_9", 64, 32),
    ("timm", "nextvit_small", 64, 32),
    ("timm", "lcnetv2_base", 64, 32),
    ("timm", "efficientvim_m1", 64, 32),
    ("timm", "iformer_t", 64, 32),
    ("timm", "shvit_s1", 64, 32),
    ("timm", "levit_128s", 224, 224),
    ("timm", "tiny_vit_5m_224", 224, 224),
    ("timm", "efficientvit_m0", 224, 224),
    # no re-parameterizable blocks: every BatchNorm follows a convolution, under any attribute name, inside
    # timm's BatchNormAct2d (its activation inside the norm) or as a plain BatchNorm2d
    ("timm", "ese_vovnet19b_dw", 64, 32),
    ("timm", "efficientvit_b0", 64, 32),
    ("timm", "resnet18", 64, 32),
    ("timm", "regnetx_002", 64, 32),
    ("timm", "mobilenetv4_conv_small", 64, 32),
    ("ultralytics", "yolov8n", 64, 32),
    ("ultralytics", "yolo11n", 64, 32),
    ("ultralytics", "yolov9t", 64, 32),
    ("ultralytics", "rtdetr-l", 64, 32),
]

ONE_SIZE = ("levit_128s", "tiny_vit_5m_224", "efficientvit_m0")  # taking their ZOO size only


def zoo_entries(names: Sequence[str] = (), size: int | None = None) -> tuple[list[tuple], list[str]]:
    """The ZOO entries of `names` (all where none is given) at `size` and the fuse stage's second size
    for it where a size is given, and the models of ONE_SIZE left out as they take another size only
    (UserError for a name not in ZOO, a size not a multiple of the models' stride 32, or a model named
    that takes another size only)."""
    unknown = [name for name in names if name not in {entry[1] for entry in ZOO}]
    if unknown:
        known = ", ".join(entry[1] for entry in ZOO)
        raise UserError(f"--model {unknown[0]} is not in the zoo: name one of {known}")
    entries = [entry for entry in ZOO if not names or entry[1] in names]
    if size is None:
        return entries, []
    if size % 32:
        raise UserError(f"--input-size {size} is not a multiple of 32 (the models' stride): pass one that is")
    other = [f"{name} takes {own} only" for _, name, own, _ in entries if name in ONE_SIZE and own != size]
    if other and names:
        raise UserError(f"{'; '.join(other)}: leave --input-size out, or name other models with --model")
    second = fuse.second_size((size,))[0]
    kept = [
        (library, name, size, size if name in ONE_SIZE else second)
        for library, name, own, _ in entries
        if name not in ONE_SIZE or own == size
    ]
    return kept, other


@dataclass(frozen=True)
class ZooRow:
    library: str
    model: str
    input: int
    ok: bool
    ratio: float  # the float64 proof's error / tolerance
    not_fused: list[str]
    ours_s: float  # fuse + proof, the median over the rounds
    library_s: float  # the library's own deploy path, the median over the rounds
    forward64_s: float  # one float64 forward pass of the model on the first input (median of 3)
    left: tuple[int, int]  # BatchNorms and convolutions left by our fusion
    library_left: tuple[int, int]
    before: tuple[int, int]

    @property
    def times_library(self) -> float:
        """Fuse + proof in multiples of the library's deploy path."""
        return self.ours_s / self.library_s

    @property
    def floor_times_library(self) -> float:
        """The least a proof of the whole model can cost, two float64 forward passes (the model and its
        fused form, on the first input), in multiples of the library's deploy path."""
        return 2 * self.forward64_s / self.library_s


GOAL = 3.0  # fuse + proof within this many times the library's deploy time


def zoo_summary(rows: list[ZooRow]) -> str:
    """The cost over the zoo in one line: in multiples of the library's deploy time against GOAL, the
    models whose floor alone is over GOAL, and in multiples of the floor."""

    def spread(values: list[float]) -> str:
        return f"{min(values):.1f}–{max(values):.1f}× (median {statistics.median(values):.1f}×)"

    within = sum(r.times_library <= GOAL for r in rows)
    over = [f"{r.model} {r.floor_times_library:.1f}×" for r in rows if r.floor_times_library > GOAL]
    return (
        f"fuse + proof {spread([r.times_library for r in rows])} the library's deploy time, within "
        f"{GOAL:g}× on {within} of {len(rows)}; the floor alone over {GOAL:g}× on {len(over)}"
        + (f" ({', '.join(over)})" if over else "")
        + f"; fuse + proof {spread([r.times_library / r.floor_times_library for r in rows])} the floor"
    )


def zoo_model(library: str, name: str):
    """(model in eval mode with randomized BatchNorm statistics, the library's own deploy function)."""
    from exporter.models.embedded import randomize_batchnorm

    if library == "timm":
        import timm
        from timm.models._manipulate import reparameterize_model

        model, deploy = timm.create_model(name, pretrained=False, num_classes=10), reparameterize_model
    else:
        from ultralytics import RTDETR, YOLO

        model = (RTDETR if name.startswith("rtdetr") else YOLO)(f"{name}.yaml").model

        def deploy(m):
            return copy.deepcopy(m).fuse(verbose=False)

    with torch.no_grad():
        randomize_batchnorm(model, torch.Generator().manual_seed(0))
    return model.eval(), deploy


def _left(model) -> tuple[int, int]:
    from torch import nn

    norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return norms, sum(isinstance(m, nn.Conv2d) for m in model.modules())


def zoo_row(library: str, name: str, size: int, second: int, runs: int = 1) -> ZooRow:
    """Fuse one zoo model (on two inputs of other sizes and draws, as the fuse stage does) and compare
    with the library's own deploy path, each timed once per round over `runs` alternating rounds."""
    model, deploy = zoo_model(library, name)
    inputs = [
        torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(i))
        for i, s in enumerate((size, second))
    ]
    library_s, ours_s = [], []
    for _ in range(runs):
        start = time.perf_counter()
        theirs = deploy(model)
        library_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        fused, report = fuse_model(model, inputs, strict=False)  # a refuted row is tabulated
        ours_s.append(time.perf_counter() - start)
    model64, x64 = proof_copy(model), inputs[0].double()
    forward64_s = statistics.median(_seconds(torch.no_grad()(lambda: model64(x64))) for _ in range(3))
    not_fused = report.as_dict()["not_fused"]
    ratio = report.model_parity.ratio
    return ZooRow(
        library,
        name,
        size,
        report.ok,
        ratio,
        not_fused,
        statistics.median(ours_s),
        statistics.median(library_s),
        forward64_s,
        _left(fused),
        _left(theirs),
        _left(model),
    )
