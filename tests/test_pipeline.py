"""Pipeline and run directory: artifacts, manifest, caching, crash/resume, ONNX checks."""

import json
from importlib import metadata

import numpy as np
import onnx
import pytest
import torch

from exporter.base.artifacts import atomic_output, sha256_file
from exporter.base.errors import CheckFailed
from exporter.models.loader import builder_source_hash
from exporter.pipeline.builder import Pipeline
from exporter.pipeline.recipe import load_recipe
from exporter.pipeline.stages import ort_runner as ort_backend
from exporter.pipeline.stages import simplify
from tests.conftest import EMBEDDED


def recipe(**overrides):
    base = {"input_size": [96, 128]}
    base.update(overrides)
    return load_recipe(EMBEDDED, base)


def hashes(run):
    return {p.name: sha256_file(p) for p in sorted(run.iterdir()) if p.name != "manifest.json"}


def test_build_writes_verified_artifacts_and_manifest(tmp_path):
    run = tmp_path / "run"
    Pipeline(recipe(), run).build()
    assert {p.name for p in run.iterdir()} == {"fused.pt", "model.onnx", "model.sim.onnx", "manifest.json"}
    manifest = json.loads((run / "manifest.json").read_text())
    for name, output in [("fuse", "fused.pt"), ("export", "model.onnx"), ("simplify", "model.sim.onnx")]:
        stage = manifest["stages"][name]
        assert stage["output"]["sha256"] == sha256_file(run / output)
        assert stage["versions"]["torch"] == metadata.version("torch")
        assert stage["versions"]["onnxruntime"] == metadata.version("onnxruntime")
        assert stage["wall_s"] >= 0 and stage["settings"]
        assert stage["check"]["ok"] is True
    assert manifest["stages"]["export"]["inputs"]["fused"]["sha256"] == sha256_file(run / "fused.pt")
    assert manifest["stages"]["simplify"]["nodes_after"] < manifest["stages"]["simplify"]["nodes_before"]
    assert manifest["recipe_hash"] == recipe().digest()
    assert 0 < manifest["stages"]["fuse"]["gflops"] < 10, "GFLOPs of the fused model per image"


def test_onnx_has_metadata_input_name_and_checks(tmp_path):
    r = recipe()
    Pipeline(r, tmp_path).build()
    for name in ("model.onnx", "model.sim.onnx"):
        model = onnx.load(tmp_path / name)
        onnx.checker.check_model(model, full_check=True)
        props = {p.key: p.value for p in model.metadata_props}
        assert json.loads(props["class_names"]) == ["circle", "square", "triangle"]
        assert json.loads(props["input_size"]) == [96, 128]
        assert json.loads(props["preprocessing"])["scale"] == pytest.approx(1 / 255)
        assert "recipe_hash" not in props, "the manifest records the recipe; the model only what it needs"
        assert [i.name for i in model.graph.input] == ["images"]
        assert [o.name for o in model.graph.output] == ["scores", "boxes"]
        assert model.opset_import[0].version == 17


def test_rerun_is_cached_and_settings_invalidate_downstream(tmp_path):
    Pipeline(recipe(), tmp_path).build()
    first = hashes(tmp_path)
    again = Pipeline(recipe(), tmp_path)
    again.build()
    assert [r.cached for r in again.results] == [True, True, True]
    unrelated = Pipeline(recipe(**{"evaluation.limit": 7, "calibration.count": 5}), tmp_path)
    unrelated.build()
    assert [r.cached for r in unrelated.results] == [True, True, True], "no stage here reads them"
    changed = Pipeline(recipe(**{"export.opset": 13}), tmp_path)
    changed.build()
    assert [r.cached for r in changed.results] == [True, False, False]
    assert hashes(tmp_path)["fused.pt"] == first["fused.pt"]
    assert onnx.load(tmp_path / "model.onnx").opset_import[0].version == 13


def test_tampered_artifact_is_rebuilt(tmp_path):
    Pipeline(recipe(), tmp_path).build()
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    rerun = Pipeline(recipe(), tmp_path)
    rerun.build()
    assert [r.cached for r in rerun.results] == [True, False, True]


