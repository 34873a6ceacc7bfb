"""Checks of notebook 04: ``MultiHeadAttention``, against ``scaled_dot_product_attention``.

The student's module gets the judge's weights; the reference and the known mistakes are computed from
the judge's copy of them (the mirror), on the judge's inputs, with the reference ops.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from course_utils.checks.diagnose import Sensitivity, explain_attention, read_attention, token_dependence
from course_utils.checks.parts import (
    attention_candidates,
    attention_matrix,
    expect_gradients,
    expect_trained,
    make_mask,
)
from course_utils.feedback import (
    Mistake,
    as_tensor,
    call_text,
    check,
    close,
    expect_close,
    expect_dtype,
    expect_shape,
    forbid_calls,
    on,
    random_tensor,
)
from course_utils.judge import Instance, subject
from course_utils.reference import AttentionWeights, sdpa_attention, split_heads, torch_multihead_attention

SHORTCUTS = [
    "scaled_dot_product_attention",
    "MultiheadAttention",
    "multi_head_attention_forward",
    "course_utils",
]


def _where_fully_masked(out: Tensor, mask: Tensor, fill: str, values: Tensor) -> Tensor:
    """SDPA gives 0 for a query whose keys are all masked; a hand-written softmax gives NaN
    (with -inf) or the mean of the values (with a large negative number)."""
    blocked = ~mask.any(-1, keepdim=True)
    if fill == "nan":
        return out.masked_fill(blocked, float("nan"))
    return torch.where(blocked, values.mean(-2, keepdim=True), out)


def attention_mistakes(x: Tensor, w: AttentionWeights, heads: int, mask: Tensor | None) -> list[Mistake]:
    emb_size = x.shape[-1]
    head_dim = emb_size // heads
    q, k, v = (split_heads(x, p, heads) for p in (w.q, w.k, w.v))

    def finish(out: Tensor, merge: str = "b h n d -> b n (h d)") -> Tensor:
        return F.linear(rearrange(out, merge), *w.out)

    def transposed(m: Tensor | None) -> Tensor | None:
        return None if m is None else m.transpose(-1, -2)

    def sdpa(query: Tensor = q, key: Tensor = k, **kwargs) -> Tensor:
        return F.scaled_dot_product_attention(query, key, v, **{"attn_mask": mask, **kwargs})

    def split_dh(p: tuple) -> Tensor:
        return rearrange(F.linear(x, *p), "b n (d h) -> b h n d", h=heads)

    mistakes = [
        Mistake(
            "scaled after the softmax",
            "divide the scores q·k by sqrt(head_dim) before torch.softmax, not the weights after it.",
            lambda: finish(sdpa(scale=1.0) / head_dim**0.5),
        ),
        Mistake(
            "scaled after the softmax, and by sqrt(emb_size)",
            "divide the scores by sqrt(head_dim) = sqrt(emb_size / num_heads), before the softmax.",
            lambda: finish(sdpa(scale=1.0) / emb_size**0.5),
        ),
        Mistake(
            "scaled by sqrt(emb_size) instead of sqrt(head_dim)",
            f"each head works in head_dim = emb_size / num_heads = {head_dim} dimensions: "
            "divide by sqrt(head_dim).",
            lambda: finish(sdpa(scale=emb_size**-0.5)),
        ),
        Mistake(
            "scores not scaled",
            "divide the scores by sqrt(head_dim) before the softmax.",
            lambda: finish(sdpa(scale=1.0)),
        ),
        Mistake(
            "softmax over the wrong axis",
            "each query's weights over the keys must sum to 1: softmax over the last axis "
            "(dim=-1) of the (b, h, query, key) scores.",
            lambda: finish(attention_matrix(k, q, head_dim**-0.5, transposed(mask)).transpose(-1, -2) @ v),
        ),
        Mistake(
            "queries and keys swapped",
            "the scores are einsum('bhqd, bhkd -> bhqk', queries, keys): queries index the rows.",
            lambda: finish(sdpa(query=k, key=q, attn_mask=transposed(mask))),
        ),
        Mistake(
            "heads merged in the wrong order",
            "merge with rearrange(out, 'b h n d -> b n (h d)'): the heads axis comes first.",
            lambda: finish(sdpa(), "b h n d -> b n (d h)"),
        ),
        Mistake(
            "heads split in the wrong order",
            "split with rearrange(..., 'b n (h d) -> b h n d', h=num_heads).",
            lambda: finish(
                F.scaled_dot_product_attention(split_dh(w.q), split_dh(w.k), split_dh(w.v), attn_mask=mask)
            ),
        ),
        Mistake(
            "heads split and merged as (d h) instead of (h d)",
            "each head takes a contiguous block of head_dim features: split with "
            "'b n (h d) -> b h n d' and merge with 'b h n d -> b n (h d)', as nn.MultiheadAttention does.",
            lambda: finish(
                F.scaled_dot_product_attention(split_dh(w.q), split_dh(w.k), split_dh(w.v), attn_mask=mask),
                "b h n d -> b n (d h)",
            ),
        ),
        Mistake(
            "output projection missing",
            "after merging the heads, apply self.projection.",
            lambda: rearrange(sdpa(), "b h n d -> b n (h d)"),
        ),
    ]
    if mask is not None:
        mistakes += [
            Mistake(
                "mask ignored",
                "when mask is given, fill the scores where mask is False with -inf "
                "(scores.masked_fill(~mask, float('-inf'))) before the softmax.",
                lambda: finish(sdpa(attn_mask=None)),
            ),
            *(
                Mistake(
                    "mask inverted",
                    "mask is True where attention is allowed: fill the scores where ~mask.",
                    lambda fill=fill: finish(_where_fully_masked(sdpa(attn_mask=~mask), ~mask, fill, v)),
                )
                for fill in ("nan", "mean")
            ),
            Mistake(
                "mask applied after the softmax",
                "mask the scores before the softmax, so that the allowed weights still sum to 1.",
                lambda: finish((attention_matrix(q, k, head_dim**-0.5, None) * mask) @ v),
            ),
        ]
    return mistakes


MASK_TOO_OPEN = (
    "a query sees a key the mask forbids: fill the scores where mask is False with -inf "
    "(scores.masked_fill(~mask, float('-inf'))) before the softmax; mask is True where attention is allowed."
)
MASK_TOO_CLOSED = (
    "attention mixes every position the mask allows: the softmax runs over all keys (dim=-1), and each "
    "output sums the values of all keys, weighted."
)


def attention_diagnoses(module: Instance, x: Tensor, mask: Tensor | None, call: str, **kwargs) -> list:
    """General diagnostics of an attention module's output: its attention weights read off it, which
    positions each output depends on, which weights it responds to."""
    mirror, heads = module.mirror, module.mirror.num_heads
    context = kwargs.get("context")

    def reference(inputs: Tensor = x) -> Tensor:
        weights = attention_candidates(mirror, call)[0]
        return sdpa_attention(inputs, weights, heads, mask) if context is None else cross_reference(inputs)

    def cross_reference(inputs: Tensor) -> Tensor:
        from course_utils.checks.nb09_masked_attention_and_decoder import cross_sdpa

        return cross_sdpa(inputs, context, attention_candidates(mirror, call)[0], heads, mask)

    def student(inputs: Tensor = x) -> Tensor:
        options = {k: v for k, v in (("mask", mask), ("context", context)) if v is not None}
        return as_tensor(module.call(inputs, label=call, no_grad=True, **options).output, call)

    def readout():
        weights = read_attention(module, mirror, x, call, context, mask)
        if weights is None:
            return None
        w = attention_candidates(mirror, call)[0]
        q = split_heads(x, w.q, heads)
        k = split_heads(x if context is None else context, w.k, heads)
        scale = q.shape[-1] ** -0.5
        return explain_attention(
            weights, attention_matrix(q, k, scale, mask), q @ k.transpose(-1, -2), scale, mask
        )

    weights = Sensitivity(module, student, reference)
    return [
        weights.ignored,
        readout,
        weights.misplaced,
        lambda: token_dependence(student, reference, x, MASK_TOO_OPEN, MASK_TOO_CLOSED),
    ]


@check
def check_multi_head_attention(
    MultiHeadAttention: type,
    emb_size: int = 32,
    num_heads: int = 4,
    seq_len: int = 6,
    batch: int = 2,
    mask: str | None = None,
    dtype: torch.dtype = torch.float32,
    dropout: float = 0.0,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """Compare ``MultiHeadAttention(emb_size, num_heads)(x, mask)`` with SDPA on the judge's weights.

    Args:
        mask: None, ``"causal"`` or ``"padding"`` (boolean, True where attention is allowed).
        dropout: built with this dropout, checked in eval mode, where dropout does nothing.
        grad: also compare the gradient w.r.t. x and check every weight gets a gradient.
    """
    forbid_calls(MultiHeadAttention, SHORTCUTS, "MultiHeadAttention")
    student = subject(MultiHeadAttention, "MultiHeadAttention")
    kwargs = dict(emb_size=emb_size, num_heads=num_heads, dropout=dropout)
    what = call_text("MultiHeadAttention", **kwargs)
    for device in student.devices():
        module = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        candidates = attention_candidates(module.mirror, what)
        x = random_tensor(batch, seq_len, emb_size, seed=seed, dtype=dtype).requires_grad_(grad)
        m = make_mask(mask, batch, seq_len)
        call = f"{what}(x of shape {tuple(x.shape)}, {dtype}" + (f", {mask} mask" if mask else "")
        call += f"){on(device)}"
        masks = {} if m is None else {"mask": m}
        result = module.call(x, label=call, grad=7 if grad else None, no_grad=not grad, **masks)
        got = as_tensor(result.output, call)
        expect_shape(got, x.shape, call, "Attention maps (b, n, emb_size) to the same shape.")
        expect_dtype(got, dtype, call)
        with torch.no_grad():
            references = [sdpa_attention(x, w, num_heads, m) for w in candidates]
            if not any(close(got, r) for r in references):
                mistakes = attention_mistakes(x, candidates[0], num_heads, m)
                diagnoses = attention_diagnoses(module, x.detach(), m, call)
                expect_close(got, references[0], call, mistakes, diagnoses=diagnoses)
        weights = next(w for w, r in zip(candidates, references, strict=True) if close(got, r))
        if grad:
            expect_trained(result, call)
            expect_gradients(result, [("x", x)], lambda x: sdpa_attention(x, weights, num_heads, m), call)
        if mask is None and len(candidates) == 1 and dtype in (torch.float32, torch.float64):
            with torch.no_grad():
                expected = torch_multihead_attention(weights, num_heads)(x, x, x, need_weights=False)[0]
            expect_close(got, expected, f"{call} compared with nn.MultiheadAttention")
