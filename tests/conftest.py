import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from hypothesis import settings

from exporter.base.data.shapes import DATA_ENV
from exporter.cli import main

EMBEDDED = Path(__file__).resolve().parents[1] / "recipes" / "embedded_demo.yaml"


@pytest.fixture(autouse=True, scope="session")
def shared_demo_data(shared_root):
    """One demo dataset for the whole session and all its workers (each split written once, on first
    use), whatever a test's cwd."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_ENV, str(shared_root / "demo-data" / "shapes"))
        yield


def pytest_report_header(config):
    """The host's CPU and the instruction sets that select its kernels (results differ by them)."""
    from exporter.base import host

    return [f"host: {host.describe()}; instruction sets: {', '.join(host.isa()) or 'unknown'}"]


def pytest_collection_modifyitems(items):
    """The tests marked slow first, the others after them in their order: pytest-xdist's worksteal gives
    each worker half the list and an idle worker takes the tail of the other's queue, so both end on
    short tests instead of one finishing a long one alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory, worker_id) -> Path:
    """A folder every pytest-xdist worker of this session sees (this session's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every test of this worker that runs Ray tasks, started on first use and
    stopped with the session: its start and its workers' imports are paid once. Its workers import this
    checkout's packages, `tests` included (fixture models)."""
    ray = pytest.importorskip("ray", reason="pip install 'reparam-export[cluster]'")
    with pytest.MonkeyPatch.context() as patch:  # the workers' environment is the one Ray starts with
        patch.setenv("PYTHONPATH", str(EMBEDDED.parents[1]))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def built_once(folder: Path) -> Iterator[bool]:
    """Within the block, whether `folder` has still to be built: the first worker of the session to ask
    builds it while any other waits on its lock, then finds it built (a build that failed is tried again).
    A module's tests may run on several workers (the suite is scheduled test by test)."""
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        done = folder / ".built"
        yield not done.exists()
        done.touch()


settings.register_profile("deterministic", derandomize=True, deadline=None, max_examples=25, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
# two cores: two threads, or one per worker when pytest-xdist runs two (torch, and the onnxruntime and
# OpenVINO sessions that follow OMP_NUM_THREADS: exporter.base.workers.threads_here)
THREADS = max(1, 2 // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)


@pytest.fixture
def run_cli(capsys, monkeypatch, tmp_path):
    """Run the CLI in-process from a temp cwd; returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(*argv: str):
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def scored_images(monkeypatch) -> list[int]:
    """The number of images of each scoring of a model (exporter.pipeline.stages.scoring), in order."""
    from exporter.pipeline.stages import scoring

    sizes: list[int] = []
    detect = scoring.detect

    def counted(dataset, samples, *args):
        sizes.append(len(samples))
        return detect(dataset, samples, *args)

    monkeypatch.setattr(scoring, "detect", counted)
    return sizes


@pytest.fixture
def single_thread():
    """One torch thread for heavy model tests: on a shared 2-core machine two spinning worker threads
    make them several times slower whenever another process is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def relu_onnx(tmp_path) -> Path:
    """The smallest ONNX model a runtime loads: one Relu over a [1, 3] float input."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path