def test_crash_between_stages_resumes_with_identical_hashes(tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    Pipeline(recipe(), clean).build()

    crashed = tmp_path / "crashed"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut before simplify finished")

    monkeypatch.setattr(simplify, "run", crash)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(recipe(), crashed).build()
    assert sorted(p.name for p in crashed.iterdir()) == ["fused.pt", "manifest.json", "model.onnx"]
    monkeypatch.undo()

    resumed = Pipeline(recipe(), crashed)
    resumed.build()
    assert [r.cached for r in resumed.results] == [True, True, False]
    assert hashes(crashed) == hashes(clean)


def test_crash_inside_a_write_leaves_no_file(tmp_path):
    target = tmp_path / "run" / "model.onnx"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half an onnx")
            raise RuntimeError("killed mid-write")
    assert not target.exists() and not (tmp_path / "run").exists()


def test_onnxsim_failure_keeps_exported_model_and_says_so(tmp_path, monkeypatch, capsys):
    import onnxsim
    from rich.console import Console

    def broken(model, *args, **kwargs):
        raise RuntimeError("unsupported op in shape inference")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    pipeline = Pipeline(recipe(), tmp_path, console=Console(stderr=True))
    pipeline.build()
    record = json.loads((tmp_path / "manifest.json").read_text())["stages"]["simplify"]
    assert record["simplified"] is False
    assert "unsupported op in shape inference" in record["failure"]
    assert record["nodes_after"] == record["nodes_before"] and record["check"]["ok"]
    assert "NOT simplified" in capsys.readouterr().err


def test_simplify_disabled_is_recorded_not_silent(tmp_path, capsys):
    from rich.console import Console

    final = Pipeline(recipe(**{"export.simplify": False}), tmp_path, console=Console(stderr=True)).build()
    assert final["onnx.fp32"].output.name == "model.onnx"
    assert "simplify  skipped" in capsys.readouterr().err
    assert "skipped" in json.loads((tmp_path / "manifest.json").read_text())["simplify"]


@pytest.mark.parametrize("opset", [13, 19])
def test_opset_range(tmp_path, opset):
    Pipeline(recipe(**{"export.opset": opset}), tmp_path).build()
    assert onnx.load(tmp_path / "model.sim.onnx").opset_import[0].version == opset


def test_dynamic_batch_runs_any_batch(tmp_path):
    Pipeline(recipe(**{"export.dynamic_batch": True}), tmp_path).build()
    blob = torch.load(tmp_path / "fused.pt", weights_only=True)
    runner = ort_backend.load(tmp_path / "model.sim.onnx")
    images = torch.cat([blob["probe"], blob["probe"][:1]]).numpy()
    scores, boxes = runner.infer(images)
    assert scores.shape[0] == 3
    np.testing.assert_allclose(scores[:2], blob["outputs"][0].numpy(), atol=1e-4)


def test_export_parity_failure_is_a_check_failure(tmp_path, monkeypatch):
    from exporter.pipeline.stages import reference

    real = reference.load_reference

    def skewed(fused_pt):
        blob = real(fused_pt)
        return {**blob, "outputs": [o + 1.0 for o in blob["outputs"]]}

    monkeypatch.setattr(reference, "load_reference", skewed)
    with pytest.raises(CheckFailed, match="onnxruntime output of the exported model differs"):
        Pipeline(recipe(), tmp_path).build()
    assert not (tmp_path / "model.onnx").exists()


def test_fused_artifact_loads_without_pickle(tmp_path):
    Pipeline(recipe(), tmp_path).fuse()
    blob = torch.load(tmp_path / "fused.pt", weights_only=True)
    assert set(blob) == {"state_dict", "source", "steps", "probe", "outputs", "noise"}
    assert all(o.dtype == torch.float64 for o in blob["outputs"]), "the reference is float64"
    assert not any("rbr_1x1" in key for key in blob["state_dict"]), "deploy form has no branches"


def test_builder_hash_covers_the_builders_package(tmp_path, monkeypatch):
    package = tmp_path / "hashed_model_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text(
        "from torch import nn\n\nfrom hashed_model_pkg.parts import WIDTH\n\n\n"
        "def build():\n    return nn.Conv2d(3, WIDTH, 1)\n"
    )
    (package / "parts.py").write_text("WIDTH = 4\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = builder_source_hash("hashed_model_pkg.model:build")
    (package / "parts.py").write_text("WIDTH = 8\n")
    assert builder_source_hash("hashed_model_pkg.model:build") != before


def test_files_a_builder_reads_are_part_of_the_fuse_cache(tmp_path, monkeypatch):
    """A builder that loads its weights itself: changing that file reruns fuse, an unrelated one does not."""
    package = tmp_path / "reading_model_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text(
        "from pathlib import Path\n\nimport torch\nfrom torch import nn\n\n\n"
        "def build(weights):\n    model = nn.Conv2d(3, 4, 3, padding=1)\n"
        "    model.load_state_dict(torch.load(Path(weights), weights_only=True))\n    return model\n"
    )
    weights = tmp_path / "weights.pt"
    torch.manual_seed(0)
    torch.save(torch.nn.Conv2d(3, 4, 3, padding=1).state_dict(), weights)
    (tmp_path / "unrelated.txt").write_text("a")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = {
        "model": {"builder": "reading_model_pkg.model:build", "kwargs": {"weights": str(weights)}},
        "input_size": [32, 32],
        "export.output_names": None,  # one output, unnamed
    }
    run = tmp_path / "run"
    first = Pipeline(load_recipe(EMBEDDED, settings), run).fuse()
    assert not first.cached and list(first.record.reads) == [str(weights.resolve())]
    (tmp_path / "unrelated.txt").write_text("b")
    assert Pipeline(load_recipe(EMBEDDED, settings), run).fuse().cached
    torch.save(torch.nn.Conv2d(3, 4, 3, padding=1).state_dict(), weights)
    again = Pipeline(load_recipe(EMBEDDED, settings), run).fuse()
    assert not again.cached, "the builder's weights changed: the fused model must be rebuilt"
