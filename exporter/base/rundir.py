"""Run directory and manifest: per-stage inputs/outputs with sha256, settings, versions, timing, checks.

A stage whose input hashes, settings and library versions are unchanged, whose output is still on disk
with its recorded hash, and whose recorded `reads` (files it found itself reading, path → sha256) are
unchanged, is a cache hit and is not run again; an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from exporter.base.artifacts import (
    TEMPORARY,
    atomic_output,
    folder_for,
    plain,
    sha256_file,
    sha256_json,
    source_digest,
    write_json,
)
from exporter.base.errors import UserError, setting
from exporter.base.version import __version__

TRACKED_LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxsim", "numpy")


def library_versions() -> dict[str, str]:
    """The versions a stage's cache key holds: a change of this package's sources (source_digest)
    invalidates every cached stage."""
    own = f"{__version__}+{source_digest()[:12]}"
    versions = {"python": platform.python_version(), "reparam-export": own}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class StageResult:
    name: str
    output: Path
    record: dict[str, Any]
    cached: bool


_HELD: dict[Path, int] = {}  # run directories this process holds now: folder -> its open descriptor


class RunDir:
    """`runs/<name>/`: the artifacts of one recipe plus manifest.json.

    Writing holds an exclusive lock on the folder (`held`): a build holds it from its first stage to its
    last, a single stage or manifest note while it writes, so a second process writing the same run
    meanwhile is refused, not interleaved; between operations a long-lived process (a notebook) leaves
    it free. Taking it removes the temporary files a killed build left behind."""

    def __init__(self, root: str | Path, force: bool = False):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self.force = force  # every stage reruns: a damaged manifest is replaced, not refused

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the run directory for the block; re-entrant. The folder is created if needed (a failed
        block removes it again if it left it empty); stale temporary files go when it is taken."""
        with folder_for(self.root, inclusive=True):
            key = self.root.resolve()
            outer = _HELD.get(key)
            if outer is not None and os.fstat(outer).st_ino == key.stat().st_ino:
                yield
                return
            descriptor = os.open(key, os.O_RDONLY)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                raise UserError(
                    f"{self.root} is being built by another process; wait for it to finish or pass another "
                    f"{setting('run_dir')}"
                ) from None
            _HELD[key] = descriptor
            try:
                for stale in self.root.rglob(f"{TEMPORARY}*"):  # no writer of this run is alive but us
                    if stale.is_file():
                        stale.unlink()
                yield
            finally:
                if outer is None:
                    del _HELD[key]
                else:
                    _HELD[key] = outer
                os.close(descriptor)  # the lock goes with it

    def manifest(self) -> dict[str, Any]:
        if self.manifest_path.is_file():
            try:
                return read_manifest(self.root)
            except UserError:
                if not self.force:
                    raise
        return {"stages": {}}

    @staticmethod
    def _files(output: Path, companions: tuple[str, ...]) -> list[Path]:
        return [output, *(output.with_suffix(s) for s in companions)]

    def _cache_hit(self, entry: dict[str, Any] | None, key: str, files: list[Path]) -> bool:
        if entry is None or entry.get("key") != key:
            return False
        recorded = [entry["output"], *entry["output"].get("companions", [])]
        reads = entry.get("reads", {})  # files the stage found itself reading: each must be unchanged
        return (
            len(recorded) == len(files)
            and all(
                f.is_file() and sha256_file(f) == r["sha256"] for f, r in zip(files, recorded, strict=True)
            )
            and all(Path(p).is_file() and sha256_file(Path(p)) == digest for p, digest in reads.items())
        )

    def run_stage(
        self,
        name: str,
        output_name: str,
        inputs: dict[str, Path],
        settings: object,
        func: Callable[[Path], dict[str, Any]],
        force: bool = False,
        companions: tuple[str, ...] = (),
        versions: dict[str, str] | None = None,
    ) -> StageResult:
        """Run `func(tmp_output) -> record` unless cached; the output (and its companion files, by
        suffix) is renamed into place on success. The key: the inputs' hashes, `settings` (a settings
        object, recorded as JSON) and library versions (`versions` adds some)."""
        settings = plain(settings)
        output = self.root / output_name
        files = self._files(output, companions)
        input_hashes = {k: sha256_file(p) for k, p in inputs.items()}
        versions = {**library_versions(), **(versions or {})}
        key = sha256_json({"inputs": input_hashes, "settings": settings, "versions": versions})
        entry = self.manifest()["stages"].get(name)
        if not force and self._cache_hit(entry, key, files):
            return StageResult(name, output, entry, cached=True)
        start = time.perf_counter()
        with self.held():
            with atomic_output(output, companions) as tmp:
                record = func(tmp)
            described = [
                {"path": str(f.relative_to(self.root)), "sha256": sha256_file(f), "bytes": f.stat().st_size}
                for f in files
            ]
            entry = {
                "key": key,
                "inputs": {k: {"path": str(p), "sha256": input_hashes[k]} for k, p in inputs.items()},
                "output": {**described[0], **({"companions": described[1:]} if companions else {})},
                "settings": settings,
                "versions": versions,
                "wall_s": round(time.perf_counter() - start, 3),
                **record,
            }
            manifest = self.manifest()
            manifest["stages"][name] = entry
            write_json(self.manifest_path, manifest)
        return StageResult(name, output, entry, cached=False)

    def note(self, **fields: Any) -> None:
        """Record run-level fields (recipe, targets, skipped stages) in the manifest."""
        with self.held():
            manifest = self.manifest()
            manifest.update(fields)
            write_json(self.manifest_path, manifest)


