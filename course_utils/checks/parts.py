"""The checks' shared layer: the parts of a student's model, masks, attention, gradients.

Every check finds attention modules, LayerNorms and Linears the same way (on the judge's mirror of the
student's module), builds masks the same way and compares gradients the same way; this is that one way.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from course_utils.feedback import expect_close, fail
from course_utils.judge import Result
from course_utils.reference import AttentionWeights, attention_weights_of, split_heads
from course_utils.wire import cotangent

GRAD_SEED = 7  # the direction of every backward pass the checks take
ATTENTION_LAYERS = (
    "Keep the skeleton's layers: queries, keys and values (or one fused qkv) and projection, "
    "and self.num_heads."
)


# ----------------------------------------------------------------------------- recognising parts
def find_layers(module: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    """The distinct submodules of type ``kind``, in registration order."""
    return [m for m in module.modules() if isinstance(m, kind)]


def is_attention(module: nn.Module) -> bool:
    """Whether a module is shaped like the course's MultiHeadAttention (projection and queries or qkv)."""
    names = dict(module.named_children())
    return "projection" in names and ("queries" in names or "qkv" in names)


def attention_modules(module: nn.Module) -> list[nn.Module]:
    """The distinct MultiHeadAttention modules inside ``module``, in registration order."""
    return [m for m in module.modules() if is_attention(m)]


def attention_candidates(mha: nn.Module, what: str) -> list[AttentionWeights]:
    """The readings of an attention module's weights (one, or one per fused-qkv layout), or a failure."""
    try:
        return attention_weights_of(mha)
    except (AttributeError, RuntimeError, TypeError) as err:
        fail(f"{what}: {err}. {ATTENTION_LAYERS}")


def path_of(root: nn.Module, part: nn.Module) -> str:
    """The name of ``part`` inside ``root`` (its first), as the student's module names it."""
    return next(name for name, m in root.named_modules() if m is part)


def entries(root: nn.Module) -> list[nn.Module]:
    """Every child slot of every module, repeats kept: ``[block] * depth`` shows as depth entries."""
    return [m for c in root.modules() for m in c._modules.values() if m is not None]


# ----------------------------------------------------------------------------- masks
def make_mask(kind: str | None, batch: int, n_query: int, n_key: int | None = None) -> Tensor | None:
    """A boolean mask, True where attention is allowed; no query has all its keys masked.

    ``"causal"``: (n_query, n_key), query i sees the keys up to its own position, the queries being
    the last n_query positions when n_key > n_query (a decoder with cached keys); ``"padding"``:
    (batch, 1, 1, n_key), the later keys of each sequence are padding; ``"rectangular"``: (n_query,
    n_key), a staircase: each query sees the first keys, more of them the later it comes.
    """
    n_key = n_query if n_key is None else n_key
    if kind is None:
        return None
    keys = torch.arange(n_key)
    if kind == "causal":
        return torch.ones(n_query, n_key, dtype=torch.bool).tril(diagonal=max(n_key - n_query, 0))
    if kind == "padding":
        lengths = torch.arange(batch) % max(n_key - 1, 1) + (n_key + 1) // 2
        return (keys < lengths[:, None])[:, None, None, :]
    if kind == "rectangular":
        queries = torch.arange(n_query)
        return keys[None, :] * max(n_query - 1, 1) <= queries[:, None] * max(n_key - 1, 1)
    raise ValueError(f"mask must be None, 'causal', 'padding' or 'rectangular', not {kind!r}")


def attention_matrix(q: Tensor, k: Tensor, scale: float | None, mask: Tensor | None) -> Tensor:
    """softmax(q kᵀ · scale) with the mask (scale 1/sqrt(head_dim) where None), as a (..., n_query,
    n_key) tensor, read out of SDPA with identity values."""
    eye = torch.eye(k.shape[-2], dtype=q.dtype, device=q.device).expand(*k.shape[:-1], -1)
    return F.scaled_dot_product_attention(q, k, eye, attn_mask=mask, scale=scale)


def other_heads(emb_size: int, num_heads: int) -> int:
    """Another valid number of heads for ``emb_size``: the smallest divisor that is not ``num_heads``."""
    return next((h for h in range(1, emb_size + 1) if emb_size % h == 0 and h != num_heads), num_heads + 1)


def cross_sdpa(
    x: Tensor, context: Tensor, w: AttentionWeights, heads: int, mask=None, sources="xcc", after_softmax=False
) -> Tensor:
    """Cross-attention through SDPA: queries from ``x``, keys and values from ``context``.

    ``sources`` says where the queries, keys and values come from ("x" or "c"), to recompute
    mistakes; ``after_softmax`` applies the mask to the weights after the softmax.
    """
    inputs = {"x": x, "c": context}
    q, k, v = (split_heads(inputs[s], p, heads) for s, p in zip(sources, (w.q, w.k, w.v), strict=True))
    if after_softmax:
        out = (attention_matrix(q, k, q.shape[-1] ** -0.5, None) * mask) @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.linear(rearrange(out, "b h n d -> b n (h d)"), *w.out)


# ----------------------------------------------------------------------------- gradients
def leaves(value: Any) -> Iterator[Tensor]:
    """The floating tensors of a nested value, in order: what a backward direction is drawn for."""
    if isinstance(value, Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from leaves(v)


def expect_gradients(
    result: Result,
    inputs: Sequence[tuple[str, Tensor]],
    expected: Callable[..., Any],
    label: str,
    seed: int = GRAD_SEED,
) -> None:
    """The gradients the probe took (in the direction drawn from ``seed``) w.r.t. ``inputs`` match
    those of ``expected(*inputs)``, the judge's own computation from its own copies."""
    if result.no_graph or result.input_grads is None:
        fail(
            f"{label}: the result does not require grad, so nothing would be trained: is forward run "
            "under torch.no_grad(), or detached (.detach(), .item(), .numpy())?"
        )
    copies = [t.detach().clone().requires_grad_() for _, t in inputs]
    outputs = list(leaves(expected(*copies)))
    loss = sum((t * cotangent(t.shape, t.dtype, seed + i)).sum() for i, t in enumerate(outputs))
    wanted = torch.autograd.grad(loss, copies, allow_unused=True)
    for (name, _), got, want in zip(inputs, result.input_grads, wanted, strict=True):
        if got is None:
            fail(f"{label}: no gradient reaches {name}. Is it detached, or not used?")
        if want is None:
            want = torch.zeros_like(got)
        expect_close(got, want.to(got.dtype), f"gradient w.r.t. {name} of {label}")


def expect_trained(result: Result, label: str) -> None:
    """Every trainable parameter of the student's module received a gradient that is not all zero."""
    if result.no_graph or result.param_grads is None:
        fail(
            f"{label}: the result does not require grad, so no parameter would be trained: is forward "
            "run under torch.no_grad(), or detached?"
        )
    for name, grad in result.param_grads.items():
        if grad is None or not grad.any():
            fail(
                f"{label}: no gradient reaches `{name}`. Is part of forward detached, or computed outside "
                "the graph (.item(), .numpy(), torch.no_grad())?"
            )
