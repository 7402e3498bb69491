"""Targets are descriptors: a new one is one module and its line in the table; the stage that depends
on a target's decision (the AKConv lowering) is keyed on that decision."""

import importlib.util
import json
import textwrap

import pytest

from exporter.pipeline.targets import TARGETS
from tests.conftest import EMBEDDED

FAKE_TARGET = '''
"""A target that ships the simplified ONNX under another name; fp16 needs a library nobody has."""

import shutil
from dataclasses import dataclass

from exporter.blocks.lowering.capability import Choice
from exporter.pipeline.stages.graph import Node, Record, fixed
from exporter.pipeline.targets import Library, Target


@dataclass(frozen=True)
class CopySettings:
    suffix: str


@dataclass(frozen=True)
class Copied(Record):
    check: None = None

    def describe(self):
        return "copied"


def nodes(plan):
    return {
        "fake.fp32": Node(
            "fake.fp32",
            "fake/model.fake",
            lambda call: shutil.copyfile(call.inputs["onnx"], call.output) and Copied(),
            Copied,
            fixed(CopySettings(".fake")),
            reads={"onnx": plan.simplified(TARGET)},
        )
    }


def load(path, precision="fp32", threads=0, plugin_library=None):
    from exporter.pipeline.stages import ort_runner as onnxruntime

    return onnxruntime.load(path, threads)


TARGET = Target(
    name="fake",
    folder="fake/",
    precisions=("fp32", "fp16"),
    nodes=nodes,
    load=load,
    akconv_auto=lambda opset, trt_version: Choice("gather", "the fake runtime has no GridSample"),
    libraries=(Library("fake-runtime", "fake_runtime", "runtime", "pip install fake-runtime", ("fp16",)),),
    options=("tensorrt.version",),
)
'''


@pytest.fixture
def fake_target(tmp_path, monkeypatch):
    """The one new module, and its line in the table."""
    path = tmp_path / "fake_target.py"
    path.write_text(textwrap.dedent(FAKE_TARGET))
    spec = importlib.util.spec_from_file_location("fake_target", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(TARGETS, "fake", module.TARGET)
    return module.TARGET


def test_a_new_target_is_one_module(fake_target, run_cli, tmp_path):
    run = tmp_path / "run"
    args = ("--recipe", str(EMBEDDED), "--input-size", "64", "64", "--run-dir", str(run))
    code, _, err = run_cli("build", "--target", "fake", "--precision", "fp32", "--trt-version", "8.6", *args)
    assert code == 0, err
    assert "has no effect" not in err, "the fake target reads tensorrt.version"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["artifacts"] == {"fake.fp32": "fake/model.fake"}
    assert manifest["stages"]["fake.export"]["akconv"]["lowering"] == "gather"
    assert manifest["stages"]["fake.fp32"]["settings"] == {"suffix": ".fake"}

    code, _, err = run_cli("bench", "--artifacts", str(run), "--min-iters", "1", "--min-seconds", "0")
    assert code == 0, err
    assert set(json.loads((run / "bench.json").read_text())["results"]) == {"fake.fp32"}

    code, _, err = run_cli("build", "--target", "fake", "--precision", "fp16", *args)
    assert code == 2 and "target fake needs fake-runtime: not installed: pip install fake-runtime" in err

    code, out, _ = run_cli("doctor", "--json")
    assert any(c["name"] == "fake-runtime" and not c["usable"] for c in json.loads(out))

    code, _, err = run_cli("build", "--target", "onnx", "--trt-version", "8.6", *args)
    assert code == 0 and "--trt-version has no effect on this build" in err


def test_unknown_target_in_a_recipe_is_refused_before_any_stage(run_cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(EMBEDDED.read_text().replace("targets: [onnx]", "targets: [onnx, tpu]"))
    code, _, err = run_cli("build", "--recipe", str(recipe), "--run-dir", str(tmp_path / "run"))
    assert code == 2 and "target 'tpu' is not available in this version" in err
    assert not (tmp_path / "run").exists()


def test_a_new_tensorrt_version_rebuilds_the_export_it_decides(run_cli, tmp_path):
    """TensorRT 10 takes AKConv as GridSample, 8.4 needs the gather decomposition: the export's key holds
    the lowering chosen, so the same run directory rebuilds it instead of failing on a stale graph."""
    run = tmp_path / "run"
    args = ("--recipe", str(EMBEDDED), "--input-size", "64", "64", "--target", "tensorrt")
    args += ("--precision", "fp32", "--run-dir", str(run))
    code, _, err = run_cli("build", *args)
    assert code == 0, err
    first = json.loads((run / "manifest.json").read_text())["stages"]
    assert first["tensorrt.export"]["akconv"]["lowering"] == "gridsample"

    code, _, err = run_cli("build", *args, "--trt-version", "8.4")
    assert code == 0, err
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["tensorrt.export"]["akconv"]["lowering"] == "gather"
    assert "tensorrt.export" in err and "[cached]" not in err.split("tensorrt.export")[1].splitlines()[0]
    assert stages["fuse"]["wall_s"] == first["fuse"]["wall_s"], "the fused model did not change: cached"
    assert "8.4" in (run / "tensorrt" / "bundle" / "README.txt").read_text()


def test_each_targets_flags_are_options_of_the_commands_that_build():
    """A target declares its command-line options; every command that builds offers them, each setting
    one of the recipe fields only that target reads."""
    from exporter.cli import options
    from exporter.cli.app import cli

    for command in ("build", "fuse", "export", "bench-int8", "matrix"):
        offered = options.flags(cli.commands[command])
        for target in TARGETS.values():
            for flag in target.flags:
                assert flag.field in target.options, (target.name, flag.flag)
                assert offered[flag.field] == flag.flag, (command, flag.flag)
    assert {f.flag for t in TARGETS.values() for f in t.flags} >= {"--trt-version", "--ov-int8-preset"}
