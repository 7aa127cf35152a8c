"""Import MTCNN (facenet-pytorch 2.6.0's pnet/rnet/onet weights, MIT) as ONNX.

The state dicts are read out of the pinned wheel (each member's sha256 pinned), loaded
into our own torch rebuild of the nets (``mtcnn_onnx``) and exported. ``mtcnn/1`` holds
PNet as ``model.onnx`` (covered by the card's sha256) and RNet/ONet as ``rnet.onnx`` and
``onet.onnx``, whose sha256s are written into PNet's ONNX metadata (``emostream.mtcnn``)
so the card's hash covers all three; the plugin checks them on load. Needs torch.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import onnx

from emostream.models.card import ImageInput, Output
from emostream.models.repository import ModelRepository
from emostream.training.wheel_models import WheelModel, import_wheel_model, read_member
from emostream.training.wheels import PinnedWheel

NAME = "mtcnn"
VERSION = "1"
METADATA_KEY = "emostream.mtcnn"
MEMBERS = {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}
PIN = PinnedWheel(
    "facenet-pytorch",
    "2.6.0",
    "facenet_pytorch-2.6.0-py3-none-any.whl",
    "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
    "EMOSTREAM_FACENET_WHEEL",
)
MODEL = WheelModel(
    name=NAME,
    version=VERSION,
    pin=PIN,
    member="facenet_pytorch/data/{pnet,rnet,onet}.pt",
    licence="MIT (facenet-pytorch wheel: code and bundled MTCNN weights)",
    licence_member="facenet_pytorch-2.6.0.dist-info/LICENSE.md",
    authors="Tim Esler (facenet-pytorch); MTCNN by Zhang et al., 2016",
    description="MTCNN (Zhang et al., 2016) P-, R- and O-nets as shipped in the "
    "facenet-pytorch wheel (github.com/timesler/facenet-pytorch, weights ported from "
    "davidsandberg/facenet); converted to ONNX by emostream.training.mtcnn_onnx",
    input=ImageInput(
        name="input",
        layout="NCHW",
        height=12,
        width=12,
        color="rgb",
        scale=0.0078125,
        offset=-127.5 * 0.0078125,
        interpolation="area",
    ),
    output=Output(name="prob", kind="probabilities"),
    notes=(
        "Three nets: model.onnx is PNet (any size, dynamic batch; reg [N, 4, h, w], prob "
        "[N, 2, h, w]); rnet.onnx (24x24 crops) and onet.onnx (48x48 crops, also "
        "landmarks); their sha256s are in model.onnx's metadata under 'emostream.mtcnn'.",
        "Input: RGB, (pixel - 127.5) / 128; the cascade (pyramid factor 0.709, thresholds "
        "0.6/0.7/0.7) is in models/detectors/plugins/mtcnn.py.",
    ),
)


def convert(wheel: zipfile.ZipFile) -> tuple[bytes, dict[str, bytes]]:
    from emostream.training import mtcnn_onnx

    onnx_bytes = {}
    for name, sha in MEMBERS.items():
        weights = read_member(wheel, f"facenet_pytorch/data/{name}.pt", sha)
        onnx_bytes[name] = mtcnn_onnx.export(name, mtcnn_onnx.load(name, weights))
    extra = {f"{n}.onnx": onnx_bytes[n] for n in ("rnet", "onet")}
    pnet = onnx.load_from_string(onnx_bytes["pnet"])
    hashes = {f: hashlib.sha256(b).hexdigest() for f, b in extra.items()}
    onnx.helper.set_model_props(pnet, {METADATA_KEY: json.dumps(hashes)})
    data: bytes = pnet.SerializeToString()
    return data, extra


def import_mtcnn(repo: ModelRepository, *, force: bool = False, wheel: Path | None = None) -> Path:
    """Register ``mtcnn/1`` from the pinned facenet-pytorch wheel (converting needs torch)."""
    return import_wheel_model(repo, MODEL, convert, force=force, wheel=wheel)
