"""README's figures are those `reparam-export figures` measured (reports/figures.md), block for block;
the blocks parse back (replace_blocks round-trips)."""

from pathlib import Path

from exporter.figures import SECTIONS, blocks, read_table, replace_blocks, table

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
