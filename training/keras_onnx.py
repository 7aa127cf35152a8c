"""Convert a Keras (2.x HDF5) functional CNN to ONNX without TensorFlow.

We read the architecture (``model_config``) and the weights with h5py and emit the same
network as ONNX operators, NCHW. Only the layer types that image classifiers such as
mini-Xception use are supported; anything else fails loudly with the layer's name, because
a silently wrong graph is worse than none. TensorFlow's ``same`` padding puts the odd extra
pixel at the end, so pads are computed per layer from the known spatial size.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any, BinaryIO

import h5py
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from emostream.training.onnx_build import finish_model


class UnsupportedLayerError(ValueError):
    pass


@dataclass
class _Tensor:
    name: str
    channels: int
    height: int
    width: int


def _weights(group: h5py.Group) -> dict[str, np.ndarray]:
    """Weights of one layer keyed by their short name (``kernel``, ``gamma`` …)."""
    out: dict[str, np.ndarray] = {}
    for raw in group.attrs.get("weight_names", []):
        full = raw.decode() if isinstance(raw, bytes) else str(raw)
        short = full.rsplit("/", 1)[-1].split(":")[0]
        out[short] = np.asarray(group[full], dtype=np.float32)
    return out


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(pad_begin, pad_end, out_size) for TF ``same`` padding."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def _spatial(
    t: _Tensor, cfg: dict[str, Any], kernel: tuple[int, ...], stride: tuple[int, ...]
) -> tuple[list[int], int, int]:
    if cfg.get("padding", "valid") == "same":
        hb, he, oh = _same_pads(t.height, kernel[0], stride[0])
        wb, we, ow = _same_pads(t.width, kernel[1], stride[1])
        return [hb, wb, he, we], oh, ow
    oh = (t.height - kernel[0]) // stride[0] + 1
    ow = (t.width - kernel[1]) // stride[1] + 1
    return [0, 0, 0, 0], oh, ow


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _check_linear(layer: str, cfg: dict[str, Any]) -> None:
    act = cfg.get("activation", "linear")
    if act != "linear":
        raise UnsupportedLayerError(f"{layer}: fused activation {act!r} is not supported")
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise UnsupportedLayerError(f"{layer}: only channels_last Keras models are supported")
    if tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1):
        raise UnsupportedLayerError(f"{layer}: dilated convolutions are not supported")


def _conv_geometry(
    name: str, x: _Tensor, cfg: dict[str, Any]
) -> tuple[tuple[int, ...], tuple[int, ...], list[int], int, int]:
    """A (separable) convolution's kernel, strides, ONNX pads and output size, after
    checking it is one we convert (linear activation, no dilation, channels last)."""
    _check_linear(name, cfg)
    k = tuple(cfg["kernel_size"])
    s = tuple(cfg["strides"])
    pads, oh, ow = _spatial(x, cfg, k, s)
    return k, s, pads, oh, ow


def _conv(
    b: _Builder, name: str, x: _Tensor, cfg: dict[str, Any], w: dict[str, np.ndarray]
) -> _Tensor:
    k, s, pads, oh, ow = _conv_geometry(name, x, cfg)
    kernel = w["kernel"].transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    inputs = [x.name, b.const(f"{name}.weight", kernel)]
    if cfg.get("use_bias", True):
        inputs.append(b.const(f"{name}.bias", w["bias"]))
    out = b.node("Conv", inputs, name, kernel_shape=list(k), strides=list(s), pads=pads)
    return _Tensor(out, kernel.shape[0], oh, ow)


def _separable(
    b: _Builder, name: str, x: _Tensor, cfg: dict[str, Any], w: dict[str, np.ndarray]
) -> _Tensor:
    k, s, pads, oh, ow = _conv_geometry(name, x, cfg)
    dw = w["depthwise_kernel"]  # (kh, kw, in, mult)
    kh, kw, cin, mult = dw.shape
    dw_onnx = dw.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None, :, :]
    mid = b.node(
        "Conv",
        [x.name, b.const(f"{name}.depthwise", dw_onnx)],
        f"{name}.dw",
        kernel_shape=list(k),
        strides=list(s),
        pads=pads,
        group=cin,
    )
    pw = w["pointwise_kernel"].transpose(3, 2, 0, 1)
    inputs = [mid, b.const(f"{name}.pointwise", pw)]
    if cfg.get("use_bias", True):
        inputs.append(b.const(f"{name}.bias", w["bias"]))
    out = b.node("Conv", inputs, name, kernel_shape=[1, 1])
    return _Tensor(out, pw.shape[0], oh, ow)


def _batchnorm(
    b: _Builder, name: str, x: _Tensor, cfg: dict[str, Any], w: dict[str, np.ndarray]
) -> _Tensor:
    if cfg.get("axis", -1) not in (-1, 3, [3], [-1]):
        raise UnsupportedLayerError(f"{name}: batch norm over axis {cfg['axis']}")
    c = x.channels
    gamma = w.get("gamma", np.ones(c, np.float32))
    beta = w.get("beta", np.zeros(c, np.float32))
    out = b.node(
        "BatchNormalization",
        [
            x.name,
            b.const(f"{name}.gamma", gamma),
            b.const(f"{name}.beta", beta),
            b.const(f"{name}.mean", w["moving_mean"]),
            b.const(f"{name}.var", w["moving_variance"]),
        ],
        name,
        epsilon=float(cfg.get("epsilon", 1e-3)),
    )
    return _Tensor(out, c, x.height, x.width)


def _maxpool(b: _Builder, name: str, x: _Tensor, cfg: dict[str, Any]) -> _Tensor:
    k = tuple(cfg["pool_size"])
    s = tuple(cfg.get("strides") or k)
    pads, oh, ow = _spatial(x, cfg, k, s)
    out = b.node("MaxPool", [x.name], name, kernel_shape=list(k), strides=list(s), pads=pads)
    return _Tensor(out, x.channels, oh, ow)


def _activation(b: _Builder, name: str, x: _Tensor, cfg: dict[str, Any]) -> _Tensor:
    act = cfg["activation"]
    if act == "relu":
        out = b.node("Relu", [x.name], name)
    elif act == "softmax":
        if x.height != 1 or x.width != 1:
            raise UnsupportedLayerError(f"{name}: softmax over a spatial map")
        out = b.node("Softmax", [x.name], name, axis=1)
    elif act == "linear":
        out = b.node("Identity", [x.name], name)
    else:
        raise UnsupportedLayerError(f"{name}: activation {act!r}")
    return _Tensor(out, x.channels, x.height, x.width)


def convert(
    source: str | bytes | BinaryIO,
    *,
    input_name: str = "input",
    output_name: str = "scores",
    doc: str = "",
) -> onnx.ModelProto:
    """Build the ONNX model (NCHW input ``[N, C, H, W]``, output ``[N, classes]``)."""
    fileobj = io.BytesIO(source) if isinstance(source, bytes) else source
    with h5py.File(fileobj, "r") as f:
        config = json.loads(f.attrs["model_config"])
        if config["class_name"] not in ("Model", "Functional"):
            raise UnsupportedLayerError(
                f"top-level {config['class_name']} (need a functional Model)"
            )
        weights_root = f.get("model_weights", f)
        b = _Builder()
        tensors: dict[str, _Tensor] = {}
        graph_input: onnx.ValueInfoProto | None = None
        last = ""
        for layer in config["config"]["layers"]:
            kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
            inbound = [n[0] for node in layer.get("inbound_nodes", []) for n in node]
            if kind == "InputLayer":
                _, h, w, c = cfg["batch_input_shape"]
                graph_input = helper.make_tensor_value_info(
                    input_name, TensorProto.FLOAT, ["N", c, h, w]
                )
                tensors[name] = _Tensor(input_name, c, h, w)
                last = name
                continue
            if len(inbound) < 1:
                raise UnsupportedLayerError(f"{name}: no inbound layer")
            x = tensors[inbound[0]]
            w = _weights(weights_root[name]) if name in weights_root else {}
            if kind == "Conv2D":
                t = _conv(b, name, x, cfg, w)
            elif kind == "SeparableConv2D":
                t = _separable(b, name, x, cfg, w)
            elif kind == "BatchNormalization":
                t = _batchnorm(b, name, x, cfg, w)
            elif kind == "Activation":
                t = _activation(b, name, x, cfg)
            elif kind == "MaxPooling2D":
                t = _maxpool(b, name, x, cfg)
            elif kind == "Add":
                ins = [tensors[i] for i in inbound]
                if len(ins) != 2 or {(i.channels, i.height, i.width) for i in ins}.__len__() != 1:
                    raise UnsupportedLayerError(f"{name}: Add needs two equal-shaped inputs")
                t = _Tensor(
                    b.node("Add", [i.name for i in ins], name), x.channels, x.height, x.width
                )
            elif kind == "GlobalAveragePooling2D":
                t = _Tensor(b.node("GlobalAveragePool", [x.name], name), x.channels, 1, 1)
            elif kind == "Dropout":
                t = _Tensor(b.node("Identity", [x.name], name), x.channels, x.height, x.width)
            else:
                raise UnsupportedLayerError(f"{name}: layer type {kind} is not supported")
            tensors[name] = t
            last = name
        if graph_input is None:
            raise UnsupportedLayerError("model has no InputLayer")
        final = tensors[last]
        b.node("Flatten", [final.name], output_name, axis=1)
        graph = helper.make_graph(
            b.nodes,
            "keras_import",
            [graph_input],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", final.channels])],
            initializer=b.inits,
        )
        return finish_model(graph, "emostream.training.keras_onnx", doc)
