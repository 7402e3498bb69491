"""The AKConvSample TensorRT plugin (exporter/pipeline/targets/tensorrt/plugin).

Without a GPU: the CUDA kernel compiles, the sampling math it shares with the host agrees with hand-derived
values and with the numpy reference, and (with TensorRT headers) the plugin compiles and its methods behave.
With a CUDA device: the kernel itself matches the numpy reference in FP32 and FP16; with TensorRT too, an
engine with the plugin does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from exporter.blocks.lowering.ort_ops import akconv_sample_reference

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "exporter" / "pipeline" / "targets" / "tensorrt" / "plugin"
CXX_FLAGS = ["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror"]


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}\n{result.stdout}\n{result.stderr}"
    return result


def _cuda_homes() -> list[Path]:
    """Candidate CUDA toolkit roots: $CUDA_HOME, $CUDA_PATH, the one holding nvcc, /usr/local/cuda."""
    homes = [Path(os.environ[env]) for env in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(env)]
    if shutil.which("nvcc"):
        homes.append(Path(shutil.which("nvcc")).resolve().parents[1])
    return [*homes, Path("/usr/local/cuda")]


def _nvcc() -> Path | None:
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    return next((home / "bin" / "nvcc" for home in _cuda_homes() if (home / "bin" / "nvcc").exists()), None)


def _gxx() -> str:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    return gxx


def _tensorrt_include() -> Path:
    root = os.environ.get("TENSORRT_ROOT")
    if not root or not (Path(root) / "include" / "NvInfer.h").exists():
        pytest.skip("TensorRT headers not found: set TENSORRT_ROOT")
    return Path(root) / "include"


def _cuda_include() -> Path:
    for home in _cuda_homes():
        if (home / "include" / "cuda_runtime_api.h").exists():
            return home / "include"
    pytest.skip("CUDA headers (cuda_runtime_api.h) not found: set CUDA_HOME")


def _gxx_build(out: Path, sources: list[Path], *flags) -> None:
    _run([_gxx(), *CXX_FLAGS, *flags, "-I", PLUGIN_DIR, *sources, "-o", out])


def _tensorrt_flags() -> list:
    """Include flags for the plugin sources (skips without TensorRT or CUDA headers)."""
    return ["-isystem", _tensorrt_include(), "-isystem", _cuda_include()]


def _problem(seed: int, b: int, c: int, height: int, width: int, h: int, w: int, n: int, quantized: bool):
    """Random x and offsets reaching past every border; quantized offsets (k/8) also hit exact integers."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, c, height, width)).astype(np.float32)
    shape = (b, 2 * n, h, w)
    if quantized:
        offset = (rng.integers(-48, 49, shape) / 8).astype(np.float32)
    else:
        offset = rng.uniform(-6, 6, shape).astype(np.float32)
    return x, offset


# (seed, B, C, H, W, h, w, N, stride, quantized offsets)
PROBLEMS = [
    (0, 2, 3, 7, 6, 4, 3, 5, 2, True),
    (1, 1, 2, 5, 5, 5, 5, 9, 1, False),
    (2, 1, 2, 1, 5, 1, 5, 3, 1, True),  # H = 1
    (3, 2, 1, 6, 1, 3, 1, 11, 2, True),  # W = 1, N = 11 (remainder row)
    (4, 1, 4, 4, 4, 2, 2, 1, 3, False),
]


