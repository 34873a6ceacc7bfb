"""Why a ViT needs data: a small CNN, a ViT and a hybrid trained on the same images, at several sizes.

The lectures' claim is that a Transformer lacks the convolution's built-in assumptions (nearby pixels
belong together; a pattern means the same anywhere in the image) and must learn them from data. Notebook
08 measures it: :func:`learning_curves` trains each model on stratified subsets of one training set, for
about the same number of optimizer steps whatever the subset's size, and records the test accuracy;
:func:`plot_learning_curves` draws accuracy against size. The hybrid is the ViT paper's: a convolutional
stem (:class:`ConvStem`) gives the tokens that the Transformer encoder reads, in place of the patches.

Also here: the reference initialisation of the class token and positions (:func:`init_tokens_like_vit`),
and how much of the image's 2-D grid a table of position embeddings holds (:func:`grid_correlation`).
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import torch
from einops import rearrange
from torch import Tensor, nn

from course_utils.datasets import ImageSet
from course_utils.training import evaluate, train


class SmallCNN(nn.Sequential):
    """Three 3×3 convolutions with GELU, one 2×2 max-pooling, a global average and a Linear:
    ``(b, c, h, w) -> (b, n_classes)``. Every layer sees a small neighbourhood, and the same kernel slides
    over the whole image: locality and translation equivariance are built in."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, width: int = 32):
        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, n_classes),
        )


