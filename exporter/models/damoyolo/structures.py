"""DAMO-YOLO architecture data: the TinyNAS backbone structures and the seven published variants.

The structures are those of the official repository (tinyvision/damo-yolo,
damo/base_models/backbones/nas_backbones/*.txt), reduced to the fields the networks use. Stage 0 is
the stem; every other stage is `L` residual blocks of kind "k1kx" (1x1 conv then kxk RepConv) or
"kxkx" (kxk conv then kxk RepConv) with bottleneck width `btn`, the first block strided by `s`.
"""

from __future__ import annotations


def _stem(out: int) -> dict:
    return {"in": 3, "out": out, "k": 3}


def _stage(kind: str, cin: int, out: int, btn: int, s: int, n: int) -> dict:
    return {"kind": kind, "in": cin, "out": out, "btn": btn, "k": 3, "s": s, "L": n}


STRUCTURES: dict[str, list[dict]] = {
    "tinynas_L20_k1kx": [
        _stem(24),
        _stage("k1kx", 24, 64, 24, 2, 2),
        _stage("k1kx", 64, 96, 64, 2, 2),
        _stage("k1kx", 96, 192, 96, 2, 2),
        _stage("k1kx", 192, 192, 152, 1, 2),
        _stage("k1kx", 192, 384, 192, 2, 1),
    ],
    "tinynas_L25_k1kx": [
        _stem(32),
        _stage("k1kx", 32, 128, 24, 2, 1),
        _stage("k1kx", 128, 128, 88, 2, 5),
        _stage("k1kx", 128, 256, 128, 2, 3),
        _stage("k1kx", 256, 256, 120, 1, 2),
        _stage("k1kx", 256, 512, 144, 2, 1),
    ],
    "tinynas_L35_kxkx": [
        _stem(32),
        _stage("kxkx", 32, 128, 64, 2, 2),
        _stage("kxkx", 128, 128, 64, 2, 4),
        _stage("kxkx", 128, 256, 256, 2, 4),
        _stage("kxkx", 256, 256, 256, 1, 4),
        _stage("kxkx", 256, 512, 256, 2, 3),
    ],
    "tinynas_L45_kxkx": [
        _stem(32),
        _stage("kxkx", 32, 128, 96, 2, 3),
        _stage("kxkx", 128, 128, 96, 2, 5),
        _stage("kxkx", 128, 256, 384, 2, 5),
        _stage("kxkx", 256, 256, 384, 1, 5),
        _stage("kxkx", 256, 512, 384, 2, 4),
    ],
    "tinynas_nano_small": [
        _stem(16),
        _stage("k1kx", 16, 24, 24, 2, 1),
        _stage("k1kx", 24, 40, 64, 2, 2),
        _stage("k1kx", 40, 64, 40, 2, 2),
        _stage("k1kx", 64, 80, 152, 1, 2),
        _stage("k1kx", 80, 160, 192, 2, 2),
    ],
    "tinynas_nano_middle": [
        _stem(16),
        _stage("k1kx", 16, 40, 24, 2, 2),
        _stage("k1kx", 40, 64, 64, 2, 2),
        _stage("k1kx", 64, 112, 40, 2, 2),
        _stage("k1kx", 112, 128, 152, 1, 2),
        _stage("k1kx", 128, 256, 192, 2, 1),
    ],
    "tinynas_nano_large": [
        _stem(24),
        _stage("k1kx", 24, 48, 24, 2, 1),
        _stage("k1kx", 48, 80, 64, 2, 2),
        _stage("k1kx", 80, 160, 40, 2, 2),
        _stage("k1kx", 160, 160, 152, 1, 3),
        _stage("k1kx", 160, 320, 192, 2, 2),
    ],
}


def _variant(backbone, structure, act, depth, hidden_ratio, in_ch, out_ch, size, nano=False) -> dict:
    return {
        "backbone": backbone,  # res | csp | mob
        "structure": structure,
        "act": act,  # backbone and neck activation from the config
        "depth": depth,
        "hidden_ratio": hidden_ratio,
        "in_channels": in_ch,  # neck inputs (backbone outputs at strides 8, 16, 32)
        "out_channels": out_ch,  # neck outputs = head inputs
        "depthwise": nano,
        "reg_max": 7 if nano else 16,
        "last_kernel_size": 1 if nano else 3,
        "score_threshold": 0.03 if nano else 0.05,
        "iou_threshold": 0.65 if nano else 0.7,
        "input_size": size,
    }


# Values of configs/damoyolo_tinynas*.py in the official repository.
VARIANTS: dict[str, dict] = {
    "t": _variant("res", "tinynas_L20_k1kx", "relu", 1.0, 1.0, [96, 192, 384], [64, 128, 256], 640),
    "s": _variant("res", "tinynas_L25_k1kx", "relu", 1.0, 0.75, [128, 256, 512], [128, 256, 512], 640),
    "m": _variant("csp", "tinynas_L35_kxkx", "silu", 1.5, 1.0, [128, 256, 512], [128, 256, 512], 640),
    "l": _variant("csp", "tinynas_L45_kxkx", "silu", 2.0, 1.0, [128, 256, 512], [128, 256, 512], 640),
    "ns": _variant("mob", "tinynas_nano_small", "silu", 0.5, 0.5, [40, 80, 160], [40, 80, 160], 416, True),
    "nm": _variant("mob", "tinynas_nano_middle", "silu", 0.5, 0.5, [64, 128, 256], [64, 128, 256], 416, True),
    "nl": _variant("mob", "tinynas_nano_large", "silu", 0.5, 0.5, [80, 160, 320], [80, 160, 320], 416, True),
}
