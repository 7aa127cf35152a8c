"""MTCNN's three networks rebuilt in torch and exported to ONNX (facenet-pytorch's weights).

``PNet``, ``RNet`` and ``ONet`` mirror facenet-pytorch 2.6.0's definitions layer for layer
(same parameter names, so its ``pnet.pt``/``rnet.pt``/``onet.pt`` state dicts load as
they are; facenet-pytorch itself is never imported). They are exported with a dynamic
batch, and PNet, fully convolutional, with a dynamic height and width too. Torch is needed
here, at import time only: the detector runs the ONNX files on ONNX Runtime.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int) -> tuple[nn.Conv2d, nn.PReLU]:
    return nn.Conv2d(cin, cout, kernel_size=k), nn.PReLU(cout)


class PNet(nn.Module):
    """Proposal net: 12x12 windows at stride 2 -> box offsets (N, 4, h, w), face
    probabilities (N, 2, h, w)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 10, 3)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv(10, 16, 3)
        self.conv3, self.prelu3 = _conv(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """Refine net: 24x24 crops -> box offsets (N, 4), face probabilities (N, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 28, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv(28, 48, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv(48, 64, 2)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))  # Caffe's order
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """Output net: 48x48 crops -> box offsets (N, 4), landmarks (N, 10: five x then five
    y), face probabilities (N, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 32, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv(32, 64, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv(64, 64, 3)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = _conv(64, 128, 2)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


#: net name -> (module class, input side (0: any), output names)
NETS: dict[str, tuple[type[nn.Module], int, tuple[str, ...]]] = {
    "pnet": (PNet, 0, ("reg", "prob")),
    "rnet": (RNet, 24, ("reg", "prob")),
    "onet": (ONet, 48, ("reg", "landmarks", "prob")),
}


def load(name: str, state_dict_bytes: bytes) -> nn.Module:
    """One net with facenet-pytorch's weights (a plain state dict: loaded weights-only)."""
    cls = NETS[name][0]
    net = cls()
    state = torch.load(io.BytesIO(state_dict_bytes), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def export(name: str, net: nn.Module) -> bytes:
    """ONNX bytes (opset 17) of one net: dynamic batch; PNet also dynamic height/width."""
    side, outputs = NETS[name][1], NETS[name][2]
    dims: dict[int, str] = {0: "batch"} if side else {0: "batch", 2: "height", 3: "width"}
    dummy = torch.zeros(2, 3, side or 36, side or 48)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net,
            (dummy,),
            buf,  # type: ignore[arg-type]  # a file object works; the stub says path only
            input_names=["input"],
            output_names=list(outputs),
            dynamic_axes={"input": dims, **{o: {0: "batch"} for o in outputs}},
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()
