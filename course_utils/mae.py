"""Helpers of notebook 12, masked autoencoders: patches, the pre-training loop, few-label subsets, pictures.

None of it is an exercise: the masking, the encoder, the decoder and the loss are the notebook's. A
model given to :func:`pretrain` is called as ``model(images, mask_ratio)`` and returns
``(loss, pred, mask)``, as the notebook's ``MaskedAutoencoder`` does.
"""

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from course_utils.datasets import ImageSet
from course_utils.device import get_device, seed_everything
from course_utils.training import evaluate, parameter_groups, train, warmup_cosine

IMAGES, PATCHES = "b c (h s1) (w s2)", "b (h w) (s1 s2 c)"  # notebook 02's order: patches row-major


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Images (b, c, H, W) -> patches (b, n, patch_size² · c), row-major, as notebook 02 cuts them."""
    return rearrange(images, f"{IMAGES} -> {PATCHES}", s1=patch_size, s2=patch_size)


def unpatchify(patches: Tensor, patch_size: int, channels: int = 1) -> Tensor:
    """Patches (b, n, patch_size² · c) -> images (b, c, H, W): the inverse of :func:`patchify`."""
    side = math.isqrt(patches.shape[1])
    return rearrange(patches, f"{PATCHES} -> {IMAGES}", h=side, s1=patch_size, s2=patch_size, c=channels)


def few_labels(data: ImageSet, per_class: int, seed: int = 0) -> ImageSet:
    """``per_class`` images of every class of ``data``, drawn without replacement (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(len(data.classes)):
        members = torch.nonzero(data.labels == c).flatten()
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} images, fewer than {per_class}")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    index = torch.cat(chosen)
    return ImageSet(data.images[index], data.labels[index], data.classes)


def pretrain(
    model: nn.Module,
    images: Tensor,
    *,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup_fraction: float = 0.05,
    mask_ratio: float = 0.75,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Self-supervised training: ``steps`` AdamW steps on random batches of ``images`` (no labels),
    the learning rate warmed up then decayed along a cosine; the loss of every step."""
    device = torch.device(device) if device is not None else get_device()
    seed_everything(seed)
    model.to(device).train()
    images = images.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95))
    warmup = round(warmup_fraction * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, steps, warmup))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    from tqdm.auto import tqdm

    with tqdm(total=steps, disable=not progress, unit="step", desc="pre-training", leave=False) as bar:
        for _ in range(steps):
            batch = images[torch.randint(0, len(images), (batch_size,), generator=generator).to(device)]
            loss, _, _ = model(batch, mask_ratio)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update()
            if len(losses) % 50 == 0:
                bar.set_postfix_str(f"loss {sum(losses[-50:]) / 50:.4f}")
    model.eval()
    return losses


def plot_losses(losses: Sequence[float], baseline: float | None = None, title: str = "") -> plt.Figure:
    """The loss of every step (light) and its running mean over 50 steps; ``baseline`` as a line."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
    window = min(50, len(losses))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(steps[window - 1 :], smooth, color="tab:blue", label=f"mean of {window} steps")
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", label="the mean image, everywhere")
    ax.set(xlabel="step", ylabel="loss on the masked patches", title=title or "Pre-training", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def fine_tune(
    model: nn.Module,
    data: ImageSet,
    test_data: ImageSet,
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> float:
    """Train the classifier ``model`` on ``data`` for ``steps`` optimizer steps (in whole epochs, rounded
    up) with :func:`course_utils.training.train`'s recipe, quietly; its accuracy on ``test_data``."""
    epochs = math.ceil(steps / math.ceil(len(data) / batch_size))
    train(
        model,
        data,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        device=device,
        seed=seed,
        live=False,
        progress=False,
    )
    return evaluate(model, test_data)[1]


def hide(patches: Tensor, mask: Tensor, patch_size: int) -> Tensor:
    """Images (b, 1, H, W) of ``patches`` with the removed ones (mask 1) as NaN: what the encoder sees."""
    hidden = patches.detach().cpu().float().masked_fill(mask.detach().cpu().bool()[..., None], float("nan"))
    return unpatchify(hidden, patch_size)


def paste(patches: Tensor, pred: Tensor, mask: Tensor, patch_size: int) -> Tensor:
    """Images (b, 1, H, W): the visible patches as they are, the predicted ones (clipped to [0, 1]) where
    mask is 1."""
    removed = mask.detach().cpu().bool()[..., None]
    guess = pred.detach().cpu().float().clamp(0, 1)
    return unpatchify(torch.where(removed, guess, patches.detach().cpu().float()), patch_size)


def plot_rows(rows: dict[str, Tensor], title: str = "", count: int = 8) -> plt.Figure:
    """One row of ``count`` images (b, 1, H, W) per entry of ``rows``; NaN pixels (hidden patches) are
    drawn in light blue."""
    count = min(count, *(len(images) for images in rows.values()))
    fig, axes = plt.subplots(len(rows), count, figsize=(1.3 * count, 1.45 * len(rows) + 0.3), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for i in range(count):
            picture = images[i, 0].detach().cpu().float().numpy()
            ax = axes[r, i]
            ax.imshow(np.ma.masked_invalid(picture), cmap="gray_r", vmin=0, vmax=1)
            ax.set_facecolor("#c8d7ea")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_label_efficiency(per_class: Sequence[int], accuracies: dict[str, Sequence[float]]) -> plt.Figure:
    """Test accuracy against the number of labelled images per class, one line per way of training."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, ((name, values), marker) in enumerate(zip(accuracies.items(), "os^v", strict=False)):
        ax.plot(per_class, values, marker=marker, label=name)
        for x, y in zip(
            per_class, values, strict=True
        ):  # the first line's numbers above it, the others below
            offset = (0, 7) if i == 0 else (0, -13)
            ax.annotate(f"{y:.1%}", (x, y), textcoords="offset points", xytext=offset, ha="center", size=8)
    ax.set_xscale("log")
    ax.set_xticks(list(per_class), labels=[str(n) for n in per_class])
    ax.minorticks_off()
    ax.set(xlabel="labelled images per class", ylabel="test accuracy", title="Pre-trained vs from scratch")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
