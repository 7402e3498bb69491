"""The fuser on models nobody here wrote: every timm family with re-parameterizable blocks and
Ultralytics' YOLOs, fused and proved, leaving no more BatchNorms and convolutions than each library's
own deploy path (the same rows `reparam-export bench-fuse --zoo` prints)."""

import re

import pytest
from rich.console import Console

from exporter.base.errors import UserError
from exporter.measure.report import tables
from exporter.measure.studies.fuse import ONE_SIZE, ZOO, ZooRow, zoo_entries, zoo_row, zoo_summary


@pytest.mark.slow
@pytest.mark.parametrize("library, name, size, second", ZOO, ids=[entry[1] for entry in ZOO])
def test_field_model_is_fused_and_proved(library, name, size, second):
    pytest.importorskip(library, reason=f"pip install {library} (a test dependency)")
    row = zoo_row(library, name, size, second)
    assert row.ok and row.not_fused == [], row
    assert row.left[0] <= row.library_left[0], "no more BatchNorms left than the library's deploy path"
    assert row.left[1] <= row.library_left[1], "no more convolutions left than the library's deploy path"
    assert row.left[0] < row.before[0] or row.before[0] == row.library_left[0], "it fused something"
    if name in FOLDABLE:
        assert row.left[0] == 0, "every BatchNorm follows a convolution: none is left"


# every BatchNorm of these follows a convolution (found from the forward, whatever its attribute name,
# timm's BatchNormAct2d included), so none may be left
FOLDABLE = {"ese_vovnet19b_dw", "efficientvit_b0", "resnet18", "regnetx_002", "mobilenetv4_conv_small"}


def test_the_table_prints_the_cost_in_multiples_of_the_librarys_deploy_and_the_proofs_floor():
    """0.5 s against the library's 0.1 s is 5×; two float64 passes of 0.02 s are 0.4× (a proof's least)."""
    row = ZooRow(
        "timm", "mobilenetv4_conv_small", 64, True, 1e-6, [], 0.5, 0.1, 0.02, (0, 20), (20, 20), (20, 20)
    )
    assert row.times_library == pytest.approx(5.0) and row.floor_times_library == pytest.approx(0.4)
    console = Console(width=160, record=True)  # the width of a table piped to a file
    console.print(tables.zoo("zoo", [row]))
    text = console.export_text()
    line = next(x for x in text.splitlines() if "timm mobilenetv4_conv_small" in x)  # the name whole
    assert "5.0 (0.4)" in line and "× library" in text and "(floor: 2" in text, text


def test_the_summary_says_where_the_goal_holds_and_where_the_floor_alone_misses_it():
    """2× and 6× the library; the second's floor alone is 4×: one of two within 3×, one floor over it."""
    rows = [
        ZooRow("timm", "a", 64, True, 1e-6, [], 0.2, 0.1, 0.01, (0, 1), (0, 1), (1, 1)),
        ZooRow("timm", "b", 64, True, 1e-6, [], 0.6, 0.1, 0.2, (0, 1), (0, 1), (1, 1)),
    ]
    assert zoo_summary(rows) == (
        "fuse + proof 2.0–6.0× (median 4.0×) the library's deploy time, within 3× on 1 of 2; the floor "
        "alone over 3× on 1 (b 4.0×); fuse + proof 1.5–10.0× (median 5.8×) the floor"
    )


def test_the_zoo_at_a_detectors_own_size_takes_the_fuse_stages_second_input():
    assert zoo_entries(("yolo11n", "rtdetr-l"), 640) == (
        [("ultralytics", "yolo11n", 640, 64), ("ultralytics", "rtdetr-l", 640, 64)],
        [],
    )
    assert zoo_entries(("repvgg_a0",)) == ([("timm", "repvgg_a0", 64, 32)], []), "each model's own sizes"
    assert zoo_entries(("levit_128s",), 224) == ([("timm", "levit_128s", 224, 224)], []), "its one size"
    entries, left_out = zoo_entries((), 640)
    assert len(entries) == len(ZOO) - 3 and all(e[2:] == (640, 64) for e in entries)
    assert left_out == [f"{name} takes 224 only" for name in ONE_SIZE], "named: one size only"
    for names, size, message in [
        (("tiny_vit_5m_224", "yolo11n"), 640, "tiny_vit_5m_224 takes 224 only: leave --input-size out"),
        (("yolo12n",), None, "--model yolo12n is not in the zoo: name one of repvgg_a0, "),
        (("yolo11n",), 100, "--input-size 100 is not a multiple of 32"),
    ]:
        with pytest.raises(UserError, match=re.escape(message)):
            zoo_entries(names, size)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "yolo11n"), "--model and --input-size choose the zoo's models: add --zoo"),
        (("--zoo", "--model", "yolo12n"), "--model yolo12n is not in the zoo"),
    ],
)
def test_bench_fuse_refuses_zoo_options_it_cannot_use_in_one_line(run_cli, args, message):
    code, out, err = run_cli("bench-fuse", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_bench_fuse_prints_the_zoo_rows_asked_for_and_the_goal(run_cli):
    pytest.importorskip("ultralytics", reason="pip install ultralytics (a test dependency)")
    code, out, err = run_cli("bench-fuse", "--zoo", "--model", "yolov8n", "--input-size", "64", "--runs", "1")
    assert code == 0, err
    assert "ultralytics yolov8n" in out and "yolo11n" not in out
    assert "the library's deploy time, within 3× on " in out and " of 1; the floor alone over 3×" in out, out
