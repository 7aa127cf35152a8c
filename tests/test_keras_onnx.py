"""The converter's handling of what it does not support, and TF 'same' padding."""

from __future__ import annotations

import io
import json

import h5py
import numpy as np
import pytest

from emostream.training.keras_onnx import UnsupportedLayerError, _same_pads, convert


def _h5(layers: list[dict], weights: dict[str, dict[str, np.ndarray]]) -> bytes:
    """A minimal Keras-2-style HDF5 file (what keras.save wrote for functional models)."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"layers": layers}})
        mw = f.create_group("model_weights")
        for layer, ws in weights.items():
            g = mw.create_group(layer)
            names = []
            for short, arr in ws.items():
                full = f"{layer}/{short}:0"
                g.create_dataset(full, data=arr)
                names.append(full.encode())
            g.attrs["weight_names"] = names
    return buf.getvalue()


def _input(h: int = 8, w: int = 8, c: int = 1) -> dict:
    return {
        "class_name": "InputLayer",
        "name": "in",
        "config": {"batch_input_shape": [None, h, w, c]},
        "inbound_nodes": [],
    }


def test_same_padding_puts_the_odd_pixel_at_the_end() -> None:
    assert _same_pads(64, 3, 1) == (1, 1, 64)
    assert _same_pads(16, 3, 2) == (0, 1, 8)  # TF pads bottom/right
    assert _same_pads(15, 3, 2) == (1, 1, 8)
    assert _same_pads(16, 1, 2) == (0, 0, 8)


def test_tiny_conv_model_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    k = rng.normal(size=(3, 3, 1, 2)).astype(np.float32)
    b = rng.normal(size=(2,)).astype(np.float32)
    layers = [
        _input(),
        {
            "class_name": "Conv2D",
            "name": "c",
            "inbound_nodes": [[["in", 0, 0, {}]]],
            "config": {
                "kernel_size": [3, 3],
                "strides": [1, 1],
                "padding": "valid",
                "filters": 2,
                "use_bias": True,
                "activation": "linear",
            },
        },
        {
            "class_name": "GlobalAveragePooling2D",
            "name": "g",
            "inbound_nodes": [[["c", 0, 0, {}]]],
            "config": {},
        },
    ]
    model = convert(_h5(layers, {"c": {"kernel": k, "bias": b}}))
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.normal(size=(1, 1, 8, 8)).astype(np.float32)
    got = sess.run(None, {"input": x})[0]
    want = np.zeros(2, np.float32)
    for o in range(2):
        acc = 0.0
        for i in range(6):
            for j in range(6):
                acc += float((x[0, 0, i : i + 3, j : j + 3] * k[:, :, 0, o]).sum()) + b[o]
        want[o] = acc / 36
    assert np.abs(got[0] - want).max() < 1e-4


def test_unsupported_layer_is_named() -> None:
    layers = [
        _input(),
        {
            "class_name": "Dense",
            "name": "dense_1",
            "config": {"units": 3},
            "inbound_nodes": [[["in", 0, 0, {}]]],
        },
    ]
    with pytest.raises(UnsupportedLayerError, match=r"dense_1.*Dense"):
        convert(_h5(layers, {}))


def test_fused_activation_is_refused() -> None:
    layers = [
        _input(),
        {
            "class_name": "Conv2D",
            "name": "c1",
            "inbound_nodes": [[["in", 0, 0, {}]]],
            "config": {
                "kernel_size": [1, 1],
                "strides": [1, 1],
                "filters": 1,
                "use_bias": False,
                "activation": "relu",
            },
        },
    ]
    with pytest.raises(UnsupportedLayerError, match=r"c1.*relu"):
        convert(_h5(layers, {"c1": {"kernel": np.ones((1, 1, 1, 1), np.float32)}}))


def test_sequential_model_is_refused() -> None:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {}})
    with pytest.raises(UnsupportedLayerError, match="Sequential"):
        convert(buf.getvalue())
