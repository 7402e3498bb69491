"""Untrusted directories and recipes: files planted where the command runs are never imported, a recipe
cannot name the standard library as its builder, and a builder that exits instead of returning a model
is bad input."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

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
        ("from yaml import unsafe_load as build", "is yaml.unsafe_load, from an installed library ('yaml')"),
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
        (EMBEDDED_PREPROCESS, "scale: 0.0039, std: [1e-300, 1, 1]}", "preprocess: (pixel·scale − mean)/std"),
        (EMBEDDED_PREPROCESS, "scale: 1.0e-30}", "channel 0's pixels 0–255 to [0, 2.55e-28]"),
        (EMBEDDED_SIZE, f"{EMBEDDED_SIZE}\ninput_size: [64, 64]", "key 'input_size' given twice"),
        ("{opset: 17,", "{opset: 13, akconv_lowering: gridsample,", "needs opset >= 16"),
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


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        (
            "class_names: [circle, square, triangle]",
            "class_names: [circle, square]",
            "class_names lists 2 names but the model scores 3 classes",
        ),
        ("output_names: [scores, boxes]", "output_names: [a, b, c]", "has 3 names but the model returns 2"),
    ],
)
def test_a_recipe_that_does_not_fit_the_model_leaves_nothing(run_cli, tmp_path, old, new, named):
    """Known only once the model ran, yet refused before fused.pt or a manifest is written; and again
    when a build of the right recipe left a cached fused model behind."""
    run = tmp_path / "run"
    code, _, err = run_cli("fuse", "--recipe", str(recipe_with(tmp_path, old, new)), "--run-dir", str(run))
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not run.exists()
    assert run_cli("fuse", "--recipe", str(EMBEDDED), "--run-dir", str(run))[0] == 0
    code, _, err = run_cli("fuse", "--recipe", str(recipe_with(tmp_path, old, new)), "--run-dir", str(run))
    assert code == 2 and named in err, err


def test_missing_evaluation_data_is_refused_before_any_stage(run_cli, tmp_path):
    code, _, err = run_cli(
        "build", "--target", "onnx", "--precision", "fp32", "--eval-data", str(tmp_path / "none"),
        "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 2 and "evaluation data not found" in err, err
    assert not (tmp_path / "run").exists()


MODELS = """
import torch
from torch import nn


def nan_statistics():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    model[1].running_var[1] = float("nan")
    model[0].weight.data[0, 0, 0, 0] = float("inf")
    return model


def negative_variance():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    model[1].running_var[1:3] = -0.5
    return model


class Silent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        self.conv(x)


class Words(Silent):
    def forward(self, x):
        return {"boxes": "none"}
"""


@pytest.mark.parametrize(
    ("builder", "named"),
    [
        ("nan_statistics", "non-finite weights: 0.weight (0 NaN, 1 infinite of 108), 1.running_var (1 NaN"),
        ("negative_variance", "negative BatchNorm variances: 1.running_var (2 negative of 4)"),
        ("Silent", "forward returned NoneType, no tensor"),
        ("Words", "forward returned dict, no tensor"),
    ],
)
def test_models_that_cannot_be_proved_are_named_not_blamed_on_fusion(run_cli, tmp_path, builder, named):
    (tmp_path / f"bad_{builder.lower()}.py").write_text(MODELS)
    code, _, err = run_cli(
        "fuse", "--model", f"bad_{builder.lower()}:{builder}", "--input-size", "32", "32",
        "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "fused.pt").exists()


@pytest.mark.parametrize("content", [b"", b"garbage"])
def test_doctor_names_a_file_that_is_not_onnx(run_cli, tmp_path, content):
    (tmp_path / "model.onnx").write_bytes(content)
    code, _, err = run_cli("doctor", "--onnx", str(tmp_path / "model.onnx"))
    assert code == 2 and "is not an ONNX model" in err, err


def fake_run(folder: Path, artifact: str) -> Path:
    """A run directory whose manifest names `artifact` as its ONNX model."""
    from exporter.pipeline.recipe import load_recipe

    recipe = load_recipe(EMBEDDED, {})
    run = folder / "run"
    run.mkdir()
    manifest = {"recipe": recipe.model_dump(mode="json"), "recipe_hash": recipe.digest(), "stages": {}}
    (run / "manifest.json").write_text(json.dumps({**manifest, "artifacts": {"onnx.fp32": artifact}}))
    return run


def conv_with_data_at(location: str, folder: Path) -> Path:
    """A one-Conv ONNX in `folder` whose weight is external data at `location` (relative to it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    set_external_data(weight, location=location)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    np.ones(108, np.float32).tofile(folder / location)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight],
    )
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_manifest_naming_a_file_outside_its_run_is_refused(run_cli, tmp_path):
    (tmp_path / "outside.onnx").write_bytes(b"not read")
    run = fake_run(tmp_path, "../outside.onnx")
    code, _, err = run_cli("bench", "--artifacts", str(run))
    assert code == 2 and "names ../outside.onnx, outside its run directory" in err, err


