"""Looking inside a trained ViT: attention maps, attention rollout, position embeddings, errors.

Works with any ViT built from the course's blocks (or alike): the attention modules are found by
their layers (``queries``/``keys``/``values`` or a fused ``qkv``, and ``projection``), their inputs
are captured with forward pre-hooks, and the attention weights are recomputed from them with
:func:`course_utils.reference.attention_maps`.
"""

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_utils.reference import attention_maps
from course_utils.training import model_device, predict, to_float


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The model's multi-head attention modules, from the input side to the output side."""
    return [
        m
        for m in model.modules()
        if hasattr(m, "projection")
        and hasattr(m, "num_heads")
        and (hasattr(m, "queries") or hasattr(m, "qkv"))
    ]


@torch.no_grad()
def capture_attention(model: nn.Module, images: Tensor) -> Tensor:
    """Every layer's attention weights for ``images``: ``(layers, b, heads, n, n)`` on the CPU.

    Row ``i`` of a map is how token ``i`` (the query) spreads its attention over all tokens
    (the keys); token 0 is the class token, tokens 1..N the patches, row by row.
    """
    layers = attention_modules(model)
    if not layers:
        raise ValueError("no attention modules found (modules with queries/keys/values and projection)")
    inputs: list[Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _, args: inputs.append(args[0].detach())) for m in layers]
    was_training = model.training
    model.eval()
    try:
        model(to_float(images.to(model_device(model))))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    maps = [attention_maps(m, x) for m, x in zip(layers, inputs, strict=True)]
    return torch.stack(maps).float().cpu()


def class_token_attention(attention: Tensor) -> Tensor:
    """What the class token looks at: ``(layers, b, heads, N)``, its row over the N patches."""
    return attention[..., 0, 1:]


def attention_rollout(attention: Tensor, token: int | None = 0) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each patch flows into a token.

    Per layer, average the heads, add the identity for the residual connection, renormalise
    the rows, and multiply the layers together from the input upwards. ``attention`` is
    ``(layers, b, heads, n, n)``; returns ``(b, N)``, the row of ``token`` (0: the class token)
    over the patches, or with ``token=None`` the mean of all rows (what a mean-pooling head reads).
    """
    layers, b, _, n, _ = attention.shape
    eye = torch.eye(n, dtype=attention.dtype)
    rollout = eye.expand(b, n, n)
    for layer in range(layers):
        a = attention[layer].mean(dim=1) + eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a @ rollout
    rows = rollout.mean(dim=1) if token is None else rollout[:, token]
    return rows[:, 1:]


def position_embeddings(model: nn.Module) -> Tensor:
    """The learned position embeddings ``(n, e)``: the parameter whose name holds ``position``."""
    found = [p for name, p in model.named_parameters() if "position" in name.lower()]
    if len(found) != 1:
        raise ValueError(f"expected one parameter named like `positions`, found {len(found)}")
    table = found[0].detach().float().cpu()
    return table.reshape(-1, table.shape[-1])


def position_similarity(model: nn.Module) -> Tensor:
    """Cosine similarity ``(N, N)`` of the patches' position embeddings (the class token's row dropped)."""
    table = position_embeddings(model)[1:]
    unit = F.normalize(table, dim=-1)
    return unit @ unit.T


def confusion_matrix(labels: Tensor, predictions: Tensor, n_classes: int) -> Tensor:
    """Counts ``(n_classes, n_classes)``: row = true class, column = predicted class."""
    index = labels.cpu().long() * n_classes + predictions.cpu().long()
    return torch.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


# ----------------------------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------------------------


def _picture(image: Tensor) -> tuple[np.ndarray, str | None]:
    """An image ``(c, h, w)`` for imshow: RGB as (h, w, 3), one channel as (h, w) in grey."""
    image = to_float(image.cpu())
    if image.shape[0] == 1:
        return image[0].numpy(), "gray_r"
    return image.permute(1, 2, 0).clamp(0, 1).numpy(), None


def _on_image(ax, image: Tensor, heat: Tensor) -> None:
    """A map over the patch grid, stretched over the image: a grey image's strokes are drawn as
    cyan outlines on the map, a colour image lies under a half-transparent map."""
    picture, cmap = _picture(image)
    h, w = picture.shape[:2]
    side = math.isqrt(heat.numel())
    grid = heat.reshape(side, side).numpy()
    extent = (0, w, h, 0)
    if picture.ndim == 2:
        ax.imshow(grid, cmap="inferno", vmin=0, extent=extent, interpolation="nearest")
        smooth = F.interpolate(torch.from_numpy(picture)[None, None], scale_factor=8, mode="bilinear")[0, 0]
        xs, ys = (torch.arange(8 * w) + 0.5) / 8, (torch.arange(8 * h) + 0.5) / 8  # sample centres
        ax.contour(xs.numpy(), ys.numpy(), smooth.numpy(), levels=[0.5], colors="cyan", linewidths=1.2)
        ax.set(xlim=(0, w), ylim=(h, 0))
    else:
        ax.imshow(picture, extent=extent)
        ax.imshow(grid, cmap="inferno", vmin=0, alpha=0.6, extent=extent, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_class_token_attention(
    images: Tensor, attention: Tensor, layer: int = -1, labels: Sequence[str] | None = None
) -> plt.Figure:
    """Per image (rows): the image, then the class token's attention over the patches in each head."""
    maps = class_token_attention(attention)[layer]  # (b, heads, N)
    b, heads, _ = maps.shape
    fig, axes = plt.subplots(b, heads + 1, figsize=(1.7 * (heads + 1), 1.8 * b), squeeze=False)
    layer_number = layer % attention.shape[0] + 1
    for i in range(b):
        picture, cmap = _picture(images[i])
        axes[i, 0].imshow(picture, cmap=cmap)
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        if labels is not None:
            axes[i, 0].set_ylabel(labels[i])
        for h in range(heads):
            _on_image(axes[i, h + 1], images[i], maps[i, h] / maps[i, h].max())
            if i == 0:
                axes[i, h + 1].set_title(f"head {h}", fontsize=9)
    fig.suptitle(
        f"Where the class token looks in layer {layer_number} of {attention.shape[0]} "
        "(bright: more attention)"
    )
    fig.tight_layout()
    return fig


