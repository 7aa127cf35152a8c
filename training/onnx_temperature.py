"""A temperature inside a classifier's ONNX graph, and its logits out of it.

Temperature scaling divides the logits by one scalar ``T`` before the softmax: the top class
stays, the probabilities get softer (``T`` > 1) or sharper. Our graphs end in Softmax (the
face graph: one per view, then the mirror average; the voice graph: one), so the edit is a
``Div`` by the initializer :data:`TEMPERATURE` in front of every Softmax, and ``T = 1``
gives the parent's outputs exactly. :func:`with_logits` exposes every Softmax's input as an
extra output, so ``T`` is fitted on the logits the graph really divides.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: the initializer every inserted ``Div`` reads
TEMPERATURE = "temperature"


def _load(graph: bytes) -> onnx.ModelProto:
    model = onnx.load_from_string(graph)
    if not any(n.op_type == "Softmax" for n in model.graph.node):
        raise ValueError("the graph has no Softmax: there is no temperature to put in front")
    return model


def temperature_of(graph: bytes) -> float | None:
    """The temperature a graph already divides by, or None."""
    for init in onnx.load_from_string(graph).graph.initializer:
        if init.name == TEMPERATURE:
            return float(numpy_helper.to_array(init))
    return None


def softmax_inputs(graph: bytes) -> list[str]:
    """The tensor each Softmax reads (its logits), in graph order."""
    return [n.input[0] for n in _load(graph).graph.node if n.op_type == "Softmax"]


def with_temperature(graph: bytes, temperature: float) -> bytes:
    """``graph`` with every Softmax reading its input divided by ``temperature``."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"a temperature must be a positive number, got {temperature}")
    model = _load(graph)
    if any(i.name == TEMPERATURE for i in model.graph.initializer):
        raise ValueError("the graph already has a temperature: calibrate its parent instead")
    model.graph.initializer.append(
        numpy_helper.from_array(np.array(temperature, np.float32), TEMPERATURE)
    )
    nodes = []
    for k, node in enumerate(model.graph.node):
        if node.op_type == "Softmax":
            scaled = f"{node.input[0]}/{TEMPERATURE}"
            nodes.append(
                helper.make_node(
                    "Div", [node.input[0], TEMPERATURE], [scaled], name=f"/{TEMPERATURE}/Div_{k}"
                )
            )
            node.input[0] = scaled
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    out: bytes = model.SerializeToString()
    return out


def with_logits(graph: bytes) -> tuple[bytes, list[str]]:
    """``graph`` with every Softmax's input as an extra output (after the original ones),
    and those outputs' names."""
    model = _load(graph)
    names = [n.input[0] for n in model.graph.node if n.op_type == "Softmax"]
    outputs = {o.name for o in model.graph.output}
    for name in names:
        if name not in outputs:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    out: bytes = model.SerializeToString()
    return out, names
