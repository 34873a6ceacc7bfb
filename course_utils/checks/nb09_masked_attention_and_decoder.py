"""Checks of notebook 09: masks, cross-attention, the decoder block, causality and shift right.

References come from PyTorch: ``nn.Transformer.generate_square_subsequent_mask`` for the causal
mask, ``F.scaled_dot_product_attention`` for cross-attention and ``nn.TransformerDecoderLayer``
(holding a copy of the student's weights) for the decoder block. Known mistakes are recognised
by recomputing the output the mistake would give.
"""

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import permutations, product

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from course_utils.checks.nb04_multi_head_attention import SHORTCUTS
from course_utils.checks.nb04_multi_head_attention import attention_mistakes as self_attention_mistakes
from course_utils.checks.nb07_transformer_encoder import randomise_norms
from course_utils.device import check_devices
from course_utils.feedback import (
    Mistake,
    as_tensor,
    build,
    call_text,
    check,
    close,
    expect_close,
    expect_dtype,
    expect_shape,
    fail,
    forbid_calls,
    on,
    random_tensor,
    run_student,
)
from course_utils.reference import (
    AttentionWeights,
    attention_weights_of,
    find_layers,
    sdpa_attention,
    split_heads,
    torch_decoder_layer,
)
from course_utils.sequences import BOS, EOS, PAD, VOCAB_SIZE

EXACT = (0.0, 0.0)
FP16_HINT = (
    "float16 holds numbers up to 65504 only: fill the masked scores with float('-inf') "
    "(or torch.finfo(dtype).min)."
)


# ----------------------------------------------------------------------------- masks
def _bool_result(got, what: str) -> Tensor:
    """The student's mask as a tensor; a 0/1 mask of another dtype is named, not accepted."""
    if isinstance(got, torch.Tensor) and got.dtype != torch.bool:
        fail(
            f"{what} returned a tensor of dtype {got.dtype}; the course's masks are boolean, "
            "True where attention is allowed. Create it with dtype=torch.bool or add .bool(): "
            "masked_fill(~mask, ...) needs a boolean mask, and SDPA would add a float mask to "
            "the scores instead of blocking them."
        )
    got = as_tensor(got, what)
    expect_dtype(got, torch.bool, what, "Return a boolean mask (dtype=torch.bool).")
    return got


@check
def check_causal_mask(causal_mask: Callable, sizes: tuple[int, ...] = (5,)) -> None:
    """``causal_mask(n)``: an (n, n) boolean mask, True on and below the diagonal."""
    for n in sizes:
        what = f"causal_mask({n})"
        got = _bool_result(run_student(what, causal_mask, n), what)
        expect_shape(got, (n, n), what, "One row per query position, one column per key position.")
        blocked = nn.Transformer.generate_square_subsequent_mask(n)  # 0 allowed, -inf blocked
        expected = blocked == 0
        ones = torch.ones(n, n, dtype=torch.bool)
        mistakes = [
            Mistake(
                "mask transposed (True above the diagonal)",
                "row t is query position t: it may attend to the keys 0..t, the columns on and "
                "left of the diagonal, i.e. the lower triangle (tril), not the upper one.",
                lambda: expected.T,
            ),
            Mistake(
                "mask inverted (True where attention is NOT allowed)",
                "in this course a mask is True where attention is allowed (as SDPA's boolean "
                "attn_mask); nn.Transformer's masks mean the opposite.",
                lambda: ~expected,
            ),
            Mistake(
                "off by one: the diagonal excluded",
                "each position may attend to itself: keep the diagonal (tril with diagonal=0).",
                lambda: ones.tril(-1),
            ),
            Mistake(
                "off by one: position t may see position t + 1",
                "True on and below the diagonal only (tril with diagonal=0).",
                lambda: ones.tril(1),
            ),
        ]
        expect_close(got.double(), expected.double(), what, mistakes, tolerance=EXACT)


