"""CI's accuracy regression check on the demo model (a fast subset): build, evaluate, compare with
reports/baseline.json under reports/tolerances.yaml. A change that hurts engine accuracy fails here.

The baseline is regenerated (after an intended change) with the same command line, then
`reparam-export check --artifacts RUN --update-baseline`; see reports/README.md.
"""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAST_SUBSET = (
    "--target",
    "onnx",
    "--target",
    "openvino",
    "--precision",
    "fp32",
    "--precision",
    "int8",
    "--calib-count",
    "64",
    "--eval-limit",
    "100",
)


@pytest.mark.slow
def test_demo_engines_have_not_regressed(run_cli, tmp_path):
    pytest.importorskip("openvino")
    run = tmp_path / "run"
    code, _, err = run_cli("build", *FAST_SUBSET, "--run-dir", str(run))
    assert code == 0, err
    code, out, err = run_cli(
        "check",
        "--artifacts",
        str(run),
        "--baseline",
        str(REPO / "reports" / "baseline.json"),
        "--tolerances",
        str(REPO / "reports" / "tolerances.yaml"),
    )
    assert code == 0, out + err
    assert out.count(" ok ") >= 6, out
