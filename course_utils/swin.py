"""Pictures and measurements of notebook 11 (Swin Transformer).

The pictures are drawn from what the student's own functions return (which window each token lands
in, the masks of the shifted windows, which input tokens an output depends on), so a wrong answer shows
in them; nothing here computes an exercise. The cost model counts the multiply-adds of attention's two
matrix products, for global attention and for attention inside windows.
"""

from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.ticker import NullFormatter
from torch import Tensor

PALETTE = ListedColormap(plt.get_cmap("tab20").colors)


def window_numbers(window_partition: Callable, height: int, width: int, window_size: int) -> np.ndarray:
    """(height, width): the number of the window each position lands in, read off ``window_partition``
    applied to a grid holding each position's own index."""
    ids = torch.arange(height * width, dtype=torch.float64).reshape(1, height, width, 1)
    windows = window_partition(ids, window_size).reshape(-1, window_size * window_size)
    numbers = np.full(height * width, -1)
    for w, members in enumerate(windows.round().long().numpy()):
        numbers[members] = w
    return numbers.reshape(height, width)


def _grid(ax: plt.Axes, height: int, width: int, window_size: int) -> None:
    """Window boundaries as thick lines, token boundaries as thin ones."""
    for y in range(height + 1):
        ax.axhline(y - 0.5, color="black", linewidth=2.5 if y % window_size == 0 else 0.3)
    for x in range(width + 1):
        ax.axvline(x - 0.5, color="black", linewidth=2.5 if x % window_size == 0 else 0.3)
    ax.set_xticks(range(width))
    ax.set_yticks(range(height))
    ax.tick_params(labelsize=7)


def plot_windows(numbers: np.ndarray, window_size: int, title: str = "Windows") -> plt.Figure:
    """The token grid coloured by window, each token labelled with the number of its window."""
    height, width = numbers.shape
    fig, ax = plt.subplots(figsize=(0.45 * width + 1, 0.45 * height + 1))
    ax.imshow(numbers % 20, cmap=PALETTE, vmin=0, vmax=19)
    for (y, x), w in np.ndenumerate(numbers):
        ax.text(x, y, str(w), ha="center", va="center", fontsize=8)
    _grid(ax, height, width, window_size)
    ax.set(title=title, xlabel="column", ylabel="row")
    fig.tight_layout()
    return fig


