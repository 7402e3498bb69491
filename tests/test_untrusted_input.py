"""Untrusted directories and recipes: files planted where the command runs are never imported, a recipe
cannot name the standard library as its builder, and a builder that exits instead of returning a model
is bad input."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import EMBEDDED

SCRIPT = Path(sys.executable).parent / "reparam-export"  # what users run: no cwd on sys.path of its own


def plant(folder: Path, names: list[str], marker: Path) -> None:
    for name in names:
        (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r} + '\\n')\n")


@pytest.mark.skipif(not SCRIPT.is_file(), reason="the reparam-export console script is not installed")
def test_modules_planted_in_the_working_directory_are_never_imported(tmp_path):
    """doctor imports yaml, onnx, onnxsim, openvino and (lazily, absent here) tensorrt: none of them
    may come from the directory the user happens to run in."""
    marker = tmp_path / "ran.txt"
    plant(tmp_path, ["yaml", "onnx", "onnxsim", "tensorrt", "openvino", "click", "rich"], marker)
    result = subprocess.run(
        [str(SCRIPT), "doctor"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert not marker.exists(), f"planted modules ran: {marker.read_text()}"
    assert "tensorrt" in result.stdout + result.stderr


def test_a_builder_in_the_working_directory_still_loads(run_cli, tmp_path):
    (tmp_path / "mymodel.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build():
                return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
            """
        )
    )
    code, out, err = run_cli("fuse", "--model", "mymodel:build", "--input-size", "32", "32")
    assert code == 0, err
    assert str(tmp_path) not in sys.path, "the working directory stayed importable after the build"


@pytest.mark.parametrize(
    ("builder", "named"),
    [("os:system", "'os' is Python's standard library"), ("subprocess:call", "standard library")],
)
def test_a_recipe_naming_the_standard_library_is_refused_before_anything_runs(
    run_cli, tmp_path, builder, named
):
    marker = tmp_path / "ran.txt"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(
        EMBEDDED.read_text()
        .replace("builder: exporter.models.embedded:build_embedded_detector", f"builder: '{builder}'")
        .replace("kwargs: {num_classes: 3, width: 16, seed: 0}", f"kwargs: {{args: 'touch {marker}'}}")
    )
    assert f"builder: '{builder}'" in recipe.read_text() and str(marker) in recipe.read_text()
    code, _, err = run_cli("fuse", "--recipe", str(recipe))
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("fused.pt"))


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("from shutil import rmtree as build", "is shutil.rmtree, from Python's standard library"),
        ("from os import system as build", "has no function or class 'build'"),  # a builtin
    ],
)
def test_a_builder_re_exporting_the_standard_library_is_refused(run_cli, tmp_path, source, named):
    module = f"sneaky_{source.split()[1]}"  # one module name per case: imports are cached
    (tmp_path / f"{module}.py").write_text(source + "\n")
    code, _, err = run_cli("fuse", "--model", f"{module}:build", "--input-size", "32", "32")
    assert code == 2 and named in err, err


def test_a_builder_that_exits_is_bad_input(run_cli, tmp_path):
    (tmp_path / "quits.py").write_text("import sys\n\ndef build():\n    sys.exit(0)\n")
    code, _, err = run_cli("fuse", "--model", "quits:build", "--input-size", "32", "32")
    assert code == 2, err
    assert "called sys.exit(0) instead of returning a model" in err


def recipe_with(tmp_path, old: str, new: str) -> Path:
    text = EMBEDDED.read_text()
    assert old in text
    path = tmp_path / "recipe.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


EMBEDDED_NAME = "name: embedded-demo"
EMBEDDED_SIZE = "input_size: [320, 320]"
EMBEDDED_PREPROCESS = "scale: 0.00392156862745098}"


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        (EMBEDDED_NAME, "name: '..'", "'..' is not a run folder name"),
        (EMBEDDED_NAME, "name: '.'", "'.' is not a run folder name"),
        (EMBEDDED_NAME, "name: a/../../b", "is not a run folder name"),
        (EMBEDDED_SIZE, "input_size: [100000, 100000]", "exceeds 8192 pixels a side"),
        (EMBEDDED_PREPROCESS, "scale: 0.0039, std: [0, 0, 0]}", "preprocess.std"),
        (EMBEDDED_PREPROCESS, "scale: .nan}", "preprocess.scale"),
        (EMBEDDED_PREPROCESS, "scale: 1, mean: [.inf, 0, 0]}", "preprocess.mean"),
        (EMBEDDED_SIZE, f"{EMBEDDED_SIZE}\ninput_size: [64, 64]", "key 'input_size' given twice"),
    ],
)
def test_bad_recipe_values_are_refused_before_anything_is_written(run_cli, tmp_path, old, new, named):
    code, _, err = run_cli("build", "--recipe", str(recipe_with(tmp_path, old, new)), "--target", "onnx")
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "runs").exists()


def test_a_yaml_alias_bomb_is_refused_at_once(run_cli, tmp_path):
    levels = ["  a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = recipe_with(
        tmp_path,
        "kwargs: {num_classes: 3, width: 16, seed: 0}",
        "kwargs:\n" + "\n".join(f"  {x}" for x in levels),
    )
    code, _, err = run_cli("fuse", "--recipe", str(path))
    assert code == 2 and "aliases expand to over 100000 values" in err, err


def test_missing_evaluation_data_is_refused_before_any_stage(run_cli, tmp_path):
    code, _, err = run_cli(
        "build", "--target", "onnx", "--precision", "fp32", "--eval-data", str(tmp_path / "none"),
        "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 2 and "evaluation data not found" in err, err
    assert not (tmp_path / "run").exists()
