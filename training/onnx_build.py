"""What every ONNX artefact we write shares: opset, IR version, and a full checker pass."""

from __future__ import annotations

import onnx
from onnx import helper

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime since 1.14, GPU builds included


def finish_model(graph: onnx.GraphProto, producer: str, doc: str = "") -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=producer,
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model