def test_onnx_external_data_outside_its_folder_is_refused(tmp_path):
    from exporter.base.errors import UserError
    from exporter.pipeline.stages.ort_runner import load

    (tmp_path / "run").mkdir()
    model = conv_with_data_at("../secret.bin", tmp_path / "run")
    with pytest.raises(UserError, match=r"'\.\./secret\.bin' points outside the directory"):
        load(model)
    assert load(conv_with_data_at("weights/w.bin", tmp_path / "run")).infer(np.zeros((1, 3, 8, 8)))[0].shape


def test_force_rebuilds_over_a_damaged_manifest(run_cli, tmp_path):
    args = (
        "build",
        "--recipe",
        str(EMBEDDED),
        "--target",
        "onnx",
        "--precision",
        "fp32",
        "--input-size",
        "64",
        "64",
    )
    run = tmp_path / "run"
    assert run_cli(*args, "--run-dir", str(run))[0] == 0
    (run / "manifest.json").write_text("{broken")
    code, _, err = run_cli(*args, "--run-dir", str(run))
    assert code == 2 and "manifest.json is damaged" in err and "--force" in err
    code, _, err = run_cli(*args, "--run-dir", str(run), "--force")
    assert code == 0, err
    assert set(json.loads((run / "manifest.json").read_text())["stages"]) == {"fuse", "export", "simplify"}


class Touch:
    """Unpickles as os.system('touch <marker>'): a payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


class Calls:
    """Unpickles as cls(*args): a module class called as its constructor with the file's arguments."""

    def __init__(self, cls: type, *args):
        self.cls, self.args = cls, args

    def __reduce__(self):
        return self.cls, self.args


class CallsNew(Calls):
    """Unpickles as cls.__new__(cls, *args): created with the file's arguments."""

    @property
    def __class__(self):  # as the pickler requires of an object pickled by __newobj__
        return self.cls

    def __reduce__(self):
        import copyreg

        return copyreg.__newobj__, (self.cls, *self.args)


CONSTRUCTOR_WRITES = """
from pathlib import Path

from torch import nn


class WritesAFile(nn.Module):
    def __init__(self, path):  # stands for a constructor that reads, loads or imports what it is given
        super().__init__()
        Path(path).write_text("constructed")
"""


def a_module_class_called(case: str, folder: Path, marker: Path) -> tuple[object, tuple[str, ...]]:
    """What a checkpoint's `model` unpickles as in `case`, and the options that trust its package."""
    if case == "trusted fork":
        import importlib

        (folder / "ctorfork.py").write_text(CONSTRUCTOR_WRITES)
        sys.path.insert(0, str(folder))
        try:
            return Calls(importlib.import_module("ctorfork").WritesAFile, str(marker)), (
                "--trust-module",
                "ctorfork",
            )
        finally:
            sys.path.remove(str(folder))
    if case == "torch Conv2d":
        return Calls(torch.nn.Conv2d, 3, 4, 3), ()
    pytest.importorskip("ultralytics")
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.nn.tasks import DetectionModel

    torch.save({"model": Touch(marker)}, folder / "inner.pt")  # what AutoBackend would load
    called = {
        "ultralytics AutoBackend": Calls(AutoBackend, str(folder / "inner.pt")),
        "ultralytics DetectionModel": Calls(DetectionModel, str(folder / "model.yaml")),
        "arguments to __new__": CallsNew(AutoBackend, str(folder / "inner.pt")),
    }
    return called[case], ()


@pytest.mark.parametrize(
    "case",
    [
        "ultralytics AutoBackend",
        "ultralytics DetectionModel",
        "torch Conv2d",
        "trusted fork",
        "arguments to __new__",
    ],
)
def test_a_checkpoint_calling_a_module_class_is_refused_before_the_class_runs(run_cli, tmp_path, case):
    """A module class the file may load is rebuilt as torch pickles modules (created without its
    constructor, then its state set), never called with the file's arguments: AutoBackend('inner.pt')
    would load inner.pt and run its payload."""
    marker = tmp_path / "ran.txt"
    model, trust = a_module_class_called(case, tmp_path, marker)
    torch.save({"model": model, "train_args": {"imgsz": 64}}, tmp_path / "best.pt")
    code, _, err = run_cli(
        "fuse", "--model", str(tmp_path / "best.pt"), *trust, "--run-dir", str(tmp_path / "run")
    )
    assert code == 2 and "calls the constructor" in err and "nothing of it ran" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not marker.exists() and not (tmp_path / "run").exists()