def _tokens(batch: int, seq_len: int, pad: int, seed: int) -> tuple[Tensor, Tensor]:
    """Digit strings of random lengths followed by ``pad``; and which positions are real."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
    lengths[0] = seq_len  # one full row
    lengths[-1] = max(1, seq_len // 2) if batch > 1 else lengths[-1]
    digits = torch.randint(3, VOCAB_SIZE, (batch, seq_len), generator=generator)
    digits[digits == pad] = 3 if pad != 3 else 4
    real = torch.arange(seq_len) < lengths[:, None]
    return torch.where(real, digits, pad), real


@check
def check_padding_mask(
    padding_mask: Callable, batch: int = 3, seq_len: int = 6, pad: int = PAD, seed: int = 0
) -> None:
    """``padding_mask(tokens, pad)``: (b, 1, 1, n) boolean, True for real tokens (the keys)."""
    tokens, real = _tokens(batch, seq_len, pad, seed)
    before = tokens.clone()
    what = f"padding_mask(tokens of shape {tuple(tokens.shape)}" + (f", pad={pad})" if pad != PAD else ")")
    got = (
        run_student(what, padding_mask, tokens)
        if pad == PAD
        else run_student(what, padding_mask, tokens, pad=pad)
    )
    got = _bool_result(got, what)
    if not torch.equal(tokens, before):
        fail(f"{what} changed the tokens it was given: compare, do not assign.")
    expected = real[:, None, None, :]
    if tuple(got.shape) != tuple(expected.shape):
        shape = tuple(got.shape)
        hint = (
            f"The mask is broadcast against the attention scores of shape (b, h, n_query, n_key) = "
            f"({batch}, h, n_query, {seq_len}): it needs one entry per sequence (b) and per key (the "
            "last axis), and size-1 axes for the heads and the queries: (b, 1, 1, n), e.g. "
            "mask[:, None, None, :]."
        )
        if shape == (batch, seq_len):
            hint = (
                f"A (b, n) mask would line up with the last two axes (n_query, n_key) of the scores, "
                f"not with (b, ..., n_key). {hint}"
            )
        elif got.numel() == expected.numel():
            hint = f"The keys must be the last axis. {hint}"
        fail(f"{what}: expected shape {tuple(expected.shape)}, got {shape}. {hint}")
    mistakes = [
        Mistake(
            "mask inverted (True at the padding)",
            "True marks the real tokens, which may be attended to: tokens != pad.",
            lambda: ~expected,
        ),
    ]
    if pad != PAD:
        mistakes.append(
            Mistake(
                f"the pad argument ignored (padding taken to be {PAD})",
                "compare the tokens with the `pad` argument, not with a fixed number.",
                lambda: (tokens != PAD)[:, None, None, :],
            )
        )
    expect_close(got.double(), expected.double(), what, mistakes, tolerance=EXACT)


# ----------------------------------------------------------------------------- cross-attention
def cross_sdpa(
    x: Tensor,
    context: Tensor,
    weights: AttentionWeights,
    num_heads: int,
    mask: Tensor | None = None,
    sources: str = "xcc",
    after_softmax: bool = False,
) -> Tensor:
    """Cross-attention through SDPA: queries from ``x``, keys and values from ``context``.

    ``sources`` says where the queries, keys and values come from ("x" or "c"), to recompute
    mistakes; ``after_softmax`` applies the mask to the weights after the softmax.
    """
    inputs = {"x": x, "c": context}
    q, k, v = (
        split_heads(inputs[s], p, num_heads)
        for s, p in zip(sources, (weights.q, weights.k, weights.v), strict=True)
    )
    if after_softmax:
        eye = torch.eye(k.shape[-2], dtype=q.dtype, device=q.device).expand(*k.shape[:-1], -1)
        att = F.scaled_dot_product_attention(q, k, eye)
        out = (att * mask) @ v if mask is not None else att @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.linear(rearrange(out, "b h n d -> b n (h d)"), *weights.out)


def _attention_mask(kind: str | None, batch: int, n_query: int, n_key: int, device) -> Tensor | None:
    """None; ``"padding"``: (b, 1, 1, n_key), later keys padded; ``"rectangular"``: (n_query, n_key)."""
    if kind is None:
        return None
    keys = torch.arange(n_key, device=device)
    if kind == "padding":
        lengths = torch.arange(batch, device=device) % max(n_key - 1, 1) + (n_key + 1) // 2
        return (keys < lengths[:, None])[:, None, None, :]
    queries = torch.arange(n_query, device=device)
    # a staircase: query i sees the first keys, more of them the later it comes; never none
    return keys[None, :] * max(n_query - 1, 1) <= queries[:, None] * max(n_key - 1, 1)


def _call_attention(module, x, mask, context, label):
    kwargs = {} if mask is None else {"mask": mask}
    if context is not None:
        kwargs["context"] = context
    try:
        return run_student(label, module, x, **kwargs)
    except AssertionError as err:
        cause = err.__cause__
        if isinstance(cause, TypeError) and "context" in str(cause):
            fail(
                f"{label}: forward does not take `context`. Give it the signature "
                "forward(self, x, mask=None, context=None): queries from x, keys and values from "
                "context (x when context is None)."
            )
        raise


def _cross_mistakes(x, context, w, heads, mask) -> list[Mistake]:
    def maybe(fn):
        def output():
            try:
                return fn()
            except RuntimeError:  # the mistake cannot even run at these shapes
                return None

        return output

    decoder_states = (
        "keys and values come from context (the encoder's output, the memory): "
        "self.keys(context), self.values(context); only the queries come from x."
    )
    mistakes = [
        Mistake(
            "the decoder's own states used as keys/values (keys and values from x)",
            decoder_states,
            maybe(lambda: cross_sdpa(x, context, w, heads, mask, "xxx")),
        ),
        Mistake(
            "the decoder's own states used as keys (keys from x, values from context)",
            decoder_states,
            maybe(lambda: cross_sdpa(x, context, w, heads, mask, "xxc")),
        ),
        Mistake(
            "keys from context but values from x",
            decoder_states,
            maybe(lambda: cross_sdpa(x, context, w, heads, mask, "xcx")),
        ),
        Mistake(
            "queries from context, keys and values from x",
            "queries come from x (one output per decoder position), keys and values from context.",
            maybe(lambda: cross_sdpa(x, context, w, heads, mask, "cxx")),
        ),
    ]
    if mask is not None:
        mistakes += [
            Mistake(
                "mask ignored",
                "fill the scores where mask is False with -inf before the softmax: "
                "energy.masked_fill(~mask, float('-inf')).",
                lambda: cross_sdpa(x, context, w, heads, None),
            ),
            Mistake(
                "mask applied after the softmax",
                "mask the scores before the softmax, so that the allowed weights still sum to 1.",
                lambda: cross_sdpa(x, context, w, heads, mask, after_softmax=True),
            ),
            Mistake(
                "mask transposed",
                "the mask lines up with the scores (b, h, n_query, n_key): rows are the queries "
                "(from x), columns the keys (from context). Use it as it comes.",
                maybe(lambda: cross_sdpa(x, context, w, heads, mask.transpose(-1, -2))),
            ),
        ]
    return mistakes


def _overflow(err: AssertionError) -> bool:
    return "overflow" in str(err) and "Half" in str(err)


@check
def check_cross_attention(
    MultiHeadAttention: type,
    emb_size: int = 32,
    num_heads: int = 4,
    n_query: int = 5,
    n_key: int = 7,
    batch: int = 2,
    mask: str | None = None,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """``MultiHeadAttention(emb_size, num_heads)(x, mask, context)`` against SDPA on its weights.

    x is (b, n_query, e), context (b, n_key, e): queries from x, keys and values from context.

    Args:
        mask: None, ``"padding"`` (b, 1, 1, n_key) or ``"rectangular"`` (n_query, n_key);
            boolean, True where attention is allowed.
        grad: also compare the gradients w.r.t. x and context.
    """
    forbid_calls(MultiHeadAttention, SHORTCUTS, "MultiHeadAttention")
    kwargs = dict(emb_size=emb_size, num_heads=num_heads)
    what = call_text("MultiHeadAttention", **kwargs)
    for device in check_devices():
        module = build(MultiHeadAttention, seed, **kwargs).to(device, dtype)
        try:
            candidates = attention_weights_of(module)
        except AttributeError as err:
            fail(
                f"{what}: {err}. Keep the skeleton's layers: queries, keys and values "
                "(or one fused qkv) and projection, and self.num_heads."
            )
        x = random_tensor(batch, n_query, emb_size, seed=seed, dtype=dtype, device=device)
        context = random_tensor(batch, n_key, emb_size, seed=seed + 1, dtype=dtype, device=device)
        m = _attention_mask(mask, batch, n_query, n_key, device)

        # without context it is still self-attention
        label = f"{what}(x of shape {tuple(x.shape)}, {dtype}){on(device)}"
        with torch.no_grad():
            got = as_tensor(_call_attention(module, x, None, None, label), label)
            expect_shape(got, x.shape, label)
            references = [sdpa_attention(_up(x), _float(w), num_heads).to(dtype) for w in candidates]
            if not any(close(got, r) for r in references):
                expect_close(
                    got,
                    references[0],
                    f"{label}, without context (self-attention)",
                    self_attention_mistakes(x, candidates[0], num_heads, None),
                    hint="Without context the module is the self-attention of notebook 04.",
                )
            weights = next(w for w, r in zip(candidates, references, strict=True) if close(got, r))

        x.requires_grad_(grad)
        context.requires_grad_(grad)
        label = (
            f"{what}(x of shape {tuple(x.shape)}, "
            + (f"mask of shape {tuple(m.shape)}, " if m is not None else "")
            + f"context=context of shape {tuple(context.shape)}, {dtype}){on(device)}"
        )
        try:
            got = as_tensor(_call_attention(module, x, m, context, label), label)
        except AssertionError as err:
            _explain_cross_failure(err, module, weights, x, context, mask, label)
            raise
        expect_shape(
            got,
            x.shape,
            label,
            "One output per query: the queries come from x, so the result has x's length "
            f"({n_query}), whatever the length of context ({n_key}).",
        )
        expect_dtype(
            got,
            dtype,
            label,
            "Keep the dtype of x: mixing in a tensor of another dtype (e.g. a float32 mask "
            "of -1e9 added to float16 scores) promotes the result.",
        )
        expected = cross_sdpa(_up(x), _up(context), _float(weights), num_heads, m).to(dtype)
        with torch.no_grad():
            expect_close(got, expected, label, _cross_mistakes(x, context, weights, num_heads, m))
        if grad:
            params = [p for p in module.parameters() if p.requires_grad]
            direction = torch.randn_like(got)
            grads = run_student(
                f"backward through {label}",
                torch.autograd.grad,
                (got * direction).sum(),
                [x, context, *params],
                allow_unused=True,
            )
            names = [n for n, p in module.named_parameters() if p.requires_grad]
            for name, g in zip(names, grads[2:], strict=True):
                if g is None or not g.any():
                    fail(f"{label}: no gradient reaches `{name}`. Is part of forward detached?")
            expected_grads = torch.autograd.grad((expected * direction).sum(), [x, context])
            for name, g, e in zip(("x", "context"), grads[:2], expected_grads, strict=True):
                if g is None:
                    fail(f"{label}: no gradient reaches {name}: is it used, and not detached?")
                expect_close(g, e, f"gradient w.r.t. {name} of {label}")


def _up(t: Tensor | None) -> Tensor | None:
    """float16 and bfloat16 as float32, for a reference computed at full precision."""
    return t if t is None or t.dtype in (torch.float32, torch.float64) else t.float()


def _float(w: AttentionWeights) -> AttentionWeights:
    """The weights as :func:`_up` makes them."""
    return AttentionWeights(*((_up(a), _up(b)) for a, b in (w.q, w.k, w.v, w.out)))


def _explain_cross_failure(err, module, weights, x, context, mask_kind, label) -> None:
    """The student's call raised: name the mistake if the same call at equal lengths shows it."""
    if _overflow(err):
        fail(
            f"{label} raised {type(err.__cause__).__name__}: {err.__cause__}\nThis is the known "
            f"mistake masked scores filled with a large negative number such as -1e9.\nHint: {FP16_HINT}"
        )
    batch, n_query = x.shape[:2]
    with torch.no_grad():
        x_, same = x.detach(), random_tensor(*x.shape, seed=99, dtype=x.dtype, device=x.device)
        m = _attention_mask(mask_kind, batch, n_query, n_query, x.device)
        if m is not None:  # an asymmetric square mask, so that a transposed one shows
            m = m & torch.ones(n_query, n_query, dtype=torch.bool, device=x.device).tril()
        try:
            got = run_student(label, module, x_, **({"mask": m} if m is not None else {}), context=same)
        except AssertionError:
            return
        if tuple(got.shape) != tuple(x.shape):
            return
        w = weights
        heads = module.num_heads
        for mistake in _cross_mistakes(x_, same, w, heads, m):
            variant = mistake.output()
            if variant is not None and close(got, variant.to(got.dtype)):
                fail(
                    f"{label} raised {type(err.__cause__).__name__}: {err.__cause__}\n"
                    f"With a context as long as x it runs, and matches a known mistake: "
                    f"{mistake.name}.\nHint: {mistake.hint}"
                )
        if close(got, cross_sdpa(x_, same, w, heads, m)):
            fail(
                f"{label} raised {type(err.__cause__).__name__}: {err.__cause__}\n"
                "It works when context is as long as x, so somewhere a length of x is used for "
                "the keys: the scores are (b, h, n_query, n_key), keys and values both come "
                "from context, and the mask broadcasts against (b, h, n_query, n_key)."
            )


