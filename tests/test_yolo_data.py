"""Ultralytics' data as users keep it: letterbox preprocessing (placement and boxes mapped back, as
Ultralytics computes them) and data.yaml datasets (splits, labels, each bad input in one line)."""

import numpy as np
import pytest
import torch
from PIL import Image

from exporter.base.data.calibration import list_images
from exporter.base.data.coco_map import Detections, evaluate
from exporter.base.data.transforms import PAD_VALUE, letterbox_fit, resize_letterbox, to_image
from exporter.base.data.yolo import label_path, load_yolo
from exporter.base.errors import UserError

# (image height, width, model input height, width) → (gain, resized height, width, top, left), by hand
CASES = {
    (100, 200, 64, 64): (0.32, 32, 64, 16, 0),
    (200, 100, 64, 64): (0.32, 64, 32, 0, 16),
    (30, 30, 64, 96): (64 / 30, 64, 64, 0, 16),
    (101, 50, 64, 64): (64 / 101, 64, 32, 0, 16),  # width 31.68 rounds to 32
    (37, 100, 64, 64): (0.64, 24, 64, 20, 0),  # 23.68 → 24; (64 − 24)/2 = 20
    (45, 100, 64, 64): (0.64, 29, 64, 17, 0),  # 28.8 → 29; 17.5 − 0.1 rounds to 17, bottom gets 18
}


@pytest.mark.parametrize("case", CASES)
def test_letterbox_placement_by_hand(case):
    h, w, height, width = case
    gain, rh, rw, top, left = CASES[case]
    got_gain, resized, got_top, got_left = letterbox_fit((h, w), (height, width))
    assert got_gain == pytest.approx(gain) and resized == (rh, rw) and (got_top, got_left) == (top, left)
    image = np.full((h, w, 3), 200, np.uint8)
    pixels = resize_letterbox(image, (height, width))
    assert pixels.shape == (3, height, width)
    inside = np.zeros((height, width), bool)
    inside[top : top + rh, left : left + rw] = True
    assert (pixels[:, inside] == 200).all() and (pixels[:, ~inside] == PAD_VALUE).all()


@pytest.mark.parametrize("case", CASES)
def test_boxes_map_back_to_the_image(case):
    h, w, height, width = case
    _, rh, rw, top, left = CASES[case]
    in_image = torch.tensor([[0.0, 0.0, w, h], [w * 0.25, h * 0.5, w * 0.5, h * 0.75]], dtype=torch.float64)
    scale = torch.tensor([rw / w, rh / h] * 2, dtype=torch.float64)  # each axis by the resized image
    in_input = in_image * scale + torch.tensor([left, top] * 2, dtype=torch.float64)
    back = to_image(in_input, (height, width), (h, w), "letterbox")
    torch.testing.assert_close(back, in_image, atol=1e-9, rtol=0)
    outside = torch.tensor([[-50.0, -50.0, width + 50, height + 50]], dtype=torch.float64)
    assert to_image(outside, (height, width), (h, w), "letterbox").tolist() == [[0, 0, w, h]], "clipped"
    stretched = to_image(torch.tensor([[0.0, 0.0, width, height]]), (height, width), (h, w), "stretch")
    assert stretched.tolist() == [[0, 0, w, h]]


def test_placement_and_boxes_agree_with_ultralytics():
    augment = pytest.importorskip(
        "ultralytics.data.augment", reason="pip install 'reparam-export[ultralytics]'"
    )
    from ultralytics.utils.ops import scale_boxes

    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 900, 2))
        size = tuple(int(v) * 32 for v in rng.integers(1, 21, 2))
        params = augment.LetterBox(size, auto=False).get_params({"img": np.zeros((h, w, 3), np.uint8)})
        _, resized, top, left = letterbox_fit((h, w), size)
        assert resized == params["new_unpad"][::-1] and (top, left) == (params["top"], params["left"])
        boxes = torch.tensor(rng.uniform(0, max(size), (4, 4)))
        theirs = scale_boxes(size, boxes.clone(), (h, w))
        torch.testing.assert_close(to_image(boxes, size, (h, w), "letterbox"), theirs)