def builder_recipe(tmp_path: Path, builder: str, kwargs: str) -> Path:
    recipe = recipe_with(
        tmp_path,
        "kwargs: {num_classes: 3, width: 16, seed: 0}",
        f"kwargs: {kwargs}",
    )
    text = recipe.read_text().replace("exporter.models.embedded:build_embedded_detector", f"'{builder}'")
    recipe.write_text(text)
    return recipe


@pytest.mark.parametrize(
    ("builder", "kwargs", "named"),
    [
        (
            "yaml:unsafe_load",
            "{stream: \"!!python/object/apply:os.system ['touch {marker}']\"}",
            "'yaml' is an installed library ('yaml'), neither your code nor a model library: refused before",
        ),
        ("torch:load", "{f: '{payload}', weights_only: false}", "'torch' is an installed library ('torch')"),
        (
            "setuptools._distutils.spawn:spawn",
            "{cmd: [touch, '{marker}']}",
            "is an installed library ('setuptools')",
        ),
        (
            "exporter.base.artifacts:write_json",
            "{path: '{marker}', data: {}}",
            "is exporter.base.artifacts.write_json, from exporter but outside its models (exporter.models): "
            "refused before it was called",
        ),
    ],
)
def test_a_recipe_builder_that_is_not_a_model_builder_never_runs(run_cli, tmp_path, builder, kwargs, named):
    """A recipe names code that runs, but only the user's own, a trusted package's or a model library's
    models: an installed library's function that executes its arguments is refused before import."""
    marker, payload = tmp_path / "ran.txt", tmp_path / "payload.pt"
    torch.save(Touch(marker), payload)
    recipe = builder_recipe(
        tmp_path, builder, kwargs.replace("{marker}", str(marker)).replace("{payload}", str(payload))
    )
    code, _, err = run_cli("fuse", "--recipe", str(recipe), "--run-dir", str(tmp_path / "run"))
    assert code == 2 and named in err and "--trust-module PACKAGE" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_builder_never_unpickles_with_torch_load(run_cli, tmp_path):
    """The user's own builder asking torch.load for pickle: the load stays weights-only, the payload inert."""
    marker, payload = tmp_path / "ran.txt", tmp_path / "payload.pt"
    torch.save(Touch(marker), payload)
    (tmp_path / "unpickles.py").write_text(
        f"import torch\n\ndef build():\n    return torch.load({str(payload)!r}, weights_only=False)\n"
    )
    code, _, err = run_cli("fuse", "--model", "unpickles:build", "--input-size", "32", "32")
    assert code == 2 and "model builder 'unpickles:build' raised UnpicklingError" in err, err
    assert not marker.exists()


def test_which_builders_a_recipe_may_name():
    from exporter.base.errors import UserError
    from exporter.models.loader import resolve_builder

    assert (
        resolve_builder("exporter.models.embedded:build_embedded_detector").__name__
        == "build_embedded_detector"
    )
    assert resolve_builder("tests.fixture_models:build_user_model")  # the user's own, outside site-packages
    with pytest.raises(UserError, match=r"'torch.nn' is an installed library \('torch'\)"):
        resolve_builder("torch.nn:Identity")
    assert resolve_builder("torch.nn:Identity", trust=("torch",)) is torch.nn.Identity
    for library, builder in [("timm", "timm:create_model"), ("torchvision", "torchvision.models:resnet18")]:
        pytest.importorskip(library)
        assert callable(resolve_builder(builder))  # defined among the library's models


