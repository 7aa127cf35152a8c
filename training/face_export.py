"""The face graph's ONNX export: 48x48 gray faces in, through the shared parity check.

The parity inputs are real faces plus fixed noise (:mod:`onnx_export` does the rest).
"""

from __future__ import annotations

import numpy as np

from emostream.training.face_net import Served
from emostream.training.onnx_export import ATOL, OPSET, Exported, ParityError
from emostream.training.onnx_export import parity as _parity
from emostream.training.onnx_export import to_onnx as _to_onnx

__all__ = ["ATOL", "INPUT", "OPSET", "OUTPUT", "Exported", "ParityError", "parity", "to_onnx"]

INPUT, OUTPUT = "input", "scores"


def to_onnx(model: Served, size: int = 48) -> bytes:
    return _to_onnx(model, (1, 1, size, size), INPUT, OUTPUT)


def parity(
    model: Served, onnx: bytes, faces: np.ndarray, atol: float = ATOL, check_count: int = 16
) -> Exported:
    """Compare on ``faces`` (uint8 N x 48 x 48) plus fixed noise; raise ParityError if off."""
    rng = np.random.default_rng(0)
    noise = rng.random((8, 1, *faces.shape[1:]), dtype=np.float32)
    inputs = np.concatenate([faces[:, None].astype(np.float32) / 255.0, noise])
    keep = np.r_[0 : min(check_count, len(faces)), len(faces) : len(inputs)]
    return _parity(model, onnx, inputs, INPUT, OUTPUT, keep, atol)
