"""README's figures are those `reparam-export figures` measured (reports/figures.md), block for block;
the blocks parse back (replace_blocks round-trips)."""

from pathlib import Path

import pytest

from exporter.base import host
from exporter.base.errors import CheckFailed
from exporter.measure.studies.figures import (
    SECTIONS,
    blocks,
    measured_under,
    read_table,
    regenerate,
    replace_blocks,
    table,
)

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "reports" / "figures.md"


def test_readme_quotes_the_measured_figures_verbatim():
    measured = blocks(FIGURES.read_text())
    quoted = blocks((REPO / "README.md").read_text())
    assert set(measured) == set(SECTIONS), "every section measured"
    assert set(quoted) == set(SECTIONS), "every section quoted in README"
    for name in SECTIONS:
        assert quoted[name] == measured[name], f"README's {name} block differs from {FIGURES}"


def test_blocks_are_replaced_in_place():
    text = (
        "intro\n<!-- figures:demo -->\nold\n<!-- /figures:demo -->\n"
        "after <!-- figures:x -->\nkept\n<!-- /figures:x -->\n"
    )
    replaced = replace_blocks(text, {"demo": "new\n"})
    assert blocks(replaced) == {"demo": "new\n", "x": "kept\n"}
    assert replaced.startswith("intro\n") and "after " in replaced


def test_a_block_table_reads_back_by_row_and_column():
    body = "intro\n\n" + table(["artifact", "mAP"], [["onnx.fp32", "77.26"], ["openvino.int8", "76.93"]])
    assert read_table(body) == {
        "onnx.fp32": {"artifact": "onnx.fp32", "mAP": "77.26"},
        "openvino.int8": {"artifact": "openvino.int8", "mAP": "76.93"},
    }
    assert set(read_table(blocks(FIGURES.read_text())["demo"])) >= {"torch.fp32", "openvino.int8"}


def test_every_block_records_what_it_was_measured_under():
    for name, body in blocks(FIGURES.read_text()).items():
        measured = measured_under(body)
        assert measured is not None, f"{name} records no conditions"
        assert len(measured["source"]) == 64 and measured["host_class"] and measured["cores"] >= 1, name
        assert measured["load"] is None or {"others", "steal"} <= set(measured["load"]), name


def fake_section(work, say):
    return table(["artifact", "mAP"], [["onnx.fp32", "1.00"]])


@pytest.fixture
def one_section(monkeypatch, tmp_path):
    monkeypatch.setitem(SECTIONS, "demo", fake_section)
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- figures:demo -->\nold\n<!-- /figures:demo -->\n")
    return tmp_path / "figures.md", readme


def busy(others):
    return host.Load(others=others, steal=0.0, seconds=1.0, cores=2)


def test_figures_measured_on_a_busy_machine_are_refused_unless_allowed(one_section, tmp_path, monkeypatch):
    figures, readme = one_section
    monkeypatch.setattr(host, "idle_load", lambda seconds=1.0: busy(1.2))
    with pytest.raises(CheckFailed, match="busy before measuring"):
        regenerate(["demo"], figures, readme, tmp_path, print)
    assert not figures.exists() and "old" in readme.read_text()

    class Busy(host.LoadMeter):
        def __exit__(self, *exc):
            self.load = busy(0.9)

    monkeypatch.setattr(host, "idle_load", lambda seconds=1.0: busy(0.0))
    monkeypatch.setattr(host, "LoadMeter", Busy)
    with pytest.raises(CheckFailed, match="printed, not written"):
        regenerate(["demo"], figures, readme, tmp_path, print)
    assert not figures.exists() and "old" in readme.read_text()
    regenerate(["demo"], figures, readme, tmp_path, print, allow_noisy=True)
    written = blocks(figures.read_text())["demo"]
    assert measured_under(written)["load"]["others"] == 0.9 and "0.90 cores" in written
    assert blocks(readme.read_text())["demo"] == written
