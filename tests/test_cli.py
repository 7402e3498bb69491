"""CLI behaviour: exit codes, one-line errors without tracebacks, no artifact left on bad input."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import EMBEDDED

REPO = Path(__file__).resolve().parents[1]
USER = "tests.fixture_models:"


def assert_one_line_error(code, err, expected_code, pattern):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert "«" not in err, "every setting a message names is spelt as a flag or a field"
    assert pattern in lines[0], lines[0]


@pytest.fixture
def user_recipe(tmp_path):
    def make(builder, extra=""):
        path = tmp_path / "r.yaml"
        path.write_text(f"name: r\nmodel: {{builder: '{builder}'}}\ninput_size: [32, 32]\n{extra}")
        return str(path)

    return make


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing_checkpoint", "checkpoint not found:"),
        ("corrupt_yaml", "invalid YAML at line"),
        ("unknown_field", "colour: unknown field"),
        ("bad_input_size", "input_size: expected two positive integers (height, width), got [32]"),
        ("builder_raises", "raised RuntimeError: weights server unreachable"),
        ("builder_missing", "has no function or class 'nope'"),
        ("module_missing", "cannot import 'no_such_pkg.models'"),
        ("not_a_module", "returned dict, expected a torch nn.Module"),
        ("forward_fails", "model forward failed on a 1x3x32x32 input"),
        ("pickled_checkpoint", "cannot be loaded with weights_only=True"),
        ("wrong_checkpoint", "does not match the model: missing"),
    ],
)
def test_bad_input_exit_2_no_artifact(run_cli, user_recipe, tmp_path, case, pattern):
    args = ["export", "--run-dir", str(tmp_path / "run")]
    if case == "missing_checkpoint":
        args += ["--model", USER + "build_user_model", "--checkpoint", "missing.pth"]
    elif case == "corrupt_yaml":
        (tmp_path / "c.yaml").write_text("name: [unclosed\n")
        args += ["--recipe", str(tmp_path / "c.yaml")]
    elif case == "unknown_field":
        args += ["--recipe", user_recipe(USER + "build_user_model", "preprocess: {colour: rgb}\n")]
    elif case == "bad_input_size":
        args += ["--recipe", user_recipe(USER + "build_user_model").replace("r.yaml", "r.yaml")]
        Path(args[-1]).write_text(Path(args[-1]).read_text().replace("[32, 32]", "[32]"))
    elif case == "builder_raises":
        args += ["--model", USER + "build_raising"]
    elif case == "builder_missing":
        args += ["--model", USER + "nope"]
    elif case == "module_missing":
        args += ["--model", "no_such_pkg.models:build"]
    elif case == "not_a_module":
        args += ["--model", USER + "build_not_a_module"]
    elif case == "forward_fails":
        args += ["--recipe", user_recipe(USER + "build_bad_forward")]
    elif case == "pickled_checkpoint":
        torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")
        args += ["--model", USER + "build_user_model", "--checkpoint", str(tmp_path / "pickled.pth")]
    elif case == "wrong_checkpoint":
        torch.save({"model": {"x": torch.zeros(1)}}, tmp_path / "wrong.pth")
        args += ["--model", USER + "build_user_model", "--checkpoint", str(tmp_path / "wrong.pth")]
    if "--model" in args:
        args += ["--input-size", "32", "32"]
    code, _, err = run_cli(*args)
    assert_one_line_error(code, err, 2, pattern)
    assert not (tmp_path / "run").exists()


def test_a_builder_without_recipe_or_input_size_is_refused(run_cli, tmp_path):
    """A model given by its builder alone takes nothing from the demo recipe: its input size is asked."""
    code, _, err = run_cli("export", "--model", USER + "build_user_model", "--run-dir", str(tmp_path / "run"))
    assert_one_line_error(code, err, 2, "pass --input-size H W (a builder's model says nothing of its input)")


def test_fusion_mismatch_exit_1_names_module(run_cli, tmp_path):
    code, _, err = run_cli(
        "fuse",
        "--model",
        USER + "build_blog_model",
        "--input-size",
        "32",
        "32",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert_one_line_error(
        code,
        err,
        1,
        "check failed: fusion changed the output of module '1' (BlogRepConv.switch_to_deploy()): max abs err",
    )
    assert not (tmp_path / "run" / "fused.pt").exists()


def test_user_model_fuse_and_export(run_cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli(
        "fuse", "--model", USER + "build_user_model", "--input-size", "48", "64", "--run-dir", str(run)
    )
    assert code == 0, err
    assert "SwitchToDeploy.switch_to_deploy()" in err and "params" in err and "tolerance" in err
    code, _, err = run_cli(
        "export",
        "--model",
        USER + "build_user_model",
        "--input-size",
        "48",
        "64",
        "--run-dir",
        str(run),
        "--opset",
        "13",
    )
    assert code == 0, err
    assert "fuse" in err and "[cached]" in err
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"fuse", "export", "simplify"}
    assert manifest["stages"]["export"]["opset"] == 13


def test_blocks_left_unfused_are_named_in_the_summary_and_the_report(run_cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli(
        "fuse",
        "--model",
        USER + "build_with_unfusable_block",
        "--input-size",
        "32",
        "32",
        "--run-dir",
        str(run),
    )
    assert code == 0, err
    assert "NOT FUSED: 1: NeedsMode.switch_to_deploy() needs arguments" in " ".join(err.split())
    code, _, err = run_cli("report", "--artifacts", str(run))
    assert code == 0, err
    report = (run / "report" / "report.md").read_text()
    assert "NOT FUSED (left in training form): 1: NeedsMode.switch_to_deploy() needs arguments" in report


def test_unavailable_precision_is_refused_before_any_work(run_cli, tmp_path):
    code, _, err = run_cli(
        "build", "--target", "onnx", "--precision", "int8", "--run-dir", str(tmp_path / "run")
    )
    assert_one_line_error(code, err, 2, "precision 'int8' is not available for target(s) onnx")
    assert not (tmp_path / "run").exists()


def test_help_shows_examples(run_cli):
    for command in ("build", "fuse", "export", "doctor"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0 and "Examples:" in out and f"reparam-export {command}" in out


def test_a_library_that_prints_on_import_leaves_doctor_json_alone(run_cli, tmp_path, monkeypatch):
    """A library's note printed on its first import (Ultralytics creates its settings file so) goes to
    stderr: `doctor --json`'s stdout stays JSON."""
    from exporter.base.libraries import check_library

    (tmp_path / "noisy_first_import.py").write_text("print('Creating new settings file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = check_library("pytest", "noisy_first_import", "a role", "pip install it")
    code, out, err = run_cli("doctor", "--json")
    assert found.usable and "Creating new settings file" in err and code == 0
    json.loads(out)


def test_doctor_lists_backends(run_cli):
    code, out, _ = run_cli("doctor", "--json")
    assert code == 0
    checks = {c["name"]: c for c in json.loads(out)}
    for name in (
        "torch",
        "onnx",
        "onnxsim",
        "onnxruntime",
        "openvino",
        "nncf",
        "tensorrt",
        "ultralytics",
        "CUDA GPU",
    ):
        assert name in checks
    assert checks["torch"]["usable"] and checks["onnxruntime"]["usable"]
    if not checks["tensorrt"]["usable"]:
        assert "not installed" in checks["tensorrt"]["note"] or "import failed" in checks["tensorrt"]["note"]


@pytest.mark.parametrize(
    ("flags", "isa", "native"),
    [
        ("fpu sse avx avx2 fma", "AVX2", "FP32"),
        ("avx2 avx512f avx512_vnni", "AVX2, AVX-512, VNNI", "FP32, INT8"),
        ("avx2 avx512f avx512_vnni avx512_bf16", "AVX2, AVX-512, VNNI, BF16", "FP32, INT8, BF16"),
        ("avx2 avx512f avx512_bf16 amx_bf16 amx_int8 avx512_fp16", "AMX-INT8", "FP32, INT8, BF16, FP16"),
    ],
    ids=["avx2", "vnni", "bf16", "amx"],
)
def test_doctor_names_the_cpus_instruction_sets_and_native_precisions(
    run_cli, monkeypatch, flags, isa, native
):
    from exporter.base import host

    monkeypatch.setattr(host, "_cpuinfo", lambda: ["model name\t: Test CPU", f"flags\t\t: {flags}"])
    code, out, _ = run_cli("doctor", "--json")
    cpu = {c["name"]: c for c in json.loads(out)}["CPU"]
    assert code == 0 and cpu["version"] == "Test CPU"
    assert isa in cpu["note"] and f"computes natively: {native};" in cpu["note"] + ";", cpu["note"]
    if importlib.util.find_spec("openvino"):  # what OpenVINO says it computes on the real CPU
        assert "openvino: CPU plugin computes" in cpu["note"] and "FP32" in cpu["note"].split("openvino:")[1]


def test_the_cli_starts_without_the_libraries_only_its_stages_need(tmp_path):
    """`--help` and every command's start import no ONNX, onnxruntime, onnxsim, OpenVINO, NNCF,
    torchvision, Ultralytics or Ray (together seconds of a start): each stage imports what it runs."""
    heavy = ("onnx", "onnxruntime", "onnxsim", "openvino", "nncf", "torchvision", "ultralytics", "ray")
    script = (
        "import sys\nfrom exporter.cli import main\n"
        "assert main(['build', '--help']) == 0\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    found = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_console_script_end_to_end(tmp_path):
    """The installed entry point: real process exit codes, no traceback on bad input."""
    exe = Path(sys.executable).with_name("reparam-export")
    ok = subprocess.run(
        [
            str(exe),
            "build",
            "--recipe",
            str(REPO / "recipes" / "embedded_demo.yaml"),
            "--input-size",
            "64",
            "64",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "run" / "model.sim.onnx").is_file()
    bad = subprocess.run(
        [str(exe), "build", "--input-size", "0", "32"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == (
        "error: embedded default recipe: input_size: "
        "expected two positive integers (height, width), got [0, 32]"
    )


def test_run_dir_can_move_and_a_damaged_manifest_is_bad_input(run_cli, tmp_path):
    import shutil

    run = tmp_path / "run"
    code, _, err = run_cli(
        "build", "--recipe", str(EMBEDDED), "--input-size", "64", "64",
        "--target", "onnx", "--precision", "fp32", "--run-dir", str(run),
    )  # fmt: skip
    assert code == 0, err
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(run, moved)  # artifacts are recorded relative to the run directory
    code, _, err = run_cli("bench", "--artifacts", str(moved), "--min-iters", "2", "--min-seconds", "0.01")
    assert code == 0, err
    assert json.loads((moved / "bench.json").read_text())["results"]["onnx.fp32"]["artifact"].startswith(
        str(moved)
    )
    (moved / "model.sim.onnx").unlink()
    code, _, err = run_cli("bench", "--artifacts", str(moved), "--min-iters", "2", "--min-seconds", "0.01")
    assert_one_line_error(code, err, 2, "model.sim.onnx is missing; rebuild the run")
    (moved / "manifest.json").write_text("{not json")
    for command in (["bench"], ["eval", "--data", "demo"], ["report"]):
        code, _, err = run_cli(*command, "--artifacts", str(moved))
        assert_one_line_error(code, err, 2, "manifest.json is damaged")


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["eval", "--artifacts", "x", "--limit", "0"], "'--limit': 0 is not in the range x>=1"),
        (["bench", "--artifacts", "x", "--threads", "-2"], "'--threads': -2 is not in the range x>=0"),
        (["bench-akconv", "--channels", "0"], "'--channels': 0 is not in the range x>=1"),
        (["sensitivity", "--top", "-3"], "'--top': -3 is not in the range x>=1"),
        (["build", "--calib-count", "0"], "'--calib-count': 0 is not in the range x>=1"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_are_one_line(run_cli, args, pattern):
    code, _, err = run_cli(*args)
    assert_one_line_error(code, err, 2, pattern)
    assert "--help" in err


def test_damaged_run_files_and_odd_builders_are_bad_input(run_cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("build", "--recipe", str(EMBEDDED), "--input-size", "64", "64",
                           "--target", "onnx", "--precision", "fp32", "--run-dir", str(run))  # fmt: skip
    assert code == 0, err
    (run / "fused.pt").write_bytes(b"\x00garbage")
    code, _, err = run_cli("bench", "--artifacts", str(run), "--min-iters", "1", "--min-seconds", "0")
    assert_one_line_error(code, err, 2, "fused.pt is not the file its build wrote")
    (run / "fused.pt").unlink()
    code, _, err = run_cli("bench", "--artifacts", str(run), "--min-iters", "1", "--min-seconds", "0")
    assert_one_line_error(code, err, 2, "fused.pt is missing; rebuild the run")
    code, _, err = run_cli(
        "fuse", "--model", "tests.fixture_models:build_not_a_module", "--input-size", "32", "32",
        "--run-dir", str(tmp_path / "other"),
    )  # fmt: skip
    assert_one_line_error(code, err, 2, "expected a torch nn.Module")
    (tmp_path / "random.pt").write_bytes(bytes(range(256)))
    code, _, err = run_cli(
        "fuse", "--model", USER + "build_user_model", "--input-size", "32", "32",
        "--checkpoint", str(tmp_path / "random.pt"),
    )  # fmt: skip
    assert_one_line_error(
        code, err, 2, "cannot be loaded with weights_only=True (UnpicklingError): it is not a"
    )
    assert "weights_only=False" not in err, "never advise loading an untrusted file with pickle"


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["fuse", "--run-dir"], "--run-dir {} is a file; pass a folder"),
        (["report", "--artifacts", "x", "--out"], "Directory '{}' is a file"),
        (["demo-data", "--split", "calib", "--out"], "Directory '{}' is a file"),
    ],
)
def test_output_folder_that_is_a_file(run_cli, tmp_path, args, pattern):
    existing = tmp_path / "notadir"
    existing.write_text("keep me")
    code, _, err = run_cli(*args, str(existing))
    assert_one_line_error(code, err, 2, pattern.format(existing))
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["build", "--target", "onnx"], "precision 'fp16' is not available for target(s) onnx"),
        (["build", "--target", "openvino", "--calib-data", "nope"], "calibration source not found: nope"),
        (["calibrate", "--calib-data", "nope"], "calibration source not found: nope"),
        (["sensitivity", "--calib-data", "nope"], "calibration source not found: nope"),
        (["bench-int8", "--eval-data", "nope.json"], "evaluation data not found: nope.json"),
        (["build", "--target", "tensorrt", "--precision", "fp32", "--trt-version", "banana"], "'banana'"),
    ],
)
def test_bad_sources_refused_before_any_stage(run_cli, tmp_path, args, pattern):
    code, _, err = run_cli(*args, "--run-dir", str(tmp_path / "run"))
    assert_one_line_error(code, err, 2, pattern)
    assert not (tmp_path / "run").exists(), "no stage ran"


