"""Install requirements into a virtual environment with uv, configured as pip is on this machine.

uv reads none of pip's configuration: what pip is configured with (`pip config list`: its files, then its
PIP_* variables, which override them) is passed on: the indexes (or none), find-links, constraints,
trusted hosts and CA bundle; and uv takes the newest release across the indexes, as pip does.

Usage: python tools/install.py VENV/bin/python REQUIREMENT...  (uv installed in that environment)
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

FLAGS = {  # pip setting -> uv option
    "index-url": "--default-index",
    "extra-index-url": "--index",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
TRUE = ("1", "true", "yes", "on")  # how pip spells a flag that is set


def pip_settings(python: str) -> dict[str, str]:
    """pip's effective settings that an install reads: its config files' global and install sections,
    then the PIP_* variables."""
    listed = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    found: dict[str, str] = {}
    for scope in ("global", "install", ":env:"):
        for line in listed:
            key, _, value = line.partition("=")
            section, _, name = key.rpartition(".")
            if section == scope:
                found[name] = ast.literal_eval(value)  # printed as a Python string literal
    return found


def uv_command(python: str, requirements: list[str]) -> tuple[list[str], dict[str, str]]:
    """The uv command that installs `requirements` into `python`'s environment as pip would, and its
    environment."""
    settings = pip_settings(python)
    options = [
        part
        for name, flag in FLAGS.items()
        for value in settings.get(name, "").split()
        for part in (flag, value)
    ]
    if settings.get("no-index", "").lower() in TRUE:
        options.append("--no-index")
    environment = dict(os.environ)
    if "cert" in settings:
        environment["SSL_CERT_FILE"] = settings["cert"]
    uv = Path(python).parent / "uv"
    command = [str(uv), "pip", "install", "--quiet", "--python", python, "--compile-bytecode"]
    return [*command, "--index-strategy", "unsafe-best-match", *options, *requirements], environment


if __name__ == "__main__":
    command, environment = uv_command(sys.argv[1], sys.argv[2:])
    sys.exit(subprocess.run(command, env=environment).returncode)
