"""An ONNX Runtime session as a torch module (spaces.runtime deploys and loads it).

Apart from the runtime dimension because it subclasses `nn.Module` when it is defined:
reading a spec imports the dimension, and never needs torch."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn


class OrtModule(nn.Module):
    """An ONNX Runtime session behind the nn.Module interface: forward takes and returns
    torch tensors (CPU, float32), so every objective can run it like a torch model."""

    def __init__(self, model_bytes: bytes, threads: int = 1, quant_mode: str = "none"):
        super().__init__()
        self.model_bytes, self.threads, self.quant_mode = model_bytes, int(threads), quant_mode
        self._open()

    def _open(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().numpy()
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        return torch.from_numpy(self.session.run([self.output_name], {self.input_name: array})[0])

    def size_kb(self) -> float:
        return len(self.model_bytes) / 1024

    def executed_ops(self) -> Counter:
        """Op types of the graph the session runs: ONNX Runtime's optimized graph (QDQ
        pairs fused into QLinearConv, QGemm, ...), read back from a second session that
        serializes it."""
        import onnx
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="paretune-ort-") as tmp:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = 1
            options.log_severity_level = 3  # its note that the file is hardware-specific
            options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            ort.InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])
            graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
        return Counter(node.op_type for node in graph.node)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.model_bytes)
        return path

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("session", None)  # an InferenceSession does not pickle; rebuilt on load
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()
