"""DAMO-YOLO pre/post-processing on hand-made inputs with known answers."""

import numpy as np
import pytest
import torch

from exporter.base.data.transforms import resize_stretch, to_image
from exporter.models.damoyolo.postprocess import decode, nms_detections
from exporter.models.heads import Head, multiclass_nms


def test_preprocess_stretches_bilinear_keeps_rgb_and_0_255():
    image = np.zeros((1, 2, 3), dtype=np.uint8)
    image[0, 1] = (100, 200, 40)  # one red/green/blue pixel right of a black one
    out = resize_stretch(image, (2, 4))
    assert out.dtype == np.float32 and out.shape == (3, 2, 4)
    # half-pixel centres: sources x = -0.25, 0.25, 0.75, 1.25 (clamped) → weights 0, 1/4, 3/4, 1
    np.testing.assert_array_equal(out[0], [[0, 25, 75, 100]] * 2)
    np.testing.assert_array_equal(out[1], [[0, 50, 150, 200]] * 2)
    np.testing.assert_array_equal(out[2], [[0, 10, 30, 40]] * 2)
    same = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    np.testing.assert_array_equal(resize_stretch(same, (4, 4)), same.transpose(2, 0, 1))


@pytest.mark.parametrize("size", [(96, 128), (320, 320), (41, 17), (700, 500)])
def test_resize_is_torchs_bilinear_whatever_the_thread_count(size):
    """The same pixels with one thread or two (torch's own kernel rounds differently with them), and
    torch's bilinear resize but for the rare pixel its float32 rounding puts across a half level."""
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = resize_stretch(image, size)
        torch.set_num_threads(2)
        assert np.array_equal(one, resize_stretch(image, size))
    finally:
        torch.set_num_threads(threads)
    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    expected = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    expected = expected[0].round().clamp(0, 255).numpy()
    differ = one != expected
    assert np.abs(one - expected).max() <= 1 and differ.mean() < 1e-3


def test_preprocess_rejects_non_rgb():
    with pytest.raises(ValueError, match="HxWx3 RGB"):
        resize_stretch(np.zeros((4, 4), dtype=np.uint8), (4, 4))


def one_hot_logits(bins_per_side, reg_max):
    """Box logits (4·(reg_max+1),) whose softmax is (numerically) one-hot at the given bins (l, t, r, b)."""
    logits = torch.zeros(4, reg_max + 1)
    for side, b in enumerate(bins_per_side):
        logits[side, b] = 50.0
    return logits.reshape(-1)


def test_decode_priors_distances_and_order():
    reg_max, stride = 2, 8
    # one level, 1 row x 2 columns; column 1 has prior (8, 0) (no +0.5 offset)
    reg = torch.zeros(1, 4 * (reg_max + 1), 1, 2)
    reg[0, :, 0, 1] = one_hot_logits((1, 0, 2, 1), reg_max)  # distances 8, 0, 16, 8
    # column 0: uniform logits → expectation of bins 0, 1, 2 = 1 → 8 px on every side of (0, 0)
    scores = torch.tensor([[[[0.1, 0.9]], [[0.2, 0.3]]]])  # (1, C=2, 1, 2)
    out_scores, boxes = decode([scores], [reg], reg_max, strides=(stride,))
    torch.testing.assert_close(out_scores, torch.tensor([[[0.1, 0.2], [0.9, 0.3]]]))
    torch.testing.assert_close(boxes, torch.tensor([[[-8.0, -8.0, 8.0, 8.0], [0.0, 0.0, 24.0, 8.0]]]))


def test_decode_concatenates_levels_row_major_with_their_strides():
    reg_max = 1
    maps = []
    for h, w in [(2, 2), (1, 1)]:
        reg = torch.full((1, 4 * (reg_max + 1), h, w), -50.0)
        reg[:, 0::2] = 50.0  # every side at bin 0: zero-size boxes at the priors
        maps.append(reg)
    scores = [torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1)]
    _, boxes = decode(scores, maps, reg_max, strides=(8, 16))
    priors = [[0, 0], [8, 0], [0, 8], [8, 8], [0, 0]]
    torch.testing.assert_close(boxes[0], torch.tensor([p + p for p in priors], dtype=torch.float32))