def read_manifest(run: Path) -> dict[str, Any]:
    """A run's manifest.json; a missing, damaged or misshapen one (check_manifest) is bad input."""
    path = Path(run) / "manifest.json"
    if not path.is_file():
        raise UserError(
            f"{run} is not a run directory (no manifest.json); build it first with `reparam-export build`"
        )
    try:
        manifest = json.loads(path.read_text())
        check_manifest(manifest)
    except (UnicodeDecodeError, json.JSONDecodeError):
        problem = "not JSON"
    except ValueError as exc:
        problem = str(exc)
    else:
        return manifest
    raise UserError(f"{path} is damaged ({problem}); rebuild the run (build with {setting('force')})")


# the fields of a manifest that commands read, by type; a run and a stage's record may hold more
RUN_FIELDS = {
    "stages": dict,
    "artifacts": dict,
    "recipe": dict,
    "recipe_hash": str,
    "built": str,
    "deferred": dict,
}
STAGE_FIELDS = {
    "key": str,
    "inputs": dict,
    "output": dict,
    "settings": (dict, type(None)),
    "versions": dict,
    "wall_s": (int, float),
    "reads": dict,
    "check": (dict, type(None)),  # null: a stage with nothing to hold against a tolerance
}
FILE_FIELDS = {"path": str, "sha256": str}  # a file a stage read or wrote
OUTPUT_FIELDS = {**FILE_FIELDS, "bytes": int, "companions": list}


def check_manifest(manifest: Any) -> None:
    """Refuse (ValueError naming the field) a manifest not shaped as the commands read it: the run's fields,
    each stage's record, and the files these name."""
    _fields(manifest, RUN_FIELDS, "manifest", required=("stages",))
    for key, recorded in manifest.get("artifacts", {}).items():
        _is(recorded, str, f"artifacts.{key}")
    for name, stage in manifest["stages"].items():
        where = f"stages.{name}"
        _fields(stage, STAGE_FIELDS, where, required=("output",))
        _fields(stage["output"], OUTPUT_FIELDS, f"{where}.output", required=tuple(FILE_FIELDS))
        for index, written in enumerate(stage["output"].get("companions", [])):
            _fields(written, FILE_FIELDS, f"{where}.output.companions[{index}]", required=tuple(FILE_FIELDS))
        for key, read in stage.get("inputs", {}).items():
            _fields(read, FILE_FIELDS, f"{where}.inputs.{key}", required=tuple(FILE_FIELDS))
        for field in ("reads", "versions"):
            for key, value in stage.get(field, {}).items():
                _is(value, str, f"{where}.{field}.{key}")


def _fields(value: Any, fields: dict[str, Any], where: str, required: tuple[str, ...] = ()) -> None:
    """`value` a mapping whose `fields` have their types where present, and `required` ones present."""
    _is(value, dict, where)
    for name in required:
        if name not in value:
            raise ValueError(f"{where} has no {name}")
    for name, kind in fields.items():
        if name in value:
            _is(value[name], kind, f"{where}.{name}")


JSON_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def _is(value: Any, kind: type | tuple[type, ...], where: str) -> None:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(JSON_NAMES[k] for k in kinds)
        raise ValueError(f"{where} is {json.dumps(value)[:40]}, not {expected}")


def in_run(run: Path, recorded: str) -> Path:
    """A file a manifest records (relative to its run), refused if it leads out of the run directory."""
    root = Path(run).resolve()
    if not (root / recorded).resolve().is_relative_to(root):
        raise UserError(
            f"{Path(run) / 'manifest.json'} names {recorded}, outside its run directory: refused; rebuild "
            f"the run (build with {setting('force')})"
        )
    return Path(run) / recorded


def verified(run: Path, recorded: str, manifest: dict[str, Any] | None = None) -> Path:
    """A file a stage of the run wrote, once it and the files written with it (an IR's .bin) still hash
    as the manifest recorded: a changed or damaged artifact is refused, never measured."""
    manifest = manifest or read_manifest(run)
    in_run(run, recorded)
    for stage in manifest["stages"].values():
        output = stage.get("output") or {}
        if output.get("path") != recorded:
            continue
        for written in [output, *output.get("companions", [])]:
            path = in_run(run, written["path"])
            if not path.is_file():
                raise UserError(f"artifact {path} is missing; rebuild the run with `reparam-export build`")
            if sha256_file(path) != written["sha256"]:
                raise UserError(
                    f"{path} is not the file its build wrote (its sha256 differs from manifest.json's): it "
                    f"was changed or damaged; rebuild the run (build with {setting('force')})"
                )
        return in_run(run, recorded)
    raise UserError(f"{Path(run) / 'manifest.json'} records no stage that wrote {recorded}; rebuild the run")


def run_artifacts(run: Path) -> dict[str, Path]:
    """The built artifacts of a run (stored relative to the run directory, so a run can move), each
    verified against the manifest's hashes, as is the reference they were checked against (fused.pt)."""
    manifest = read_manifest(run)
    if "fuse" in manifest["stages"]:
        verified(run, manifest["stages"]["fuse"]["output"]["path"], manifest)
    return {key: verified(run, path, manifest) for key, path in manifest.get("artifacts", {}).items()}
