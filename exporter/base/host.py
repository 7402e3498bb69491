"""The machine a measurement ran on: its CPU, the instruction sets that change results (OpenVINO's and
onnxruntime's kernels differ between AVX2, AVX-512, VNNI, BF16 and AMX, and with them the last digits
of a mAP), and the load other processes put on it while a measurement ran."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# /proc/cpuinfo flag -> the name results are told apart by, in the order they are listed
ISA_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "BF16",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_name() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def isa() -> list[str]:
    """The instruction sets of ISA_FLAGS this CPU has (empty where /proc/cpuinfo is not readable)."""
    flags = _flags()
    return [name for flag, name in ISA_FLAGS.items() if flag in flags]


# /proc/cpuinfo flags -> the precision a CPU computes natively with them (FP32 always): INT8 dot products,
# bf16 and fp16 arithmetic; without them a runtime emulates the precision or computes it in FP32
NATIVE = {
    "int8": ("avx512_vnni", "avx_vnni", "amx_int8"),
    "bf16": ("avx512_bf16", "amx_bf16"),
    "fp16": ("avx512_fp16", "amx_fp16"),
}


def native_precisions() -> list[str]:
    """The precisions this CPU computes natively: 'fp32' always (only it where cpuinfo is unreadable)."""
    flags = set(_flags())
    return ["fp32", *(precision for precision, needs in NATIVE.items() if flags & set(needs))]


def _flags() -> list[str]:
    return next((line.split(":", 1)[1].split() for line in _cpuinfo() if line.startswith("flags")), [])


def host_class() -> str:
    """Hosts whose kernels compute alike: the instruction sets that select them ('AVX-512 VNNI BF16')."""
    names = isa()
    return " ".join(names[1:] if "AVX-512" in names else names) or platform.machine()


def describe() -> str:
    """'AMD EPYC (AVX-512 VNNI BF16, 2 cores)'."""
    return f"{cpu_name()} ({host_class()}, {os.cpu_count()} cores)"


def _cpu_ticks() -> tuple[float, float] | None:
    """(busy, steal) seconds of all CPUs since boot, from /proc/stat; None where it is not readable."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0.0] * 8)[:8]
    return (user + nice + system + irq + softirq) / hz, steal / hz


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass(frozen=True)
class Load:
    """What other processes took of the machine while a measurement ran, in cores: CPU time used by
    processes other than this one and its children, and time the hypervisor gave to other machines
    (steal), each per second of the measurement."""

    others: float
    steal: float
    seconds: float
    cores: int

    NOISY = 0.25  # cores: more than a quarter of a core used by others moves side-by-side ratios

    @property
    def noisy(self) -> bool:
        return self.others + self.steal > self.NOISY

    def describe(self) -> str:
        return f"load from other processes {self.others:.2f} cores, steal {self.steal:.2f} (of {self.cores})"

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class LoadMeter:
    """`with LoadMeter() as meter: …` then `meter.load`: the Load during the block (None where the
    platform does not say)."""

    def __enter__(self) -> LoadMeter:
        self.start = (time.monotonic(), _cpu_ticks(), _own_seconds())
        self.load: Load | None = None
        return self

    def __exit__(self, *exc) -> None:
        wall0, ticks0, own0 = self.start
        ticks, wall = _cpu_ticks(), time.monotonic() - wall0
        if ticks is None or ticks0 is None or wall <= 0:
            return
        own = _own_seconds() - own0
        busy, steal = ticks[0] - ticks0[0], ticks[1] - ticks0[1]
        self.load = Load(max(0.0, busy - own) / wall, steal / wall, wall, os.cpu_count() or 1)


def idle_load(seconds: float = 1.0) -> Load | None:
    """The load others put on the machine while this process sleeps `seconds`."""
    with LoadMeter() as meter:
        time.sleep(seconds)
    return meter.load
