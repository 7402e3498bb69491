"""Recipe validation: one-line errors naming the file and field; CLI flags override fields."""

from pathlib import Path

import pytest

from exporter.base.errors import UserError
from exporter.pipeline.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="x.yaml"):
    path = tmp_path / "recipes" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


BASE = """
name: demo
model: {builder: exporter.models.embedded:build_embedded_detector}
input_size: [64, 64]
"""


def test_shipped_recipe_matches_embedded_default():
    assert load_recipe(REPO / "recipes" / "demo.yaml") == load_recipe(None)


def test_every_shipped_recipe_is_valid():
    for path in (REPO / "recipes").glob("*.yaml"):
        load_recipe(path)


@pytest.mark.parametrize("value", ["640", "[640]", "[640, 640, 3]", "[640.5, 640]", "[-1, 640]", "[a, b]"])
def test_input_size_error_message(tmp_path, value):
    path = write(tmp_path, BASE.replace("[64, 64]", value))
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert str(info.value).startswith(
        f"{path}: input_size: expected two positive integers (height, width), got"
    )


def test_unknown_field_lists_allowed(tmp_path):
    path = write(tmp_path, BASE + "export: {opset: 17, dynamc_batch: true}\n")
    with pytest.raises(
        UserError, match=r"export\.dynamc_batch: unknown field \(allowed: opset, dynamic_batch"
    ):
        load_recipe(path)


def test_corrupt_yaml_names_line(tmp_path):
    path = write(tmp_path, BASE + "class_names: [a, b\n")
    with pytest.raises(UserError, match=r"invalid YAML at line \d+, column \d+"):
        load_recipe(path)


def test_opset_range(tmp_path):
    path = write(tmp_path, BASE)
    assert load_recipe(path, {"export.opset": 13}).export.opset == 13
    with pytest.raises(UserError, match=r"export\.opset: Input should be less than or equal to 19"):
        load_recipe(path, {"export.opset": 20})


def test_resize_is_stretch_or_letterbox(tmp_path):
    path = write(tmp_path, BASE)
    assert load_recipe(path, {"preprocess.resize": "letterbox"}).preprocess.resize == "letterbox"
    with pytest.raises(UserError, match=r"preprocess\.resize: Input should be 'stretch' or 'letterbox'"):
        load_recipe(path, {"preprocess.resize": "pad"})


def test_overrides_win_and_change_the_hash(tmp_path):
    path = write(tmp_path, BASE)
    base = load_recipe(path)
    over = load_recipe(path, {"input_size": [96, 128], "export.dynamic_batch": True})
    assert over.input_size == (96, 128) and over.export.dynamic_batch
    assert base.digest() != over.digest()


def test_relative_checkpoint_resolved_against_recipe(tmp_path):
    path = write(
        tmp_path, BASE.replace("build_embedded_detector}", "build_embedded_detector, checkpoint: w.pt}")
    )
    assert load_recipe(path).model.checkpoint == path.parent / "w.pt"


def test_missing_recipe(tmp_path):
    with pytest.raises(UserError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_builder_form(tmp_path):
    path = write(tmp_path, BASE.replace("exporter.models.embedded:build_embedded_detector", "just_a_name"))
    with pytest.raises(UserError, match=r"model\.builder: expected 'package\.module:function'"):
        load_recipe(path)


def test_unreadable_recipe_and_overrides_into_odd_sections(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(UserError, match=r"binary\.yaml: not a text file \(not UTF-8\)"):
        load_recipe(binary)
    empty_section = write(tmp_path, BASE + "evaluation:\n")
    assert load_recipe(empty_section, {"evaluation.limit": 5}).evaluation.limit == 5
    scalar_section = write(tmp_path, BASE + "export: 17\n")
    with pytest.raises(UserError, match=r"export must be a mapping of fields to set export\.opset, not 17"):
        load_recipe(scalar_section, {"export.opset": 13})
