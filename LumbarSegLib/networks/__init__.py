"""The two networks of LumbarSeg: the spine localizer and the segmentation XUNet."""

from LumbarSegLib.networks.localizer import LocalizerUNet
from LumbarSegLib.networks.xunet import XUNet

__all__ = ["LocalizerUNet", "XUNet"]
