"""The case's U-Net, as trainer/train/unet.h builds it: per level two 3x3 convolutions with ReLU
(no batch norm, like the classic Keras U-Net), 2x2 max-pooling down, 2x2 transposed convolutions
up, skip concatenation, and a 1x1 convolution with a sigmoid on top.

Parameter names match the C++ model's ("enc0.conv1.weight", ..., "dec0.conv2.bias",
"head.weight", "head.bias"), so per-layer reports read the same in both.
"""
from typing import List

import torch
from torch import nn
from torch.nn import functional as F


class ConvBlock(nn.Module):
    """conv1 (3x3, padding 1) + ReLU, conv2 (3x3, padding 1) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class UpBlock(nn.Module):
    """`up` (2x2 transposed convolution, stride 2) doubles H and W; the encoder's skip is
    concatenated; conv1 and conv2 (3x3 + ReLU) bring 2 * out_channels back to out_channels."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv1 = nn.Conv2d(2 * out_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        merged = torch.cat([self.up(x), skip], dim=1)
        return F.relu(self.conv2(F.relu(self.conv1(merged))))


class UNet(nn.Module):
    """U-Net of `depth` levels, `base` channels at the first, doubled per level down.

    forward(x): x is [N, in_channels, H, W] with H and W divisible by 2^(depth - 1); returns
    probabilities in (0, 1), [N, out_channels, H, W]. Raises ValueError on options < 1 and on a
    badly shaped input.
    """

    def __init__(self, in_channels: int = 6, out_channels: int = 1, depth: int = 3, base: int = 8) -> None:
        super().__init__()
        if min(in_channels, out_channels, depth, base) < 1:
            raise ValueError("UNet: in_channels, out_channels, depth and base must be >= 1")
        self.in_channels, self.depth = in_channels, depth
        # Registration order fixes the order of parameters(): encoder top-down, decoder
        # bottom-up, head (as the C++ model).
        widths = [base << level for level in range(depth)]
        for level, width in enumerate(widths):
            self.add_module(f"enc{level}", ConvBlock(in_channels if level == 0 else widths[level - 1], width))
        for level in range(depth - 2, -1, -1):
            self.add_module(f"dec{level}", UpBlock(widths[level + 1], widths[level]))
        self.head = nn.Conv2d(base, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multiple = 1 << (self.depth - 1)
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise ValueError(f"UNet: expected input [N, {self.in_channels}, H, W], got {list(x.shape)}")
        if x.size(2) % multiple or x.size(3) % multiple:
            raise ValueError(f"UNet: H and W must be divisible by {multiple} (2^(depth-1)), got {list(x.shape)}")
        skips: List[torch.Tensor] = []
        h = x
        for level in range(self.depth):
            h = getattr(self, f"enc{level}")(h)
            if level + 1 < self.depth:
                skips.append(h)
                h = F.max_pool2d(h, 2)
        for level in range(self.depth - 2, -1, -1):
            h = getattr(self, f"dec{level}")(h, skips[level])
        return torch.sigmoid(self.head(h))
