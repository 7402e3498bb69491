"""reparam-export: fuse re-parameterizable detectors and ship them to ONNX, OpenVINO and TensorRT.

`exporter.build(...)` builds a model as `reparam-export build` does and returns a typed `Run`;
`exporter.read_run(folder)` reads one (exporter.pipeline.api). Imported on first use, so that
`import exporter` stays light."""

from exporter.base.version import __version__

API = ("build", "read_run", "Run", "Artifact", "Check")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:
        from exporter.pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'exporter' has no attribute '{name}'")
