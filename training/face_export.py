"""PyTorch -> ONNX for the served graph, refused unless ONNX Runtime agrees with PyTorch.

The parity check runs both on real faces and on fixed noise and fails the export when any
probability differs by more than ``atol``: a converter bug must never reach the repository.
The same inputs and the runtime's outputs are kept as ``check.npz`` in the version folder, so
every process that later loads the version can check it gives exactly these answers.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from emostream.training.face_net import Served

INPUT, OUTPUT = "input", "scores"
OPSET = 17
ATOL = 1e-4


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree on the exported graph."""


@dataclass
class Exported:
    onnx: bytes
    check_inputs: np.ndarray  # (N, 1, 48, 48) float32, preprocessed as the card says
    check_outputs: np.ndarray  # (N, classes) ONNX Runtime's probabilities
    max_abs_diff: float
    compared: int


def to_onnx(model: Served, size: int = 48) -> bytes:
    model = model.eval().float()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, size, size),),
            buf,  # type: ignore[arg-type]  # file objects are accepted
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def parity(
    model: Served, onnx: bytes, faces: np.ndarray, atol: float = ATOL, check_count: int = 16
) -> Exported:
    """Compare on ``faces`` (uint8 N x 48 x 48) plus fixed noise; raise ParityError if off."""
    rng = np.random.default_rng(0)
    noise = rng.random((8, 1, *faces.shape[1:]), dtype=np.float32)
    inputs = np.concatenate([faces[:, None].astype(np.float32) / 255.0, noise])
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    got = np.concatenate(
        [session.run([OUTPUT], {INPUT: inputs[i : i + 256]})[0] for i in range(0, len(inputs), 256)]
    )
    with torch.no_grad():
        want = model.eval().float()(torch.from_numpy(inputs)).numpy()
    diff = float(np.abs(got - want).max()) if len(inputs) else 0.0
    if got.shape != want.shape or not np.isfinite(got).all() or diff > atol:
        raise ParityError(
            f"ONNX Runtime differs from PyTorch by {diff:.2e} (limit {atol:.0e}) on "
            f"{len(inputs)} inputs, shapes {got.shape} vs {want.shape}: export refused"
        )
    pick = np.r_[0 : min(check_count, len(faces)), len(faces) : len(inputs)]
    return Exported(onnx, inputs[pick], got[pick], diff, len(inputs))
