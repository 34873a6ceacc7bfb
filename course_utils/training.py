"""Train an image classifier on in-memory data: AdamW, warm-up then cosine decay, live curves.

``train(model, train_data, test_data, ...)`` is the whole loop; the data are ``(images, labels)``
pairs such as :class:`course_utils.datasets.ImageSet`. On CUDA it trains in mixed precision
(bfloat16, or float16 with loss scaling); on the CPU and Apple's MPS in float32. A run is repeatable:
the seed fixes the order of the batches, the augmentation and the dropout.
"""

import io
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_utils.device import get_device, seed_everything


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor at optimizer step ``step`` (from 0) of ``total``.

    A linear warm-up over the first ``warmup`` steps, ``(step + 1) / warmup``, reaching 1 at step
    ``warmup - 1``; then a half cosine from 1 at step ``warmup`` down to 0 at step ``total``
    (and 0 after it).
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class History:
    """One entry per epoch: losses, accuracies, the learning rate at its end and its duration."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def line(self, i: int = -1) -> str:
        """One epoch in words: ``epoch 3: train loss 0.412, accuracy 87.5% | test ...``."""
        text = (
            f"epoch {self.epoch[i]}: train loss {self.train_loss[i]:.3f}, "
            f"accuracy {self.train_accuracy[i]:.1%}"
        )
        if self.test_loss:
            text += f" | test loss {self.test_loss[i]:.3f}, accuracy {self.test_accuracy[i]:.1%}"
        return text + f" | {self.seconds[i]:.1f} s"


def to_float(images: Tensor) -> Tensor:
    """Images as float32: uint8 (0–255) is scaled to [0, 1], floats are kept as they are."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _autocast(device: torch.device, amp: bool):
    """Mixed precision on CUDA (bfloat16 where supported, else float16); nothing elsewhere."""
    if not (amp and device.type == "cuda"):
        return nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype), dtype


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 500, amp: bool = True) -> Tensor:
    """The model's logits ``(n, n_classes)`` for ``images``, as float32 on the CPU (eval mode)."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    context, _ = _autocast(device, amp)
    outputs = []
    for start in range(0, len(images), batch_size):
        with context:
            outputs.append(model(to_float(images[start : start + batch_size].to(device))).float().cpu())
    model.train(was_training)
    return torch.cat(outputs)


def evaluate(model: nn.Module, data, batch_size: int = 500, amp: bool = True) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``data = (images, labels)``."""
    images, labels = data[0], data[1]
    logits = predict(model, images, batch_size, amp)
    loss = F.cross_entropy(logits, labels.cpu()).item()
    accuracy = (logits.argmax(-1) == labels.cpu()).float().mean().item()
    return loss, accuracy


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    epoch: int = 0,
    history: History | None = None,
) -> None:
    """Save the model's weights, the optimizer's and scheduler's state, the epoch and the history."""
    state = {
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "epoch": epoch,
        "history": asdict(history or History()),
    }
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)  # never leave a half-written checkpoint behind


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> tuple[int, History]:
    """Load a checkpoint into ``model`` (and ``optimizer``, ``scheduler``); return (epoch, history)."""
    state = torch.load(path, map_location=model_device(model), weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    return state["epoch"], History(**state["history"])


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weight matrices and kernels only.

    Biases, LayerNorm scales and shifts, the class token and position embeddings are not decayed
    (the usual choice for ViTs): one-dimensional tensors, and names with ``token`` or ``position``.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim < 2 or "token" in name or "position" in name
        (no_decay if plain else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class _Report:
    """Per-epoch report: live curves in a notebook, one printed line per epoch elsewhere."""

    def __init__(self, live: bool, epochs: int) -> None:
        self.live, self.epochs, self.handle = live, epochs, None
        self.notebook = live and _in_notebook()

    def update(self, history: History) -> None:
        if not self.live:
            return
        if not self.notebook:
            print(history.line(), flush=True)
            return
        from IPython.display import Image, display

        image = Image(data=_curves_png(history, self.epochs))
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)


def _curves_png(history: History, epochs: int) -> bytes:
    """Loss and accuracy per epoch, drawn without pyplot (no figure is left open)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), layout="constrained")
    loss_ax, accuracy_ax = fig.subplots(1, 2)
    loss_ax.plot(history.epoch, history.train_loss, "o-", markersize=3, label="train")
    accuracy_ax.plot(history.epoch, history.train_accuracy, "o-", markersize=3, label="train")
    if history.test_loss:
        loss_ax.plot(history.epoch, history.test_loss, "o-", markersize=3, label="test")
        accuracy_ax.plot(history.epoch, history.test_accuracy, "o-", markersize=3, label="test")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss", xlim=(0.5, epochs + 0.5), yscale="log")
    accuracy_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", xlim=(0.5, epochs + 0.5))
    fig.suptitle(history.line(), fontsize=9)
    accuracy_ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    for ax in (loss_ax, accuracy_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def train(
    model: nn.Module,
    train_data,
    test_data=None,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup_fraction: float = 0.1,
    warmup_steps: int | None = None,
    label_smoothing: float = 0.0,
    grad_clip: float | None = 1.0,
    augment: Callable[[Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
    amp: bool = True,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    live: bool = True,
    progress: bool = True,
) -> History:
    """Train ``model`` on ``train_data = (images, labels)``; return the per-epoch :class:`History`.

    * AdamW (``lr``, ``weight_decay`` on weight matrices), the learning rate warmed up linearly
      over ``warmup_steps`` optimizer steps (by default ``warmup_fraction`` of all of them), then
      decayed to 0 along a cosine (:func:`warmup_cosine`); cross-entropy with ``label_smoothing``;
      gradients clipped to norm ``grad_clip``.
    * ``augment`` is applied to every training batch (on the device, before the conversion to
      float), e.g. :func:`course_utils.datasets.random_crop_flip`.
    * ``device``: by default :func:`course_utils.get_device` (a GPU when there is one). ``amp``:
      autocast to bfloat16 (float16 where bfloat16 is missing) on CUDA only.
    * ``seed``: a run with the same seed, model initialisation and device gives the same losses.
    * ``checkpoint``: a file saved after every epoch; with ``resume=True`` an existing one is
      loaded first and training goes on from the epoch after it.
    * ``live``: curves redrawn after every epoch in a notebook, a printed line elsewhere.
      ``progress``: a progress bar over the batches.
    """
    device = torch.device(device) if device is not None else get_device()
    seed_everything(seed)
    model.to(device)
    images, labels = train_data[0], train_data[1]
    if device.type != "cpu":  # one copy on the device: no transfer per batch
        images, labels = images.to(device), labels.to(device)
    n = len(labels)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    warmup = warmup_steps if warmup_steps is not None else round(warmup_fraction * total)

    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total, warmup))
    context, amp_dtype = _autocast(device, amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    history, first_epoch = History(), 1
    if checkpoint is not None and resume and os.path.exists(checkpoint):
        done, history = load_checkpoint(checkpoint, model, optimizer, scheduler)
        first_epoch = done + 1
    report = _Report(live, epochs)
    if history.epoch:
        report.update(history)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=(first_epoch - 1) * steps_per_epoch,
        disable=not progress,
        unit="step",
        leave=False,
    )
    try:
        for epoch in range(first_epoch, epochs + 1):
            start = time.perf_counter()
            model.train()
            bar.set_description(f"epoch {epoch}/{epochs}")
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 10_007 + epoch))
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for step in range(steps_per_epoch):
                index = order[step * batch_size : (step + 1) * batch_size].to(images.device)
                x, y = images[index], labels[index]
                if augment is not None:
                    x = augment(x)
                x, y = to_float(x.to(device)), y.to(device)
                with context:
                    logits = model(x)
                loss = criterion(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(-1) == y).sum()
                bar.update()
            history.epoch.append(epoch)
            history.train_loss.append(loss_sum.item() / n)
            history.train_accuracy.append(correct.item() / n)
            if test_data is not None:
                test_loss, test_accuracy = evaluate(model, test_data, amp=amp)
                history.test_loss.append(test_loss)
                history.test_accuracy.append(test_accuracy)
            history.lr.append(optimizer.param_groups[0]["lr"])
            history.seconds.append(time.perf_counter() - start)
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer, scheduler, epoch, history)
            report.update(history)
            bar.set_postfix_str(f"loss {history.train_loss[-1]:.3f}")
    finally:
        bar.close()
    model.eval()
    return history
