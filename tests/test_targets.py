"""Targets are descriptors: a new one is one package and its line in the registry; the stage that depends
on a target's decision (the AKConv lowering) is keyed on that decision."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from exporter.pipeline.targets.table import TARGETS
from tests.conftest import EMBEDDED

FAKE_SECTION = '''
"""The fake target's recipe section (`fake:`)."""

from exporter.base.strict import Strict, flagged


class FakeSpec(Strict):
    suffix: str = flagged(".fake", "--fake-suffix", "The fake model's file suffix")


SECTION = FakeSpec
'''

FAKE_DESCRIPTOR = '''
"""A target that ships the simplified ONNX under another name; fp16 needs a library nobody has."""

import shutil
from dataclasses import dataclass

from exporter.base.libraries import Library
from exporter.blocks.lowering.capability import Choice
from exporter.pipeline.stages import ort_runner
from exporter.pipeline.stages.graph import Node, Record, fixed
from exporter.pipeline.targets.target import Target
from fake.section import FakeSpec


@dataclass(frozen=True)
class CopySettings:
    suffix: str


@dataclass(frozen=True)
class Copied(Record):
    check: None = None

    def describe(self):
        return "copied"


def nodes(plan):
    suffix = plan.recipe.fake.suffix
    return {
        "fake.fp32": Node(
            "fake.fp32",
            f"fake/model{suffix}",
            lambda call: shutil.copyfile(call.inputs["onnx"], call.output) and Copied(),
            Copied,
            fixed(CopySettings(suffix)),
            reads={"onnx": plan.simplified(TARGET)},
        )
    }


def load(path, precision="fp32", threads=0, section=None):
    return ort_runner.load(path, threads)


TARGET = Target(
    name="fake",
    folder="fake/",
    precisions=("fp32", "fp16"),
    nodes=nodes,
    load=load,
    akconv_auto=lambda opset, section: Choice("gather", "the fake runtime has no GridSample"),
    libraries=(Library("fake-runtime", "fake_runtime", "runtime", "pip install fake-runtime", ("fp16",)),),
    section=FakeSpec,
)
'''

# a process whose registry has the fake target's line; runs each command line it is given with the CLI
DRIVER = """
import contextlib, io, json, sys

from exporter.pipeline.targets import registry

registry.REGISTRY = (*registry.REGISTRY, "fake")

from exporter.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def test_a_new_target_is_one_package_and_its_registry_line(tmp_path):
    """A package outside the project (descriptor and recipe section) and its line in the registry: the
    recipe takes its section, every command that builds its flag, and build, bench and doctor know it."""
    package = tmp_path / "fake"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "section.py").write_text(textwrap.dedent(FAKE_SECTION))
    (package / "descriptor.py").write_text(textwrap.dedent(FAKE_DESCRIPTOR))
    run = tmp_path / "run"
    args = ["--recipe", str(EMBEDDED), "--input-size", "64", "64", "--run-dir", str(run)]
    bad = tmp_path / "bad.yaml"
    bad.write_text(EMBEDDED.read_text() + "fake:\n  prefix: x\n")
    commands = [
        ["build", "--target", "fake", "--precision", "fp32", "--fake-suffix", ".copy", *args],
        ["bench", "--artifacts", str(run), "--min-iters", "1", "--min-seconds", "0"],
        ["build", "--target", "fake", "--precision", "fp16", *args],
        ["doctor", "--json"],
        ["build", "--target", "onnx", "--fake-suffix", ".copy", *args[:-1], str(tmp_path / "onnx")],
        ["build", "--recipe", str(bad), "--target", "fake", "--run-dir", str(tmp_path / "bad")],
    ]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(commands)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    built, bench, fp16, doctor, onnx, unknown = json.loads(done.stdout.splitlines()[-1])

    code, _, err = built
    assert code == 0, err
    assert "has no effect" not in err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["artifacts"] == {"fake.fp32": "fake/model.copy"}
    assert manifest["recipe"]["fake"] == {"suffix": ".copy"}
    assert manifest["stages"]["fake.export"]["akconv"]["lowering"] == "gather"
    assert manifest["stages"]["fake.fp32"]["settings"] == {"suffix": ".copy"}

    code, _, err = bench
    assert code == 0, err
    assert set(json.loads((run / "bench.json").read_text())["results"]) == {"fake.fp32"}

    code, _, err = fp16
    assert code == 2 and "target fake needs fake-runtime: not installed: pip install fake-runtime" in err

    code, out, _ = doctor
    assert any(c["name"] == "fake-runtime" and not c["usable"] for c in json.loads(out))

    code, _, err = onnx
    assert code == 0 and "--fake-suffix has no effect on this build" in err

    code, _, err = unknown
    assert code == 2 and "fake.prefix: unknown field (allowed: suffix)" in err, err
    assert not (tmp_path / "bad").exists()


def test_each_registered_package_is_named_for_its_target():
    """The recipe files a target's section under its package's name: the descriptor's name is that."""
    from exporter.pipeline.targets.registry import REGISTRY

    assert [package.rpartition(".")[2] for package in REGISTRY] == list(TARGETS)


def test_the_recipe_holds_each_targets_section_under_its_name():
    from exporter.pipeline.recipe import Recipe, RecipeBase

    sections = {t.name: t.section for t in TARGETS.values() if t.section is not None}
    assert set(sections) == {"tensorrt", "openvino"}
    added = {
        name: info.annotation
        for name, info in Recipe.model_fields.items()
        if name not in RecipeBase.model_fields
    }
    assert added == sections


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
