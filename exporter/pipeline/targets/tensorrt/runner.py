"""TensorRT backend: runs a serialized engine with the TensorRT 10 runtime (named I/O tensors,
execute_async_v3) on CUDA buffers held by torch tensors. Needs TensorRT and a CUDA GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporter.base.errors import CheckFailed, UserError


class TrtRunner:
    def __init__(self, path: str | Path, plugin_library: str | Path | None = None):
        try:
            import tensorrt as trt
        except ImportError:
            raise UserError(
                f"{path} is a TensorRT engine and TensorRT is not installed here; measure it where it was "
                "built (the same TensorRT version and GPU)"
            ) from None
        import torch

        if not torch.cuda.is_available():
            raise UserError("the TensorRT backend needs a CUDA GPU; none is visible")
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        if plugin_library is not None:  # plugins must be registered before deserializing
            trt.get_plugin_registry().load_library(str(plugin_library))
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise UserError(
                f"TensorRT {trt.__version__} cannot load {path}: engines only load with the TensorRT version "
                "and GPU they were built with (and their plugin libraries)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        self.outputs = [n for n in names if not is_input[n]]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.stream = torch.cuda.Stream()

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        import torch

        (name,) = self.inputs
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to("cuda", self.dtypes[name])
        self.context.set_input_shape(name, tuple(x.shape))
        self.context.set_tensor_address(name, x.data_ptr())
        outputs = []
        for out in self.outputs:
            shape = tuple(self.context.get_tensor_shape(out))
            if any(d < 0 for d in shape):  # known only after running: needs an output allocator
                raise UserError(
                    f"engine output '{out}' has a data-dependent shape {shape} (head_mode nms); build "
                    "with head_mode decoded, or decoded plus tensorrt.end2end_nms for NMS in the engine"
                )
            tensor = torch.empty(shape, dtype=self.dtypes[out], device="cuda")
            self.context.set_tensor_address(out, tensor.data_ptr())
            outputs.append(tensor)
        self.stream.wait_stream(torch.cuda.current_stream())  # the input copy runs on the current stream
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise CheckFailed(f"TensorRT could not run the engine on a batch of shape {tuple(x.shape)}")
        self.stream.synchronize()
        return [t.cpu().numpy() for t in outputs]


def _torch_dtype(trt, dtype):
    import torch

    names = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
             "BOOL": "bool", "UINT8": "uint8"}  # fmt: skip
    table = {
        getattr(trt.DataType, k): getattr(torch, v) for k, v in names.items() if hasattr(trt.DataType, k)
    }
    if dtype not in table:
        raise UserError(f"TensorRT I/O type {dtype} is not supported by the runner")
    return table[dtype]


def load(path: str | Path, plugin_library: str | Path | None = None) -> TrtRunner:
    return TrtRunner(path, plugin_library)