class ConvStem(nn.Module):
    """The hybrid ViT's embedding: convolutions turn the image into a feature map whose every position
    becomes a token (the ViT paper's hybrid, with patches of 1×1 on the feature map), then the class token
    in front and learned positions added, like ``PatchEmbedding``: ``(b, c, H, W) -> (b, N + 1, e)`` with
    ``N = (H / 2)²``.

    Args:
        width: the channels of the first convolution; the second, of stride 2, gives ``emb_size``.
    """

    def __init__(self, in_channels: int = 1, emb_size: int = 64, img_size: int = 8, width: int = 32):
        super().__init__()
        if img_size % 2:
            raise ValueError(f"img_size ({img_size}) must be even: the stem halves it.")
        self.convolutions = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, emb_size, 3, stride=2, padding=1),
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, emb_size))
        self.positions = nn.Parameter(0.02 * torch.randn((img_size // 2) ** 2 + 1, emb_size))

    def forward(self, x: Tensor) -> Tensor:
        tokens = rearrange(self.convolutions(x), "b e h w -> b (h w) e")
        return torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self.positions


def _token_parameters(model: nn.Module) -> tuple[nn.Parameter, nn.Parameter]:
    """The model's class token and position table, found by name (``cls``/``class``, ``position``)."""
    tokens = [p for n, p in model.named_parameters() if "cls" in n.lower() or "class" in n.lower()]
    positions = [p for n, p in model.named_parameters() if "position" in n.lower()]
    if len(tokens) != 1 or len(positions) != 1:
        raise ValueError(
            f"expected one class token and one position table, found {len(tokens)} and {len(positions)}"
        )
    return tokens[0], positions[0]


@torch.no_grad()
def init_tokens_like_vit(model: nn.Module, std: float = 0.02, seed: int = 0) -> nn.Module:
    """Initialise the class token and the positions as the ViT reference code does (the class token at
    zero, the positions drawn from a normal of standard deviation ``std``), in place; returns ``model``.
    The lecture's Colab draws both from ``torch.randn`` (standard deviation 1) instead."""
    cls_token, positions = _token_parameters(model)
    generator = torch.Generator().manual_seed(seed)
    cls_token.zero_()
    positions.copy_(std * torch.randn(positions.shape, generator=generator))
    return model


def grid_correlation(similarity: Tensor) -> float:
    """Pearson's correlation, over all pairs of patches, between the cosine similarity of their position
    embeddings (``similarity``, ``(N, N)``, patches row by row on a square grid) and their distance on the
    grid. Near -1: the closer two patches, the more alike their positions (a 2-D grid); near 0: no grid."""
    n = similarity.shape[0]
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} patches do not make a square grid")
    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    grid = torch.stack([rows.flatten(), columns.flatten()], dim=1).float()
    i, j = torch.triu_indices(n, n, offset=1)
    distance = torch.cdist(grid, grid)[i, j]
    return torch.corrcoef(torch.stack([similarity[i, j].float(), distance]))[0, 1].item()


def neighbour_similarity(similarity: Tensor) -> tuple[float, float]:
    """The mean cosine similarity of the position embeddings of neighbouring patches (sharing a side on
    the grid), and of all other pairs."""
    n = similarity.shape[0]
    side = math.isqrt(n)
    rows, columns = torch.arange(n) // side, torch.arange(n) % side
    steps = (rows[:, None] - rows[None]).abs() + (columns[:, None] - columns[None]).abs()
    i, j = torch.triu_indices(n, n, offset=1)
    pairs, near = similarity[i, j], steps[i, j] == 1
    return pairs[near].mean().item(), pairs[~near].mean().item()


def stratified_subset(data: ImageSet, size: int, seed: int = 0) -> ImageSet:
    """``size`` images of ``data``, every class in about the same proportion as in ``data`` (seeded);
    all of it when ``size`` is at least its length."""
    if size >= len(data):
        return data
    generator = torch.Generator().manual_seed(seed)
    labels = data.labels
    classes = labels.unique()
    counts = torch.bincount(labels, minlength=int(classes.max()) + 1)[classes].double()
    quota = torch.floor(counts * size / len(labels)).long()
    rest = size - int(quota.sum())  # what rounding down left: one more for the largest remainders
    remainders = counts * size / len(labels) - quota
    quota[remainders.argsort(descending=True)[:rest]] += 1
    chosen = []
    for c, k in zip(classes.tolist(), quota.tolist(), strict=True):
        members = (labels == c).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    index = torch.cat(chosen).sort().values
    return ImageSet(data.images[index], labels[index], data.classes)


@dataclass
class Curves:
    """Test accuracy of each model at each training-set size, and the seconds each run took."""

    sizes: list[int]
    accuracy: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    parameters: dict[str, int] = field(default_factory=dict)

    def table(self) -> str:
        """The accuracies as a text table, one row per model, one column per size."""
        width = max(map(len, self.accuracy)) + 2
        lines = [f"{'images':<{width}}" + "".join(f"{s:>8}" for s in self.sizes) + f"{'seconds':>10}"]
        for name, values in self.accuracy.items():
            accuracies = "".join(f"{a:>8.1%}" for a in values)
            lines.append(f"{name:<{width}}{accuracies}{sum(self.seconds[name]):>10.0f}")
        return "\n".join(lines)


def learning_curves(
    models: dict[str, Callable[[], nn.Module]],
    train_set: ImageSet,
    test_set: ImageSet,
    sizes: Sequence[int],
    *,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    seed: int = 0,
    report: bool = True,
) -> Curves:
    """Train a fresh model of each kind (``models``: name -> a function that builds one, seeded here) on
    the stratified subset of each size of ``train_set``, for about ``steps`` optimizer steps whatever the
    size (small sets get more epochs), with the same schedule as the notebook's training; return the
    test accuracy of each. ``report``: one printed line per run."""
    curves = Curves(sizes=[min(s, len(train_set)) for s in sizes])
    for name, build in models.items():
        curves.accuracy[name], curves.seconds[name] = [], []
        for size in curves.sizes:
            subset = stratified_subset(train_set, size, seed)
            epochs = max(1, round(steps / math.ceil(size / batch_size)))
            torch.manual_seed(seed)
            model = build()
            curves.parameters[name] = sum(p.numel() for p in model.parameters())
            start = time.perf_counter()
            train(
                model,
                subset,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                weight_decay=weight_decay,
                warmup_fraction=0.1,
                seed=seed,
                live=False,
                progress=False,
            )
            curves.seconds[name].append(time.perf_counter() - start)
            curves.accuracy[name].append(evaluate(model, test_set)[1])
            if report:
                print(
                    f"{name:<8} {size:>5} images, {epochs:>4} epochs: test accuracy "
                    f"{curves.accuracy[name][-1]:.1%} ({curves.seconds[name][-1]:.0f} s)",
                    flush=True,
                )
    return curves


def plot_learning_curves(
    curves: Curves, title: str = "Test accuracy against training-set size"
) -> plt.Figure:
    """Test accuracy against the number of training images (a log scale), one line per model."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, values in curves.accuracy.items():
        label = f"{name} ({curves.parameters[name] / 1000:.0f} k parameters)"
        ax.plot(curves.sizes, values, "o-", label=label)
    ax.set_xscale("log")
    ax.set_xticks(curves.sizes, labels=[str(s) for s in curves.sizes])
    ax.minorticks_off()
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set(xlabel="training images (log scale)", ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