def test_an_installed_package_trusted_by_the_user_may_be_the_builder(run_cli):
    code, _, err = run_cli("fuse", "--model", "torch.nn:Identity", "--input-size", "32", "32")
    assert code == 2 and "'torch.nn' is an installed library" in err and "--trust-module" in err, err
    code, _, err = run_cli(
        "fuse", "--model", "torch.nn:Identity", "--input-size", "32", "32", "--trust-module", "torch"
    )
    assert code == 0 and "nothing to fuse" in err, err


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ("{x: &a [1, *a]}", "alias *a inside the node it names (a cycle; refused)"),
        ("{x: &a {y: *a}}", "alias *a inside the node it names (a cycle; refused)"),
        ("{x: " + "[" * 5000 + "]" * 5000 + "}", "nested deeper than 64 levels (refused)"),
        (
            "\n".join(
                ["{a0: &a0 " + "[" * 40 + "]" * 40 + ","]
                + [f" a{i}: &a{i} " + "[" * 40 + f"*a{i - 1}" + "]" * 40 + "," for i in range(1, 4)]
                + ["}"]
            ),
            "aliases nest deeper than 64 levels (refused)",
        ),
    ],
    ids=["recursive list", "recursive mapping", "5000 deep", "nested through aliases"],
)
def test_yaml_cycles_and_deep_nesting_are_one_line(run_cli, tmp_path, kwargs, named):
    path = recipe_with(tmp_path, "kwargs: {num_classes: 3, width: 16, seed: 0}", f"kwargs: {kwargs}")
    code, _, err = run_cli("fuse", "--recipe", str(path))
    assert code == 2 and named in err and "invalid YAML at line" in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"stages": {"fuse": 5}}, "stages.fuse is 5, not an object"),
        (
            {"stages": {"fuse": {"output": {"path": 3, "sha256": "0"}}}},
            "stages.fuse.output.path is 3, not a string",
        ),
        ({"stages": {"fuse": {"output": {"path": "fused.pt"}}}}, "stages.fuse.output has no sha256"),
        (
            {"stages": {"fuse": {"output": {"path": "a", "sha256": "0", "companions": [7]}}}},
            "companions[0] is 7",
        ),
        ({"stages": {"fuse": {"output": {"path": "a", "sha256": "0"}, "reads": {"x": 1}}}}, "reads.x is 1"),
        ({"stages": [], "artifacts": {}}, "manifest.stages is [], not an object"),
        ({"artifacts": {"onnx.fp32": 5}}, "artifacts.onnx.fp32 is 5, not a string"),
        ({"recipe": {"name": 5}}, "recipe.name: Input should be a valid string"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_one_line(run_cli, tmp_path, fields, named):
    run = fake_run(tmp_path, "model.onnx")
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, **fields}))
    code, _, err = run_cli("eval", "--artifacts", str(run), "--data", "demo")
    assert code == 2 and "manifest.json is damaged" in err and named in err and "--force" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_doctor_refuses_external_data_outside_the_models_folder_as_eval_does(run_cli, tmp_path):
    (tmp_path / "run").mkdir()
    model = conv_with_data_at("../secret.bin", tmp_path / "run")
    code, out, err = run_cli("doctor", "--onnx", str(model))
    assert code == 2 and "'../secret.bin' points outside the directory" in err, err
    assert ": compatible" not in out, out
    code, out, err = run_cli("doctor", "--onnx", str(conv_with_data_at("weights/w.bin", tmp_path / "run")))
    assert "TensorRT 10.x: compatible" in out and "points outside" not in err, out + err


def test_sigterm_during_a_stage_ends_it_as_an_interrupt_does(tmp_path):
    """A SIGTERM while fused.pt is half-written: the command ends (143) and leaves no file of the stage.
    In a process of its own, as a SIGTERM reaches one: unhandled, it would kill the process (-15)."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from exporter.cli import main
        from exporter.pipeline.stages import reference

        def dying(out, *args):
            Path(out).write_bytes(b"half a model")
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("still running after SIGTERM")

        reference.save = dying
        sys.exit(main(["fuse", "--recipe", {str(EMBEDDED)!r}, "--input-size", "64", "64", "--run-dir", "r"]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 143, (done.returncode, done.stderr)
    assert done.stderr.strip().endswith("terminated"), done.stderr
    assert not (tmp_path / "r").exists() or not any(p.is_file() for p in (tmp_path / "r").rglob("*"))


def test_a_file_the_user_may_not_read_is_one_line(run_cli, tmp_path, monkeypatch):
    """As a user without the permission (root reads anything, so the refusal is stood in for)."""
    import errno

    recipe = tmp_path / "locked.yaml"
    recipe.write_text(EMBEDDED.read_text())
    read_text = Path.read_text

    def locked(path, *args, **kwargs):
        if path.name == recipe.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", locked)
    code, _, err = run_cli("fuse", "--recipe", str(recipe))
    assert code == 2 and f"cannot access {recipe}: permission denied" in err, err
    assert len(err.strip().splitlines()) == 1, err


# the command under an address-space limit of what it has mapped once torch is loaded plus a budget in MiB,
# so the budget, not this host's thread stacks and libraries, decides where an allocation is refused
UNDER_A_LIMIT = """
import resource, sys
import torch
from exporter.cli import main
mapped = next(int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith("VmSize"))
limit = mapped + (int(sys.argv[1]) << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    "side, budget, says",
    [
        (4096, 2048, "the model's forward on a 1x3x4096x4096 input needs more memory than this"),
        (8192, 512, "this command needs more memory than this process may use"),  # the probe itself
    ],
    ids=["forward", "probe"],
)
def test_an_input_too_large_for_the_memory_allowed_is_one_line(tmp_path, side, budget, says):
    """A probe whose forward, or whose own pixels, the memory allowed cannot hold: one line naming the
    fix, exit code 2, nothing written; not a traceback nor an OOM kill."""
    args = ["fuse", "--recipe", str(EMBEDDED), "--input-size", str(side), str(side), "--run-dir", "run"]
    done = subprocess.run(
        [sys.executable, "-c", UNDER_A_LIMIT, str(budget), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert says in done.stderr and "smaller --input-size" in done.stderr, done.stderr
    assert not (tmp_path / "run" / "fused.pt").exists()
