"""The Python API: `exporter.build` makes what `reparam-export build` makes, evaluates and times it, and
returns typed results; `exporter.read_run` reads the same from a CLI's run."""

import subprocess
import sys

import pytest

import exporter
from exporter.base.errors import UserError
from tests.conftest import EMBEDDED

pytest.importorskip("openvino")

BUILD = {"targets": ["onnx", "openvino"], "precisions": ["fp32"]}


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("api") / "run"
    return exporter.build(**BUILD, eval_data="demo", eval_limit=20, bench=True, run_dir=run)  # the demo model


def test_build_returns_typed_results(api_run):
    assert isinstance(api_run, exporter.Run)
    assert api_run.proof.ok and api_run.proof.ratio < 1e-2
    assert set(api_run.artifacts) == {"onnx.fp32", "openvino.fp32"}
    for key, artifact in api_run.artifacts.items():
        assert isinstance(artifact, exporter.Artifact) and artifact.path.is_file()
        assert artifact.check.ok and artifact.check.max_abs_err <= artifact.check.tolerance, key
        assert 0 < artifact.map <= 1 and artifact.map <= artifact.map50, key
        assert artifact.latency_ms > 0, key
    assert abs(api_run.artifacts["onnx.fp32"].map - api_run.torch_map) < 0.01
    assert api_run.deferred == {}


def test_build_makes_and_scores_what_the_cli_does(api_run, run_cli, tmp_path):
    cli = tmp_path / "cli"
    targets = ("--target", "onnx", "--target", "openvino", "--precision", "fp32")
    code, _, err = run_cli("build", *targets, "--eval-limit", "20", "--run-dir", str(cli))
    assert code == 0, err
    read = exporter.read_run(cli)
    assert {k: a.sha256 for k, a in read.artifacts.items()} == {
        k: a.sha256 for k, a in api_run.artifacts.items()
    }
    assert {k: a.map for k, a in read.artifacts.items()} == {k: a.map for k, a in api_run.artifacts.items()}
    assert all(a.latency_ms is None for a in read.artifacts.values()), "not benchmarked"


def test_evaluation_and_benchmark_are_stages_of_the_run(api_run):
    """Both measurements are nodes run by the stages' runner: in the manifest with the hashes of the files
    they measured (the evaluation's through a scoring node per model), their typed records holding what
    eval.json and bench.json hold."""
    from exporter.base.rundir import read_manifest
    from exporter.pipeline.bench import BenchRecord
    from exporter.pipeline.evaluate import EvaluationRecord, ScoreRecord

    stages = read_manifest(api_run.root)["stages"]
    hashes = {key: artifact.sha256 for key, artifact in api_run.artifacts.items()}
    assert {key: stages["bench"]["inputs"][key]["sha256"] for key in hashes} == hashes
    assert {key: stages[f"eval.{key}"]["inputs"]["model"]["sha256"] for key in hashes} == hashes
    assert set(stages["eval"]["inputs"]) == {"torch.fp32", *hashes}, "eval gathers every model's score"
    for key, artifact in api_run.artifacts.items():
        assert ScoreRecord.from_json(stages[f"eval.{key}"]).map == artifact.map
    scored = EvaluationRecord.from_json(stages["eval"])
    assert scored.maps == {
        "torch.fp32": api_run.torch_map,
        **{k: a.map for k, a in api_run.artifacts.items()},
    }
    timed = BenchRecord.from_json(stages["bench"])
    assert timed.p50_ms == {key: artifact.latency_ms for key, artifact in api_run.artifacts.items()}


def test_a_stale_measurement_is_not_reported(api_run, tmp_path):
    """mAP and latency belong to the file they measured: an artifact rebuilt since has none."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(api_run.root, copy)
    eval_json = copy / "eval.json"
    eval_json.write_text(eval_json.read_text().replace(api_run.artifacts["onnx.fp32"].sha256, "0" * 64))
    read = exporter.read_run(copy)
    assert read.artifacts["onnx.fp32"].map is None and read.artifacts["openvino.fp32"].map is not None


def test_bad_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"precisions.0: Input should be 'fp32', .* or 'int8'"):
        exporter.build(EMBEDDED, precisions=["int4"], run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_import_exporter_stays_light():
    """`import exporter` loads neither torch nor a runtime; the API arrives on first use."""
    code = (
        "import sys, exporter; print('torch' in sys.modules, 'openvino' in sys.modules, exporter.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", exporter.__version__]
