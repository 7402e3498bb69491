import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from exporter.cli import main

EMBEDDED = Path(__file__).resolve().parents[1] / "recipes" / "embedded_demo.yaml"

settings.register_profile("deterministic", derandomize=True, deadline=None, max_examples=25, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
torch.set_num_threads(2)


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
def single_thread():
    """One torch thread for heavy model tests: on a shared 2-core machine two spinning worker threads
    make them several times slower whenever another process is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