def write_dataset(root, labels=None, names="[a, b]", val="images/val"):
    """Two val images (one without a label file: background) and two train images."""
    for split, sizes in (("val", [(40, 80), (50, 50)]), ("train", [(30, 30), (30, 40)])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for index, (h, w) in enumerate(sizes):
            Image.new("RGB", (w, h), (90, 90, 90)).save(root / "images" / split / f"{index}.jpg")
    (root / "labels" / "val" / "0.txt").write_text(
        labels if labels is not None else "1 0.5 0.5 0.5 0.25\n\n0 0.1 0.2 0.3 0.2 0.2 0.4\n"
    )
    (root / "data.yaml").write_text(f"train: images/train\nval: {val}\nnames: {names}\n")
    return root / "data.yaml"


def test_a_data_yaml_reads_as_ultralytics_reads_it(tmp_path):
    dataset = load_yolo(write_dataset(tmp_path))
    assert dataset.class_names == ["a", "b"] and [s.path.name for s in dataset.samples] == ["0.jpg", "1.jpg"]
    first, background = dataset.samples
    assert (first.height, first.width) == (40, 80) and len(background.boxes) == 0
    np.testing.assert_allclose(first.boxes, [[20, 15, 60, 25], [8, 8, 24, 16]], atol=1e-4)
    assert first.labels.tolist() == [1, 0], "a segment line becomes its bounding box"
    assert label_path(tmp_path / "images" / "val" / "0.jpg") == tmp_path / "labels" / "val" / "0.txt"
    assert [p.name for p in list_images(tmp_path / "data.yaml")] == ["0.jpg", "1.jpg"], "calibration: train"
    assert list_images(tmp_path / "data.yaml")[0].parent.name == "train"


def test_names_as_a_mapping_and_a_split_as_a_list_file(tmp_path):
    path = write_dataset(tmp_path, names="{0: a, 1: b}", val="val.txt")
    (tmp_path / "val.txt").write_text("./images/val/0.jpg\n")
    dataset = load_yolo(path)
    assert dataset.class_names == ["a", "b"] and len(dataset.samples) == 1


BAD = {
    "class out of range": ("2 0.5 0.5 0.1 0.1\n", "0.txt:1: class 2 is out of range: the data.yaml names 2"),
    "malformed line": ("1 0.5 0.5 0.1 0.1\n0 0.5 0.5\n", "0.txt:2: 3 values; a line is 'class cx cy w h'"),
    "not numbers": ("1 0.5 0.5 0.1 0.1\n0 a b c d\n", "0.txt:2: not numbers"),
    "not normalized": ("0 50 50 10 10\n", "0.txt:1: coordinates outside 0–1"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_label_line_is_named_by_file_and_line(tmp_path, case):
    labels, message = BAD[case]
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_yolo(write_dataset(tmp_path, labels))


def test_bad_datasets_are_refused_in_one_line(tmp_path):
    path = write_dataset(tmp_path)
    for folder in (tmp_path / "labels" / "val", tmp_path / "labels" / "train"):
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    with pytest.raises(UserError, match="no labels folder for the 'val' images"):
        load_yolo(path)
    for file in (tmp_path / "images" / "val").iterdir():
        file.unlink()
    with pytest.raises(UserError, match="the 'val' split holds no images"):
        load_yolo(path)
    path.write_text("train: images/train\nnames: [a]\n")
    with pytest.raises(UserError, match="no 'val:' split"):
        load_yolo(path)
    path.write_text("val: images/nowhere\nnames: [a]\n")
    with pytest.raises(UserError, match="the 'val' images .*nowhere do not exist"):
        load_yolo(path)
    path.write_text("val: images/val\nnc: 3\nnames: [a, b]\n")
    with pytest.raises(UserError, match="'nc: 3' and the 2 'names' disagree"):
        load_yolo(path)


def test_an_oracle_scores_one_through_letterbox(tmp_path):
    """Ground truth placed in the letterboxed input, mapped back by the letterbox rule, scores 1.0."""
    dataset = load_yolo(write_dataset(tmp_path, "1 0.5 0.5 0.5 0.25\n0 0.2 0.3 0.2 0.3\n"))
    size = (64, 96)
    order = iter(dataset.samples)

    def infer(batch):
        assert batch.shape[1:] == (3, *size)
        return [next(order) for _ in range(len(batch))]

    def postprocess(samples, image_sizes):
        out = []
        for sample, (h, w) in zip(samples, image_sizes, strict=True):
            _, (rh, rw), top, left = letterbox_fit((h, w), size)
            scale, pad = torch.tensor([rw / w, rh / h] * 2), torch.tensor([left, top] * 2)
            at_input = torch.as_tensor(sample.boxes, dtype=torch.float64) * scale + pad
            boxes = to_image(at_input, size, (h, w), "letterbox").numpy()
            out.append(Detections(boxes, np.ones(len(boxes)), sample.labels))
        return out

    metrics = evaluate(dataset, infer, postprocess, size, batch=1, progress=False, resize_mode="letterbox")
    assert metrics["map"] == pytest.approx(1.0)
