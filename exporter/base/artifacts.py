"""Artifact file helpers: content hashes and atomic writes (temp path, then rename)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMPORARY = ".tmp-"  # prefix of a file being written (then the writer's pid): absent once it is renamed


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plain(value: Any) -> Any:
    """A settings object as JSON values: dataclasses and pydantic models as mappings, paths as text,
    tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def sha256_json(value: object) -> str:
    """Hash of a JSON-serializable value, independent of key order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, companions: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (same suffix); rename it onto `path` only if the block
    succeeds. `companions` are suffixes of files written beside it (an IR's ".bin"), renamed first.

    A crash inside the block removes the temporary files, so `path` is either absent, the old
    version, or the complete new version, never a half-written file.
    """
    final = Path(path)
    tmp = final.with_name(f"{TEMPORARY}{os.getpid()}-{final.name}")
    pairs = [(tmp.with_suffix(s), final.with_suffix(s)) for s in companions] + [(tmp, final)]
    with folder_for(final):
        try:
            yield tmp
            for written, _ in pairs:
                if not written.exists():
                    raise RuntimeError(f"stage wrote nothing to {written}")
            for written, target in pairs:
                os.replace(written, target)
        except BaseException as exc:
            for written, _ in pairs:
                written.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.filename is None:  # a failed write names no file: name it
                raise OSError(exc.errno, exc.strerror, str(final)) from exc
            raise


@contextlib.contextmanager
def folder_for(path: Path, *, inclusive: bool = False) -> Iterator[None]:
    """Create the folders `path` (inclusive) or its parent needs; if the block fails, remove those it
    created and left empty, so a failed write leaves no empty run directory behind."""
    folder = path if inclusive else path.parent
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for made in created:  # innermost first
            with contextlib.suppress(OSError):
                made.rmdir()
        raise


def save_torch(value: object, path: str | os.PathLike) -> None:
    """torch.save, byte for byte the same for the same value: the archive inside is named "archive",
    not after the (temporary) file written, and a failed write raises OSError as any file write does."""
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    Path(path).write_bytes(buffer.getvalue())


def write_json(path: str | os.PathLike, value: object) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


PACKAGE = Path(__file__).resolve().parents[1]
SOURCE_SUFFIXES = {".py", ".yaml", ".json", ".txt", ".pt", ".cu", ".cpp", ".h", ".md"}


@functools.cache
def source_digest() -> str:
    """sha256 of the package's source files (code, shipped weights and data, plugin sources; not what a
    build put beside them) by relative path and content: which code made a figure or an artifact, in a
    checkout or an installed copy alike."""
    digest = hashlib.sha256()
    for path in sorted(p for p in PACKAGE.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()
