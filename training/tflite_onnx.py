"""Convert a float TFLite vision model (such as MediaPipe's BlazeFace) to ONNX, no TensorFlow.

We read the flatbuffer with the pure-Python ``tflite`` package (the generated schema
bindings) and emit the same network as ONNX operators, opset 17, with 4-D activations in
NCHW. Weights stored as float16 (``DEQUANTIZE``) or as sparse tensors (``DENSIFY``) are
decoded here, at conversion time, into float32 initialisers, so the ONNX graph is plain
float32. Only the operators that small detectors use are supported; anything else (int8
quantisation included) fails loudly with the operator's index and name, because a silently
wrong graph is worse than none.

Layout: TFLite is NHWC. Every 4-D activation is kept NCHW in ONNX; ops that look at the raw
memory order (``RESHAPE``, and a 4-D graph output) get a ``Transpose`` back to NHWC first,
so their results equal TFLite's element for element. TFLite's ``SAME`` padding puts the odd
extra pixel at the end, so pads are computed per op from the known spatial size.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper
from tflite.BuiltinOperator import BuiltinOperator
from tflite.TensorType import TensorType

from emostream.training.onnx_build import finish_model

_OP_NAMES: dict[int, str] = {
    v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)
}
_NUMPY_TYPES: dict[int, Any] = {
    TensorType.FLOAT32: np.float32,
    TensorType.FLOAT16: np.float16,
    TensorType.INT32: np.int32,
    TensorType.INT64: np.int64,
    TensorType.INT8: np.int8,
    TensorType.UINT8: np.uint8,
}
# tflite schema enums (schema.fbs), spelt out so the code reads without the generated classes
_PAD_SAME, _PAD_VALID = 0, 1
_ACT_NONE, _ACT_RELU, _ACT_RELU6 = 0, 1, 3
_DIM_DENSE, _DIM_SPARSE_CSR = 0, 1


class UnsupportedOpError(ValueError):
    """The model uses an operator, option or tensor type this converter does not handle."""


@dataclass
class _Value:
    """An ONNX value standing for a TFLite tensor: ``shape`` is TFLite's (NHWC) shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def nchw(self) -> bool:
        return len(self.shape) == 4


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int, int]:
    """(pad_begin, pad_end, out_size) for TF/TFLite ``SAME`` padding."""
    eff = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2, out


def _spatial(
    shape: tuple[int, ...],
    padding: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    where: str = "",
) -> tuple[list[int], tuple[int, int]]:
    """ONNX pads [hb, wb, he, we] and the output (h, w) for an NHWC input shape."""
    _, h, w, _ = shape
    if padding == _PAD_SAME:
        hb, he, oh = same_pads(h, kernel[0], stride[0], dilation[0])
        wb, we, ow = same_pads(w, kernel[1], stride[1], dilation[1])
        return [hb, wb, he, we], (oh, ow)
    if padding == _PAD_VALID:
        oh = (h - ((kernel[0] - 1) * dilation[0] + 1)) // stride[0] + 1
        ow = (w - ((kernel[1] - 1) * dilation[1] + 1)) // stride[1] + 1
        return [0, 0, 0, 0], (oh, ow)
    raise UnsupportedOpError(f"{where}: padding mode {padding}")


