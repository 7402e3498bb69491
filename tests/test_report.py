"""Reports from a fixture run directory, and the regression check's exit codes."""

import json
import re

import pytest

from exporter.base.artifacts import sha256_file
from exporter.measure.report.render import write_report


def written(root, relative, size):
    """A stand-in artifact file and its manifest record (`size`: the bytes the report shows)."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{relative}\n")
    return {"path": relative, "sha256": sha256_file(path), "bytes": size}


def make_run(root, name="damoyolo_ns", map_int8=0.300, p50_int8=3.0):
    root.mkdir(parents=True, exist_ok=True)
    stages = {
        "fuse": {
            "wall_s": 1.2,
            "check": {"params_before": 1500000, "params_after": 1410000},
            "output": written(root, "fused.pt", 6_000_000),
        },
        "openvino.fp32": {
            "wall_s": 2.0,
            "check": {"max_abs_err": 1e-5},
            "output": written(root, "openvino/model_fp32.xml", 5_600_000),
        },
        "openvino.int8": {
            "wall_s": 9.0,
            "check": {"max_abs_err": 0.08},
            "output": written(root, "openvino/model_int8.xml", 1_500_000),
            "settings": {"calibration": {"digests": ["a1", "b2"]}},
        },
    }
    artifacts = {"openvino.fp32": "openvino/model_fp32.xml", "openvino.int8": "openvino/model_int8.xml"}
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "recipe": {"name": name, "calibration": {"count": 64, "source": "/data/calib"}},
                "recipe_hash": "abc",
                "stages": stages,
                "artifacts": artifacts,
            }
        )
    )
    (root / "eval.json").write_text(
        json.dumps(
            {
                "data": "val",
                "data_sha256": "digest-of-val",
                "images": 100,
                "results": {
                    "torch.fp32": {"map": 0.310, "map50": 0.5},
                    "openvino.fp32": {"map": 0.310, "map50": 0.5},
                    "openvino.int8": {"map": map_int8, "map50": 0.49},
                },
            }
        )
    )
    samples = [4.0, 4.1, 4.3, 5.0]
    (root / "bench.json").write_text(
        json.dumps(
            {
                "mode": "batch 1, synchronous",
                "threads": 2,
                "cpu": "test cpu",
                "results": {
                    "openvino.fp32": {
                        "p50_ms": 4.1,
                        "p90_ms": 4.5,
                        "p99_ms": 5.0,
                        "fps_batch1": 240.0,
                        "bytes": 5_600_000,
                        "samples_ms": samples,
                    },
                    "openvino.int8": {
                        "p50_ms": p50_int8,
                        "p90_ms": p50_int8 + 0.4,
                        "p99_ms": p50_int8 + 1,
                        "fps_batch1": 330.0,
                        "bytes": 1_500_000,
                        "samples_ms": [v * p50_int8 / 4.1 for v in samples],
                    },
                },
            }
        )
    )
    return root


def test_report_all_formats_self_contained(tmp_path):
    paths = write_report(make_run(tmp_path / "run"), tmp_path / "out")
    markdown = paths["markdown"].read_text()
    assert "| openvino.int8 | 30.0 | 49.0 | 3.00 |" in markdown
    assert "| torch.fp32 | 31.0 |" in markdown and "not measured" in markdown
    assert (
        "| DAMO-YOLO-NS CPU OpenVINO (Intel Xeon 8163, batch 1, no post-processing), 416 | mAP 32.3, 4.08 ms "
        "| openvino.fp32: 4.10 ms on test cpu, 2 threads (1.00x the published speed, another CPU); mAP 31.0 "
        "(0.96x published) |"
    ) in markdown
    assert "| DAMO-YOLO-NS parameters (M) | 1.41 | 1.410 fully fused (1.000x;" in markdown
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 2
    assert not re.search(r"(src|href)=[\"'](?!data:)", page), "no external files"
    content = json.loads(paths["json"].read_text())
    assert {r["artifact"] for r in content["rows"]} == {"torch.fp32", "openvino.fp32", "openvino.int8"}
    assert content["fused"]["params_after"] == 1410000 and content["targets"]


def test_t4_targets_say_not_measurable_and_what_would_measure_them(tmp_path):
    run = make_run(tmp_path / "run", name="damoyolo_s")
    row = "| DAMO-YOLO-S T4 TensorRT FP16, 640 | mAP 46.0, 3.83 ms | not measurable here: no T4 GPU with "
    row += "TensorRT"
    assert row + " on this host |" in write_report(run, tmp_path / "out")["markdown"].read_text()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["deferred"] = {
        "tensorrt": {
            "artifact": "TensorRT engine",
            "runtime": "TensorRT",
            "reason": "TensorRT is not installed",
            "bundle": "runs/s/tensorrt/bundle/build_engine.sh",
        }
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    paths = write_report(run, tmp_path / "out")
    markdown, page = paths["markdown"].read_text(), paths["html"].read_text()
    assert row + " on this host; `bash runs/s/tensorrt/bundle/build_engine.sh` on a T4 builds" in markdown
    assert "<code>bash runs/s/tensorrt/bundle/build_engine.sh</code> on a T4" in page, "code in a cell"


def test_a_plot_of_nothing_measured_is_left_out(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "eval.json").unlink()
    page = write_report(run, tmp_path / "out")["html"].read_text()
    assert page.count("data:image/png;base64,") == 1 and "latency vs mAP" not in page
    (run / "bench.json").unlink()
    page = write_report(run, tmp_path / "out")["html"].read_text()
    assert "data:image/png" not in page and "<h2>Plots</h2>" not in page


def check(run_cli, run, baseline, tolerances, *extra):
    return run_cli(
        "check", "--artifacts", str(run), "--baseline", str(baseline), "--tolerances", str(tolerances), *extra
    )


@pytest.fixture
def baseline(tmp_path, run_cli):
    run = make_run(tmp_path / "good")
    path = tmp_path / "baseline.json"
    tolerances = tmp_path / "tol.yaml"
    tolerances.write_text("map: {better: higher, abs: 0.003}\np50_ms: {better: lower, rel: 0.5}\n")
    code, _, err = check(
        run_cli,
        run,
        path,
        tolerances,
        "--update-baseline",
    )
    assert code == 0, err
    return path, tolerances


def test_check_passes_unchanged(tmp_path, run_cli, baseline):
    path, tolerances = baseline
    code, out, _ = check(
        run_cli,
        make_run(tmp_path / "same"),
        path,
        tolerances,
    )
    assert code == 0 and "REGRESSED" not in out and out.count("ok") >= 4


@pytest.mark.parametrize("worse, metric", [({"map_int8": 0.290}, "map"), ({"p50_int8": 5.0}, "p50_ms")])
def test_check_fails_on_regression(tmp_path, run_cli, baseline, worse, metric):
    path, tolerances = baseline
    code, out, err = check(run_cli, make_run(tmp_path / "worse", **worse), path, tolerances)
    assert code == 1 and "1 of 5 metrics regressed" in err
    (line,) = [line for line in out.splitlines() if "REGRESSED" in line]
    assert "openvino.int8" in line and metric in line


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "invalid JSON at line 1, column 2"),
        (b"\xff\xfe\x00", "not a text file (not UTF-8)"),
        ('{"model": "x"}', "not a baseline file (KeyError"),
        ('{"metrics": {"a": 3}}', "not a baseline file (TypeError"),
        ('{"metrics": {"onnx.fp32": {"map": NaN}}}', "onnx.fp32.map is nan, not a finite number"),
        ('{"metrics": {"onnx.fp32": {"map": true}}}', "onnx.fp32.map is True, not a finite number"),
        ('{"model": "other", "metrics": {"onnx.fp32": {"map": 0.5}}}', "is the baseline of 'other', not of"),
        ('{"metrics": {"onnx.fp32": {"map": 0.5}}}', "records no 'model'"),
        (None, "baseline not found"),
    ],
)
def test_bad_baseline_exit_2(tmp_path, run_cli, baseline, content, message):
    _, tolerances = baseline
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, _, err = check(
        run_cli,
        make_run(tmp_path / "r"),
        bad,
        tolerances,
    )
    assert code == 2 and message in err and "Traceback" not in err


def edit(path, change):
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_a_setting_newer_than_the_baseline_compares_as_its_default(tmp_path, run_cli, baseline):
    """A baseline written before a recipe setting existed is still comparable with a run that leaves the
    setting at its default (the baseline's build behaved as the default); the baseline file here records
    no openvino section at all."""
    path, tolerances = baseline
    assert "openvino.bf16_for" not in json.loads(path.read_text())["conditions"]["build"]
    run = make_run(tmp_path / "newer")
    edit(run / "manifest.json", lambda m: m["recipe"].update(openvino={"bf16_for": "this-host"}))
    code, _, err = check(run_cli, run, path, tolerances)
    assert code == 0, err


@pytest.mark.parametrize(
    "file, change, named",
    [
        (
            "eval.json",
            lambda e: e.update(images=1),
            "evaluation data (eval.json) (images: baseline 100, run 1)",
        ),
        ("eval.json", lambda e: e.update(data_sha256="other"), "data_sha256: baseline 'digest-of-val', run"),
        (
            "bench.json",
            lambda b: b.update(threads=16),
            "benchmark (bench.json) (threads: baseline 2, run 16)",
        ),
        ("bench.json", lambda b: b.update(cpu="another"), "cpu: baseline 'test cpu', run 'another'"),
        (
            "manifest.json",
            lambda m: m["recipe"]["calibration"].update(count=8),
            "the build (calibration.count: baseline 64, run 8)",
        ),
        (
            "manifest.json",
            lambda m: m["recipe"].update(openvino={"bf16_for": "another-host"}),
            "the build (openvino.bf16_for: baseline 'this-host', run 'another-host')",
        ),
        (
            "manifest.json",
            lambda m: m["stages"]["openvino.int8"]["settings"]["calibration"].update(digests=["a1", "c3"]),
            "the build (calibration_sha256: baseline",
        ),
    ],
)
def test_numbers_measured_otherwise_are_not_compared(tmp_path, run_cli, baseline, file, change, named):
    """A run re-scored on one image, on other data, timed on another machine or built otherwise is not
    checked against the baseline: exit 2 naming both sides (a calibration folder elsewhere is no
    difference: the images' contents key the build)."""
    path, tolerances = baseline
    run = make_run(tmp_path / "other")
    edit(run / "manifest.json", lambda m: m["recipe"]["calibration"].update(source="/elsewhere/calib"))
    assert check(run_cli, run, path, tolerances)[0] == 0
    edit(run / file, change)
    code, _, err = check(run_cli, run, path, tolerances)
    assert code == 2 and named in err and "not comparable" in err, err


def test_a_baseline_that_records_no_conditions_is_refused(tmp_path, run_cli, baseline):
    path, tolerances = baseline
    edit(path, lambda b: b.pop("conditions"))
    code, _, err = check(
        run_cli,
        make_run(tmp_path / "r"),
        path,
        tolerances,
    )
    assert code == 2 and "records not what its numbers were measured under" in err, err


@pytest.mark.parametrize("value", [float("nan"), "0.31"])
def test_a_damaged_metric_is_reported_as_nan(tmp_path, value):
    paths = write_report(make_run(tmp_path / "run", map_int8=value), tmp_path / "out")
    assert "| openvino.int8 | nan | 49.0 |" in paths["markdown"].read_text()


@pytest.mark.parametrize("value", [float("nan"), "0.31"])
def test_a_current_metric_that_is_not_a_number_regresses(tmp_path, run_cli, baseline, value):
    path, tolerances = baseline
    code, out, err = check(run_cli, make_run(tmp_path / "odd", map_int8=value), path, tolerances)
    assert code == 1 and "1 of 5 metrics regressed" in err, out + err
    (line,) = [line for line in out.splitlines() if "REGRESSED" in line]
    assert "openvino.int8" in line and "map" in line


def test_a_misspelt_tolerance_is_refused_not_ignored(tmp_path, run_cli, baseline):
    path, _ = baseline
    misspelt = tmp_path / "tol.yaml"
    misspelt.write_text("mAP: {better: higher, abs: 0.003}\np50_ms: {better: lower, rel: 0.5}\n")
    code, _, err = check(run_cli, make_run(tmp_path / "r", map_int8=0.0), path, misspelt)
    assert code == 2 and "mAP is not a metric (checkable: map, map50" in err, err


def test_bad_tolerances_exit_2(tmp_path, run_cli, baseline):
    path, _ = baseline
    bad = tmp_path / "bad.yaml"
    bad.write_text("map: {better: sideways}\n")
    code, _, err = check(
        run_cli,
        make_run(tmp_path / "r"),
        path,
        bad,
    )
    assert code == 2 and "map.better" in err


def test_update_baseline_refuses_a_run_with_nothing_measured(tmp_path, run_cli, baseline):
    path, tolerances = baseline
    before = path.read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"recipe": {"name": "damoyolo_ns"}, "stages": {}}))
    code, _, err = check(run_cli, empty, path, tolerances,
        "--update-baseline",
    )  # fmt: skip
    assert code == 2 and "has no measured" in err and "left as it is" in err
    assert path.read_text() == before