def plot_rollout(images: Tensor, rollout: Tensor, labels: Sequence[str] | None = None) -> plt.Figure:
    """Each image above its attention rollout."""
    b = len(images)
    fig, axes = plt.subplots(2, b, figsize=(1.7 * b, 3.6), squeeze=False)
    for i in range(b):
        picture, cmap = _picture(images[i])
        axes[0, i].imshow(picture, cmap=cmap)
        axes[0, i].axis("off")
        if labels is not None:
            axes[0, i].set_title(labels[i], fontsize=9)
        _on_image(axes[1, i], images[i], rollout[i] / rollout[i].max())
    axes[0, 0].text(-0.15, 0.5, "image", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(
        -0.15, 0.5, "rollout", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right"
    )
    fig.suptitle("Attention rollout: how much each patch flows into the output")
    fig.tight_layout()
    return fig


def plot_position_similarity(similarity: Tensor) -> plt.Figure:
    """As in the ViT paper: for each patch (on its grid position), its similarity to every patch."""
    n = similarity.shape[0]
    side = math.isqrt(n)
    fig, axes = plt.subplots(side, side, figsize=(1.1 * side + 1.2, 1.1 * side + 0.4), squeeze=False)
    for index in range(n):
        ax = axes[index // side, index % side]
        image = ax.imshow(similarity[index].reshape(side, side).numpy(), cmap="viridis", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    for r in range(side):
        axes[r, 0].set_ylabel(str(r + 1), rotation=0, labelpad=8, va="center")
        axes[side - 1, r].set_xlabel(str(r + 1))
    fig.supxlabel("input patch column")
    fig.supylabel("input patch row")
    fig.colorbar(image, ax=axes, shrink=0.8, label="cosine similarity")
    fig.suptitle("Position embedding similarity")
    return fig


def plot_confusion_matrix(matrix: Tensor, classes: Sequence[str]) -> plt.Figure:
    """The confusion matrix with its counts; the diagonal holds the correct answers."""
    k = len(classes)
    fig, ax = plt.subplots(figsize=(0.4 * k + 1.8, 0.4 * k + 1.5))
    counts = matrix.numpy()
    ax.imshow(counts, cmap="Blues")
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                color = "white" if counts[i, j] > counts.max() / 2 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(k), labels=classes, rotation=90 if max(map(len, classes)) > 2 else 0)
    ax.set_yticks(range(k), labels=classes)
    accuracy = counts.trace() / max(1, counts.sum())
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix (accuracy {accuracy:.1%})")
    fig.tight_layout()
    return fig


def plot_misclassified(
    images: Tensor, labels: Tensor, predictions: Tensor, classes: Sequence[str], limit: int = 16
) -> plt.Figure:
    """The first ``limit`` test images the model gets wrong, with its answer and the truth."""
    wrong = (predictions.cpu() != labels.cpu()).nonzero().flatten()[:limit]
    columns = 8
    rows = max(1, math.ceil(len(wrong) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.75 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist(), strict=False):
        picture, cmap = _picture(images[i])
        ax.imshow(picture, cmap=cmap)
        ax.set_title(
            f"said {classes[predictions[i]]}\nis {classes[labels[i]]}", fontsize=8, color="firebrick"
        )
    total = int((predictions.cpu() != labels.cpu()).sum())
    fig.suptitle(f"{len(wrong)} of the {total} misclassified test images")
    fig.tight_layout()
    return fig


def predicted_labels(model: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """The model's predicted class of each image, ``(n,)``."""
    return predict(model, images, batch_size).argmax(-1)
