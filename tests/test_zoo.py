"""The fuser on models nobody here wrote: every timm family with re-parameterizable blocks and
Ultralytics' YOLOs, fused and proved, leaving no more BatchNorms and convolutions than each library's
own deploy path (the same rows `reparam-export bench-fuse --zoo` prints)."""

import pytest
from rich.console import Console

from exporter.measure.report import tables
from exporter.measure.studies.fuse import ZOO, ZooRow, zoo_row, zoo_summary


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