# ----------------------------------------------------------------------------- decoder block
FORBIDDEN = (
    nn.TransformerDecoderLayer,
    nn.TransformerDecoder,
    nn.TransformerEncoderLayer,
    nn.Transformer,
    nn.MultiheadAttention,
)


class _Parts:
    """A student's decoder block taken apart: two attentions, three norms, two Linears."""

    def __init__(self, block: nn.Module, what: str, x: Tensor) -> None:
        if any(isinstance(m, FORBIDDEN) for m in block.modules()):
            fail(
                f"{what}: build the block from your own MultiHeadAttention, nn.LayerNorm and "
                "FeedForwardBlock; PyTorch's Transformer layers are what it is checked against."
            )
        attentions = [
            m
            for m in block.modules()
            if hasattr(m, "projection") and (hasattr(m, "queries") or hasattr(m, "qkv"))
        ]
        if len(attentions) == 1:
            fail(
                f"{what}: one MultiHeadAttention serves as both self-attention and "
                "cross-attention. Create two, each with its own weights."
            )
        if len(attentions) != 2:
            fail(
                f"{what}: expected two MultiHeadAttention modules inside (self-attention and "
                f"cross-attention), found {len(attentions)}."
            )
        norms = find_layers(block, nn.LayerNorm)
        if len(norms) in (1, 2):
            fail(
                f"{what}: found {len(norms)} distinct nn.LayerNorm where a pre-norm decoder block has "
                "3, one per sublayer: this is the known mistake a LayerNorm shared between sublayers. "
                "Hint: create a new nn.LayerNorm(emb_size) for each of the three sublayers "
                "(self-attention, cross-attention, feed-forward); each learns its own scale and shift."
            )
        if len(norms) != 3:
            fail(f"{what}: a pre-norm decoder block has three nn.LayerNorm layers; found {len(norms)}.")
        inside = {id(m) for a in attentions for m in a.modules()}
        linears = [m for m in find_layers(block, nn.Linear) if id(m) not in inside]
        if len(linears) != 2:
            fail(f"{what}: expected a FeedForwardBlock with two nn.Linear layers, found {len(linears)}.")
        self.what = what
        self.attentions = attentions
        self.weights = [_read_attention(a, x, what) for a in attentions]
        self.heads = attentions[0].num_heads
        self.norms = norms
        emb_size = x.shape[-1]
        self.linears = [
            (first, second)
            for first, second in (linears, linears[::-1])
            if first.in_features == second.out_features == emb_size
            and first.out_features == second.in_features
        ]
        if not self.linears:
            fail(
                f"{what}: the feed-forward block's two nn.Linear layers should map emb_size = {emb_size} "
                f"to a hidden size and back; found {[(m.in_features, m.out_features) for m in linears]}."
            )

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Record the order in which forward calls the attentions and norms, and which gets a context."""
        self.calls = []

        def record(module, args, kwargs):
            self.calls.append((module, kwargs.get("context") is not None or len(args) > 2))

        hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in self.attentions + self.norms]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()
            self._order_by_calls()

    def _order_by_calls(self) -> None:
        """Self-attention first, then cross-attention (the one given a context); norms as called."""
        called = [id(m) for m, _ in self.calls]
        cross = {id(m) for m, with_context in self.calls if with_context and m in self.attentions}
        pairs = list(zip(self.attentions, self.weights, strict=True))
        if len(cross) == 1:
            pairs.sort(key=lambda pair: id(pair[0]) in cross)
        else:
            pairs.sort(key=lambda pair: called.index(id(pair[0])) if id(pair[0]) in called else len(called))
        self.attentions, self.weights = [a for a, _ in pairs], [w for _, w in pairs]
        self.norms.sort(key=lambda n: called.index(id(n)) if id(n) in called else len(called))

    def layer(self, order=(0, 1), norms=(0, 1, 2), linears=0, norm_first=True) -> nn.TransformerDecoderLayer:
        return torch_decoder_layer(
            tuple(self.norms[i] for i in norms),
            self.weights[order[0]],
            self.weights[order[1]],
            tuple(self.linears[linears]),
            self.heads,
            norm_first,
        )

    def candidates(self):
        """Every reading of the parts as an nn.TransformerDecoderLayer, registration order first."""
        for order, norms, linears in product(
            ((0, 1), (1, 0)), permutations(range(3)), range(len(self.linears))
        ):
            yield self.layer(order, norms, linears)


def _read_attention(mha: nn.Module, x: Tensor, what: str) -> AttentionWeights:
    """The attention's weights, once its self-attention path is known to be right."""
    with torch.no_grad():
        got = run_student(f"the MultiHeadAttention inside {what}", mha, x)
        for weights in attention_weights_of(mha):
            if close(got, sdpa_attention(x, weights, mha.num_heads)):
                return weights
    fail(
        f"{what}: a MultiHeadAttention inside does not match scaled_dot_product_attention. "
        "Fix it first: run check_multi_head_attention(MultiHeadAttention)."
    )


