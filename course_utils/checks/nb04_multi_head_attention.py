"""Checks of notebook 04: attention for one head (04.1), the shapes inside multi-head attention (04.2),
and ``MultiHeadAttention`` (04.3), each against ``scaled_dot_product_attention`` or shapes the judge computes.

The student's module gets the judge's weights; the reference and the known mistakes are computed from
the judge's copy of them (the mirror), on the judge's inputs, with the reference ops. One head's attention
is a function of the judge's q, k, v and mask; where no known mistake matches, its weights are read by
calling it with v = the identity over the keys.
"""

import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from course_utils.checks.diagnose import (
    Sensitivity,
    explain_attention,
    first_of,
    masked_weight,
    read_attention,
    rows_sum_to_one,
    temperature,
    token_dependence,
)
from course_utils.checks.parts import (
    GRAD_SEED,
    attention_candidates,
    attention_matrix,
    cross_sdpa,
    expect_gradients,
    expect_trained,
    make_mask,
)
from course_utils.feedback import (
    Diagnosis,
    Mistake,
    as_tensor,
    call_text,
    check,
    close,
    expect_close,
    expect_dtype,
    expect_shape,
    fail,
    failure,
    forbid_calls,
    on,
    random_tensor,
    tolerance_of,
)
from course_utils.judge import Instance, opaque_name, subject
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


def attention_diagnoses(
    module: Instance, x: Tensor, mask: Tensor | None, call: str, context: Tensor | None = None
) -> list:
    """General diagnostics of an attention module's output (self-attention, or cross-attention to
    ``context``): its attention weights read off it, which positions each output depends on, which
    weights it responds to."""
    mirror, heads = module.mirror, module.mirror.num_heads

    def reference(inputs: Tensor = x) -> Tensor:
        weights = attention_candidates(mirror, call)[0]
        if context is None:
            return sdpa_attention(inputs, weights, heads, mask)
        return cross_sdpa(inputs, context, weights, heads, mask)

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
        result = module.call(x, label=call, grad=GRAD_SEED if grad else None, no_grad=not grad, **masks)
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


# ----------------------------------------------------------------------------- 04.1: one head
def _single_head_mask(kind: str | None, batch: int, n_q: int, n_k: int) -> Tensor | None:
    """A mask for (b, n_q, n_k) scores: causal (n_q, n_k), or padding (b, 1, n_k); True = allowed."""
    mask = make_mask(kind, batch, n_q, n_k)
    return mask[:, 0] if kind == "padding" else mask


