"""The voice-emotion network: a compact CNN on one 1.5 s log-mel window (1, 64, 148).

Four stages of 3x3 convolution, batch norm and ReLU (width w, 2w, 4w, 8w, the number of
convolutions per stage configurable), max-pooling between, then the mean over mel bands
and both the mean and the maximum over time (an emotion may show in a short burst), dropout
and one linear layer. ``Served`` is what gets exported: softmax inside the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class VoiceNet(nn.Module):
    def __init__(
        self,
        classes: int,
        width: int = 32,
        stages: Sequence[int] = (1, 1, 1, 1),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i, convs in enumerate(stages):
            cout = width * 2**i
            for _ in range(convs):
                layers += _conv(cin, cout)
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * cin, classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, mels, frames) standardised log-mel -> (N, classes) logits."""
        f = self.features(x).mean(dim=2)  # (N, C, T)
        pooled = torch.cat([f.mean(dim=2), f.amax(dim=2)], dim=1)
        out: torch.Tensor = self.head(pooled)
        return out


class Served(nn.Module):
    """The exported graph: log-mel windows in, class probabilities out."""

    def __init__(self, net: VoiceNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)
