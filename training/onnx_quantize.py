"""ONNX Runtime static int8 quantization of a float graph, whatever it classifies.

QDQ format (QuantizeLinear/DequantizeLinear pairs that ONNX Runtime's CPU provider fuses into
integer kernels), int8 weights per output channel, uint8 activations whose ranges come from
a calibration set (min/max of each tensor over it). The graph goes through ONNX Runtime's
``quant_pre_process`` first (shape inference and graph optimisation), as its documentation
advises for static quantization. The softmax and everything after it (the face graph's mirror
average) stay float: quantized, a row of probabilities sums to 1 only within a few
thousandths, which the serving check refuses. Everything is done in a scratch folder: the
tool works on files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx as onnx_lib
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

#: What the card's source and the report say about the method (kept beside the call).
METHOD = {
    "tool": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "weights": "int8, per channel",
    "activations": "uint8",
    "calibration": "MinMax",
    "pre_process": "onnxruntime.quantization.shape_inference.quant_pre_process",
    "float": "Softmax and every node after it",
}


def float_tail(model: onnx_lib.ModelProto) -> list[str]:
    """Names of the Softmax nodes and of every node that reads, directly or not, their output."""
    tainted: set[str] = set()
    names = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if node.op_type == "Softmax" or tainted.intersection(node.input):
            tainted.update(node.output)
            names.append(node.name)
    return names


class _Batches(CalibrationDataReader):  # type: ignore[misc]  # untyped base class
    """The calibration tensor in batches, counted on a progress bar as it is read."""

    def __init__(self, inputs: np.ndarray, name: str, batch: int, progress: bool) -> None:
        self._chunks = iter(range(0, len(inputs), batch))
        self._inputs, self._name, self._batch = inputs, name, batch
        self._bar = tqdm(total=len(inputs), desc="calibrating", unit="face", disable=not progress)

    def get_next(self) -> dict[str, np.ndarray] | None:
        start = next(self._chunks, None)
        if start is None:
            self._bar.close()
            return None
        chunk = self._inputs[start : start + self._batch]
        self._bar.update(len(chunk))
        return {self._name: np.ascontiguousarray(chunk, dtype=np.float32)}


def quantize_int8(
    onnx: bytes, calibration: np.ndarray, input_name: str, batch: int = 32, progress: bool = True
) -> bytes:
    """The int8 QDQ graph of ``onnx``; ``calibration`` is preprocessed as the model's card says
    (N, ...) float32."""
    if not len(calibration):
        raise ValueError("int8 calibration needs at least one input")
    with tempfile.TemporaryDirectory(prefix="emostream-quantize-") as tmp:
        src, pre, out = Path(tmp, "float.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(onnx)
        quant_pre_process(src, pre)
        keep_float = float_tail(onnx_lib.load(str(pre)))
        quantize_static(
            pre,
            out,
            _Batches(calibration, input_name, batch, progress),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep_float,
        )
        return out.read_bytes()