def test_measurements_of_an_earlier_build_are_left_out(tmp_path):
    from exporter.measure.report.metrics import collect
    from exporter.measure.report.render import to_markdown

    run = make_run(tmp_path / "r")
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "openvino/model_int8.xml").write_text("rebuilt\n")
    manifest["stages"]["openvino.int8"]["output"]["sha256"] = sha256_file(run / "openvino/model_int8.xml")
    (run / "manifest.json").write_text(json.dumps(manifest))
    bench = json.loads((run / "bench.json").read_text())
    bench["results"]["openvino.int8"]["sha256"] = "old"  # timed before the rebuild
    (run / "bench.json").write_text(json.dumps(bench))
    metrics = collect(run)
    int8 = next(r for r in metrics["rows"] if r["artifact"] == "openvino.int8")
    assert int8["p50_ms"] is None and int8["map"] is not None, "eval.json records no digest: kept"
    assert metrics["stale"] == ["bench.json: openvino.int8"]
    assert "Left out, measured on an earlier build" in to_markdown(metrics)


def test_a_passing_check_ends_with_what_it_checked_and_under_which_conditions(tmp_path, run_cli, baseline):
    path, tolerances = baseline
    code, _, err = check(run_cli, make_run(tmp_path / "same"), path, tolerances)
    last = err.strip().splitlines()[-1]
    assert code == 0 and last.startswith("5 metrics checked, 0 skipped; under evaluation data"), err
    assert "(100 images)" in last and "2 threads on test cpu" in last