def test_messages_name_the_flags_of_the_command(run_cli, tmp_path):
    """Below the CLI an error names recipe fields; the CLI spells each as the flag that sets it."""
    from exporter.base.data.shapes import write_split

    source = write_split(tmp_path / "shapes", "calib", 3, seed=1)
    code, _, err = run_cli(
        "build", "--target", "openvino", "--precision", "int8", "--calib-data", str(source),
        "--calib-count", "5", "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert_one_line_error(code, err, 2, "has 3 images, fewer than the 5 asked for; pass --calib-count 3")
    assert not (tmp_path / "run").exists(), "refused before any stage"


def test_onnx_target_names_the_precision_to_pass(run_cli, tmp_path):
    code, _, err = run_cli("build", "--target", "onnx", "--run-dir", str(tmp_path / "run"))
    assert_one_line_error(code, err, 2, "; pass --precision fp32")


def test_doctor_refuses_a_file_that_is_not_onnx(run_cli, tmp_path):
    (tmp_path / "random.onnx").write_bytes(bytes(range(256)) * 4)
    code, _, err = run_cli("doctor", "--onnx", str(tmp_path / "random.onnx"))
    assert_one_line_error(code, err, 2, "random.onnx is not an ONNX model")


def test_own_model_on_the_default_recipe_builds_without_the_demos_evaluation(run_cli, tmp_path):
    code, _, err = run_cli(
        "build", "--model", USER + "build_user_model", "--input-size", "32", "32",
        "--target", "onnx", "--precision", "fp32", "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 0, err
    assert "built build_user_model onnx.fp32" in err and "error" not in err


def test_options_this_build_does_not_read_are_warned_about(run_cli, tmp_path):
    code, _, err = run_cli(
        "build", "--recipe", str(EMBEDDED), "--input-size", "64", "64", "--target", "onnx",
        "--precision", "fp32", "--trt-end2end-nms", "--calib-count", "5", "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 0, err
    assert "warning: --trt-end2end-nms has no effect on this build (targets onnx, precisions fp32)" in err
    assert "warning: --calib-count has no effect" in err and "--eval-limit" not in err


def test_the_github_actions_job_of_the_docs_parses_and_names_real_options(run_cli):
    """The workflow docs/ci.md offers to paste is valid YAML, and each reparam-export line in it is
    accepted by the command it names (its options exist; --help stops before anything runs)."""
    import shlex

    import yaml

    page = (Path(__file__).resolve().parents[1] / "docs" / "ci.md").read_text()
    workflow = yaml.safe_load(
        page.split("```yaml\n# .github/workflows/export.yml\n", 1)[1].split("```", 1)[0]
    )
    steps = workflow["jobs"]["export"]["steps"]
    commands = [
        shlex.split(step["run"]) for step in steps if step.get("run", "").startswith("reparam-export")
    ]
    assert [c[1] for c in commands] == ["build", "check"]
    for command in commands:
        code, out, err = run_cli(*command[1:], "--help")
        assert code == 0 and "Usage:" in out, err
