"""Pictures that teach faster than numbers: encodings, patches, attention, gradients."""

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def plot_position_encoding(P, title: str = "Sinusoidal position encoding") -> plt.Figure:
    """Heatmap of a (seq_len, d) position table: rows are positions, columns dimensions."""
    P = _numpy(P)
    fig, ax = plt.subplots(figsize=(8, 4))
    image = ax.imshow(P, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
    ax.set(xlabel="dimension (even: sin, odd: cos)", ylabel="position k", title=title)
    fig.colorbar(image, ax=ax)
    return fig


def show_patches(image, patch_size: int, max_patches: int = 49) -> plt.Figure:
    """An image with its patch grid, and the first patches as the sequence the model reads."""
    image = _numpy(image)
    channels, height, width = image.shape
    picture = np.clip(image.transpose(1, 2, 0), 0, 1).squeeze()
    patches = rearrange(image, "c (h s1) (w s2) -> (h w) s1 s2 c", s1=patch_size, s2=patch_size)
    shown = min(len(patches), max_patches)
    fig = plt.figure(figsize=(12, 5))
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(picture, cmap="gray")
    ax.set_xticks(np.arange(0, width + 1, patch_size) - 0.5, labels=[])
    ax.set_yticks(np.arange(0, height + 1, patch_size) - 0.5, labels=[])
    ax.grid(color="white", linewidth=1)
    ax.set_title(f"{height}x{width} image, {len(patches)} patches of {patch_size}x{patch_size}")
    columns = int(np.ceil(np.sqrt(shown)))
    grid = fig.add_gridspec(columns, columns, left=0.55, right=0.98, wspace=0.1, hspace=0.5)
    for i in range(shown):
        sub = fig.add_subplot(grid[i // columns, i % columns])
        sub.imshow(np.clip(patches[i], 0, 1).squeeze(), cmap="gray")
        sub.set_title(str(i), fontsize=7)
        sub.axis("off")
    return fig


def plot_attention(att, labels: Sequence[str] | None = None, title: str = "Attention") -> plt.Figure:
    """Attention weights of each head, (h, n, n) or (n, n): row = query, column = key."""
    att = _numpy(att)
    att = att[None] if att.ndim == 2 else att
    heads = att.shape[0]
    fig, axes = plt.subplots(1, heads, figsize=(3 * heads, 3.2), squeeze=False)
    for h, ax in enumerate(axes[0]):
        ax.imshow(att[h], cmap="viridis", vmin=0, vmax=att.max())
        ax.set_title(f"head {h}" if heads > 1 else title, fontsize=9)
        ticks = np.arange(att.shape[-1])
        ax.set_xticks(ticks, labels=labels or ticks, fontsize=7, rotation=90)
        ax.set_yticks(ticks, labels=labels or ticks, fontsize=7)
        ax.set(xlabel="key", ylabel="query" if h == 0 else None)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_gradient_norms(norms: dict[str, Sequence[float]]) -> plt.Figure:
    """Gradient norm per layer (input side first) for each named network, on a log scale."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in norms.items():
        ax.semilogy(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
    ax.set(
        xlabel="layer (1 = closest to the input)",
        ylabel="gradient norm of the layer's weight",
        title="How much gradient reaches each layer",
    )
    ax.legend()
    return fig


def plot_functions(functions: dict[str, Callable], lo: float = -4.0, hi: float = 4.0) -> plt.Figure:
    """Plot activation functions side by side, e.g. ReLU against GELU."""
    x = torch.linspace(lo, hi, 401)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, fn in functions.items():
        ax.plot(x, _numpy(fn(x)), label=label)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.legend()
    ax.set(xlabel="x", title="Activation functions")
    return fig
