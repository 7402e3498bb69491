"""`make`'s installer: uv, given what pip is configured with on the machine (tools/install.py)."""

import importlib.util
import os
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "install.py"


def test_the_installer_passes_pips_configuration_to_uv(tmp_path, monkeypatch):
    """Indexes, find-links, constraints, trusted hosts and the CA bundle from pip's files, its PIP_*
    variables overriding them (find-links, no-index), and the newest release across indexes (pip's
    choice), not the first index's."""
    spec = importlib.util.spec_from_file_location("install", TOOL)
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nindex-url = https://mirror.example/simple\n"
        "extra-index-url = file:///a/simple\n  file:///b/simple\nfind-links = /from-file\ncert = /ca.pem\n"
        "[install]\nconstraint = /caps.txt\ntrusted-host = mirror.example\n"
    )
    for name in [name for name in os.environ if name.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))  # read last: over the machine's own files
    monkeypatch.setenv("PIP_FIND_LINKS", "/from-env")
    command, environment = install.uv_command(sys.executable, ["torch==2.14.1", "-e", ".[dev]"])
    assert command[:3] == [str(Path(sys.executable).parent / "uv"), "pip", "install"]
    assert command[-3:] == ["torch==2.14.1", "-e", ".[dev]"]
    pairs = list(zip(command, command[1:], strict=False))  # each argument and the next
    assert ("--index-strategy", "unsafe-best-match") in pairs and ("--python", sys.executable) in pairs
    found = [(flag, value) for flag, value in pairs if flag in install.FLAGS.values()]
    assert found == [
        ("--default-index", "https://mirror.example/simple"),
        ("--index", "file:///a/simple"),
        ("--index", "file:///b/simple"),
        ("--find-links", "/from-env"),
        ("--constraint", "/caps.txt"),
        ("--allow-insecure-host", "mirror.example"),
    ]
    assert environment["SSL_CERT_FILE"] == "/ca.pem" and "--no-index" not in command
    monkeypatch.setenv("PIP_NO_INDEX", "yes")
    assert "--no-index" in install.uv_command(sys.executable, ["torch"])[0]