def _nn_masks(tgt_mask: Tensor | None, memory_mask: Tensor | None) -> dict:
    """The course's masks (True = allowed) as nn.TransformerDecoderLayer's (True = blocked)."""
    return {
        "tgt_mask": None if tgt_mask is None else ~tgt_mask,
        "memory_key_padding_mask": None if memory_mask is None else ~memory_mask[:, 0, 0, :],
    }


def _decoder_mistakes(parts: _Parts, x, memory, tgt_mask, memory_mask) -> list[Mistake]:
    layer = parts.layer()
    masks = _nn_masks(tgt_mask, memory_mask)
    t_mask, m_mask = masks["tgt_mask"], masks["memory_key_padding_mask"]

    def run(norms=(0, 1, 2), residual=(True, True, True), cross=None, order="sc"):
        n = [parts.norms[i] for i in norms]
        h = x
        for step, kind in enumerate(order + "f"):
            y = n[step](h)
            if kind == "s":
                out = layer._sa_block(y, t_mask, None)
            elif kind == "c":
                out = cross(y) if cross else layer._mha_block(y, memory, None, m_mask)
            else:
                out = layer._ff_block(y)
            h = out + (h if residual[step] else 0)
        return h

    def maybe(fn):
        def output():
            try:
                return fn()
            except RuntimeError:
                return None

        return output

    def own_states(mask, padding=None):
        return lambda y: layer._mha_block(y, y, mask, padding)

    decoder_states = (
        "cross-attention takes its keys and values from the encoder's output: "
        "self.cross_attention(LN2(x), mask=memory_mask, context=memory)."
    )
    mistakes = [
        Mistake(
            "post-norm instead of pre-norm",
            "normalise before each sublayer: x + SelfAttn(LN1(x)), x + CrossAttn(LN2(x), memory), "
            "x + FFN(LN3(x)); post-norm is LN(x + Sublayer(x)).",
            lambda: parts.layer(norm_first=False)(x, memory, **masks),
        ),
        Mistake(
            "self-attention not masked",
            "pass tgt_mask to the self-attention, so that position t cannot see the later targets.",
            lambda: layer(x, memory, **{**masks, "tgt_mask": None}),
        ),
        Mistake(
            "cross-attention using the decoder's states as keys/values",
            decoder_states,
            lambda: run(cross=own_states(None)),
        ),
        Mistake(
            "cross-attention using the decoder's states as keys/values, with tgt_mask",
            decoder_states,
            maybe(lambda: run(cross=own_states(t_mask))),
        ),
        Mistake(
            "cross-attention using the decoder's states as keys/values",
            decoder_states,
            maybe(lambda: run(cross=own_states(None, m_mask))),
        ),
        Mistake(
            "tgt_mask used in cross-attention",
            "cross-attention gets memory_mask (which memory positions are real); tgt_mask belongs "
            "to the self-attention.",
            maybe(lambda: run(cross=lambda y: layer._mha_block(y, memory, t_mask, None))),
        ),
        Mistake(
            "the memory normalised by the block's LayerNorm",
            "the memory comes normalised from the encoder: pass it to cross-attention as it is; "
            "only the decoder's stream x is normalised (LN2(x)).",
            lambda: run(cross=lambda y: layer._mha_block(y, parts.norms[1](memory), None, m_mask)),
        ),
        Mistake(
            "cross-attention before self-attention",
            "the order is self-attention, cross-attention, feed-forward.",
            lambda: run(order="cs"),
        ),
    ]
    if memory_mask is not None:
        mistakes.append(
            Mistake(
                "memory_mask not applied in cross-attention",
                "pass memory_mask to the cross-attention, so that it ignores the source's padding.",
                lambda: layer(x, memory, **{**masks, "memory_key_padding_mask": None}),
            )
        )
    for i, name in enumerate(("self-attention", "cross-attention", "feed-forward block")):
        residual = tuple(j != i for j in range(3))
        mistakes.append(
            Mistake(
                f"the residual is missing around the {name}",
                "each sublayer adds its output to its input: x = x + Sublayer(LN(x)).",
                lambda residual=residual: run(residual=residual),
            )
        )
    for norms in product(range(3), repeat=3):
        if len(set(norms)) < 3:
            mistakes.append(
                Mistake(
                    "one LayerNorm used before two sublayers",
                    "each sublayer has its own LayerNorm: LN1 before self-attention, LN2 before "
                    "cross-attention, LN3 before the feed-forward block.",
                    lambda norms=norms: run(norms=norms),
                )
            )
    return mistakes


