"""COCO evaluation of any runner with the recipe's data, preprocessing and the model adapter's
post-processing (used by the INT8 accuracy search and by `reparam-export eval`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from exporter.base.artifacts import sha256_file, sha256_json
from exporter.base.data.coco_map import KEPT_BYTES, ResizedImages, detect, for_model, scored, scored_samples
from exporter.base.data.datasets import dataset_file, load_dataset
from exporter.base.data.transforms import Preprocess, normalize
from exporter.base.errors import UserError, setting
from exporter.models.families import family
from exporter.models.heads import Head
from exporter.pipeline.recipe import Recipe

DEMO_DATA = "demo"


def evaluation_source(data: str | Path | None) -> Path:
    """The dataset named by `data` ('demo': the demo val split, generated on first use)."""
    if data is None:
        raise UserError(
            f"no evaluation data: pass {setting('evaluation.data')} or set evaluation.data in the recipe"
        )
    if str(data) == DEMO_DATA:
        from exporter.base.data.shapes import demo_split

        return demo_split("val")
    if not Path(data).exists():
        raise UserError(
            f"evaluation data not found: {data}; pass a COCO json or folder, or an Ultralytics data.yaml, "
            f"with {setting('evaluation.data')}"
        )
    return Path(data)


@dataclass(frozen=True)
class EvaluationSettings:
    data: str  # as named: a COCO json or folder, an Ultralytics data.yaml (its val split), or 'demo'
    annotations: Path  # the file that defines it (instances json or data.yaml)
    limit: int | None  # only the first `limit` images
    head: Head  # the adapter's output contract
    input_size: tuple[int, int]
    preprocess: Preprocess
    class_names: tuple[str, ...]  # the model's, matched to the dataset's category names (none: by position)

    @classmethod
    def from_recipe(
        cls, recipe: Recipe, data: str | Path | None = None, limit: int | None = None
    ) -> EvaluationSettings:
        """`data` and `limit` override the recipe's evaluation.data and evaluation.limit."""
        named = data or recipe.evaluation.data
        annotations = dataset_file(evaluation_source(named))
        return cls(
            str(named),
            annotations,
            limit or recipe.evaluation.limit,
            family(recipe.model.adapter).head(recipe.model.ref()),
            tuple(recipe.input_size),
            recipe.preprocess,
            model_class_names(recipe),
        )


def model_class_names(recipe: Recipe) -> tuple[str, ...]:
    """The recipe's class_names, else those the model's checkpoint holds (its adapter reads them)."""
    if recipe.class_names:
        return tuple(recipe.class_names)
    return tuple(family(recipe.model.adapter).names(recipe.model.ref()))


class Scorer:
    """`scorer(infer, batch)` -> COCO stats (mAP, …) of a runner on the evaluation data; `category_matching`
    says how the dataset's categories were matched to the model's classes."""

    def __init__(self, settings: EvaluationSettings, progress: bool = False, kept_bytes: int = KEPT_BYTES):
        """`kept_bytes`: how much of the scored images it keeps resized for the next model it scores (0 for
        a scorer of one model)."""
        self.settings, self.kept_bytes = settings, kept_bytes
        self.dataset, self.category_matching = for_model(
            load_dataset(settings.annotations), settings.class_names
        )
        self.progress = progress

    @functools.cached_property
    def samples(self) -> list:
        """The images scored: the dataset's, or its first `limit`."""
        return scored_samples(self.dataset, self.settings.limit)

    @property
    def images(self) -> int:
        return len(self.samples)

    @functools.cached_property
    def inputs(self) -> ResizedImages:
        """The scored images as model inputs, read and resized once for every model this scorer scores."""
        return ResizedImages(self.settings.input_size, self.settings.preprocess.resize, self.kept_bytes)

    @functools.cached_property
    def data_sha256(self) -> str:
        """What is scored: the annotations (images, boxes, categories) and the bytes of every image scored."""
        return sha256_json(
            {"annotations": self.dataset.content, "images": [sha256_file(s.path) for s in self.samples]}
        )

    def __call__(self, infer, batch: int, head: Head | None = None) -> dict[str, float]:
        """`head` overrides the model's (e.g. an end-to-end NMS engine's outputs)."""
        return self.stats(self.detections(infer, batch, head))

    def detections(
        self, infer, batch: int, head: Head | None = None, start: int = 0, stop: int | None = None
    ) -> list[dict]:
        """The runner's COCO result records on the scored images [start, stop) (all by default)."""
        settings = self.settings
        head = head or settings.head
        resize = settings.preprocess.resize
        return detect(
            self.dataset,
            self.samples[start:stop],
            infer,
            lambda outputs, sizes: head.postprocess(outputs, settings.input_size, sizes, resize),
            self.inputs,
            lambda p: normalize(p, settings.preprocess),
            batch,
            self.progress,
        )

    def stats(self, results: list[dict]) -> dict[str, float]:
        """COCO stats of the result records of every scored image."""
        return scored(self.dataset, results, self.samples)
