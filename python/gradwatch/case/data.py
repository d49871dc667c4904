"""Synthetic segmentation data for the case, like trainer/train/data.h's make_synthetic: each
mask is a union of random discs and rectangles covering about `foreground_fraction` of the
image; each channel is a level near 0, a low-frequency wave of amplitude 0.3, a contrast inside
the mask (+2, -1.2, +0.8, repeating) and Gaussian noise. The same seed gives the same tensors,
whatever the global torch seed (which is left untouched). Not bit-identical to the C++ set: the
generators differ.
"""
import math
import random
from typing import NamedTuple, Tuple

import torch


class Dataset(NamedTuple):
    images: torch.Tensor  # [N, C, H, W] float32
    masks: torch.Tensor   # [N, 1, H, W] float32, values in {0, 1}

    def __len__(self) -> int:
        return self.images.size(0)


_CONTRAST = (2.0, -1.2, 0.8)


def _random_shape(rng: random.Random, area: float, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    size = xx.size(1)
    cy, cx = rng.uniform(0.15 * size, 0.85 * size), rng.uniform(0.15 * size, 0.85 * size)
    if rng.random() < 0.5:
        return (yy - cy).square() + (xx - cx).square() <= area / math.pi
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    w = math.sqrt(area * aspect)
    h = area / w
    return ((yy - cy).abs() <= h / 2) & ((xx - cx).abs() <= w / 2)


def _random_mask(rng: random.Random, size: int, fraction: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = coords.view(size, 1), coords.view(1, size)
    mask = torch.zeros(size, size, dtype=torch.bool)
    target = fraction * size * size
    for _ in range(16):
        if mask.sum().item() >= 0.9 * target:
            break
        mask |= _random_shape(rng, rng.uniform(0.3, 0.6) * target, yy, xx)
    return mask


def _render(rng: random.Random, mask: torch.Tensor, channels: int) -> torch.Tensor:
    size = mask.size(0)
    coords = torch.arange(size, dtype=torch.float32) / size
    yy, xx = coords.view(size, 1), coords.view(1, size)
    fg = mask.float()
    planes = []
    for c in range(channels):
        level, fy, fx = rng.uniform(-0.1, 0.1), rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0)
        phase = rng.uniform(0.0, 2 * math.pi)
        wave = 0.3 * torch.sin(2 * math.pi * (fy * yy + fx * xx) + phase)
        planes.append(level + wave + _CONTRAST[c % 3] * fg)
    return torch.stack(planes)


def make_synthetic(images: int = 48, size: int = 32, channels: int = 6, foreground_fraction: float = 0.25,
                   noise: float = 0.1, val_fraction: float = 0.25, seed: int = 7) -> Tuple[Dataset, Dataset]:
    """(train, val): the last round(images * val_fraction) items are the validation split.
    Raises ValueError on options outside their range."""
    if images < 1 or size < 1 or channels < 1 or not 0 <= foreground_fraction < 1 or noise < 0 \
            or not 0 <= val_fraction < 1:
        raise ValueError("make_synthetic: need images, size, channels >= 1, foreground_fraction and "
                         "val_fraction in [0, 1), noise >= 0")
    rng = random.Random(seed)
    masks = [_random_mask(rng, size, foreground_fraction) for _ in range(images)]
    imgs = torch.stack([_render(rng, m, channels) for m in masks])
    generator = torch.Generator().manual_seed(seed)
    imgs += noise * torch.randn(imgs.shape, generator=generator)
    all_masks = torch.stack([m.float().unsqueeze(0) for m in masks])
    val = round(images * val_fraction)
    return (Dataset(imgs[:images - val], all_masks[:images - val]),
            Dataset(imgs[images - val:], all_masks[images - val:]))


def augment_x6(data: Dataset) -> Dataset:
    """The case's augmentation: the originals, rotated by 90, 180 and 270 degrees, flipped
    left-right and upside-down; item k*N + i is transform k of item i. Needs square images."""
    if data.images.size(2) != data.images.size(3):
        raise ValueError(f"augment_x6: needs square images, got {list(data.images.shape)}")

    def x6(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.rot90(x, 1, (2, 3)), torch.rot90(x, 2, (2, 3)), torch.rot90(x, 3, (2, 3)),
                          torch.flip(x, (3,)), torch.flip(x, (2,))])

    return Dataset(x6(data.images), x6(data.masks))