def plot_relative_index(
    index: Tensor, bias: Tensor, window_size: int, queries: tuple[int, ...]
) -> plt.Figure:
    """Left: the (N, N) index, the row of the bias table each (query, key) pair reads. Right: the bias
    (N, N) of some queries over the keys of their window, each drawn as the M×M window it covers."""
    m, n = window_size, window_size**2
    fig, axes = plt.subplots(1, 1 + len(queries), figsize=(4.2 + 2.8 * len(queries), 4))
    axes[0].imshow(index.numpy(), cmap="viridis")
    for (i, j), value in np.ndenumerate(index.numpy()):
        axes[0].text(j, i, str(value), ha="center", va="center", fontsize=7, color="white")
    axes[0].set(title=f"relative_position_index, M = {m}", xlabel="key j", ylabel="query i")
    axes[0].set_xticks(range(n))
    axes[0].set_yticks(range(n))
    for ax, query in zip(axes[1:], queries, strict=True):
        ax.imshow(bias[query].reshape(m, m).numpy(), cmap="magma")
        ax.plot(query % m, query // m, "c*", markersize=14)
        ax.set(title=f"bias of query {query} over its window", xticks=range(m), yticks=range(m))
    fig.tight_layout()
    return fig


def regions_from_mask(mask: Tensor, height: int, width: int, window_size: int) -> np.ndarray:
    """(height, width) labels on the shifted grid: tokens of one window that may attend to each other
    share a label. Read off the mask (nW, M·M, M·M): a token's group is the first key it may see; the
    windows are laid out row-major."""
    m = window_size
    allowed = (mask == 0).cpu().numpy()
    first = allowed.argmax(-1)  # (nW, M·M)
    labels = np.zeros((height, width), dtype=int)
    for w, groups in enumerate(first):
        top, left = (w // (width // m)) * m, (w % (width // m)) * m
        labels[top : top + m, left : left + m] = (w * m * m + groups).reshape(m, m)
    return np.unique(labels, return_inverse=True)[1].reshape(height, width)


def plot_shifted_windows(mask: Tensor, height: int, width: int, window_size: int, shift: int) -> plt.Figure:
    """Left: the grid after the cyclic shift, each token labelled with the (row, column) it came from,
    coloured by the groups the mask keeps apart. Right: the mask of every window (dark: -inf)."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    came_from = torch.stack([rows, cols], -1).roll(shifts=(-shift, -shift), dims=(0, 1))
    labels = regions_from_mask(mask, height, width, window_size)
    windows = mask.shape[0]
    per_row = width // window_size
    fig = plt.figure(figsize=(12, 5.2))
    left = fig.add_axes((0.03, 0.08, 0.45, 0.84))
    left.imshow(labels % 20, cmap=PALETTE, vmin=0, vmax=19)
    for (y, x), _ in np.ndenumerate(labels):
        r, c = came_from[y, x].tolist()
        left.text(x, y, f"{r},{c}", ha="center", va="center", fontsize=6)
    _grid(left, height, width, window_size)
    left.set_title(f"After torch.roll by -{shift}: each token shows the (row, col) it came from")
    grid = fig.add_gridspec(
        windows // per_row, per_row, left=0.55, right=0.98, top=0.9, bottom=0.08, wspace=0.15, hspace=0.35
    )
    for w in range(windows):
        ax = fig.add_subplot(grid[w // per_row, w % per_row])
        ax.imshow((mask[w] == 0).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"window {w}", fontsize=8)
        ax.axis("off")
    fig.text(0.765, 0.95, "mask of each window (white: may attend)", ha="center")
    return fig


def dependence(fn: Callable[[Tensor], Tensor], x: Tensor, row: int, col: int, seed: int = 0) -> np.ndarray:
    """(H, W): how strongly output token (row, col) of ``fn(x)`` depends on each input token of
    ``x`` (b, H, W, c): the norm of the gradient of a random projection of that output."""
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    direction = torch.randn(out.shape[-1], generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (out[0, row, col] * direction).sum().backward()
    return x.grad[0].norm(dim=-1).numpy()


def plot_dependence(maps: dict[str, np.ndarray], window_size: int, row: int, col: int) -> plt.Figure:
    """One panel per map: which input tokens reach output token (row, col)."""
    fig, axes = plt.subplots(1, len(maps), figsize=(4 * len(maps), 4), squeeze=False)
    for ax, (title, grid) in zip(axes[0], maps.items(), strict=True):
        ax.imshow(grid > 1e-6 * grid.max(), cmap="Blues", vmin=0, vmax=1.3)
        ax.plot(col, row, "r*", markersize=12)
        _grid(ax, *grid.shape, window_size)
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"Input tokens that output token ({row}, {col}) depends on (red star)")
    fig.tight_layout()
    return fig


def attention_multiply_adds(tokens: int, dim: int, window_size: int | None = None) -> int:
    """Multiply-adds of the two matrix products of attention, q·kᵀ and weights·v, over all heads:
    each of ``tokens`` queries meets every key of its window (M² of them), or every token (global)."""
    keys = tokens if window_size is None else window_size**2
    return 2 * tokens * keys * dim


def plot_cost(rows: list[dict], window_size: int) -> plt.Figure:
    """Time, peak memory and multiply-adds of global and window attention against the number of tokens,
    on log-log axes, where a slope of 2 is O(n²) and a slope of 1 is O(n)."""
    n = np.array([r["tokens"] for r in rows])
    panels = (("ms", "time per call (ms)"), ("MiB", "peak memory (MiB)"), ("GMAC", "multiply-adds (G)"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for kind, style in (("global", "o-"), ("window", "s-")):
            ax.loglog(n, [r[f"{kind} {key}"] for r in rows], style, label=f"{kind} attention")
        ax.set(xlabel="tokens n = H·W", ylabel=label)
        ax.set_xticks(n, labels=[str(t) for t in n])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(title=f"window M = {window_size}")
    fig.suptitle("Global attention grows as n², attention in M×M windows as n·M²")
    fig.tight_layout()
    return fig