def single_head_mistakes(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> list[Mistake]:
    """Known mistakes of one head's attention, computed in float64 from the judge's q, k, v and mask."""
    q, k, v = q.double(), k.double(), v.double()
    n_q, n_k, d, d_v = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    scale = d**-0.5

    def sdpa(query: Tensor = q, key: Tensor = k, attn_mask: Tensor | None = mask, **kwargs) -> Tensor:
        return F.scaled_dot_product_attention(query, key, v, attn_mask=attn_mask, **kwargs)

    def filled(allowed: Tensor | None, value: float = float("-inf")) -> Tensor:
        scores = q @ k.transpose(-2, -1) * scale
        return scores if allowed is None else scores.masked_fill(~allowed, value)

    mistakes = [
        Mistake(
            "scores not scaled",
            "divide the scores q·kᵀ by sqrt(d) before the softmax.",
            lambda: sdpa(scale=1.0),
        ),
        Mistake(
            "scaled after the softmax",
            "divide the scores q·kᵀ by sqrt(d) before the softmax, not the weights (or the output) after it.",
            lambda: sdpa(scale=1.0) * scale,
        ),
        Mistake(
            "scores multiplied by sqrt(d) instead of divided by it",
            f"d = {d}: divide the scores by sqrt(d) (or multiply them by d ** -0.5).",
            lambda: sdpa(scale=d**0.5),
        ),
        Mistake(
            "scores divided by d instead of sqrt(d)",
            "the scale is 1 / sqrt(d), the square root of the queries' width.",
            lambda: sdpa(scale=1.0 / d),
        ),
        *(
            Mistake(
                "softmax over the wrong axis",
                "each query's weights over the keys must sum to 1: softmax over the last axis (dim=-1) "
                "of the (b, n_q, n_k) scores.",
                lambda dim=dim: filled(mask).softmax(dim=dim) @ v,
            )
            for dim in (-2, 0)
        ),
        Mistake(
            "masked scores set to 0 instead of -inf",
            "a score of 0 still gets the weight exp(0) in the softmax: fill the forbidden scores with "
            "float('-inf'), whose weight is exactly 0.",
            lambda: None if mask is None else filled(mask, 0.0).softmax(-1) @ v,
        ),
    ]
    if d_v != d:
        mistakes.append(
            Mistake(
                "scaled by sqrt(d_v), the width of the values",
                f"the scale comes from the queries and keys: d = q.shape[-1] = {d}, while v has {d_v} "
                "features.",
                lambda: sdpa(scale=d_v**-0.5),
            )
        )
    if n_q == n_k:
        masks = [None] if mask is None else [mask, mask.transpose(-1, -2)]
        mistakes += [
            Mistake(
                "queries and keys swapped",
                "the scores are q·kᵀ, (b, n_q, d) times (b, d, n_k): row i holds query i's scores over "
                "the keys.",
                lambda m=m: sdpa(query=k, key=q, attn_mask=m),
            )
            for m in masks
        ]
    if mask is not None:
        mistakes += [
            Mistake(
                "mask ignored",
                "where mask is False, fill the scores with float('-inf') before the softmax.",
                lambda: sdpa(attn_mask=None),
            ),
            *(
                Mistake(
                    "mask inverted",
                    "mask is True where attention is allowed: fill the scores where the mask is False "
                    "(~mask).",
                    lambda fill=fill: _where_fully_masked(sdpa(attn_mask=~mask), ~mask, fill, v),
                )
                for fill in ("nan", "mean")
            ),
            Mistake(
                "mask applied after the softmax",
                "mask the scores before the softmax, so that the allowed weights still sum to 1.",
                lambda: (filled(None).softmax(-1) * mask) @ v,
            ),
        ]
    return mistakes


def _single_head_weights(attend: Callable[[Tensor], Any], q: Tensor, k: Tensor) -> Tensor | None:
    """The student's attention weights (b, n_q, n_k), read by calling their function with v = the
    identity over the keys, which makes the output the weights themselves. None where that fails."""
    b, n_k = k.shape[0], k.shape[-2]
    try:
        out = attend(torch.eye(n_k, dtype=q.dtype).expand(b, n_k, n_k).contiguous())
    except AssertionError:
        return None
    if not isinstance(out, Tensor) or tuple(out.shape) != (*q.shape[:-1], n_k) or not out.is_floating_point():
        return None
    return out.detach().cpu().double()


def _explain_single_head(
    weights: Tensor | None, q: Tensor, k: Tensor, mask: Tensor | None
) -> Diagnosis | None:
    """What one head's attention weights show: rows that do not sum to 1, weight on masked keys, the
    scores' temperature, a transposed matrix, or right weights with an error after them."""
    if weights is None:
        return None
    q64, k64 = q.double(), k.double()
    scale = q.shape[-1] ** -0.5
    found = first_of(
        lambda: rows_sum_to_one(weights, "attention"),
        lambda: masked_weight(weights, mask),
        lambda: temperature(weights, q64 @ k64.transpose(-2, -1), scale, mask),
    )
    if found is not None:
        return found
    expected = attention_matrix(q64, k64, scale, mask)
    tolerance = tolerance_of(q.dtype)
    if close(weights, expected, tolerance):
        return Diagnosis(
            "error after the attention weights",
            "your attention weights are right (read with v = the identity, which makes the output the "
            "weights themselves), but the output is not: the error comes after them",
            "the output is the weights times the values: (b, n_q, n_k) @ (b, n_k, d_v) -> (b, n_q, d_v)",
        )
    if weights.shape[-1] == weights.shape[-2] and close(weights, expected.transpose(-1, -2), tolerance):
        return Diagnosis(
            "attention matrix transposed",
            "your attention matrix is transposed: row i must hold query i's weights over the keys",
            "the scores are q·kᵀ, with the queries along the rows; softmax over the last axis",
        )
    return None


def _single_head_shape_hint(got: Tensor, b: int, n_q: int, n_k: int, d: int, d_v: int) -> str:
    """Name what a wrong output shape shows, where it shows something."""
    shape = tuple(got.shape)
    if shape == (b, n_q, n_k):
        return (
            "That is the shape of the attention weights: multiply them by v to get one d_v-vector per query."
        )
    if shape == (b, n_k, d_v) or shape == (b, n_k, n_q):
        return "One output row per query: are q and k swapped? The scores are q·kᵀ, (b, n_q, n_k)."
    if shape == (b, n_q, d):
        return f"The output has the width of v (d_v = {d_v}), not that of q (d = {d}): is v used?"
    return "The scores are (b, n_q, n_k); the weights times v (b, n_k, d_v) give (b, n_q, d_v)."


def _single_head_error_hint(q: Tensor, k: Tensor, v: Tensor) -> str:
    b, n_q, n_k, d_v = q.shape[0], q.shape[1], k.shape[-2], v.shape[-1]
    return (
        f"q is (b, n_q, d) = {tuple(q.shape)}, k is (b, n_k, d) = {tuple(k.shape)} and v is (b, n_k, d_v) = "
        f"{tuple(v.shape)}: the scores q·kᵀ are (b, n_q, n_k) = {(b, n_q, n_k)}, and the weights times v "
        f"give (b, n_q, d_v) = {(b, n_q, d_v)}. With n_q ≠ n_k or d ≠ d_v, a product whose axes are swapped "
        "(q and k, k without its transpose, v on the wrong side) fails here."
    )


@check
def check_single_head_attention(
    attention: Callable,
    batch: int = 2,
    n_q: int = 6,
    n_k: int = 6,
    d: int = 8,
    d_v: int = 8,
    mask: str | None = None,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """Compare ``attention(q, k, v, mask=...)`` for one head with SDPA on the judge's inputs.

    Args:
        attention: the student's function; ``q`` is (batch, n_q, d), ``k`` (batch, n_k, d), ``v``
            (batch, n_k, d_v); it returns (batch, n_q, d_v).
        mask: None, ``"causal"`` ((n_q, n_k)) or ``"padding"`` ((batch, 1, n_k)), boolean, True where
            attention is allowed; passed as ``mask=``.
        grad: also compare the gradients w.r.t. q, k and v with SDPA's.
    """
    if mask not in (None, "causal", "padding"):
        raise ValueError(f"mask must be None, 'causal' or 'padding', not {mask!r}")
    forbid_calls(attention, SHORTCUTS, "attention")
    student = subject(attention, "attention")
    for device in student.devices():
        q = random_tensor(batch, n_q, d, seed=seed, dtype=dtype).requires_grad_(grad)
        k = random_tensor(batch, n_k, d, seed=seed + 1000, dtype=dtype).requires_grad_(grad)
        v = random_tensor(batch, n_k, d_v, seed=seed + 2000, dtype=dtype).requires_grad_(grad)
        m = _single_head_mask(mask, batch, n_q, n_k)
        masks = {} if m is None else {"mask": m}
        shown = f", {mask} mask of shape {tuple(m.shape)}" if m is not None else ""
        call = (
            f"attention(q of shape {tuple(q.shape)}, k of shape {tuple(k.shape)}, v of shape {tuple(v.shape)}"
            f"{shown}), {dtype}{on(device)}"
        )
        try:
            result = student.call(
                q, k, v, label=call, device=device, grad=GRAD_SEED if grad else None, **masks
            )
        except AssertionError as err:
            raised = str(err).partition(" raised ")[2]
            if getattr(err, "kind", "") == "error" and ("size" in raised or "shape" in raised):
                hint = _single_head_error_hint(q, k, v)
                raise failure(f"{err}\nHint: {hint}", err.mistake, err.kind) from err.__cause__
            raise
        if result.changed_inputs:
            fail(f"{call} changed its {result.changed_inputs[0]} in place: build new tensors instead.")
        got = as_tensor(result.output, call)
        expect_shape(got, (batch, n_q, d_v), call, _single_head_shape_hint(got, batch, n_q, n_k, d, d_v))
        expect_dtype(got, dtype, call)
        with torch.no_grad():
            expected = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
            q0, k0 = q.detach(), k.detach()

            def attend(values: Tensor) -> Any:
                return student.call(q0, k0, values, label=call, device=device, **masks).output

            expect_close(
                got,
                expected,
                call,
                single_head_mistakes(q0, k0, v.detach(), m),
                diagnoses=[lambda: _explain_single_head(_single_head_weights(attend, q0, k0), q0, k0, m)],
            )
        if grad:
            expect_gradients(
                result,
                [("q", q), ("k", k), ("v", v)],
                lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                call,
            )


# ----------------------------------------------------------------------------- 04.2: the shapes
SHAPES = {
    "queries": "the queries after the split into heads",
    "energy": "the scores q·kᵀ (energy)",
    "att": "the attention weights after the softmax",
    "out_heads": "the output of the heads, before they are merged",
    "out": "the output after the heads are merged",
}


def attention_shapes_of(b: int, n: int, emb_size: int, num_heads: int) -> dict[str, tuple[int, ...]]:
    """The judge's shapes inside ``MultiHeadAttention.forward`` for x of shape (b, n, emb_size)."""
    h, d = num_heads, emb_size // num_heads
    return {
        "queries": (b, h, n, d),
        "energy": (b, h, n, n),
        "att": (b, h, n, n),
        "out_heads": (b, h, n, d),
        "out": (b, n, emb_size),
    }


def shape_mistakes(b: int, n: int, emb_size: int, num_heads: int) -> dict[str, list[tuple[tuple, str, str]]]:
    """For each key, anticipated wrong shapes: (shape, the mistake's name, a hint)."""
    h, d, e = num_heads, emb_size // num_heads, emb_size
    swapped = (
        "heads and head_dim swapped",
        (
            f"there are num_heads = {h} heads, each of head_dim = emb_size // num_heads = {d} features: "
            "the heads axis holds num_heads"
        ),
    )
    heads_after_tokens = (
        "the heads axis after the tokens axis",
        (
            "the split puts the heads right after the batch, (b, h, n, d), so that each head is a batch of "
            "(n, d) matrices for the products that follow"
        ),
    )
    no_heads = (
        "the heads axis missing",
        "every head has its own scores: one (n, n) matrix per head, (b, h, n, n)",
    )
    like_queries = (
        "scores shaped like the queries",
        (
            "q·kᵀ pairs every query with every key: its last two axes are (n queries, n keys); "
            "head_dim is summed over"
        ),
    )
    split = [
        ((b, d, n, h), *swapped),
        ((b, n, h, d), *heads_after_tokens),
        (
            (b, n, e),
            "not split into heads",
            "the split turns (b, n, emb_size) into num_heads heads of head_dim",
        ),
        (
            (b, h, n, e),
            "head_dim taken as emb_size",
            f"each head works on emb_size // num_heads = {d} features",
        ),
    ]
    scores = [
        ((b, n, n), *no_heads),
        ((b, d, n, n), *swapped),
        ((b, h, n, d), *like_queries),
        (
            (b, h, d, d),
            "summed over the tokens instead of head_dim",
            "q·kᵀ sums over head_dim, leaving (n, n)",
        ),
    ]
    merged = [
        ((b, n, h, d), "heads not merged", "the merge joins the heads and head_dim axes back into emb_size"),
        ((b, h, n, d), "heads not merged", "the merge joins the heads and head_dim axes back into emb_size"),
        ((b, h * n, d), "heads merged into the tokens axis", "merge heads with head_dim: (b, n, h·d)"),
    ]
    return {
        "queries": split,
        "energy": scores,
        "att": [*scores, ((b, h, n), "softmax reduced an axis", "the softmax keeps the shape of the scores")],
        "out_heads": [
            (
                (b, h, n, n),
                "the weights not applied to the values",
                "att times the values gives head_dim per query",
            ),
            (
                (b, n, e),
                "merged before the question asks",
                "this is the output of the heads, before the merge",
            ),
            ((b, d, n, h), *swapped),
            ((b, n, h, d), *heads_after_tokens),
        ],
        "out": merged,
    }


def _as_shape(value: Any) -> tuple[int, ...] | None:
    """A shape from a tuple, list or torch.Size of whole numbers; None for anything else."""
    if isinstance(value, tuple | list) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    ):
        return tuple(int(v) for v in value)
    return None


@check
def check_attention_shapes(
    attention_shapes: Callable, b: int = 3, n: int = 10, emb_size: int = 48, num_heads: int = 4
) -> None:
    """Compare ``attention_shapes(b, n, emb_size, num_heads)``, a dict of the shapes inside
    ``MultiHeadAttention.forward`` (keys ``queries``, ``energy``, ``att``, ``out_heads``, ``out``), with the
    judge's, naming the mistakes a shape shows."""
    if emb_size % num_heads:
        raise ValueError(f"emb_size ({emb_size}) must be divisible by num_heads ({num_heads})")
    student = subject(attention_shapes, "attention_shapes")
    args = dict(b=b, n=n, emb_size=emb_size, num_heads=num_heads)
    what = call_text("attention_shapes", **args)
    got = student.call(label=what, **args).output
    if not isinstance(got, dict):
        kind = opaque_name(got) or type(got).__name__
        fail(f"{what} returned a {kind}; expected a dict with the keys {', '.join(map(repr, SHAPES))}.")
    missing = [key for key in SHAPES if key not in got]
    if missing:
        fail(
            f"{what}: the dict has no key {missing[0]!r} ({SHAPES[missing[0]]}); its keys are {sorted(got)}."
        )
    expected, mistakes = attention_shapes_of(**args), shape_mistakes(**args)
    for key, shape in expected.items():
        value = _as_shape(got[key])
        where = f"{what}[{key!r}], {SHAPES[key]}"
        if value is None:
            fail(f"{where}: expected a tuple of whole numbers such as {shape}, got {got[key]!r}.")
        if value == shape:
            continue
        for wrong, name, hint in mistakes[key]:
            if value == wrong:
                fail(
                    f"{where}: expected {shape}, got {value}: this is the known mistake {name}."
                    f"\nHint: {hint}.",
                    name,
                    "known",
                )
        fail(
            f"{where}: expected {shape}, got {value}. With b={b}, n={n}, num_heads={num_heads} and "
            f"head_dim = emb_size // num_heads = {emb_size // num_heads}, name each axis of your shape."
        )
