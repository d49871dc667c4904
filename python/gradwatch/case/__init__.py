"""The case gradwatch exists for, in Python: a small U-Net trained with the Jaccard loss of
DESIGN.md on synthetic 6-channel segmentation data, and the one step whose gradient is x1000 that
collapses it for good (loss pinned at 1.0, Jaccard ~0) unless something clips it.

It is the package's example and the subject of its tests and benchmark:

    python3 -m gradwatch.case --no-monitor                      # collapses
    python3 -m gradwatch.case --monitor 127.0.0.1:7070          # the monitor prevents it
"""
from gradwatch.case.data import Dataset, augment_x6, make_synthetic
from gradwatch.case.jaccard import jaccard_coef, jaccard_coef_loss, segmentation_metrics
from gradwatch.case.unet import UNet

__all__ = ["Dataset", "UNet", "augment_x6", "jaccard_coef", "jaccard_coef_loss", "make_synthetic",
           "segmentation_metrics"]