def _index_vector(table: Any, kind: int) -> np.ndarray:
    """Values of a flatbuffer ``SparseIndexVector`` union member."""
    classes = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}
    if kind not in classes:
        raise UnsupportedOpError(f"sparse index vector type {kind}")
    vec = classes[kind]()
    vec.Init(table.Bytes, table.Pos)
    return np.asarray(vec.ValuesAsNumpy(), dtype=np.int64)


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity: Any) -> np.ndarray:
    """A dense array from TFLite's sparse format (TACO-style per-dimension metadata).

    Mirrors tflite's ``FormatConverter::Populate`` for models without block maps and with the
    identity traversal order (what the TFLite model optimiser writes for pruned convs).
    """
    rank = len(shape)
    order = list(sparsity.TraversalOrderAsNumpy()) if sparsity.TraversalOrderLength() else []
    if order and order != list(range(rank)):
        raise UnsupportedOpError(f"sparse tensor with traversal order {order}")
    if sparsity.BlockMapLength():
        raise UnsupportedOpError("sparse tensor with a block map")
    if sparsity.DimMetadataLength() != rank:
        raise UnsupportedOpError("sparse tensor metadata does not match its rank")
    prev = np.zeros(1, dtype=np.int64)  # position in the previous level, per path
    index = np.zeros((1, 0), dtype=np.int64)  # the dense coordinates so far, per path
    for level in range(rank):
        dm = sparsity.DimMetadata(level)
        if dm.Format() == _DIM_DENSE:
            size = dm.DenseSize()
            step = np.arange(size, dtype=np.int64)
            prev = (prev[:, None] * size + step[None, :]).ravel()
            index = np.concatenate(
                [np.repeat(index, size, axis=0), np.tile(step, len(index))[:, None]], axis=1
            )
        elif dm.Format() == _DIM_SPARSE_CSR:
            seg = _index_vector(dm.ArraySegments(), dm.ArraySegmentsType())
            ind = _index_vector(dm.ArrayIndices(), dm.ArrayIndicesType())
            counts = seg[prev + 1] - seg[prev]
            pos = np.concatenate(
                [
                    np.arange(a, b, dtype=np.int64)
                    for a, b in zip(seg[prev], seg[prev + 1], strict=True)
                ]
                or [np.zeros(0, dtype=np.int64)]
            )
            index = np.concatenate([np.repeat(index, counts, axis=0), ind[pos][:, None]], axis=1)
            prev = pos
        else:
            raise UnsupportedOpError(f"sparse dimension format {dm.Format()}")
    if len(index) != values.size:
        raise UnsupportedOpError(
            f"sparse tensor holds {values.size} values but its metadata names {len(index)}"
        )
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(index.T)] = values.ravel()
    return dense


