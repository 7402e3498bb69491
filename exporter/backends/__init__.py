"""Backends: `load(artifact) -> Runner` with `Runner.infer(batch) -> list of arrays`."""
