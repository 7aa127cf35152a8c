"""PyTorch -> ONNX for a served graph, refused unless ONNX Runtime agrees with PyTorch.

The parity check runs both on the given inputs (real samples and fixed noise, already
preprocessed as the card says) and fails the export when any probability differs by more
than ``atol``: a converter bug must never reach the repository. A few of the inputs and the
runtime's outputs are kept as ``check.npz`` in the version folder, so every process that
later loads the version can check it gives exactly these answers. Face and voice both
export through here.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

OPSET = 17
ATOL = 1e-4


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree on the exported graph."""


@dataclass
class Exported:
    onnx: bytes
    check_inputs: np.ndarray  # float32, preprocessed as the card says
    check_outputs: np.ndarray  # (N, classes) ONNX Runtime's probabilities
    max_abs_diff: float
    compared: int

    def check_npz(self) -> bytes:
        """``check.npz`` for the version folder (what ``models/check.py`` replays)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, inputs=self.check_inputs, outputs=self.check_outputs)
        return buf.getvalue()


def to_onnx(model: nn.Module, example: tuple[int, ...], input_name: str, output_name: str) -> bytes:
    """The graph with a dynamic batch axis (``example`` gives one sample's full shape)."""
    model = model.eval().float()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(*example),),
            buf,  # type: ignore[arg-type]  # file objects are accepted
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def parity(
    model: nn.Module,
    onnx: bytes,
    inputs: np.ndarray,
    input_name: str,
    output_name: str,
    keep: np.ndarray,
    atol: float = ATOL,
) -> Exported:
    """Compare on ``inputs``; raise ParityError if off; keep rows ``keep`` for check.npz."""
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    got = np.concatenate(
        [
            session.run([output_name], {input_name: inputs[i : i + 256]})[0]
            for i in range(0, len(inputs), 256)
        ]
    )
    with torch.no_grad():
        want = model.eval().float()(torch.from_numpy(inputs)).numpy()
    diff = float(np.abs(got - want).max()) if len(inputs) else 0.0
    if got.shape != want.shape or not np.isfinite(got).all() or diff > atol:
        raise ParityError(
            f"ONNX Runtime differs from PyTorch by {diff:.2e} (limit {atol:.0e}) on "
            f"{len(inputs)} inputs, shapes {got.shape} vs {want.shape}: export refused"
        )
    return Exported(onnx, inputs[keep], got[keep], diff, len(inputs))
