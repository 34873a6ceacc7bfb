"""Small data that ships with the installed packages: no download needed."""

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_image


def sample_image(size: int = 224) -> torch.Tensor:
    """A real photograph (scikit-learn's ``china.jpg``), centre-cropped to (3, size, size) in [0, 1]."""
    picture = np.asarray(load_sample_image("china.jpg"), dtype=np.float32) / 255.0
    height, width, _ = picture.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = torch.from_numpy(picture[top : top + side, left : left + side]).permute(2, 0, 1)
    return F.interpolate(square[None], size=(size, size), mode="bilinear", antialias=True)[0].clamp(0, 1)
