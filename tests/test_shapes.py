"""The synthetic shapes dataset: deterministic, valid COCO, varied."""

import json
import threading

import numpy as np
import pytest
from filelock import FileLock

from exporter.base.artifacts import sha256_file
from exporter.base.data import shapes
from exporter.base.data.shapes import CLASSES, render, write_image, write_split


def split_hashes(root, name):
    return {p.name: sha256_file(p) for p in sorted((root / name).iterdir())} | {
        "json": sha256_file(root / f"{name}.json")
    }


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    write_split(tmp_path / "a", "val", 12, seed=2)
    write_split(tmp_path / "b", "val", 12, seed=2)
    write_split(tmp_path / "c", "val", 12, seed=5)
    assert split_hashes(tmp_path / "a", "val") == split_hashes(tmp_path / "b", "val")
    assert split_hashes(tmp_path / "a", "val")["json"] != split_hashes(tmp_path / "c", "val")["json"]


def test_valid_coco_loaded_by_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    path = write_split(tmp_path, "calib", 20, seed=3)
    coco = COCO(str(path))
    assert len(coco.getImgIds()) == 20 and len(coco.getCatIds()) == len(CLASSES)
    for ann in coco.loadAnns(coco.getAnnIds()):
        image = coco.loadImgs(ann["image_id"])[0]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= image["width"] + 0.01 and y + h <= image["height"] + 0.01
        assert w > 0 and h > 0 and ann["area"] == pytest.approx(w * h, rel=1e-3)


def test_variety(tmp_path):
    write_split(tmp_path, "val", 60, seed=2)
    content = json.loads((tmp_path / "val.json").read_text())
    sizes = np.array([max(a["bbox"][2:]) for a in content["annotations"]])
    assert {a["category_id"] for a in content["annotations"]} == set(range(1, len(CLASSES) + 1))
    assert (sizes < 24).sum() > 20, "small objects"
    assert (sizes > 70).sum() > 5, "large objects"
    assert len({(i["width"], i["height"]) for i in content["images"]}) > 30, "varied image sizes"


def test_render_is_independent_per_image():
    a, shapes_a = render(2, 7)
    b, shapes_b = render(2, 7)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert [s.polygon for s in shapes_a] == [s.polygon for s in shapes_b]


@pytest.mark.slow
def test_demo_data_writes_the_val_and_calib_splits(tmp_path, run_cli):
    code, _, err = run_cli(
        "demo-data", "--out", str(tmp_path / "shapes"), "--split", "val", "--split", "calib"
    )
    assert code == 0, err
    assert len(list((tmp_path / "shapes" / "val").iterdir())) == 500
    assert len(list((tmp_path / "shapes" / "calib").iterdir())) == 300


def test_an_image_written_alone_is_the_one_its_split_writes(tmp_path):
    write_split(tmp_path / "split", "val", 4, seed=2)
    (tmp_path / "alone").mkdir()
    record, found = write_image(tmp_path / "alone", 2, 3)
    alone, split = tmp_path / "alone" / "000003.jpg", tmp_path / "split" / "val" / "000003.jpg"
    assert sha256_file(alone) == sha256_file(split)
    listed = json.loads((tmp_path / "split" / "val.json").read_text())["images"][3]
    assert listed == {"id": 4, **record} and len(found) > 0


def test_a_split_another_process_is_writing_is_waited_for_not_written_again(tmp_path, monkeypatch):
    writes = []
    monkeypatch.setattr(shapes, "write_split", lambda root, name, count, seed: writes.append(name))
    with FileLock(tmp_path / ".calib.lock"):  # another process writing the split
        asking = threading.Thread(target=shapes.demo_split, args=("calib", tmp_path))
        asking.start()
        asking.join(timeout=2)
        assert asking.is_alive() and writes == [], "it waits for the writer"
        (tmp_path / "calib.json").write_text("{}")
    asking.join()
    assert writes == [], "and reads what the writer wrote"
    shapes.demo_split("val", tmp_path)
    assert writes == ["val"]
