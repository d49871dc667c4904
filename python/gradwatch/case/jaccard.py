"""The case's loss and metrics (DESIGN.md, trainer/train/jaccard.h)."""
from typing import Tuple

import torch

SMOOTH = 1e-12


def jaccard_coef(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """Per channel (sums over batch, H and W): (|y*p| + smooth) / (|y + p| - |y*p| + smooth)."""
    if y_true.dim() != 4 or y_true.shape != y_pred.shape:
        raise ValueError("jaccard_coef: expected y_true and y_pred of the same shape [N, C, H, W], "
                         f"got {list(y_true.shape)} and {list(y_pred.shape)}")
    dims = (0, 2, 3)
    intersection = (y_true * y_pred).sum(dims)
    total = (y_true + y_pred).sum(dims)
    return (intersection + SMOOTH) / (total - intersection + SMOOTH)


def jaccard_coef_loss(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """1 - mean Jaccard coefficient: bounded in [0, 1]; 1 is the collapsed network's value."""
    return 1.0 - jaccard_coef(y_true, y_pred).mean()


@torch.no_grad()
def segmentation_metrics(y_true: torch.Tensor, y_pred: torch.Tensor) -> Tuple[float, float, float]:
    """(soft Jaccard, hard Jaccard at 0.5, pixel accuracy at 0.5), in one host copy."""
    predicted = y_pred > 0.5
    hard = predicted.to(y_pred.dtype)
    values = torch.stack([jaccard_coef(y_true, y_pred).mean(), jaccard_coef(y_true, hard).mean(),
                          predicted.eq(y_true > 0.5).to(y_pred.dtype).mean()])
    soft, hard_j, acc = values.double().cpu().tolist()
    return soft, hard_j, acc