def test_a_baseline_metric_without_tolerance_fails_unless_allowed(tmp_path, run_cli, baseline):
    path, _ = baseline
    only_map = tmp_path / "map.yaml"
    only_map.write_text("map: {better: higher, abs: 0.003}\n")
    run = make_run(tmp_path / "same")
    code, out, err = check(run_cli, run, path, only_map)
    assert code == 1 and "no tolerance: openvino.fp32.p50_ms, openvino.int8.p50_ms" in err, err
    assert "regressed" not in err and "NO TOLERANCE" in out
    code, _, err = check(run_cli, run, path, only_map, "--allow-untoleranced")
    assert code == 0, err
    assert "3 metrics checked, 2 skipped (openvino.fp32.p50_ms: no tolerance, openvino.int8.p50_ms" in err


def test_an_artifact_on_one_side_only_fails_unless_allowed(tmp_path, run_cli, baseline):
    path, tolerances = baseline
    run = make_run(tmp_path / "more")
    extra = written(run, "openvino/model_fp16.xml", 3_000_000)
    edit(run / "manifest.json", lambda m: m["artifacts"].update({"openvino.fp16": extra["path"]}))
    edit(run / "manifest.json", lambda m: m["stages"].update({"openvino.fp16": {"output": extra}}))
    code, _, err = check(run_cli, run, path, tolerances)
    assert code == 1 and "new artifact: openvino.fp16" in err, err
    assert check(run_cli, run, path, tolerances, "--allow-new-artifacts")[0] == 0

    run = make_run(tmp_path / "fewer")
    edit(run / "manifest.json", lambda m: m["artifacts"].pop("openvino.int8"))
    code, out, err = check(run_cli, run, path, tolerances)
    assert code == 1 and "missing artifact: openvino.int8" in err and "regressed" not in err, err
    code, _, err = check(run_cli, run, path, tolerances, "--allow-missing-artifacts")
    assert code == 0 and "(openvino.int8: missing artifact)" in err, err


