"""The course's fast reference ViT: the lecture's model, written for speed.

``FastViT`` computes the same function as the lecture's einsum-style ViT (notebooks 03-07), with
the changes that make it fast:

* one fused ``qkv`` Linear per block instead of three (one matrix product, not three), its output
  split in timm's ``(qkv h d)`` layout with ``view``/``permute``/``unbind`` (no copies);
* ``F.scaled_dot_product_attention``, which picks a fused kernel (FlashAttention or the
  memory-efficient one on a GPU) and never stores the ``(b, h, n, n)`` score matrix there;
* no einops and no Python-level branching on data in ``forward``, so that ``torch.compile``
  captures the whole model, forward and backward, in one graph.

The attributes are named like timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks[i].norm1 / attn.qkv / attn.proj / norm2 / mlp.fc1 / mlp.fc2``, ``norm``,
``head``), so that a timm state dict loads with the adapters of ``course_utils.timm_compat``.

``time_per_call`` and ``peak_memory`` at the end are the measuring tools of notebook 10 and of
``benchmarks/vit_throughput.py``.

One difference in order, not in function: the final LayerNorm is applied *after* pooling. A
LayerNorm normalises each token on its own, so for class-token pooling ``LN(x)[:, 0]`` equals
``LN(x[:, 0])``; for mean pooling, ``LN(mean(x))`` is the lecture's ``ClassificationHead``
(``Reduce('b n e -> b e', 'mean')`` → ``LayerNorm`` → ``Linear``) and timm's ``fc_norm``.
"""

import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Pool = Literal["cls", "mean", "mean_patches"]


class PatchEmbed(nn.Module):
    """Image -> patch tokens with one strided convolution: (b, c, H, W) -> (b, N, e)."""

    def __init__(self, in_channels: int, patch_size: int, emb_size: int, img_size: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, emb_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (b, e, h, w) -> (b, h·w, e)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv Linear and scaled_dot_product_attention.

    ``qkv``'s output is laid out ``(qkv h d)``: all the queries (head after head), then all the
    keys, then all the values, as in timm. ``attn_mask`` is boolean, True where attention is
    allowed (the convention of ``F.scaled_dot_product_attention`` and of the course).
    """

    def __init__(self, emb_size: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if emb_size % num_heads:
            raise ValueError(f"emb_size {emb_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = emb_size // num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(emb_size, 3 * emb_size)
        self.proj = nn.Linear(emb_size, emb_size)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        b, n, e = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (b, h, n, d)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, e))


class Mlp(nn.Module):
    """The feed-forward block: Linear -> GELU -> Dropout -> Linear."""

    def __init__(self, emb_size: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(emb_size, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, emb_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm encoder block: x + Attn(LN1(x)), then x + MLP(LN2(x))."""

    def __init__(
        self,
        emb_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(emb_size, eps=norm_eps)
        self.attn = Attention(emb_size, num_heads, attn_dropout)
        self.norm2 = nn.LayerNorm(emb_size, eps=norm_eps)
        self.mlp = Mlp(emb_size, int(emb_size * mlp_ratio), dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), attn_mask, is_causal))
        return x + self.drop(self.mlp(self.norm2(x)))


class FastViT(nn.Module):
    """A Vision Transformer with fused qkv attention: (b, c, H, W) -> (b, n_classes).

    Args:
        pool: ``"cls"`` takes the class token's output (the ViT paper, timm's ``'token'``);
            ``"mean"`` averages every token, the class token included (the lecture's
            ``ClassificationHead``); ``"mean_patches"`` averages the patch tokens only (timm's
            ``'avg'``).
        norm_eps: epsilon of every LayerNorm: 1e-6 as in timm and the ViT paper's code;
            ``nn.LayerNorm``'s default, used by the lecture's modules, is 1e-5.
        dropout: after each sublayer and inside the MLP; ``attn_dropout`` on the attention
            weights (inside ``scaled_dot_product_attention``, in training only).
    """

    def __init__(
        self,
        in_channels: int = 3,
        patch_size: int = 16,
        emb_size: int = 768,
        img_size: int = 224,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        n_classes: int = 1000,
        pool: Pool = "cls",
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pool not in ("cls", "mean", "mean_patches"):
            raise ValueError(f"pool must be 'cls', 'mean' or 'mean_patches', not {pool!r}")
        self.pool = pool
        self.patch_embed = PatchEmbed(in_channels, patch_size, emb_size, img_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, emb_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, emb_size))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(Block(emb_size, num_heads, mlp_ratio, dropout, attn_dropout, norm_eps) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(emb_size, eps=norm_eps)
        self.head = nn.Linear(emb_size, n_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """As timm: Linear weights truncated normal (std 0.02), zero biases, positions std 0.02, a
        near-zero class token; the patch projection as a Linear on a flattened patch (std 1/√fan_in)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):  # as a Linear on the flattened patch (lecun normal)
                fan_in = math.prod(module.weight.shape[1:])
                nn.init.trunc_normal_(module.weight, std=fan_in**-0.5)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images -> the encoder's output tokens, class token first: (b, N + 1, e), before ``norm``."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        return self.blocks(x)

    def forward_head(self, x: Tensor) -> Tensor:
        """Tokens (b, N + 1, e) -> logits (b, n_classes): pool, LayerNorm, Linear."""
        if self.pool == "cls":
            x = x[:, 0]
        elif self.pool == "mean":
            x = x.mean(dim=1)
        else:
            x = x[:, 1:].mean(dim=1)
        return self.head(self.norm(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# Measuring: the notebook and benchmarks/vit_throughput.py time and weigh with these.


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU does not)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(
    fn: Callable[[], object],
    device: torch.device | str = "cpu",
    warmup: int = 1,
    min_time: float = 0.1,
    max_calls: int = 100,
) -> float:
    """Seconds per call of ``fn``: the median of repeated calls after ``warmup`` calls.

    Calls are repeated until ``min_time`` seconds have passed (at least 3, at most
    ``max_calls``); the device is synchronised around each, so a GPU's time is measured, not
    the time to queue its work.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_calls):
        begin = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


@contextmanager
def _silent_fd(fd: int) -> Iterator[None]:
    """Send what C++ writes to file descriptor ``fd`` to /dev/null (the profiler logs a line on
    stderr each time it starts and stops)."""
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (some notebook frontends)
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Bytes allocated by ``fn`` at its peak, above what was allocated before it ran.

    On CUDA, from the caching allocator's statistics (``torch.cuda.max_memory_allocated``). On
    the CPU, from ``torch.profiler`` with ``profile_memory=True``: the allocations and frees of
    every operator, summed in order; the largest sum is the peak. Memory that bypasses PyTorch's
    operators (e.g. inside a compiled kernel) is not seen on the CPU.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with _silent_fd(2), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    in_use = peak = 0
    for event in events:  # an operator's self usage: what it allocated less what it freed
        in_use += event.self_cpu_memory_usage
        peak = max(peak, in_use)
    return peak