BOXES = torch.tensor(
    [
        [0.0, 0.0, 10.0, 10.0],  # A
        [1.0, 0.0, 11.0, 10.0],  # B: IoU(A, B) = 90/110 = 0.82
        [5.0, 0.0, 15.0, 10.0],  # C: IoU(A, C) = 50/150 = 0.33
        [50.0, 50.0, 60.0, 60.0],  # D
    ]
)
SCORES = torch.tensor(  # (anchors, classes)
    [
        [0.9, 0.6],
        [0.8, 0.05],  # class 1 exactly at the threshold: dropped (score > threshold)
        [0.7, 0.0],
        [0.04, 0.5],
    ]
)


def test_multiclass_nms_known_answer():
    boxes, scores, labels = multiclass_nms(SCORES, BOXES, 0.05, 0.7, 500)
    # class 0: A 0.9 keeps, B suppressed by A (0.82 > 0.7), C kept (0.33); D below threshold
    # class 1: A 0.6 and D 0.5 kept (multi-label: A appears for both classes)
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.7, 0.6, 0.5]))
    assert labels.tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(boxes, BOXES[[0, 2, 0, 3]])
    assert multiclass_nms(SCORES, BOXES, 0.05, 0.85, 500)[1].tolist() == pytest.approx(
        [0.9, 0.8, 0.7, 0.6, 0.5]
    )
    assert multiclass_nms(SCORES, BOXES, 0.05, 0.7, 2)[1].tolist() == pytest.approx([0.9, 0.7])


def test_rescale_to_original_size():
    boxes = torch.tensor([[64.0, 64.0, 320.0, 640.0]])
    out = to_image(boxes, (640, 640), (480, 320), "stretch")  # original height 480, width 320
    torch.testing.assert_close(out, torch.tensor([[32.0, 48.0, 160.0, 480.0]]))


def test_batched_end_to_end_nms_matches_per_image_nms_and_caps_per_image():
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 60, 2, generator=generator) * 50
    wh = torch.rand(2, 60, 2, generator=generator) * 30 + 5
    boxes = torch.cat([xy, xy + wh], -1)
    scores = torch.rand(2, 60, 3, generator=generator)
    for top_k in (500, 4):
        rows = nms_detections(scores, boxes, 0.3, 0.5, top_k)
        keys = (rows[:, 0] * 3 + rows[:, 6]).tolist()
        assert keys == sorted(keys), "rows are grouped by image, then class"
        for b in range(2):
            mine = rows[rows[:, 0] == b]
            mine = mine[torch.argsort(mine[:, 5], descending=True)]
            kept_boxes, kept_scores, labels = multiclass_nms(scores[b], boxes[b], 0.3, 0.5, top_k)
            torch.testing.assert_close(mine[:, 5], kept_scores)
            torch.testing.assert_close(mine[:, 1:5], kept_boxes)
            assert mine[:, 6].long().tolist() == labels.tolist()
        if top_k == 4:
            assert len(rows) == 8


def test_postprocess_every_head_mode_gives_the_same_detections():
    scores = SCORES[None]
    boxes = BOXES[None]
    head = Head.of("decoded", score_threshold=0.05, iou_threshold=0.7, reg_max=16)
    args = ((100, 100), [(200, 50)])
    decoded = head.postprocess([scores.numpy(), boxes.numpy()], *args)[0]
    rows = nms_detections(scores, boxes, 0.05, 0.7, 500)
    end_to_end = Head.of("nms", 0.05, 0.7).postprocess([rows.numpy()], *args)[0]
    # EfficientNMS_TRT's outputs for the same detections, padded to 8 rows past num_dets
    count = len(rows)
    pad = lambda a, width: np.concatenate([a, np.full((8 - count, *a.shape[1:]), width, a.dtype)])  # noqa: E731
    engine = [
        np.array([[count]], np.int32),
        pad(rows[:, 1:5].numpy(), -1.0)[None],
        pad(rows[:, 5].numpy(), -1.0)[None],
        pad(rows[:, 6].numpy().astype(np.int32), -1)[None],
    ]
    engine_nms = head.engine_nms().postprocess(engine, *args)[0]
    assert len(engine_nms.scores) == count, "rows past num_dets are padding"
    for det in (decoded, end_to_end, engine_nms):
        np.testing.assert_allclose(det.scores, [0.9, 0.7, 0.6, 0.5], rtol=1e-6)
        assert det.labels.tolist() == [0, 0, 1, 1]
        np.testing.assert_allclose(det.boxes[1], [5 * 0.5, 0, 15 * 0.5, 20])  # x × 50/100, y × 200/100
    with pytest.raises(ValueError, match="unknown head mode 'boxes'"):
        Head.of("boxes", 0.05, 0.7)