@check
def check_decoder_block(
    TransformerDecoderBlock: type,
    emb_size: int = 32,
    num_heads: int = 4,
    forward_expansion: int = 4,
    batch: int = 2,
    tgt_len: int = 5,
    memory_len: int = 7,
    tgt_mask: str | None = "causal",
    memory_mask: str | None = "padding",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """The block against ``nn.TransformerDecoderLayer(norm_first=True, activation="gelu")``.

    ``block(x, memory, tgt_mask=..., memory_mask=...)`` with x (b, tgt_len, e), memory
    (b, memory_len, e), a causal (tgt_len, tgt_len) tgt_mask and a (b, 1, 1, memory_len) padding
    memory_mask, both True where attention is allowed.
    """
    kwargs = dict(emb_size=emb_size, num_heads=num_heads, forward_expansion=forward_expansion)
    what = call_text("TransformerDecoderBlock", **kwargs)
    for device in check_devices():
        block = build(TransformerDecoderBlock, seed, **kwargs).to(device, dtype)
        randomise_norms(block, seed)
        x = random_tensor(batch, tgt_len, emb_size, seed=seed, dtype=dtype, device=device)
        memory = random_tensor(batch, memory_len, emb_size, seed=seed + 1, dtype=dtype, device=device)
        parts = _Parts(block, what, x)
        heads = {a.num_heads for a in parts.attentions}
        if heads != {num_heads}:
            fail(
                f"{what}: its attention has num_heads {sorted(heads)}, expected {num_heads}: "
                "pass num_heads on to both MultiHeadAttention modules."
            )
        t_mask = _attention_mask("rectangular", batch, tgt_len, tgt_len, device) if tgt_mask else None
        m_mask = _attention_mask(memory_mask, batch, tgt_len, memory_len, device)
        label = (
            f"{what}(x of shape {tuple(x.shape)}, memory of shape {tuple(memory.shape)}, "
            f"tgt_mask={'causal mask' if tgt_mask else None}, memory_mask="
            f"{'padding mask of shape ' + str(tuple(m_mask.shape)) if m_mask is not None else None})"
            f"{on(device)}"
        )
        before = x.clone(), memory.clone()
        with torch.no_grad():
            try:
                with parts.watching():
                    got = run_student(label, block, x, memory, tgt_mask=t_mask, memory_mask=m_mask)
                got = as_tensor(got, label)
            except AssertionError as err:
                _explain_block_failure(err, block, parts, x, t_mask, memory_mask, label)
                raise
            if not (torch.equal(x, before[0]) and torch.equal(memory, before[1])):
                fail(f"{label} changed its input x or memory: is a residual added in place (x += ...)?")
            expect_shape(got, x.shape, label, "The block maps x (b, tgt_len, e) to the same shape.")
            masks = _nn_masks(t_mask, m_mask)
            if any(close(got, layer(x, memory, **masks)) for layer in parts.candidates()):
                continue
            _check_cross_paths(parts, x, memory, m_mask, label)
            expect_close(
                got,
                parts.layer()(x, memory, **masks),
                f"{label} compared with nn.TransformerDecoderLayer(norm_first=True)",
                _decoder_mistakes(parts, x, memory, t_mask, m_mask),
            )


def _check_cross_paths(parts: _Parts, x, memory, m_mask, label) -> None:
    """On failure: is the student's MultiHeadAttention right with a context?"""
    for mha, weights in zip(parts.attentions, parts.weights, strict=True):
        try:
            got = run_student("", mha, x, mask=m_mask, context=memory)
        except AssertionError:
            got = None
        if got is None or not close(got, cross_sdpa(x, memory, weights, parts.heads, m_mask)):
            fail(
                f"{label}: the MultiHeadAttention inside does not compute cross-attention "
                "(mha(x, mask=memory_mask, context=memory)). Fix it first: run "
                "check_cross_attention(MultiHeadAttention)."
            )


def _explain_block_failure(err, block, parts, x, t_mask, memory_mask_kind, label) -> None:
    """The block raised with memory longer than x: diagnose at equal lengths."""
    if _overflow(err):
        fail(f"{label} raised {type(err.__cause__).__name__}: {err.__cause__}\nHint: {FP16_HINT}")
    batch, tgt_len = x.shape[:2]
    memory = random_tensor(*x.shape, seed=98, dtype=x.dtype, device=x.device)
    m_mask = _attention_mask(memory_mask_kind, batch, tgt_len, tgt_len, x.device)
    try:
        got = run_student(label, block, x, memory, tgt_mask=t_mask, memory_mask=m_mask)
    except AssertionError:
        return
    if not isinstance(got, Tensor) or tuple(got.shape) != tuple(x.shape):
        return
    cause = f"{label} raised {type(err.__cause__).__name__}: {err.__cause__}"
    for mistake in _decoder_mistakes(parts, x, memory, t_mask, m_mask):
        variant = mistake.output()
        if variant is not None and close(got, variant):
            fail(
                f"{cause}\nWith a memory as long as x it runs, and matches a known mistake: "
                f"{mistake.name}.\nHint: {mistake.hint}"
            )
    fail(
        f"{cause}\nIt runs when memory is as long as x: cross-attention must take its keys and "
        "values from memory (context=memory), and memory_mask (b, 1, 1, memory_len) belongs to "
        "the cross-attention."
    )


# ----------------------------------------------------------------------------- causality
def _takes_memory(module: nn.Module) -> bool:
    try:
        return "memory" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


@check
def check_causality(
    model_or_block: nn.Module | type,
    batch: int = 2,
    seq_len: int = 7,
    src_len: int = 6,
    seed: int = 0,
    **kwargs,
) -> None:
    """Changing the inputs at positions > t never changes the outputs at positions <= t.

    A decoder block (``forward(x, memory, tgt_mask=..., ...)``) gets a causal tgt_mask; a model
    (``model(src, tgt_in)``) is given tokens and must mask by itself. A class is built with
    ``kwargs`` first.
    """
    module = model_or_block
    if isinstance(module, type):
        module = build(module, seed, **kwargs)
    name = type(module).__name__
    was_training = module.training
    module.eval()
    try:
        device = next(module.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    try:
        if _takes_memory(module):
            emb_size = find_layers(module, nn.Linear)[0].in_features
            x = torch.randn(batch, seq_len, emb_size, generator=generator).to(device)
            memory = torch.randn(batch, src_len, emb_size, generator=generator).to(device)
            mask = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
            label = f"{name}(x, memory, tgt_mask=causal)"

            def run(inputs):
                return run_student(label, module, inputs, memory, tgt_mask=mask)

            def changed_after(t):
                y = x.clone()
                y[:, t + 1 :] = torch.randn(batch, seq_len - t - 1, emb_size, generator=generator).to(device)
                return y

            inputs, what = x, "the inputs x"
        else:
            src = torch.randint(3, VOCAB_SIZE, (batch, src_len), generator=generator).to(device)
            tgt = torch.randint(3, VOCAB_SIZE, (batch, seq_len), generator=generator).to(device)
            tgt[:, 0] = BOS
            label = f"{name}(src, tgt_in)"

            def run(inputs):
                return run_student(label, module, src, inputs)

            def changed_after(t):
                y = tgt.clone()
                y[:, t + 1 :] = 3 + (y[:, t + 1 :] - 3 + 1) % (VOCAB_SIZE - 3)  # another digit
                return y

            inputs, what = tgt, "the target tokens tgt_in"
        with torch.no_grad():
            reference = as_tensor(run(inputs), label)
            if reference.shape[:2] != (batch, seq_len):
                fail(
                    f"{label}: expected an output of shape ({batch}, {seq_len}, ...), "
                    f"got {tuple(reference.shape)}."
                )
            for t in range(seq_len - 1):
                out = as_tensor(run(changed_after(t)), label)
                if not close(out[:, : t + 1], reference[:, : t + 1]):
                    diff = (out[:, : t + 1] - reference[:, : t + 1]).abs().amax(dim=(0, 2))
                    first = int((diff > 0).nonzero()[0])
                    fail(
                        f"{label} is not causal: changing {what} after position {t} changed the "
                        f"output at position {first} (by up to {float(diff.max()):.3g}). The output at "
                        "position t may depend on positions 0..t only: is the causal mask passed to "
                        "the decoder's self-attention, with True on and below the diagonal?"
                    )
    finally:
        module.train(was_training)


# ----------------------------------------------------------------------------- shift right
@check
def check_shift_right(
    shift_right: Callable, batch: int = 3, seq_len: int = 6, bos: int = BOS, seed: int = 0
) -> None:
    """``shift_right(tgt, bos)``: BOS, then tgt without its last token; same shape as tgt."""
    generator = torch.Generator().manual_seed(seed)
    # draw the decoder's input first: tgt is it moved one step left, with one more token at the end
    sequence = torch.randint(3, VOCAB_SIZE, (batch, seq_len + 1), generator=generator)
    sequence[:, 0] = bos
    if seq_len > 1:  # the first row ends with EOS and padding, the others are cut off
        sequence[0, -2:] = torch.tensor([EOS, PAD])
    expected, tgt = sequence[:, :-1], sequence[:, 1:].clone()
    before = tgt.clone()
    what = f"shift_right(tgt of shape {tuple(tgt.shape)}" + (f", bos={bos})" if bos != BOS else ")")
    got = run_student(what, shift_right, tgt) if bos == BOS else run_student(what, shift_right, tgt, bos=bos)
    got = as_tensor(got, what)
    if not torch.equal(tgt, before):
        fail(f"{what} changed tgt in place: build a new tensor (torch.cat, or clone first).")
    if tuple(got.shape) == (batch, seq_len + 1):
        fail(
            f"{what}: expected shape {tuple(tgt.shape)}, got {tuple(got.shape)}: BOS is put in front, "
            "and the last target token is dropped (tgt[:, :-1]): the decoder's input is as long as the "
            "target, position t holds the token before target t."
        )
    expect_shape(got, tgt.shape, what, "The decoder's input is as long as the target.")
    if got.dtype != tgt.dtype:
        fail(f"{what}: expected dtype {tgt.dtype} (token ids), got {got.dtype}: build it from tgt's dtype.")
    first = torch.full_like(tgt[:, :1], bos)
    mistakes = [
        Mistake(
            "targets not shifted right (the decoder's input is the target itself)",
            "the input at position t is the token *before* target t: BOS, then tgt[:, :-1]. With "
            "tgt_in == tgt the model only learns to copy its input.",
            lambda: tgt,
        ),
        Mistake(
            "shifted left instead of right",
            "put BOS first and drop the last token: BOS, tgt[:, 0], ..., tgt[:, -2].",
            lambda: torch.cat([tgt[:, 1:], first], 1),
        ),
        Mistake(
            "shifted left instead of right",
            "put BOS first and drop the last token: BOS, tgt[:, 0], ..., tgt[:, -2].",
            lambda: torch.cat([tgt[:, 1:], torch.full_like(first, PAD)], 1),
        ),
        Mistake(
            "BOS missing (the first position holds padding)",
            f"the decoder's first input is the start token BOS = {bos}, not PAD.",
            lambda: torch.cat([torch.full_like(first, PAD), expected[:, 1:]], 1),
        ),
        Mistake(
            "BOS missing: torch.roll wraps the last target token around to the front",
            f"put the start token BOS = {bos} in front: torch.cat, or set column 0 after rolling.",
            lambda: torch.cat([tgt[:, -1:], expected[:, 1:]], 1),
        ),
    ]
    if bos != BOS:
        mistakes.append(
            Mistake(
                f"the bos argument ignored (BOS taken to be {BOS})",
                "put the `bos` argument in front, not a fixed number.",
                lambda: torch.cat([torch.full_like(first, BOS), expected[:, 1:]], 1),
            )
        )
    if got[:, 0].ne(bos).any() and torch.equal(got[:, 1:], expected[:, 1:]):
        mistakes.append(
            Mistake(
                "BOS missing",
                f"the decoder's first input is the start token BOS = {bos}.",
                lambda: got,
            )
        )
    expect_close(got.double(), expected.double(), what, mistakes, tolerance=EXACT)
