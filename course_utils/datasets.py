"""Image data for training a ViT: scikit-learn's digits (no download) and CIFAR-10.

Both loaders return a ``(train, test)`` pair of :class:`ImageSet`: images ``(n, c, h, w)`` and
integer labels ``(n,)``. Digits are float32 in [0, 1]; CIFAR-10 stays uint8 (0–255, a quarter of
the memory) and :mod:`course_utils.training` turns each batch into floats on the device.
"""

import hashlib
import os
import pickle
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


class ImageSet(NamedTuple):
    """Images ``(n, c, h, w)`` (float32 in [0, 1], or uint8 0–255), labels ``(n,)`` and class names."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:  # the number of images, not the 3 fields of the tuple
        return len(self.labels)

    def __repr__(self) -> str:
        kind, shape = str(self.images.dtype).removeprefix("torch."), tuple(self.images.shape[1:])
        return f"ImageSet({len(self)} images of shape {shape}, {kind}, {len(self.classes)} classes)"


def load_digits_images(
    size: int = 16, test_fraction: float = 0.2, seed: int = 0
) -> tuple[ImageSet, ImageSet]:
    """scikit-learn's 1,797 handwritten digits as ``(1, size, size)`` images in [0, 1].

    The originals are 8×8 with values 0–16; ``size`` other than 8 resizes them bilinearly.
    The split is stratified (every digit in the same proportion in both parts) and seeded.
    """
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # (n, 1, 8, 8)
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_index, test_index = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=digits.target, random_state=seed
    )
    classes = tuple(str(d) for d in range(10))
    train_index, test_index = torch.from_numpy(train_index), torch.from_numpy(test_index)
    return (
        ImageSet(images[train_index], labels[train_index], classes),
        ImageSet(images[test_index], labels[test_index], classes),
    )


def md5_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The MD5 hex digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cifar10_available(root: str | os.PathLike = "data") -> bool:
    """Whether ``root`` holds CIFAR-10: the official archive or its extracted folder."""
    root = Path(root)
    return (root / CIFAR10_ARCHIVE).is_file() or (root / CIFAR10_FOLDER / CIFAR10_TEST_BATCH).is_file()


def download_cifar10(
    root: str | os.PathLike = "data", md5: str = CIFAR10_MD5, url: str = CIFAR10_URL
) -> Path:
    """Download the official archive (163 MB) into ``root`` and verify it; return its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive, partial = root / CIFAR10_ARCHIVE, root / (CIFAR10_ARCHIVE + ".part")
    from tqdm.auto import tqdm

    with tqdm(unit="B", unit_scale=True, desc=f"downloading {CIFAR10_ARCHIVE}") as bar:

        def report(blocks: int, block_size: int, total: int) -> None:
            bar.total = total if total > 0 else None
            bar.update(blocks * block_size - bar.n)

        urllib.request.urlretrieve(url, partial, reporthook=report)
    got = md5_of(partial)
    if got != md5:
        partial.unlink()
        raise ValueError(
            f"the file downloaded from {url} has MD5 {got}, expected {md5}; it was deleted. "
            "Try again, or download the archive by hand into this folder."
        )
    partial.rename(archive)
    return archive


def _read_batch(f: IO[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR-10 batch: uint8 images (n, 3, 32, 32) and int64 labels (n,)."""
    batch = pickle.load(f, encoding="bytes")  # the official archive, checked by its MD5
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data, np.asarray(batch[b"labels"], dtype=np.int64)


def _batches_in_archive(archive: Path, names: tuple[str, ...]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    with tarfile.open(archive, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        for name in names:
            if name not in members:
                raise FileNotFoundError(
                    f"{archive} holds no {CIFAR10_FOLDER}/{name}: is it the python version?"
                )
            f = tar.extractfile(members[name])
            assert f is not None
            yield _read_batch(f)


def _batches_in_folder(folder: Path, names: tuple[str, ...]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for name in names:
        with open(folder / name, "rb") as f:
            yield _read_batch(f)


def _image_set(batches: Iterator[tuple[np.ndarray, np.ndarray]]) -> ImageSet:
    images, labels = zip(*batches, strict=True)
    return ImageSet(
        torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), CIFAR10_CLASSES
    )


def load_cifar10(
    root: str | os.PathLike = "data", download: bool = False, md5: str = CIFAR10_MD5
) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 from ``root``: 50,000 training and 10,000 test images, uint8 ``(3, 32, 32)``.

    Reads the official ``cifar-10-python.tar.gz`` in ``root`` (checked against its MD5 first;
    nothing is extracted) or, without it, the extracted ``cifar-10-batches-py/`` folder. With
    ``download=True`` a missing archive is fetched from the dataset's home page into ``root``.
    """
    root = Path(root)
    archive, folder = root / CIFAR10_ARCHIVE, root / CIFAR10_FOLDER
    if not archive.is_file() and not folder.is_dir():
        if not download:
            raise FileNotFoundError(
                f"CIFAR-10 is not in {root}/: put {CIFAR10_ARCHIVE} (from {CIFAR10_URL}) there, "
                "or call load_cifar10(root, download=True)."
            )
        download_cifar10(root, md5)
    if archive.is_file():
        got = md5_of(archive)
        if got != md5:
            raise ValueError(
                f"{archive} has MD5 {got}, expected {md5}: the file is damaged or not the "
                f"official archive. Delete it and download it again from {CIFAR10_URL}."
            )
        train = _image_set(_batches_in_archive(archive, CIFAR10_TRAIN_BATCHES))
        test = _image_set(_batches_in_archive(archive, (CIFAR10_TEST_BATCH,)))
    else:
        train = _image_set(_batches_in_folder(folder, CIFAR10_TRAIN_BATCHES))
        test = _image_set(_batches_in_folder(folder, (CIFAR10_TEST_BATCH,)))
    return train, test


def random_crop_flip(
    images: Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Augment a batch ``(b, c, h, w)``: pad with zeros, crop back at a random offset, flip half.

    Each image gets its own offset in ``[-padding, padding]`` pixels and, with ``flip``, a
    left-right flip with probability 1/2. Works on any device and dtype (uint8 included); the
    random numbers come from ``generator`` (a CPU one) or torch's global generator.
    """
    b, c, h, w = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    flipped = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    rows = offsets[0][:, None] + torch.arange(h)  # (b, h): rows of the padded image to keep
    columns = torch.arange(w).expand(b, w)
    columns = torch.where(flipped[:, None], columns.flip(-1), columns) + offsets[1][:, None]
    padded = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    return padded[
        torch.arange(b, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows.to(device)[:, None, :, None],
        columns.to(device)[:, None, None, :],
    ]
