"""Reference ("oracle") computations the checks compare against.

Each is built on PyTorch's own modules (``nn.Conv2d``, ``scaled_dot_product_attention``,
``nn.MultiheadAttention``, ``nn.LayerNorm``, ``nn.TransformerEncoderLayer``) or on closed-form
maths, with adapters that copy a student's weights into them. They are not the exercises'
solutions: the exercises build these pieces by hand, with einops and ``torch.einsum``.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def sinusoidal_table(seq_len: int, d: int, n: float = 10000.0) -> np.ndarray:
    """The sinusoidal position table as the imaginary and real parts of exp(i·k·ω_j)."""
    omega = n ** (-np.arange(0, d, 2) / d)
    phasor = np.exp(1j * np.outer(np.arange(seq_len), omega))
    return np.stack([phasor.imag, phasor.real], axis=-1).reshape(seq_len, -1)[:, :d]


def conv_patch_embedding(x: Tensor, linear: nn.Linear, patch_size: int, order: str) -> Tensor:
    """Patch embedding as a strided ``nn.Conv2d`` whose kernel is ``linear``'s weight.

    ``order`` is how a patch is flattened before ``linear``, e.g. ``"s1 s2 c"``.
    """
    channels = x.shape[1]
    kernel = rearrange(linear.weight, f"e ({order}) -> e c s1 s2", s1=patch_size, s2=patch_size, c=channels)
    out = F.conv2d(x, kernel, linear.bias, stride=patch_size)
    return rearrange(out, "b e h w -> b (h w) e")


@dataclass(frozen=True)
class AttentionWeights:
    """The four projections of multi-head attention as (weight, bias) pairs."""

    q: tuple[Tensor, Tensor | None]
    k: tuple[Tensor, Tensor | None]
    v: tuple[Tensor, Tensor | None]
    out: tuple[Tensor, Tensor | None]


# How a fused qkv Linear's output splits: (qkv h d) as in timm, (h d qkv) as in the einops tutorial.
QKV_LAYOUTS = {
    "(qkv h d)": "(qkv h d) e -> qkv (h d) e",
    "(h d qkv)": "(h d qkv) e -> qkv (h d) e",
}


def _pair(linear: nn.Linear) -> tuple[Tensor, Tensor | None]:
    return linear.weight, linear.bias


def attention_weights_of(mha: nn.Module) -> list[AttentionWeights]:
    """Candidate readings of a student's attention weights (one, or one per fused layout).

    Works with the lecture's ``queries``/``keys``/``values`` Linears or a fused ``qkv`` Linear,
    and the output ``projection``.
    """
    out = _pair(mha.projection)
    if all(isinstance(getattr(mha, n, None), nn.Linear) for n in ("queries", "keys", "values")):
        return [AttentionWeights(_pair(mha.queries), _pair(mha.keys), _pair(mha.values), out)]
    heads = mha.num_heads
    candidates = []
    for pattern in QKV_LAYOUTS.values():
        w = rearrange(mha.qkv.weight, pattern, qkv=3, h=heads)
        b = (
            rearrange(mha.qkv.bias, pattern.replace(" e", ""), qkv=3, h=heads)
            if mha.qkv.bias is not None
            else (None, None, None)
        )
        candidates.append(AttentionWeights((w[0], b[0]), (w[1], b[1]), (w[2], b[2]), out))
    return candidates


def split_heads(x: Tensor, projection: tuple[Tensor, Tensor | None], num_heads: int) -> Tensor:
    """Project and split into heads: (b, n, e) -> (b, h, n, d)."""
    return rearrange(F.linear(x, *projection), "b n (h d) -> b h n d", h=num_heads)


def sdpa_attention(
    x: Tensor,
    weights: AttentionWeights,
    num_heads: int,
    mask: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    ``mask`` is broadcastable to (b, h, n, n): boolean, True where attention is allowed, or added to the
    scores.
    """
    q, k, v = (split_heads(x, p, num_heads) for p in (weights.q, weights.k, weights.v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return F.linear(rearrange(out, "b h n d -> b n (h d)"), *weights.out)


def torch_multihead_attention(weights: AttentionWeights, num_heads: int) -> nn.MultiheadAttention:
    """An ``nn.MultiheadAttention`` (batch_first) holding a copy of ``weights``."""
    emb_size = weights.q[0].shape[1]
    has_bias = weights.q[1] is not None
    like = weights.q[0]
    mha = nn.MultiheadAttention(
        emb_size, num_heads, bias=has_bias, batch_first=True, device=like.device, dtype=like.dtype
    )
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([weights.q[0], weights.k[0], weights.v[0]]))
        mha.out_proj.weight.copy_(weights.out[0])
        if has_bias:
            mha.in_proj_bias.copy_(torch.cat([weights.q[1], weights.k[1], weights.v[1]]))
            mha.out_proj.bias.copy_(weights.out[1])
    return mha


def attention_maps(mha: nn.Module, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-head attention weights (b, h, n, n) of a student's module, via ``nn.MultiheadAttention``."""
    reference = torch_multihead_attention(attention_weights_of(mha)[0], mha.num_heads)
    blocked = None if mask is None else ~mask.expand(x.shape[0], mha.num_heads, -1, -1).flatten(0, 1)
    with torch.no_grad():
        _, att = reference(x, x, x, attn_mask=blocked, average_attn_weights=False)
    return att


def torch_layer_norm(gamma: Tensor, beta: Tensor, eps: float) -> nn.LayerNorm:
    """An ``nn.LayerNorm`` over the last axis with the given scale and shift."""
    norm = nn.LayerNorm(gamma.shape[0], eps=eps, device=gamma.device, dtype=gamma.dtype)
    with torch.no_grad():
        norm.weight.copy_(gamma)
        norm.bias.copy_(beta)
    return norm


def _layer_options(
    norms: tuple[nn.LayerNorm, ...],
    feed_forward: tuple[nn.Linear, nn.Linear],
    num_heads: int,
    norm_first: bool,
) -> dict:
    """The constructor arguments PyTorch's Transformer layers need to hold a student's weights."""
    like = feed_forward[0].weight
    return dict(
        d_model=feed_forward[0].in_features,
        nhead=num_heads,
        dim_feedforward=feed_forward[0].out_features,
        dropout=0.0,
        activation="gelu",
        layer_norm_eps=norms[0].eps,
        batch_first=True,
        norm_first=norm_first,
        device=like.device,
        dtype=like.dtype,
    )


def _copy_parts(layer: nn.Module, parts: dict[str, nn.Module]) -> None:
    """Load each part's weights into the submodule of ``layer`` with that name."""
    layer.load_state_dict(
        {f"{name}.{key}": value for name, part in parts.items() for key, value in part.state_dict().items()}
    )


def torch_encoder_layer(
    norms: tuple[nn.LayerNorm, nn.LayerNorm],
    attention: AttentionWeights,
    feed_forward: tuple[nn.Linear, nn.Linear],
    num_heads: int,
    norm_first: bool = True,
) -> nn.TransformerEncoderLayer:
    """An ``nn.TransformerEncoderLayer`` (GELU, batch_first, no dropout) with copied weights."""
    layer = nn.TransformerEncoderLayer(**_layer_options(norms, feed_forward, num_heads, norm_first))
    parts = {
        "self_attn": torch_multihead_attention(attention, num_heads),
        "norm1": norms[0],
        "norm2": norms[1],
        "linear1": feed_forward[0],
        "linear2": feed_forward[1],
    }
    _copy_parts(layer, parts)
    return layer


def torch_decoder_layer(
    norms: tuple[nn.LayerNorm, nn.LayerNorm, nn.LayerNorm],
    self_attention: AttentionWeights,
    cross_attention: AttentionWeights,
    feed_forward: tuple[nn.Linear, nn.Linear],
    num_heads: int,
    norm_first: bool = True,
) -> nn.TransformerDecoderLayer:
    """An ``nn.TransformerDecoderLayer`` (GELU, batch_first, no dropout) with copied weights."""
    layer = nn.TransformerDecoderLayer(**_layer_options(norms, feed_forward, num_heads, norm_first))
    parts = {
        "self_attn": torch_multihead_attention(self_attention, num_heads),
        "multihead_attn": torch_multihead_attention(cross_attention, num_heads),
        "linear1": feed_forward[0],
        "linear2": feed_forward[1],
        **{f"norm{i}": norm for i, norm in enumerate(norms, 1)},
    }
    _copy_parts(layer, parts)
    return layer.eval()


def vit_parameter_count(
    patch_size: int,
    emb_size: int,
    depth: int,
    num_heads: int,
    mlp_size: int,
    img_size: int = 224,
    in_channels: int = 3,
    n_classes: int = 1000,
) -> int:
    """Parameters of a ViT (class token, learned positions, pre-norm encoder, final norm, head).

    Counted from PyTorch's modules built on the meta device, so no memory is used.
    """
    num_patches = (img_size // patch_size) ** 2
    with torch.device("meta"):
        parts = nn.ModuleList(
            [
                nn.Conv2d(in_channels, emb_size, patch_size, stride=patch_size),
                *(
                    nn.TransformerEncoderLayer(emb_size, num_heads, mlp_size, norm_first=True)
                    for _ in range(depth)
                ),
                nn.LayerNorm(emb_size),
                nn.Linear(emb_size, n_classes),
            ]
        )
    cls_token_and_positions = emb_size * (1 + num_patches + 1)
    return sum(p.numel() for p in parts.parameters()) + cls_token_and_positions
