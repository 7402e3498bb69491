"""The openvino target's recipe section (`openvino:`)."""

from __future__ import annotations

from typing import Literal

from exporter.base.strict import Strict, flagged


class OpenVinoSpec(Strict):
    """`int8_preset`: NNCF's quantization preset — `mixed`: symmetric weights, asymmetric activations (a
    signed activation such as SiLU's keeps its negative range); `performance`: symmetric everywhere.
    `int8_float`: what the INT8 IR's float layers (the head, the search's float layers) compute in — `f32`,
    or `bf16` on a CPU with AVX-512 BF16 or AMX (faster on larger models: docs/targets.md).
    `bf16_for`: the host an IR computed in bf16 (precision bf16, or INT8 with `int8_float: bf16`) is for —
    `this-host` (checked and measured here; refused on a CPU without AVX-512 BF16 or AMX) or `another-host`
    (built here for such a CPU; where this one computes no bf16, its error, mAP and latency are not
    measured)."""

    int8_preset: Literal["mixed", "performance"] = flagged(
        "mixed",
        "--ov-int8-preset",
        "OpenVINO INT8's NNCF preset: mixed, asymmetric activations; performance, symmetric",
    )
    int8_float: Literal["f32", "bf16"] = flagged(
        "f32",
        "--ov-int8-float",
        "What OpenVINO INT8's float layers (head, the search's float layers) compute in: f32, or bf16 on a "
        "CPU with AVX-512 BF16 or AMX",
    )
    bf16_for: Literal["this-host", "another-host"] = flagged(
        "this-host",
        "--ov-bf16-for",
        "The host an IR computed in bf16 (bf16, or INT8 with bf16 float layers) is for: this host (checked "
        "and measured here), or another host with AVX-512 BF16 or AMX (built here, not measured where this "
        "CPU computes no bf16)",
    )


SECTION = OpenVinoSpec
