"""The built-in families as torch modules (spaces.architecture draws their params).

Kept apart from the dimension so that reading a spec, which needs the dimension's config
model, never imports torch: these classes subclass `nn.Module` when they are defined."""

from __future__ import annotations

import torch
from torch import nn


def _norm(kind: str, channels: int, enabled: bool) -> nn.Module:
    if not enabled:
        return nn.Identity()
    return nn.BatchNorm2d(channels) if kind == "2d" else nn.BatchNorm1d(channels)


class MLP(nn.Module):
    def __init__(self, in_features: int, n_classes: int, hidden: int, depth: int, batch_norm: bool, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), _norm("1d", hidden, batch_norm), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, batch_norm: bool):
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=not batch_norm)
        self.bn1 = _norm("2d", c_out, batch_norm)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, kernel, 1, pad, bias=not batch_norm)
        self.bn2 = _norm("2d", c_out, batch_norm)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=not batch_norm), _norm("2d", c_out, batch_norm))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class SeparableBlock(nn.Module):
    """Depthwise k×k conv then pointwise 1×1 conv, as in MobileNet v1."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, batch_norm: bool):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, kernel, stride, kernel // 2, groups=c_in, bias=not batch_norm)
        self.bn1 = _norm("2d", c_in, batch_norm)
        self.relu1 = nn.ReLU()
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=not batch_norm)
        self.bn2 = _norm("2d", c_out, batch_norm)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.pointwise(self.relu1(self.bn1(self.depthwise(x))))))


class ConvNet(nn.Module):
    def __init__(self, block, in_channels, n_classes, width, depth, kernel, batch_norm, dropout):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=not batch_norm), _norm("2d", width, batch_norm), nn.ReLU()
        )
        blocks, channels = [], width
        for i in range(depth):
            out = channels * 2 if i > 0 else channels
            blocks.append(block(channels, out, kernel, 2 if i > 0 else 1, batch_norm))
            channels = out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.classifier = nn.Linear(channels, n_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.blocks(self.stem(x))))


class EncoderLayer(nn.TransformerEncoderLayer):
    """A pre-norm encoder layer that also runs with dynamically quantized linears.

    torch's fused inference path reads `linear1.weight` as a tensor; a dynamically
    quantized Linear holds packed int8 weights behind a method instead, so such a layer
    takes the plain (unfused) path: same maths, same parameters and state_dict keys."""

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        if isinstance(self.linear1.weight, torch.Tensor) and isinstance(self.linear2.weight, torch.Tensor):
            return super().forward(src, src_mask, src_key_padding_mask, is_causal)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
        return self.norm2(x + self._ff_block(x))


class PatchTransformer(nn.Module):
    """ViT-style: 2×2 patches → tokens + learned positions → encoder layers → mean pool."""

    def __init__(self, input_shape, n_classes, embed_dim, heads, layers, dropout, patch: int = 2):
        super().__init__()
        channels, height, width = input_shape
        self.patch = nn.Conv2d(channels, embed_dim, patch, patch)
        n_tokens = (height // patch) * (width // patch)
        self.position = nn.Parameter(torch.zeros(1, n_tokens, embed_dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = EncoderLayer(
            embed_dim, heads, dim_feedforward=2 * embed_dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.classifier = nn.Linear(embed_dim, n_classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.position
        return self.classifier(self.norm(self.encoder(tokens).mean(dim=1)))


def build(params: dict, input_shape: tuple[int, ...], n_classes: int, dropout: float = 0.0) -> nn.Module:
    family = params["family"]
    if family == "mlp":
        in_features = int(torch.tensor(input_shape).prod())
        return MLP(in_features, n_classes, 4 * params["width"], params["depth"], params["batch_norm"], dropout)
    if family == "transformer":
        return PatchTransformer(input_shape, n_classes, params["embed_dim"], params["heads"], params["layers"], dropout)
    block = {"cnn": ResidualBlock, "mobilenet": SeparableBlock}[family]
    return ConvNet(
        block, input_shape[0], n_classes, params["width"], params["depth"], params["kernel"], params["batch_norm"], dropout
    )