@pytest.mark.slow
def test_kernel_compiles_with_nvcc(tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (install the CUDA toolkit or set CUDA_HOME)")
    obj = tmp_path / "akconv_sample_kernel.o"
    flags = ["-c", "-std=c++17", "-arch=sm_75", "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra"]
    _run([nvcc, *flags, PLUGIN_DIR / "akconv_sample_kernel.cu", "-o", obj])
    if shutil.which("nm"):
        symbols = _run(["nm", "-C", obj]).stdout
        assert "launchAKConvSample" in symbols
        assert "akconvSampleKernel<float>" in symbols and "akconvSampleKernel<__half>" in symbols


@pytest.fixture(scope="module")
def math_test(tmp_path_factory) -> Path:
    """The host-only math program (tests/sample_math_test.cpp), built with g++."""
    exe = tmp_path_factory.mktemp("math") / "sample_math_test"
    _gxx_build(exe, [PLUGIN_DIR / "tests" / "sample_math_test.cpp"])
    return exe


def test_sample_math_hand_cases(math_test):
    result = subprocess.run([str(math_test)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: f"seed{p[0]}")
def test_sample_math_matches_numpy_reference(math_test, tmp_path, problem):
    seed, b, c, height, width, h, w, n, stride, quantized = problem
    x, offset = _problem(seed, b, c, height, width, h, w, n, quantized)
    dims = np.array([b, c, height, width, h, w, n, stride], dtype=np.int32)
    (tmp_path / "in.bin").write_bytes(dims.tobytes() + x.tobytes() + offset.tobytes())
    _run([math_test, tmp_path / "in.bin", tmp_path / "out.bin"], timeout=30)
    out = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(b, c, h * n, w)
    np.testing.assert_allclose(out, akconv_sample_reference(x, offset, n, stride), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def device_kernel(tmp_path_factory) -> Path:
    """The kernel with a host launcher (tests/kernel_device_test.cu), built with nvcc; skips without nvcc
    or a CUDA device."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (install the CUDA toolkit or set CUDA_HOME)")
    exe = tmp_path_factory.mktemp("device") / "kernel_device_test"
    sources = [PLUGIN_DIR / "tests" / "kernel_device_test.cu", PLUGIN_DIR / "akconv_sample_kernel.cu"]
    _run([nvcc, "-std=c++17", "-Werror", "all-warnings", "-I", PLUGIN_DIR, *sources, "-o", exe], timeout=300)
    probe = subprocess.run([str(exe), "--probe"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"no CUDA device: {probe.stdout.strip()}")
    return exe


# FP16: inputs rounded to FP16 before the reference, output rounded once (half an FP16 ulp, 2^-11 relative)
KERNEL_TOLERANCE = {"fp32": 1e-5, "fp16": 2.0**-10}


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: f"seed{p[0]}")
def test_kernel_on_device_matches_numpy_reference(device_kernel, tmp_path, problem, dtype):
    seed, b, c, height, width, h, w, n, stride, quantized = problem
    x, offset = _problem(seed, b, c, height, width, h, w, n, quantized)
    if dtype == "fp16":  # what the kernel reads
        x, offset = x.astype(np.float16).astype(np.float32), offset.astype(np.float16).astype(np.float32)
    dims = np.array([b, c, height, width, h, w, n, stride], dtype=np.int32)
    (tmp_path / "in.bin").write_bytes(dims.tobytes() + x.tobytes() + offset.tobytes())
    _run([device_kernel, dtype, tmp_path / "in.bin", tmp_path / "out.bin"], timeout=60)
    out = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(b, c, h * n, w)
    expected = akconv_sample_reference(x, offset, n, stride)
    tol = KERNEL_TOLERANCE[dtype]
    scale = max(1.0, float(np.abs(expected).max()))
    error = float(np.abs(out - expected).max())
    # a wrong stride (the mistake a kernel would make) misses by orders of magnitude more than tol
    wrong = float(np.abs(akconv_sample_reference(x, offset, n, stride + 1) - expected).max())
    print(
        f"{dtype} seed {seed}: max error {error:.3g} (tolerance {tol * scale:.3g}; wrong stride: {wrong:.3g})"
    )
    assert error <= tol * scale
    assert wrong > 100 * tol * scale


def test_plugin_compiles_against_tensorrt_headers(tmp_path):
    flags = _tensorrt_flags()
    lib = tmp_path / "libakconv_plugin_host.so"
    # The launcher stays undefined: this checks the plugin translation unit and its exports only.
    _gxx_build(
        lib, [PLUGIN_DIR / "AKConvSamplePlugin.cpp"], *flags, "-fPIC", "-shared", "-fvisibility=hidden"
    )
    if shutil.which("nm"):
        exported = _run(["nm", "-D", "--defined-only", lib]).stdout.split()
        assert "getCreators" in exported and "setLoggerFinder" in exported


def test_plugin_host_harness(tmp_path):
    """Creator, fields, shapes, formats, enqueue and serialization, with the launcher stubbed out."""
    flags = _tensorrt_flags()
    exe = tmp_path / "plugin_host_test"
    sources = [PLUGIN_DIR / "tests" / "plugin_host_test.cpp", PLUGIN_DIR / "AKConvSamplePlugin.cpp"]
    _gxx_build(exe, sources, *flags)
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


# --------------------------------------------------------------------------- TensorRT engine (GPU hosts only)


@pytest.fixture(scope="module")
def trt_with_plugin(tmp_path_factory):
    """tensorrt with libakconv_plugin.so loaded: $AKCONV_PLUGIN_LIB, or built here with CMake."""
    try:
        import tensorrt as trt
    except ImportError:
        pytest.skip("TensorRT is not installed")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if os.environ.get("AKCONV_PLUGIN_LIB"):
        lib = Path(os.environ["AKCONV_PLUGIN_LIB"])
    else:
        root, nvcc, cmake = os.environ.get("TENSORRT_ROOT"), _nvcc(), shutil.which("cmake")
        if not (root and nvcc and cmake):
            pytest.skip(
                "set AKCONV_PLUGIN_LIB to a built plugin, or TENSORRT_ROOT (with nvcc, cmake) to build it"
            )
        build = tmp_path_factory.mktemp("plugin_build")
        arch = "".join(map(str, torch.cuda.get_device_capability()))
        args = [
            f"-DTENSORRT_ROOT={root}",
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            f"-DCMAKE_CUDA_ARCHITECTURES={arch}",
        ]
        _run([cmake, "-S", PLUGIN_DIR, "-B", build, *args], timeout=300)
        _run([cmake, "--build", build, "-j", "2"], timeout=600)
        lib = build / "libakconv_plugin.so"
    registry = trt.get_plugin_registry()
    handle = registry.load_library(str(lib))
    assert handle is not None, f"could not load {lib}"
    yield trt
    registry.deregister_library(handle)


def _plugin_model(x_shape, offset_shape, n: int, stride: int, elem_type: int):
    from onnx import helper

    b, c, _, _ = x_shape
    h, w = offset_shape[2], offset_shape[3]
    node = helper.make_node(
        "AKConvSample",
        ["x", "offset"],
        ["y"],
        domain="reparam_export",
        num_param=n,
        stride=stride,
        plugin_version="1",
        plugin_namespace="",
    )
    graph = helper.make_graph(
        [node],
        "akconv_sample",
        [
            helper.make_tensor_value_info("x", elem_type, list(x_shape)),
            helper.make_tensor_value_info("offset", elem_type, list(offset_shape)),
        ],
        [helper.make_tensor_value_info("y", elem_type, [b, c, h * n, w])],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("reparam_export", 1)]
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_engine_matches_reference(trt_with_plugin, dtype):
    import torch
    from onnx import TensorProto

    trt = trt_with_plugin
    seed, b, c, height, width, h, w, n, stride, quantized = PROBLEMS[0]
    x, offset = _problem(seed, b, c, height, width, h, w, n, quantized)
    x, offset = x.astype(dtype), offset.astype(dtype)
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.FLOAT16
    model = _plugin_model(x.shape, offset.shape, n, stride, elem)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    parsed = parser.parse(model.SerializeToString())
    assert parsed, [str(parser.get_error(i)) for i in range(parser.num_errors)]
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    assert plan is not None, "engine build failed"
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    assert engine.get_tensor_dtype("y") == (trt.float32 if dtype == "float32" else trt.float16)
    context = engine.create_execution_context()

    tensors = {
        "x": torch.from_numpy(x).cuda(),
        "offset": torch.from_numpy(offset).cuda(),
        "y": torch.full((b, c, h * n, w), float("nan"), dtype=getattr(torch, dtype), device="cuda"),
    }
    for name, tensor in tensors.items():
        context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()

    expected = akconv_sample_reference(x.astype(np.float32), offset.astype(np.float32), n, stride)
    tol = 1e-5 if dtype == "float32" else 2e-3
    np.testing.assert_allclose(tensors["y"].float().cpu().numpy(), expected, rtol=tol, atol=tol)
