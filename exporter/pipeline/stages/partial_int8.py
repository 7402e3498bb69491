"""Partial INT8: keep the fewest most-sensitive layers in float so that INT8 stays within an mAP budget.

Full INT8 (k = 0) is tried first; only when it misses the budget is the sensitivity ranking computed
(sensitivity.json, the costliest step: every convolution scored alone). Candidates are its
convolutions, most sensitive first, less those INT8 keeps in float anyway (the prediction
convolutions). k, the number of top candidates kept in float, is searched: k = 0, 1, 2, 4, … until
the INT8 model's mAP on the evaluation data is within the budget of the FP32 model's, then bisected
between the last failing and the first passing k. That is the fewest layers if keeping one more layer
in float never lowers mAP; every trial is recorded so that assumption can be checked.

A target's quantizer (exporter.pipeline.targets.*.quantizer) builds the trial models: OpenVINO keeps a
layer in float through NNCF's ignored scope; the TensorRT Q/DQ model by leaving the layer's Q/DQ out
(scored here by onnxruntime's Q/DQ kernels). Layers are matched to graph nodes by their weights
(exporter.base.numerics.layer_names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exporter.base.artifacts import write_json
from exporter.base.data.calibration import CalibrationSet
from exporter.base.data.transforms import Preprocess
from exporter.base.errors import CheckFailed, setting
from exporter.base.numerics import layer_names
from exporter.base.numerics.latency import side_by_side
from exporter.models.loader import probe_input
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages import reference
from exporter.pipeline.stages.graph import Record
from exporter.pipeline.stages.scoring import EvaluationSettings, Scorer
from exporter.pipeline.stages.sensitivity import ranking

LATENCY_SECONDS = 3.0  # timed per model, over 3 alternating rounds


@dataclass(frozen=True)
class Trial:
    float_layers: int
    map: float
    drop_points: float  # (FP32 mAP − this mAP) × 100

    def within(self, budget_points: float) -> bool:
        return self.drop_points <= budget_points


def search(
    evaluate: Callable[[list[int]], list[float]],
    candidates: Callable[[], int],
    reference_map: float,
    budget_points: float,
    report: Callable[[Trial], None] = lambda trial: None,
    width: int = 1,
) -> tuple[int, list[Trial]]:
    """The smallest k (top-k candidates in float) whose mAP is within the budget, and every trial;
    `candidates()` (their number) is asked only when k = 0 misses the budget. `evaluate(ks)` scores the
    trials of one round, up to `width` of them (run at once where it can): the next `width` of k = 1, 2,
    4, … until one passes, then `width` points spread over the bracket between the largest failing and the
    smallest passing k; with a width of 1, doubling then bisection. Where mAP never drops as layers go
    float, every width finds the same k."""
    trials: dict[int, Trial] = {}

    def run(ks: list[int]) -> None:
        new = [k for k in dict.fromkeys(ks) if k not in trials]
        for k, found in zip(new, evaluate(new), strict=True):
            trials[k] = Trial(k, found, 100 * (reference_map - found))
            report(trials[k])

    def passes(k: int) -> bool:
        return trials[k].within(budget_points)

    def tried() -> list[Trial]:
        return sorted(trials.values(), key=lambda t: t.float_layers)

    def unreachable(k: int) -> CheckFailed:
        return CheckFailed(
            f"INT8 accuracy budget {budget_points:g} mAP points not met: with all {k} searchable layers "
            f"in float the model is {trials[k].drop_points:.2f} points below FP32; raise "
            f"{setting('int8.accuracy_budget')} or ship FP16"
        )

    run([0])
    if passes(0):
        return 0, tried()
    count = candidates()
    if count == 0:
        raise unreachable(0)
    doubling = [min(2**i, count) for i in range(count.bit_length() + 1)]
    doubling = list(dict.fromkeys(doubling))  # 1, 2, 4, …, count
    low, high = 0, None
    while high is None:
        untried = [k for k in doubling if k > low][:width]
        run(untried)
        passing = [k for k in untried if passes(k)]
        if passing:
            high = min(passing)
            low = max([low] + [k for k in untried if k < high])
        elif untried[-1] == count:
            raise unreachable(count)
        else:
            low = untried[-1]
    while high - low > 1:
        points = sorted({low + (high - low) * (i + 1) // (width + 1) for i in range(width)} - {low, high})
        run(points)
        high = min([high] + [k for k in points if passes(k)])
        low = max([low] + [k for k in points if k < high])
    return high, tried()


@dataclass(frozen=True)
class SearchSettings:
    budget_points: float  # int8.accuracy_budget
    evaluation: EvaluationSettings
    calibration: CalibrationSet
    method: str | None  # how the target quantizes (Target.search_method)
    input_size: tuple[int, int]  # of the probe the latency is timed on
    preprocess: Preprocess
    seed: int
    sensitivity_images: int  # the ranking's (int8.sensitivity_images): it is made inside the search

    @classmethod
    def from_recipe(
        cls, recipe: Recipe, calibration: CalibrationSet, evaluation: EvaluationSettings, method: str | None
    ) -> SearchSettings:
        return cls(
            recipe.int8.accuracy_budget,
            evaluation,
            calibration,
            method,
            tuple(recipe.input_size),
            recipe.preprocess,
            recipe.seed,
            recipe.int8.sensitivity_images,
        )


def candidates(fused_pt: Path, sensitivity_json: Path, quantizer) -> tuple[dict[str, str], list[str]]:
    """Ranked torch layer -> graph node of the searchable layers, and the layers INT8 keeps in float
    anyway (the prediction convolutions)."""
    model, _ = reference.load_fused(fused_pt)
    layers = [row["layer"] for row in ranking(sensitivity_json)]
    mapping = layer_names.graph_names(layers, layer_names.torch_convs(model), quantizer.graph_index)
    searchable = {layer: node for layer, node in mapping.items() if node not in quantizer.always_float}
    return searchable, [layer for layer in mapping if layer not in searchable]


@dataclass(frozen=True)
class SearchRecord(Record):
    backend: str
    budget_points: float
    evaluation: dict[str, Any]  # the data scored and its images
    ranked: bool  # false: full INT8 met the budget, no ranking was made
    candidates: int
    fp32_map: float
    full_int8_map: float
    partial_int8_map: float
    always_float_layers: list[str]  # the prediction convolutions, float in every INT8 build
    float_layers: list[str]  # the torch layers the search keeps in float
    float_nodes: list[str]  # their graph nodes: what the INT8 stage leaves without Q/DQ
    trials: list[dict[str, Any]]
    drop_points: float
    latency_ms: dict[str, float] | None  # FP32, full and partial INT8 timed side by side
    check: dict[str, Any]  # the budget met
    speedup_kept: float | None = None  # share of full INT8's latency saving the partial model keeps
    latency_note: str | None = None  # why latency was not measured

    def describe(self) -> str:
        kept = (
            f"{len(self.float_layers)} of {self.candidates} layers kept in float"
            if self.ranked
            else "full INT8 within the budget (no layer ranking needed)"
        )
        return (
            f"{kept}; mAP FP32 {100 * self.fp32_map:.2f}, full INT8 {100 * self.full_int8_map:.2f}, partial "
            f"INT8 {100 * self.partial_int8_map:.2f} (budget {self.budget_points:g} points)"
        )


def run(
    settings: SearchSettings,
    quantizer,
    fused_pt: Path,
    sensitivity_json: Callable[[], Path],
    out: Path,
    say: Callable[[str], None] = lambda line: None,
    at_once: tuple[int, Callable[[list[list[str]]], list[float]]] | None = None,
) -> SearchRecord:
    """Search the float layers for the budget; writes and returns the record. `sensitivity_json()`
    makes the ranking, asked for only when full INT8 misses the budget. `at_once`: (width, scores) where
    `scores(float node lists)` scores that many trials at once (each in a process of its own): every
    round of the search then runs `width` trials (the same result; exporter.pipeline.targets.trials)."""
    budget = settings.budget_points
    layers: list[str] = []
    nodes: list[str] = []
    always_float: list[str] = []

    def rank() -> int:
        ranked, kept = candidates(fused_pt, sensitivity_json(), quantizer)
        layers.extend(ranked)
        nodes.extend(ranked.values())
        always_float.extend(kept)
        return len(layers)

    score = Scorer(settings.evaluation)
    fp32 = quantizer.runner(None)
    reference_map = score(fp32.infer, 1)["map"]
    say(f"int8 search ({quantizer.backend}): FP32 mAP {100 * reference_map:.2f}, budget {budget:g} points")
    # runners timed later: k = 0 and the latest trial within the budget, which is the chosen one when the
    # search ends (it only narrows); the others are dropped as soon as they are scored (models can be large)
    runners: dict[int, Any] = {}

    def evaluate(ks: list[int]) -> list[float]:
        if at_once is not None and len(ks) > 1:
            return at_once[1]([nodes[:k] for k in ks])
        for k in ks:
            runners[k] = quantizer.runner(nodes[:k])
        return [score(runners[k].infer, 1)["map"] for k in ks]

    def report(trial: Trial) -> None:
        say(
            f"  {trial.float_layers:>3} layers in float → mAP {100 * trial.map:.2f} "
            f"({-trial.drop_points:+.2f} points)"
        )
        k = trial.float_layers
        if k == 0:
            return
        stale = [j for j in runners if j not in (0, k)] if trial.within(budget) else [k]
        for j in stale:
            runners.pop(j, None)  # a trial scored in another process left none here

    width = at_once[0] if at_once is not None else 1
    chosen, trials = search(evaluate, rank, reference_map, budget, report, width)
    record: dict[str, Any] = {
        "backend": quantizer.backend,
        "budget_points": budget,
        "evaluation": {"data": str(score.dataset.annotations), "images": score.images},
        "ranked": bool(layers),  # false: full INT8 met the budget, no ranking was made
        "candidates": len(layers),
        "fp32_map": reference_map,
        "full_int8_map": trials[0].map,
        "partial_int8_map": next(t.map for t in trials if t.float_layers == chosen),
        "always_float_layers": always_float,
        "float_layers": layers[:chosen],
        "float_nodes": nodes[:chosen],
        "trials": [asdict(t) for t in trials],
    }
    record["drop_points"] = 100 * (reference_map - record["partial_int8_map"])
    if quantizer.latency_note is None:
        probe = probe_input(settings.input_size, settings.preprocess, settings.seed, batch=1).numpy()
        partial = runners[chosen] if chosen in runners else quantizer.runner(nodes[:chosen])
        quantizer.keep(partial, nodes[:chosen])  # for the target's INT8 stage, where it can take it
        compared = {"fp32": fp32, "int8_full": runners[0], "int8_partial": partial}
        timed = side_by_side(
            {name: lambda r=r: r.infer(probe) for name, r in compared.items()}, 3, LATENCY_SECONDS
        )
        timed = {name: round(ms, 3) for name, ms in timed.items()}
        saved_full = timed["fp32"] - timed["int8_full"]
        record["latency_ms"] = timed
        record["speedup_kept"] = (
            (timed["fp32"] - timed["int8_partial"]) / saved_full if saved_full > 0 else None
        )
    else:
        record["latency_ms"] = None
        record["latency_note"] = quantizer.latency_note
    write_json(out, record)
    met = {"budget_points": budget, "drop_points": record["drop_points"], "ok": True}
    return SearchRecord(**record, check=met)
