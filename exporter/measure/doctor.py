"""Which backend libraries are usable on this machine, their versions, and why not."""

from __future__ import annotations

from exporter.base import host
from exporter.base.libraries import Check, check_library

# (distribution, import name, role, how to get it); each target adds its own (exporter.pipeline.targets)
CORE = [
    ("torch", "torch", "reference backend, fusion", "pip install torch"),
    ("onnx", "onnx", "ONNX export", "pip install onnx"),
    ("onnxsim", "onnxsim", "simplify stage", "pip install onnxsim"),
    ("onnxruntime", "onnxruntime", "ONNX parity checks, CPU backend", "pip install onnxruntime"),
]
EVAL = ("faster-coco-eval", "faster_coco_eval", "COCO mAP", "pip install 'reparam-export[eval]'")
REQUIRED = {name for name, *_ in CORE}


def libraries() -> list[tuple[str, str, str, str]]:
    """The core libraries, every target's, every model adapter's, then the evaluation's; each once."""
    from exporter.models.families import FAMILIES
    from exporter.pipeline.targets.table import TARGETS

    found = {entry[0]: entry for entry in CORE}
    for lib in [lib for t in TARGETS.values() for lib in t.libraries] + [
        lib for f in FAMILIES.values() for lib in f.libraries
    ]:
        found.setdefault(lib.dist, (lib.dist, lib.module, lib.role, lib.hint))
    found.setdefault(EVAL[0], EVAL)
    return list(found.values())


def check_cuda() -> Check:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        major, minor = torch.cuda.get_device_capability(0)
        return Check(
            "CUDA GPU", torch.version.cuda or "-", True, f"{name}, compute capability {major}.{minor}"
        )
    return Check(
        "CUDA GPU",
        torch.version.cuda or "-",
        False,
        "no CUDA device visible: TensorRT engines cannot be built or timed here",
    )


def check_cpu() -> Check:
    """The CPU, its instruction sets and the precisions it computes natively (what a bf16 or an INT8
    build gains here), and what each target's runtime says it computes on it."""
    from exporter.pipeline.targets.table import TARGETS

    native = ", ".join(p.upper() for p in host.native_precisions())
    note = f"instruction sets: {', '.join(host.isa()) or 'none of ' + ', '.join(host.ISA_FLAGS.values())}; "
    note += f"computes natively: {native}"
    for target in TARGETS.values():
        said = target.capabilities()
        if said:
            note += f"; {target.name}: {said}"
    return Check("CPU", host.cpu_name(), True, note)


def check_onnxruntime_providers() -> Check | None:
    try:
        import onnxruntime as ort
    except Exception:  # noqa: BLE001 - already reported by check_library
        return None
    providers = ort.get_available_providers()
    return Check(
        "onnxruntime providers", ort.__version__, "CPUExecutionProvider" in providers, ", ".join(providers)
    )


def run_checks() -> list[Check]:
    checks = [check_library(*entry) for entry in libraries()]
    providers = check_onnxruntime_providers()
    if providers:
        checks.append(providers)
    checks.append(check_cuda())
    checks.append(check_cpu())
    return checks


def required_missing(checks: list[Check]) -> list[str]:
    return [c.name for c in checks if c.name in REQUIRED and not c.usable]