def test_a_value_not_measured_names_its_cause(tmp_path, run_cli, baseline):
    """A stale measurement and a missing eval.json are 'not measured', with what to run; neither is a
    regression nor a difference in the evaluation data."""
    path, tolerances = baseline
    run = make_run(tmp_path / "stale")
    edit(run / "eval.json", lambda e: e["results"]["openvino.int8"].update(sha256="old"))
    code, out, err = check(run_cli, run, path, tolerances)
    assert code == 1 and "not measured: openvino.int8.map" in err and "regressed" not in err, err
    assert "eval.json measured an earlier build of it; run `reparam-export eval` again" in out
    (run / "eval.json").unlink()
    code, out, err = check(run_cli, run, path, tolerances)
    assert code == 1 and "not measured: openvino.fp32.map, openvino.int8.map, torch.fp32.map" in err, err
    assert "differs" not in err and "the run has no eval.json; run `reparam-export eval` on it" in out


def test_check_speaks_junit_and_github_step_summaries(tmp_path, run_cli, baseline, monkeypatch):
    import xml.etree.ElementTree as ET

    path, tolerances = baseline
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report = tmp_path / "check.xml"
    code, _, _ = check(
        run_cli, make_run(tmp_path / "worse", map_int8=0.2), path, tolerances, "--junit", str(report)
    )
    assert code == 1
    suite = ET.parse(report).getroot().find("testsuite")
    cases = {(c.get("classname"), c.get("name")): c for c in suite.iter("testcase")}
    assert suite.get("tests") == "5" and suite.get("failures") == "1" and len(cases) == 5
    failure = cases[("openvino.int8", "map")].find("failure")
    assert failure.get("type") == "REGRESSED" and "baseline 0.3, current 0.2" in failure.get("message")
    assert cases[("openvino.fp32", "map")].find("failure") is None
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "**failed** (1 of 5)" in text
    assert "| openvino.int8 | map | 0.3 | 0.2 | 0.297 | REGRESSED (beyond its limit) |" in text