class _Converter:
    def __init__(self, model: Any, input_name: str, output_names: list[str] | None) -> None:
        self.model = model
        if model.SubgraphsLength() != 1:
            raise UnsupportedOpError(f"{model.SubgraphsLength()} subgraphs (need exactly 1)")
        self.g = model.Subgraphs(0)
        self.input_name = input_name
        self.output_names = output_names
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.values: dict[int, _Value] = {}
        self.consts: dict[int, np.ndarray] = {}
        self._uid = 0

    # -- helpers -------------------------------------------------------------------------
    def tensor(self, i: int) -> Any:
        return self.g.Tensors(i)

    def shape(self, i: int) -> tuple[int, ...]:
        t = self.tensor(i)
        return tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()

    def fresh(self, hint: str) -> str:
        self._uid += 1
        return f"{hint}.{self._uid}"

    def const_name(self, hint: str, value: np.ndarray) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def buffer(self, i: int, where: str) -> np.ndarray:
        """A constant tensor's raw values (TFLite layout), or a loud error."""
        if i in self.consts:
            return self.consts[i]
        t = self.tensor(i)
        dtype = _NUMPY_TYPES.get(t.Type())
        if dtype is None:
            raise UnsupportedOpError(f"{where}: tensor type {t.Type()} of {t.Name()!r}")
        buf = self.model.Buffers(t.Buffer())
        if buf is None or buf.DataLength() == 0:
            raise UnsupportedOpError(f"{where}: {t.Name()!r} must be a constant tensor")
        raw = np.asarray(buf.DataAsNumpy(), dtype=np.uint8).tobytes()
        arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
        if t.Sparsity() is not None:
            return arr  # values only; DENSIFY expands them
        return arr.reshape(self.shape(i))

    def value(self, i: int, where: str) -> _Value:
        if i not in self.values:
            raise UnsupportedOpError(
                f"{where}: input tensor {self.tensor(i).Name()!r} is not "
                "an activation (constant inputs are not supported here)"
            )
        return self.values[i]

    def float_const(self, i: int, where: str) -> np.ndarray:
        arr = self.buffer(i, where)
        if arr.dtype != np.float32:
            raise UnsupportedOpError(
                f"{where}: weight {self.tensor(i).Name()!r} is "
                f"{arr.dtype} (quantised models are not supported)"
            )
        return arr

    def activation(self, x: str, fused: int, hint: str, where: str) -> str:
        if fused == _ACT_NONE:
            return x
        if fused == _ACT_RELU:
            return self.node("Relu", [x], f"{hint}.relu")
        if fused == _ACT_RELU6:
            lo = self.const_name("zero", np.array(0.0, np.float32))
            hi = self.const_name("six", np.array(6.0, np.float32))
            return self.node("Clip", [x, lo, hi], f"{hint}.relu6")
        raise UnsupportedOpError(f"{where}: fused activation {fused}")

    def to_nhwc(self, v: _Value) -> str:
        if not v.nchw:
            return v.name
        return self.node("Transpose", [v.name], "nhwc", perm=[0, 2, 3, 1])

    # -- operators -----------------------------------------------------------------------
    def convert_op(self, k: int) -> None:
        op = self.g.Operators(k)
        oc = self.model.OperatorCodes(op.OpcodeIndex())
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        kind = _OP_NAMES.get(code, f"builtin {code}")
        if code == BuiltinOperator.CUSTOM:
            kind = f"CUSTOM {oc.CustomCode()!r}"
        ins = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(i) for i in op.OutputsAsNumpy()]
        where = f"operator {k} ({kind})"
        handler = getattr(self, f"op_{kind.lower()}", None)
        if handler is None:
            raise UnsupportedOpError(f"{where}: operator type {kind} is not supported")
        if len(outs) != 1:
            raise UnsupportedOpError(f"{where}: {len(outs)} outputs")
        handler(op, ins, outs[0], where)

    def _options(self, op: Any, cls: Any) -> Any:
        table = op.BuiltinOptions()
        opts = cls()
        if table is not None:
            opts.Init(table.Bytes, table.Pos)
        return opts

    def op_dequantize(self, op: Any, ins: list[int], out: int, where: str) -> None:
        t = self.tensor(ins[0])
        if t.Type() != TensorType.FLOAT16:
            raise UnsupportedOpError(
                f"{where}: dequantising {t.Type()} tensors (only float16 "
                "weights are supported; int8 models are not)"
            )
        self.consts[out] = self.buffer(ins[0], where).astype(np.float32)

    def op_densify(self, op: Any, ins: list[int], out: int, where: str) -> None:
        t = self.tensor(ins[0])
        if t.Sparsity() is None:
            raise UnsupportedOpError(f"{where}: input is not sparse")
        self.consts[out] = densify(self.buffer(ins[0], where), self.shape(out), t.Sparsity())

    def _conv(
        self,
        o: Any,
        x: _Value,
        weight: np.ndarray,
        ins: list[int],
        out: int,
        names: tuple[str, str],
        where: str,
        **attrs: int,
    ) -> None:
        """An ONNX Conv from a TFLite (depthwise) convolution: ``weight`` already in ONNX
        layout (out, in/group, kh, kw); bias, padding, stride, dilation, fused activation."""
        const, node = names
        kernel = (weight.shape[2], weight.shape[3])
        stride = (o.StrideH(), o.StrideW())
        dil = (o.DilationHFactor(), o.DilationWFactor())
        pads, _ = _spatial(x.shape, o.Padding(), kernel, stride, dil, where)
        inputs = [x.name, self.const_name(f"{const}.weight", weight)]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.const_name(f"{const}.bias", self.float_const(ins[2], where)))
        y = self.node(
            "Conv",
            inputs,
            node,
            kernel_shape=list(kernel),
            strides=list(stride),
            dilations=list(dil),
            pads=pads,
            **attrs,
        )
        y = self.activation(y, o.FusedActivationFunction(), node, where)
        self.values[out] = _Value(y, self.shape(out))

    def op_conv_2d(self, op: Any, ins: list[int], out: int, where: str) -> None:
        o = self._options(op, tflite.Conv2DOptions)
        x = self.value(ins[0], where)
        w = self.float_const(ins[1], where)  # (out, kh, kw, in)
        if w.shape[3] != x.shape[3]:
            raise UnsupportedOpError(f"{where}: grouped convolutions are not supported")
        self._conv(o, x, w.transpose(0, 3, 1, 2), ins, out, ("conv", "conv"), where)

    def op_depthwise_conv_2d(self, op: Any, ins: list[int], out: int, where: str) -> None:
        o = self._options(op, tflite.DepthwiseConv2DOptions)
        x = self.value(ins[0], where)
        w = self.float_const(ins[1], where)  # (1, kh, kw, in * multiplier)
        cin = x.shape[3]
        if w.shape[0] != 1 or w.shape[3] % cin:
            raise UnsupportedOpError(f"{where}: depthwise kernel shape {w.shape}")
        weight = w.transpose(3, 0, 1, 2)
        self._conv(o, x, weight, ins, out, ("dw", "dwconv"), where, group=cin)

    def op_add(self, op: Any, ins: list[int], out: int, where: str) -> None:
        o = self._options(op, tflite.AddOptions)
        a, b = self.value(ins[0], where), self.value(ins[1], where)
        if a.shape != b.shape:
            raise UnsupportedOpError(f"{where}: broadcasting add {a.shape} + {b.shape}")
        y = self.node("Add", [a.name, b.name], "add")
        y = self.activation(y, o.FusedActivationFunction(), "add", where)
        self.values[out] = _Value(y, self.shape(out))

    def op_relu(self, op: Any, ins: list[int], out: int, where: str) -> None:
        x = self.value(ins[0], where)
        self.values[out] = _Value(self.activation(x.name, _ACT_RELU, "relu", where), x.shape)

    def op_relu6(self, op: Any, ins: list[int], out: int, where: str) -> None:
        x = self.value(ins[0], where)
        self.values[out] = _Value(self.activation(x.name, _ACT_RELU6, "relu6", where), x.shape)

    def op_pad(self, op: Any, ins: list[int], out: int, where: str) -> None:
        x = self.value(ins[0], where)
        p = self.buffer(ins[1], where).astype(np.int64).reshape(-1, 2)  # NHWC (begin, end)
        if p.shape[0] != len(x.shape):
            raise UnsupportedOpError(f"{where}: paddings for rank {p.shape[0]}")
        if x.nchw:
            p = p[[0, 3, 1, 2]]
        pads = self.const_name("pads", np.concatenate([p[:, 0], p[:, 1]]))
        y = self.node("Pad", [x.name, pads], "pad", mode="constant")
        self.values[out] = _Value(y, self.shape(out))

    def op_max_pool_2d(self, op: Any, ins: list[int], out: int, where: str) -> None:
        o = self._options(op, tflite.Pool2DOptions)
        x = self.value(ins[0], where)
        k = (o.FilterHeight(), o.FilterWidth())
        s = (o.StrideH(), o.StrideW())
        pads, _ = _spatial(x.shape, o.Padding(), k, s, where=where)
        y = self.node(
            "MaxPool", [x.name], "maxpool", kernel_shape=list(k), strides=list(s), pads=pads
        )
        y = self.activation(y, o.FusedActivationFunction(), "maxpool", where)
        self.values[out] = _Value(y, self.shape(out))

    def op_reshape(self, op: Any, ins: list[int], out: int, where: str) -> None:
        x = self.value(ins[0], where)
        target = list(self.shape(out))
        if not target:
            raise UnsupportedOpError(f"{where}: output shape unknown")
        if x.shape and x.shape[0] == target[0]:
            target[0] = 0  # keep the batch dimension dynamic (ONNX: copy from the input)
        shape = self.const_name("shape", np.array(target, np.int64))
        y = self.node("Reshape", [self.to_nhwc(x), shape], "reshape")
        if len(target) == 4:
            y = self.node("Transpose", [y], "nchw", perm=[0, 3, 1, 2])
        self.values[out] = _Value(y, self.shape(out))

    def op_concatenation(self, op: Any, ins: list[int], out: int, where: str) -> None:
        o = self._options(op, tflite.ConcatenationOptions)
        xs = [self.value(i, where) for i in ins]
        rank = len(xs[0].shape)
        if any(len(v.shape) != rank for v in xs):
            raise UnsupportedOpError(f"{where}: inputs of different ranks")
        axis = o.Axis() % rank
        if rank == 4:
            axis = [0, 2, 3, 1][axis]
        y = self.node("Concat", [v.name for v in xs], "concat", axis=axis)
        y = self.activation(y, o.FusedActivationFunction(), "concat", where)
        self.values[out] = _Value(y, self.shape(out))

    def op_resize_bilinear(self, op: Any, ins: list[int], out: int, where: str) -> None:
        o = self._options(op, tflite.ResizeBilinearOptions)
        x = self.value(ins[0], where)
        oh, ow = (int(v) for v in self.buffer(ins[1], where))
        _, h, w, _ = x.shape
        if oh % h or ow % w:
            raise UnsupportedOpError(f"{where}: non-integer resize {h}x{w} -> {oh}x{ow}")
        if o.AlignCorners():
            mode = "align_corners"
        elif o.HalfPixelCenters():
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        scales = self.const_name("scales", np.array([1, 1, oh / h, ow / w], np.float32))
        y = self.node(
            "Resize",
            [x.name, "", scales],
            "resize",
            mode="linear",
            coordinate_transformation_mode=mode,
        )
        self.values[out] = _Value(y, self.shape(out))

    def op_depth_to_space(self, op: Any, ins: list[int], out: int, where: str) -> None:
        o = self._options(op, tflite.DepthToSpaceOptions)
        x = self.value(ins[0], where)
        # TF's channel order is (block_row, block_col, channel): ONNX's DCR mode.
        y = self.node("DepthToSpace", [x.name], "d2s", blocksize=o.BlockSize(), mode="DCR")
        self.values[out] = _Value(y, self.shape(out))

    # -- the whole graph -----------------------------------------------------------------
    def run(self, doc: str) -> onnx.ModelProto:
        g = self.g
        if g.InputsLength() != 1:
            raise UnsupportedOpError(f"{g.InputsLength()} graph inputs (need exactly 1)")
        in_idx = int(g.Inputs(0))
        in_shape = self.shape(in_idx)
        if len(in_shape) != 4 or self.tensor(in_idx).Type() != TensorType.FLOAT32:
            raise UnsupportedOpError(f"graph input {in_shape} must be a float32 NHWC image")
        _, h, w, c = in_shape
        graph_in = helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT, ["N", c, h, w])
        self.values[in_idx] = _Value(self.input_name, in_shape)
        for k in range(g.OperatorsLength()):
            self.convert_op(k)
        n_out = g.OutputsLength()
        names = self.output_names or [
            self.tensor(int(g.Outputs(i))).Name().decode() for i in range(n_out)
        ]
        if len(names) != n_out:
            raise ValueError(f"model has {n_out} outputs, {len(names)} names given")
        graph_outs = []
        for i, name in enumerate(names):
            idx = int(g.Outputs(i))
            v = self.value(idx, f"graph output {name}")
            self.nodes.append(helper.make_node("Identity", [self.to_nhwc(v)], [name], name=name))
            dims: list[int | str] = ["N", *v.shape[1:]]
            graph_outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        graph = helper.make_graph(
            self.nodes, "tflite_import", [graph_in], graph_outs, initializer=self.inits
        )
        return finish_model(graph, "emostream.training.tflite_onnx", doc)


def convert(
    source: bytes | str | Path,
    *,
    input_name: str = "input",
    output_names: list[str] | None = None,
    doc: str = "",
) -> onnx.ModelProto:
    """Build the ONNX model: input ``[N, C, H, W]`` float32, outputs as TFLite's (N first).

    ``output_names`` renames the graph outputs in TFLite's output order (default: the TFLite
    tensor names). Raises ``UnsupportedOpError`` for anything outside the supported subset.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UnsupportedOpError("not a TFLite flatbuffer (file identifier TFL3 missing)")
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        return _Converter(model, input_name, output_names).run(doc)
    except (struct.error, IndexError, OverflowError) as exc:
        # a truncated or corrupt buffer fails deep inside the flatbuffers reader
        raise UnsupportedOpError(f"corrupt TFLite flatbuffer: {exc!r}") from exc
