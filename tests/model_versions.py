"""New versions of the real face model for promotion tests: good, corrupt and mismatched.

Each one is registered the way a trainer would register it (``ModelRepository.register``,
so the card's sha256 always matches the bytes): whatever is wrong with it is found only by
loading or checking it, which is what a running process must do before serving it.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np

from emostream.models.check import CHECK_FILE, fixed_crops
from emostream.models.preprocess import prepare
from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier, OnnxRunner

NAME = "face-emotion"


def model_root_copy(src: ModelRepository, dst: Path) -> ModelRepository:
    """A private repository under ``dst`` to change: ``src``'s detectors and only its
    imported face-emotion/1, in production, so that a test numbers its own versions from 2
    whatever the real repository holds."""
    for detector in ("face-detector", "yunet", "retinaface"):
        shutil.copytree(src.root / detector, dst / detector)
    shutil.copytree(
        src.version_dir(NAME, "1"), dst / NAME / "1", ignore=shutil.ignore_patterns("*.png")
    )
    repo = ModelRepository(dst)
    repo.set_alias(NAME, "1")
    return repo


def _onnx(repo: ModelRepository, version: str = "1") -> bytes:
    return (repo.version_dir(NAME, version) / "model.onnx").read_bytes()


def copy_version(repo: ModelRepository, version: str, source: str = "1") -> None:
    """A real, working version: ``source``'s weights under a new number and card."""
    card = repo.card(NAME, source).model_copy(update={"version": version})
    repo.register(card, _onnx(repo, source))


def corrupt_version(repo: ModelRepository, version: str) -> None:
    """Garbage bytes whose sha256 is in the card: only loading them fails."""
    card = repo.card(NAME, "1").model_copy(update={"version": version})
    repo.register(card, b"not an onnx graph\x00" * 64)


def _tiny_graph(classes: int, *, softmax: bool = True) -> bytes:
    """A valid ONNX classifier of the card's input (1x64x64 gray): ``classes`` outputs,
    probabilities unless ``softmax`` is off (then raw scores, which need not sum to 1)."""
    import onnx
    from onnx import TensorProto, helper

    values = [0.5 + 0.25 * k for k in range(classes)]
    weights = helper.make_tensor("w", TensorProto.FLOAT, [1, classes], values)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits" if softmax else "probs"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 64, 64])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def wrong_output_version(repo: ModelRepository, version: str) -> None:
    """A valid ONNX graph whose output has 3 classes under a 7-class card."""
    card = repo.card(NAME, "1").model_copy(update={"version": version})
    repo.register(card, _tiny_graph(3))


def not_probabilities_version(repo: ModelRepository, version: str) -> None:
    """7 raw scores per face under a card that promises probabilities."""
    card = repo.card(NAME, "1").model_copy(update={"version": version})
    repo.register(card, _tiny_graph(7, softmax=False))


def check_npz(repo: ModelRepository, source: str = "1", *, offset: float = 0.0) -> bytes:
    """``check.npz`` for ``source``'s weights: the exporter's inputs and outputs, with
    ``offset`` added to the outputs (non-zero: a file that no longer matches the graph)."""
    card = repo.card(NAME, source)
    clf = Classifier(card, OnnxRunner(repo.onnx_path(NAME, source)))
    inputs = prepare(fixed_crops(), clf.spec)
    outputs = clf.predict_tensor(inputs) + np.float32(offset)
    buf = io.BytesIO()
    np.savez(buf, inputs=inputs, outputs=outputs)
    return buf.getvalue()


def version_with_check(repo: ModelRepository, version: str, *, offset: float = 0.0) -> None:
    """A copy of version 1 carrying a ``check.npz`` (matching unless ``offset``)."""
    card = repo.card(NAME, "1").model_copy(update={"version": version})
    repo.register(card, _onnx(repo), {CHECK_FILE: check_npz(repo, offset=offset)})
