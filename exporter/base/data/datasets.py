"""Detection datasets as users give them: a COCO instances json (or a folder holding one), or an
Ultralytics data.yaml (exporter.base.data.yolo); both load as a CocoDataset."""

from __future__ import annotations

from pathlib import Path

from exporter.base.data.coco import CocoDataset, find_split, load_coco
from exporter.base.data.yolo import is_yolo_yaml, load_yolo


def dataset_file(data: str | Path) -> Path:
    """The file that defines the dataset: the data.yaml itself, or the COCO instances json."""
    return Path(data) if is_yolo_yaml(data) else find_split(data)[0]


def load_dataset(file: str | Path, split: str = "val") -> CocoDataset:
    """A dataset from its file (dataset_file); `split` chooses a data.yaml's split."""
    return load_yolo(file, split) if is_yolo_yaml(file) else load_coco(file)
