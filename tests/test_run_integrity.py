"""A run directory's integrity: every reader verifies the artifacts against the manifest, one build at a
time, temporary files of a killed build removed, the same inputs give the same bytes (interrupted or
not), and a read-only folder or a full disk is one line that leaves nothing half-written."""

import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from exporter.base.artifacts import sha256_file
from exporter.base.data.shapes import write_split
from exporter.pipeline.recipe import load_recipe
from tests.conftest import EMBEDDED

pytest.importorskip("openvino")

SCRIPT = Path(sys.executable).parent / "reparam-export"
FILES = (
    "fused.pt",
    "openvino/model.onnx",
    *(f"openvino/model_{p}.{s}" for p in ("fp32", "int8") for s in ("xml", "bin")),
)
# one path for the module (it is in the settings), made by the fixture below and removed after it
CALIBRATION = Path(tempfile.gettempdir()) / f"calibration-{os.getpid()}" / "shapes"
BUILD = [
    "build", "--recipe", str(EMBEDDED), "--input-size", "96", "128", "--target", "openvino",
    "--precision", "fp32", "--precision", "int8", "--calib-data", str(CALIBRATION / "calib.json"),
    "--calib-count", "8",
]  # fmt: skip


def build(run: Path) -> None:
    from exporter.pipeline.builder import Pipeline

    recipe = load_recipe(
        EMBEDDED,
        {
            "input_size": [96, 128],
            "targets": ["openvino"],
            "precisions": ["fp32", "int8"],
            "calibration.source": str(CALIBRATION / "calib.json"),
            "calibration.count": 8,
        },
    )
    Pipeline(recipe, run).build()


def digests(run: Path) -> dict[str, str]:
    return {name: sha256_file(run / name) for name in FILES}


@pytest.fixture(scope="module", autouse=True)
def calibration_images():
    write_split(CALIBRATION, "calib", 12, seed=3)
    yield
    shutil.rmtree(CALIBRATION.parent)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = tmp_path_factory.mktemp("built") / "run"
    build(run)
    return run


def same_threads() -> dict[str, str]:
    """The environment with torch's thread count of this process: FP32 rounding, which fused.pt
    records, depends on how a forward pass is split across threads."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def cli(*argv: str, preexec=None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        cwd=cwd,
        timeout=300,
        env=same_threads(),
    )


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--data", "demo"],
        ["bench", "--min-iters", "1", "--min-seconds", "0"],
        ["report"],
        ["check", "--update-baseline"],
    ],
)
@pytest.mark.parametrize("damaged", ["openvino/model_fp32.bin", "fused.pt"])
def test_every_reader_refuses_a_changed_artifact(built, run_cli, tmp_path, command, damaged):
    run = shutil.copytree(built, tmp_path / "run")
    content = bytearray((run / damaged).read_bytes())
    content[len(content) // 2] ^= 0x40  # one flipped bit in the weights
    (run / damaged).write_bytes(bytes(content))
    (tmp_path / "t.yaml").write_text("map: {better: higher, abs: 0.5}\n")
    extra = ["--tolerances", str(tmp_path / "t.yaml"), "--baseline", str(tmp_path / "b.json")]
    extra = extra if command[0] == "check" else []
    code, _, err = run_cli(command[0], "--artifacts", str(run), *command[1:], *extra)
    assert code == 2 and f"{damaged} is not the file its build wrote" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (run / "eval.json").exists() and not (run / "bench.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not SCRIPT.is_file(), reason="the reparam-export console script is not installed")
def test_a_killed_build_resumes_to_the_same_bytes_and_leaves_no_temporaries(built, tmp_path):
    """Killed mid-build, resumed in a new process: fused.pt, the ONNX and the FP32 and INT8 IR are byte
    for byte those the test process built after other models (OpenVINO's node counter and torch.save's
    temporary archive name differed), and no temporary file is left."""
    run = tmp_path / "run"
    process = subprocess.Popen(
        [str(SCRIPT), *BUILD, "--run-dir", str(run)], stderr=subprocess.DEVNULL, env=same_threads()
    )
    deadline = time.monotonic() + 120
    while not (run / "fused.pt").is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # mid-export (or just after), whatever was being written
    process.wait()
    (run / "openvino").mkdir(exist_ok=True)
    stale = run / "openvino" / ".tmp-999999-model.onnx"  # as a kill at the rename leaves it
    stale.write_bytes(b"half")
    result = cli(*BUILD, "--run-dir", str(run))
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and not list(run.rglob(".tmp-*"))
    assert digests(run) == digests(built)


def test_a_second_build_of_one_run_directory_is_refused(built, run_cli, tmp_path):
    run = shutil.copytree(built, tmp_path / "run")
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
            str(run),
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_cli(*BUILD, "--run-dir", str(run), "--force")
        assert code == 2 and "is being built by another process" in err, err
        assert digests(run) == digests(built), "the held run was not touched"
    finally:
        holder.kill()
        holder.wait()
    code, _, err = run_cli(*BUILD, "--run-dir", str(run))
    assert code == 0, err


FREE = (
    "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
    "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')"
)


def test_a_run_is_free_once_its_build_returns(built, tmp_path):
    """A long-lived process (a notebook) holds a run only while it writes it: once its build returns,
    another process may build it."""
    run = shutil.copytree(built, tmp_path / "run")
    build(run)  # in this process, which goes on living
    free = subprocess.run([sys.executable, "-c", FREE, str(run)], capture_output=True, text=True)
    assert free.stdout.strip() == "free", free.stderr
    build(run)  # and takes it again


def without_privileges() -> None:
    """In the child before it runs the command: drop every capability (a root user's included), so file
    permissions bind it as they bind anyone."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in range(64):
        libc.prctl(24, capability, 0, 0, 0)  # PR_CAPBSET_DROP; past the kernel's last one it fails


@pytest.mark.skipif(not SCRIPT.is_file(), reason="the reparam-export console script is not installed")
def test_a_read_only_run_directory_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        result = cli(*BUILD, "--run-dir", str(run), preexec=without_privileges, cwd=tmp_path)
    finally:
        run.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert f"error: cannot access {run}/" in result.stderr and "permission denied" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not list(run.iterdir())


@pytest.mark.skipif(not SCRIPT.is_file(), reason="the reparam-export console script is not installed")
def test_an_unreadable_input_is_one_line(tmp_path):
    source = tmp_path / "calib.json"
    source.write_text((CALIBRATION / "calib.json").read_text())
    (tmp_path / "calib").symlink_to(CALIBRATION / "calib")  # its images, readable
    source.chmod(0o000)
    argv = [*BUILD, "--calib-data", str(source), "--run-dir", str(tmp_path / "run")]
    try:
        result = cli(*argv, preexec=without_privileges)
    finally:
        source.chmod(0o644)
    assert result.returncode == 2, result.stderr
    assert f"error: cannot access {source}: permission denied" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not SCRIPT.is_file(), reason="the reparam-export console script is not installed")
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """A file-size limit makes writes fail as a full disk does (EFBIG instead of ENOSPC)."""

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    run = tmp_path / "run"
    result = cli(*BUILD, "--run-dir", str(run), preexec=small_files, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"error: cannot write {run / 'fused.pt'}:" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not run.exists(), "nothing half-written, no empty run directory"
