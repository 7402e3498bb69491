"""README's figures are those `reparam-export figures` measured (reports/figures.md), block for block;
the blocks parse back (replace_blocks round-trips)."""

from pathlib import Path

from exporter.figures import SECTIONS, blocks, replace_blocks

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
