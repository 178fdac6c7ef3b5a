"""A small ResNet for 32x32 images, with its own knobs.

paretune calls `build(params, input_shape, n_classes)` for every trial; `params` holds
the knobs of `[space.model]` in spec.toml (width, blocks, act) beside the other
dimensions' params (e.g. `dropout` from the regularization dimension).
"""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "hardswish": nn.Hardswish, "silu": nn.SiLU}


class Block(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection."""

    def __init__(self, c_in: int, c_out: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = act()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.act2 = act()

    def forward(self, x):
        return self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))) + self.shortcut(x))


class SmallResNet(nn.Module):
    """stem -> `blocks` residual blocks (every other one halves the resolution and
    doubles the width) -> global average pool -> linear classifier."""

    def __init__(self, in_channels: int, n_classes: int, width: int, blocks: int, act: str, dropout: float = 0.0):
        super().__init__()
        activation = ACTIVATIONS[act]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), activation())
        layers, channels = [], width
        for i in range(blocks):
            stride = 2 if i % 2 == 0 else 1
            out = channels * 2 if stride == 2 else channels
            layers.append(Block(channels, out, stride, activation))
            channels = out
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.classifier = nn.Linear(channels, n_classes)

    def forward(self, x):
        return self.classifier(self.head(self.blocks(self.stem(x))))


def build(params: dict, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return SmallResNet(
        in_channels=input_shape[0],
        n_classes=n_classes,
        width=int(params["width"]),
        blocks=int(params["blocks"]),
        act=str(params["act"]),
        dropout=float(params.get("dropout", 0.0)),
    )
