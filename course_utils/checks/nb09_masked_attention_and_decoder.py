"""Checks of notebook 09: masks, cross-attention, the decoder block, causality and shift right.

The student's modules get the judge's weights; every reference and known mistake is computed from the
judge's copy of them (the mirror) on the judge's inputs: ``nn.Transformer.generate_square_subsequent_mask``
for the causal mask, ``F.scaled_dot_product_attention`` for cross-attention and
``nn.TransformerDecoderLayer`` holding the mirror's weights for the decoder block. Causality needs no
reference: the student's outputs are compared with each other. Where no known mistake matches, general
diagnostics (``course_utils.checks.diagnose``) name what is wrong: a mask's pattern or a shift, fitted;
the weights a module ignores; the attention weights read off it; which positions each output sees.
"""

from collections.abc import Callable
from itertools import permutations, product
from typing import Any

import torch
from torch import Tensor, nn

from course_utils.checks import parts
from course_utils.checks.diagnose import (
    ROLES,
    Sensitivity,
    expect_arguments_used,
    of_output,
    token_dependence,
)
from course_utils.checks.nb04_multi_head_attention import SHORTCUTS, attention_diagnoses
from course_utils.checks.nb04_multi_head_attention import attention_mistakes as self_attention_mistakes
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
    forbid_calls,
    on,
    random_tensor,
)
from course_utils.judge import Instance, Result, name_of, subject
from course_utils.mirror import build_mirror
from course_utils.probe import describe
from course_utils.reference import AttentionWeights, sdpa_attention, torch_decoder_layer
from course_utils.sequences import BOS, EOS, PAD, VOCAB_SIZE

EXACT = (0.0, 0.0)
FP16_HINT = (
    "float16 holds numbers up to 65504 only: fill the masked scores with float('-inf') "
    "(or torch.finfo(dtype).min)."
)


def _maybe(fn: Callable[[], Tensor]) -> Callable[[], Tensor | None]:
    """A mistake's output, or None where the mistake cannot even run at these shapes."""

    def output() -> Tensor | None:
        try:
            return fn()
        except RuntimeError:
            return None

    return output


def _name_the_mistake(err: AssertionError, got: Tensor, mistakes: list[Mistake], other: str) -> None:
    """The call that raised runs when ``other`` is as long as x: name the known mistake it then shows."""
    for mistake in mistakes:
        variant = mistake.output()
        if variant is not None and close(got, variant.to(got.dtype)):
            fail(
                f"{err}\nWith a {other} as long as x it runs, and matches a known mistake: "
                f"{mistake.name}.\nHint: {mistake.hint}"
            )


# ----------------------------------------------------------------------------- masks
def _bool_result(got: Any, what: str) -> Tensor:
    """The student's mask as a tensor; a 0/1 mask of another dtype is named, not accepted."""
    if isinstance(got, Tensor) and got.dtype != torch.bool:
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
    student = subject(causal_mask, "causal_mask")
    for n in sizes:
        what = f"causal_mask({n})"
        got = _bool_result(student.call(n, label=what).output, what)
        expect_shape(got, (n, n), what, "One row per query position, one column per key position.")
        expected = nn.Transformer.generate_square_subsequent_mask(n) == 0  # 0 allowed, -inf blocked
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
        diagnoses = _causal_diagnoses(got, expected)
        expect_close(got.double(), expected.double(), what, mistakes, tolerance=EXACT, diagnoses=diagnoses)


def _causal_diagnoses(got: Tensor, expected: Tensor) -> list[Callable[[], Diagnosis | None]]:
    """After the known mistakes: the mask's pattern fitted, what the output alone shows, else the first
    (query, key) pair it gets wrong."""
    return [
        lambda: _causal_pattern(got),
        lambda: of_output(got.double(), expected.double(), EXACT),
        lambda: _first_wrong_pair(got, expected),
    ]


LOWER = "row i is query i, column j is key j: keep j <= i, the lower triangle with its diagonal (tril())"


def _causal_pattern(got: Tensor) -> Diagnosis | None:
    """The student's (n, n) mask as a pattern: True everywhere, nowhere, or a triangle whose diagonal is
    offset (``tril(k)``) or that is the upper one (``triu(k)``), the offset fitted."""
    n = got.shape[-1]
    if got.all():
        return Diagnosis(
            "causal mask allows everything",
            f"your mask is True everywhere: nothing is masked, so query 0 may see the later keys 1..{n - 1}",
            f"{LOWER}; the positions after the query must be False",
        )
    if not got.any():
        return Diagnosis(
            "causal mask blocks everything",
            "your mask is False everywhere: every key is blocked, and a softmax over scores that are all "
            "-inf gives NaN",
            f"{LOWER}; True marks what attention may see",
        )
    ones = torch.ones(n, n, dtype=torch.bool)
    for k in sorted(range(1 - n, n), key=lambda k: (abs(k), -k)):
        if k and torch.equal(got, ones.tril(k)):
            reach = f"up to i + {k}, {k} later keys too" if k > 0 else f"up to i - {-k} only"
            return Diagnosis(
                "causal mask diagonal offset",
                f"your mask lets query i see the keys {reach}: its diagonal is offset by {k} "
                f"(tril(diagonal={k}))",
                f"{LOWER}: diagonal=0",
            )
        if torch.equal(got, ones.triu(k)):
            return Diagnosis(
                "causal mask upper triangular",
                f"your mask is an upper triangle (triu(diagonal={k})): query i sees the keys from "
                f"i{f' + {k}' if k > 0 else f' - {-k}' if k < 0 else ''} on, the later positions",
                LOWER,
            )
    return None


def _first_wrong_pair(got: Tensor, expected: Tensor) -> Diagnosis | None:
    """The first (query, key) pair the student's causal mask gets wrong, in words."""
    wrong = (got != expected).nonzero()
    if not len(wrong):
        return None
    i, j = (int(v) for v in wrong[0][-2:])
    if got[tuple(wrong[0])]:
        return Diagnosis(
            "causal mask sees the future",
            f"your mask lets query {i} see key {j}, a later position",
            f"{LOWER}: the keys after the query are False",
        )
    return Diagnosis(
        "causal mask blocks the past",
        f"your mask blocks query {i} from key {j}, {'itself' if i == j else 'an earlier position'}",
        f"{LOWER}: every key up to the query itself is True",
    )


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
    what = f"padding_mask(tokens of shape {tuple(tokens.shape)}" + (f", pad={pad})" if pad != PAD else ")")
    options = {} if pad == PAD else {"pad": pad}
    result = subject(padding_mask, "padding_mask").call(tokens, label=what, **options)
    got = _bool_result(result.output, what)
    if result.changed_inputs:
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
    diagnoses = [lambda: _padding_pattern(got[:, 0, 0, :], tokens, pad)]
    expect_close(got.double(), expected.double(), what, mistakes, tolerance=EXACT, diagnoses=diagnoses)


def _padding_pattern(got: Tensor, tokens: Tensor, pad: int) -> Diagnosis | None:
    """Which tokens the student's (b, n) mask blocks: by value where it depends on the value alone (a
    comparison other than != pad), else the first position it gets wrong."""
    real = tokens != pad
    if torch.equal(got, real):
        return None
    if not got.any():
        return Diagnosis(
            "padding mask blocks everything",
            "your mask is False everywhere: every key is blocked, the real tokens too",
            "True marks the real tokens, which may be attended to: tokens != pad",
        )
    values = tokens.unique().tolist()
    if all(got[tokens == v].unique().numel() == 1 for v in values):
        blocked = [v for v in values if v != pad and not got[tokens == v][0]]
        let_through = pad in values and bool(got[tokens == pad][0])
        found = f"False for the real tokens {', '.join(map(str, blocked))}" if blocked else ""
        if let_through:
            found += (" and " if found else "") + f"True for the padding token pad = {pad}"
        return Diagnosis(
            "padding mask compares the wrong tokens",
            f"your mask depends on the token's value, but it is {found}: only the tokens equal to "
            f"pad = {pad} may be False",
            "compare each token with pad for equality: tokens != pad (not <, > or a fixed number)",
        )
    b, t = (int(i) for i in (got != real).nonzero()[0])
    token = int(tokens[b, t])
    where = f"sequence {b}, position {t}"
    if got[b, t]:
        found = f"True at {where}, which holds padding (pad = {pad})"
    else:
        found = f"False at {where}, which holds the real token {token}"
    return Diagnosis(
        "padding mask wrong at a position",
        f"your mask is {found}",
        "the mask follows each token: tokens != pad, position by position (no lengths, offsets or another "
        "sequence's tokens)",
    )


# ----------------------------------------------------------------------------- cross-attention
ATTENTION_ARGUMENTS = {
    "emb_size": "keep the skeleton's layers: nn.Linear(emb_size, emb_size) for queries, keys, values and "
    "projection",
    "num_heads": "keep self.num_heads = num_heads: forward splits the heads with h=self.num_heads",
}


def _up(t: Tensor | None) -> Tensor | None:
    """float16 and bfloat16 as float32, for a reference computed at full precision."""
    return t if t is None or t.dtype in (torch.float32, torch.float64) else t.float()


def _float(w: AttentionWeights) -> AttentionWeights:
    """The weights as :func:`_up` makes them."""
    return AttentionWeights(*((_up(a), _up(b)) for a, b in (w.q, w.k, w.v, w.out)))


def _overflow(err: AssertionError) -> bool:
    return "overflow" in str(err) and "Half" in str(err)


def _attend(module: Instance, label: str, x: Tensor, mask=None, context=None, **options) -> Result:
    """The student's attention (or the one at ``path`` in ``options``) on x, with mask and context."""
    kwargs = {k: v for k, v in (("mask", mask), ("context", context)) if v is not None}
    try:
        return module.call(x, label=label, **kwargs, **options)
    except AssertionError as err:
        raised, message = str(err).partition(f"{label} raised TypeError")[1:]
        if context is not None and raised and "context" in message:
            fail(
                f"{label}: forward does not take `context`. Give it the signature "
                "forward(self, x, mask=None, context=None): queries from x, keys and values from "
                "context (x when context is None)."
            )
        raise


def _read_weights(module: Instance, mha: nn.Module, x: Tensor, heads: int, what: str, label: str):
    """The student's attention (``mha`` on the mirror) on x alone, i.e. self-attention: its output, the
    readings of its weights, and the reading that output matches (None if none does)."""
    candidates = parts.attention_candidates(mha, what)
    path = parts.path_of(module.mirror, mha)
    got = as_tensor(_attend(module, label, x, path=path, no_grad=True).output, label)
    expect_shape(got, x.shape, label)
    with torch.no_grad():
        for w in candidates:
            if close(got, sdpa_attention(_up(x), _float(w), heads).to(x.dtype)):
                return got, candidates, w
    return got, candidates, None


def _cross_mistakes(x: Tensor, context: Tensor, w: AttentionWeights, heads: int, mask) -> list[Mistake]:
    decoder_states = (
        "keys and values come from context (the encoder's output, the memory): "
        "self.keys(context), self.values(context); only the queries come from x."
    )
    wrong_sources = {
        "xxx": ("the decoder's own states used as keys/values (keys and values from x)", decoder_states),
        "xxc": ("the decoder's own states used as keys (keys from x, values from context)", decoder_states),
        "xcx": ("keys from context but values from x", decoder_states),
        "cxx": (
            "queries from context, keys and values from x",
            "queries come from x (one output per decoder position), keys and values from context.",
        ),
    }
    mistakes = [
        Mistake(name, hint, _maybe(lambda s=s: parts.cross_sdpa(x, context, w, heads, mask, s)))
        for s, (name, hint) in wrong_sources.items()
    ]
    if mask is not None:
        mistakes += [
            Mistake(
                "mask ignored",
                "fill the scores where mask is False with -inf before the softmax: "
                "energy.masked_fill(~mask, float('-inf')).",
                lambda: parts.cross_sdpa(x, context, w, heads, None),
            ),
            Mistake(
                "mask applied after the softmax",
                "mask the scores before the softmax, so that the allowed weights still sum to 1.",
                lambda: parts.cross_sdpa(x, context, w, heads, mask, after_softmax=True),
            ),
            Mistake(
                "mask transposed",
                "the mask lines up with the scores (b, h, n_query, n_key): rows are the queries "
                "(from x), columns the keys (from context). Use it as it comes.",
                _maybe(lambda: parts.cross_sdpa(x, context, w, heads, mask.transpose(-1, -2))),
            ),
        ]
    return mistakes


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
    """``MultiHeadAttention(emb_size, num_heads)(x, mask, context)`` against SDPA on the judge's weights.

    x is (b, n_query, e), context (b, n_key, e): queries from x, keys and values from context.

    Args:
        mask: None, ``"padding"`` (b, 1, 1, n_key) or ``"rectangular"`` (n_query, n_key);
            boolean, True where attention is allowed.
        grad: also compare the gradients w.r.t. x and context, and check every weight gets one.
    """
    forbid_calls(MultiHeadAttention, SHORTCUTS, "MultiHeadAttention")
    student = subject(MultiHeadAttention, "MultiHeadAttention")
    kwargs = dict(emb_size=emb_size, num_heads=num_heads)
    what = call_text("MultiHeadAttention", **kwargs)
    alternatives = {"emb_size": 2 * emb_size, "num_heads": parts.other_heads(emb_size, num_heads)}
    expect_arguments_used(student, what, kwargs, alternatives, ATTENTION_ARGUMENTS)
    for device in student.devices():
        module = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        x = random_tensor(batch, n_query, emb_size, seed=seed, dtype=dtype)
        context = random_tensor(batch, n_key, emb_size, seed=seed + 1, dtype=dtype)
        m = parts.make_mask(mask, batch, n_query, n_key)

        # without context it is still self-attention
        label = f"{what}(x of shape {tuple(x.shape)}, {dtype}){on(device)}"
        got, candidates, weights = _read_weights(module, module.mirror, x, num_heads, what, label)
        if weights is None:
            with torch.no_grad():
                expect_close(
                    got,
                    sdpa_attention(_up(x), _float(candidates[0]), num_heads).to(dtype),
                    f"{label}, without context (self-attention)",
                    self_attention_mistakes(x, candidates[0], num_heads, None),
                    hint="Without context the module is the self-attention of notebook 04.",
                    diagnoses=attention_diagnoses(module, x, None, label),
                )

        x.requires_grad_(grad)
        context.requires_grad_(grad)
        label = (
            f"{what}(x of shape {tuple(x.shape)}, "
            + (f"mask of shape {tuple(m.shape)}, " if m is not None else "")
            + f"context=context of shape {tuple(context.shape)}, {dtype}){on(device)}"
        )
        try:
            result = _attend(
                module, label, x, m, context, grad=parts.GRAD_SEED if grad else None, no_grad=not grad
            )
        except AssertionError as err:
            _explain_cross_failure(err, module, weights, x.detach(), mask, num_heads, label)
            raise
        got = as_tensor(result.output, label)
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
        with torch.no_grad():
            expected = parts.cross_sdpa(_up(x), _up(context), _float(weights), num_heads, m).to(dtype)
            mistakes = _cross_mistakes(x, context, weights, num_heads, m)
            diagnoses = attention_diagnoses(module, x.detach(), m, label, context=context.detach())
            expect_close(got, expected, label, mistakes, diagnoses=diagnoses)
        if grad:
            parts.expect_trained(result, label)
            inputs = [("x", x), ("context", context)]
            parts.expect_gradients(
                result, inputs, lambda x, c: parts.cross_sdpa(x, c, weights, num_heads, m), label
            )


def _explain_cross_failure(err, module: Instance, weights, x: Tensor, mask_kind, heads, label: str) -> None:
    """The student's call raised: name the mistake if the same call at equal lengths shows it."""
    if _overflow(err):
        fail(
            f"{err}\nThis is the known mistake masked scores filled with a large negative number "
            f"such as -1e9.\nHint: {FP16_HINT}"
        )
    batch, n_query = x.shape[:2]
    same = random_tensor(*x.shape, seed=99, dtype=x.dtype)
    m = parts.make_mask(mask_kind, batch, n_query)
    if m is not None:  # an asymmetric square mask, so that a transposed one shows
        m = m & torch.ones(n_query, n_query, dtype=torch.bool).tril()
    try:
        got = as_tensor(_attend(module, label, x, m, same, no_grad=True).output, label)
    except AssertionError:
        return
    if tuple(got.shape) != tuple(x.shape):
        return
    with torch.no_grad():
        _name_the_mistake(err, got, _cross_mistakes(x, same, weights, heads, m), "context")
        if close(got, parts.cross_sdpa(x, same, weights, heads, m)):
            fail(
                f"{err}\nIt works when context is as long as x, so somewhere a length of x is used for "
                "the keys: the scores are (b, h, n_query, n_key), keys and values both come "
                "from context, and the mask broadcasts against (b, h, n_query, n_key)."
            )


# ----------------------------------------------------------------------------- decoder block
FORBIDDEN = {  # PyTorch's layers, by the library class the mirror names
    "torch.nn.modules.transformer.TransformerDecoderLayer",
    "torch.nn.modules.transformer.TransformerDecoder",
    "torch.nn.modules.transformer.TransformerEncoderLayer",
    "torch.nn.modules.transformer.Transformer",
    "torch.nn.modules.activation.MultiheadAttention",
}


class _Pieces:
    """A student's decoder block taken apart on the mirror: two attentions, three norms, two Linears."""

    def __init__(self, block: Instance, what: str, x: Tensor) -> None:
        mirror = block.mirror
        if any(m.library_class in FORBIDDEN for m in mirror.modules()):
            fail(
                f"{what}: build the block from your own MultiHeadAttention, nn.LayerNorm and "
                "FeedForwardBlock; PyTorch's Transformer layers are what it is checked against."
            )
        attentions = parts.attention_modules(mirror)
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
        norms = parts.find_layers(mirror, nn.LayerNorm)
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
        linears = [m for m in parts.find_layers(mirror, nn.Linear) if id(m) not in inside]
        if len(linears) != 2:
            fail(f"{what}: expected a FeedForwardBlock with two nn.Linear layers, found {len(linears)}.")
        if any(not isinstance(getattr(a, "num_heads", None), int) for a in attentions):
            fail(f"{what}: a MultiHeadAttention inside has no num_heads. {parts.ATTENTION_LAYERS}")
        self.block, self.what, self.attentions, self.norms = block, what, attentions, norms
        self.reading: dict[int, int] = {}  # which reading of each attention's weights matched
        self.weights = [self._read(a, x) for a in attentions]
        self.heads = attentions[0].num_heads
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

    def _read(self, mha: nn.Module, x: Tensor) -> AttentionWeights:
        """The attention's weights, once its self-attention path is known to be right."""
        label = f"the MultiHeadAttention inside {self.what}"
        _, candidates, weights = _read_weights(self.block, mha, x, mha.num_heads, self.what, label)
        if weights is not None:
            self.reading[id(mha)] = next(i for i, w in enumerate(candidates) if w is weights)
            return weights
        fail(
            f"{self.what}: a MultiHeadAttention inside does not match scaled_dot_product_attention. "
            "Fix it first: run check_multi_head_attention(MultiHeadAttention)."
        )

    def order(self, trace: list[tuple[str, int, list[str]]]) -> None:
        """Self-attention first, then cross-attention (the one given a context, only ever); norms as
        called."""
        called, cross, plain = [], set(), set()
        for path, n_args, names in trace:
            try:
                module = self.block.mirror.get_submodule(path)
            except AttributeError:
                continue
            called.append(id(module))
            if any(module is a for a in self.attentions):
                (cross if "context" in names or n_args > 2 else plain).add(id(module))
        cross -= plain

        def first_call(module: nn.Module) -> int:
            return called.index(id(module)) if id(module) in called else len(called)

        pairs = list(zip(self.attentions, self.weights, strict=True))
        pairs.sort(key=lambda pair: id(pair[0]) in cross if len(cross) == 1 else first_call(pair[0]))
        self.attentions, self.weights = [a for a, _ in pairs], [w for _, w in pairs]
        self.norms.sort(key=first_call)

    def layer(self, order=(0, 1), norms=(0, 1, 2), linears=0, norm_first=True) -> nn.TransformerDecoderLayer:
        attentions = (self.weights[order[0]], self.weights[order[1]])
        norm_layers = tuple(self.norms[i] for i in norms)
        return torch_decoder_layer(norm_layers, *attentions, self.linears[linears], self.heads, norm_first)

    def live_layer(self) -> nn.TransformerDecoderLayer:
        """The reference layer from the mirror's weights as they are now (the judge may have changed one)."""
        weights = [parts.attention_candidates(a, self.what)[self.reading[id(a)]] for a in self.attentions]
        return torch_decoder_layer(tuple(self.norms), *weights, self.linears[0], self.heads)

    def parameters(self) -> list[tuple[str, str, str]]:
        """(name, description, hint) of each parameter :class:`Sensitivity` changes, in its order: named
        for the class report by the part of the block it belongs to, described by the student's path."""
        mirror, described = self.block.mirror, {}  # id of a module: (name, what it is, hint)
        for i, norm in enumerate(self.norms):
            described[id(norm)] = (f"LN{i + 1}", f"the LayerNorm `{parts.path_of(mirror, norm)}`", NORM_HINT)
        for i, attention in enumerate(self.attentions):
            where = parts.path_of(mirror, attention)
            for role, layer in attention.named_children():
                if role in ROLES:
                    name = f"{('self', 'cross')[i]}-attention {role}"
                    described[id(layer)] = (name, f"{ROLES[role]} in `{where}`", ATTENTIONS_HINT)
        for i, linear in enumerate(self.linears[0]):
            where = parts.path_of(mirror, linear)
            what = f"the feed-forward block's {('first', 'second')[i]} Linear `{where}`"
            described[id(linear)] = (f"feed-forward linear{i + 1}", what, FEED_FORWARD_HINT)
        found = []
        for path, parameter in mirror.named_parameters():
            if not parameter.is_floating_point():
                continue
            owner, _, own = path.rpartition(".")
            module = mirror.get_submodule(owner)
            if id(module) not in described:
                found.append((path, f"`{path}`", ""))
                continue
            name, part, hint = described[id(module)]
            if isinstance(module, nn.LayerNorm):
                own = {"weight": "scale (weight)", "bias": "shift (bias)"}.get(own, own)
            found.append((f"{name}.{path.rpartition('.')[2]}", f"the {own} of {part}", hint))
        return found

    def candidates(self):
        """Every reading of the parts as an nn.TransformerDecoderLayer, registration order first."""
        for order, norms, linears in product(
            ((0, 1), (1, 0)), permutations(range(3)), range(len(self.linears))
        ):
            yield self.layer(order, norms, linears)


NORM_HINT = (
    "each sublayer normalises its input with its own LayerNorm: x + SelfAttn(LN1(x)), "
    "x + CrossAttn(LN2(x), memory), x + FFN(LN3(x)); a LayerNorm that is never applied does nothing"
)
ATTENTIONS_HINT = (
    "call each MultiHeadAttention once, in its own sublayer: x + self_attention(LN1(x), mask=tgt_mask), "
    "then x + cross_attention(LN2(x), mask=memory_mask, context=memory), each with its own weights"
)
FEED_FORWARD_HINT = "the last sublayer is x + feed_forward(LN3(x)): both Linears, the activation between them"
CAUSAL_TOO_OPEN = (
    "position t must not see the later targets: pass tgt_mask (True on and below the diagonal) to the "
    "self-attention as it comes, mask=tgt_mask"
)
CAUSAL_TOO_CLOSED = (
    "use the tgt_mask you are given, as it comes (None means no mask): do not build or add a mask of "
    "your own, and let each position see the whole memory"
)


class _PartSensitivity(Sensitivity):
    """Sensitivity of a block's output, each weight named by the part of the block it belongs to."""

    def __init__(self, pieces: _Pieces, run: Callable[[], Tensor], reference: Callable[[], Tensor]) -> None:
        self.parts = pieces.parameters()
        super().__init__(pieces.block, run, reference, {name: hint for name, _, hint in self.parts})

    def measure(self) -> list[tuple[str, str, bool, bool]]:
        found = super().measure()
        return [(n, d, s, j) for (n, d, _), (_, _, s, j) in zip(self.parts, found, strict=True)]


def _block_diagnoses(pieces: _Pieces, x: Tensor, memory: Tensor, t_mask, m_mask, label: str) -> list:
    """General diagnostics of a decoder block's output: which weights it ignores, which positions each
    output sees (the causal property), which weights it responds to where it must not."""
    masks = _nn_masks(t_mask, m_mask)

    def student(inputs: Tensor = x) -> Tensor:
        options = {"tgt_mask": t_mask, "memory_mask": m_mask}
        result = pieces.block.call(inputs, memory, label=label, no_grad=True, allow_changes=True, **options)
        return as_tensor(result.output, label)

    def reference(inputs: Tensor = x) -> Tensor:
        return pieces.live_layer()(inputs, memory, **masks)

    weights = _PartSensitivity(pieces, student, reference)
    return [
        weights.ignored,
        lambda: token_dependence(student, reference, x, CAUSAL_TOO_OPEN, CAUSAL_TOO_CLOSED),
        weights.misplaced,
    ]


def _nn_masks(tgt_mask: Tensor | None, memory_mask: Tensor | None) -> dict:
    """The course's masks (True = allowed) as nn.TransformerDecoderLayer's (True = blocked)."""
    return {
        "tgt_mask": None if tgt_mask is None else ~tgt_mask,
        "memory_key_padding_mask": None if memory_mask is None else ~memory_mask[:, 0, 0, :],
    }


def _decoder_mistakes(pieces: _Pieces, x, memory, tgt_mask, memory_mask) -> list[Mistake]:
    layer = pieces.layer()
    masks = _nn_masks(tgt_mask, memory_mask)
    t_mask, m_mask = masks["tgt_mask"], masks["memory_key_padding_mask"]

    def run(norms=(0, 1, 2), residual=(True, True, True), cross=None, order="sc"):
        h = x
        for step, kind in enumerate(order + "f"):
            y = pieces.norms[norms[step]](h)
            if kind == "s":
                out = layer._sa_block(y, t_mask, None)
            elif kind == "c":
                out = cross(y) if cross else layer._mha_block(y, memory, None, m_mask)
            else:
                out = layer._ff_block(y)
            h = out + (h if residual[step] else 0)
        return h

    decoder_states = (
        "cross-attention takes its keys and values from the encoder's output: "
        "self.cross_attention(LN2(x), mask=memory_mask, context=memory)."
    )
    mistakes = [
        Mistake(
            "post-norm instead of pre-norm",
            "normalise before each sublayer: x + SelfAttn(LN1(x)), x + CrossAttn(LN2(x), memory), "
            "x + FFN(LN3(x)); post-norm is LN(x + Sublayer(x)).",
            lambda: pieces.layer(norm_first=False)(x, memory, **masks),
        ),
        Mistake(
            "self-attention not masked",
            "pass tgt_mask to the self-attention, so that position t cannot see the later targets.",
            lambda: layer(x, memory, **{**masks, "tgt_mask": None}),
        ),
        *(
            Mistake(
                f"cross-attention using the decoder's states as keys/values{suffix}",
                decoder_states,
                _maybe(lambda own=own: run(cross=lambda y: layer._mha_block(y, y, *own))),
            )
            for suffix, own in (("", (None, None)), (", with tgt_mask", (t_mask, None)), ("", (None, m_mask)))
        ),
        Mistake(
            "tgt_mask used in cross-attention",
            "cross-attention gets memory_mask (which memory positions are real); tgt_mask belongs "
            "to the self-attention.",
            _maybe(lambda: run(cross=lambda y: layer._mha_block(y, memory, t_mask, None))),
        ),
        Mistake(
            "the memory normalised by the block's LayerNorm",
            "the memory comes normalised from the encoder: pass it to cross-attention as it is; "
            "only the decoder's stream x is normalised (LN2(x)).",
            lambda: run(cross=lambda y: layer._mha_block(y, pieces.norms[1](memory), None, m_mask)),
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
    mistakes += [
        Mistake(
            f"the residual is missing around the {name}",
            "each sublayer adds its output to its input: x = x + Sublayer(LN(x)).",
            lambda i=i: run(residual=tuple(j != i for j in range(3))),
        )
        for i, name in enumerate(("self-attention", "cross-attention", "feed-forward block"))
    ]
    mistakes += [
        Mistake(
            "one LayerNorm used before two sublayers",
            "each sublayer has its own LayerNorm: LN1 before self-attention, LN2 before "
            "cross-attention, LN3 before the feed-forward block.",
            lambda norms=norms: run(norms=norms),
        )
        for norms in product(range(3), repeat=3)
        if len(set(norms)) < 3
    ]
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
    student = subject(TransformerDecoderBlock, "TransformerDecoderBlock")
    kwargs = dict(emb_size=emb_size, num_heads=num_heads, forward_expansion=forward_expansion)
    what = call_text("TransformerDecoderBlock", **kwargs)
    alternatives = {
        "emb_size": 2 * emb_size,
        "num_heads": parts.other_heads(emb_size, num_heads),
        "forward_expansion": forward_expansion + 1,
    }
    expect_arguments_used(student, what, kwargs, alternatives, BLOCK_ARGUMENTS)
    for device in student.devices():
        block = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        x = random_tensor(batch, tgt_len, emb_size, seed=seed, dtype=dtype)
        memory = random_tensor(batch, memory_len, emb_size, seed=seed + 1, dtype=dtype)
        pieces = _Pieces(block, what, x)
        heads = {a.num_heads for a in pieces.attentions}
        if heads != {num_heads}:
            fail(
                f"{what}: its attention has num_heads {sorted(heads)}, expected {num_heads}: "
                "pass num_heads on to both MultiHeadAttention modules."
            )
        _expect_hidden_width(pieces, emb_size, forward_expansion)
        t_mask = parts.make_mask("causal", batch, tgt_len) if tgt_mask else None
        m_mask = parts.make_mask(memory_mask, batch, tgt_len, memory_len)
        label = (
            f"{what}(x of shape {tuple(x.shape)}, memory of shape {tuple(memory.shape)}, "
            f"tgt_mask={'causal mask' if tgt_mask else None}, memory_mask="
            f"{'padding mask of shape ' + str(tuple(m_mask.shape)) if m_mask is not None else None})"
            f"{on(device)}"
        )
        try:
            result = block.call(
                x,
                memory,
                label=label,
                tgt_mask=t_mask,
                memory_mask=m_mask,
                no_grad=True,
                trace=True,
                allow_changes=True,
            )
        except AssertionError as err:
            _explain_block_failure(err, pieces, x, t_mask, memory_mask, label)
            raise
        if {"argument 1", "argument 2"} & set(result.changed_inputs):
            fail(f"{label} changed its input x or memory: is a residual added in place (x += ...)?")
        if result.changed_inputs:
            fail(
                f"{label} changed its input {result.changed_inputs[0]} in place: build a new tensor instead."
            )
        got = as_tensor(result.output, label)
        pieces.order(result.trace)
        expect_shape(got, x.shape, label, "The block maps x (b, tgt_len, e) to the same shape.")
        masks = _nn_masks(t_mask, m_mask)
        with torch.no_grad():
            if any(close(got, layer(x, memory, **masks)) for layer in pieces.candidates()):
                continue
            _check_cross_paths(pieces, x, memory, m_mask, label)
            expect_close(
                got,
                pieces.layer()(x, memory, **masks),
                f"{label} compared with nn.TransformerDecoderLayer(norm_first=True)",
                _decoder_mistakes(pieces, x, memory, t_mask, m_mask),
                diagnoses=_block_diagnoses(pieces, x, memory, t_mask, m_mask, label),
            )


BLOCK_ARGUMENTS = {
    "emb_size": "pass emb_size on to every part: both MultiHeadAttention(emb_size, num_heads, drop_p), the "
    "three nn.LayerNorm(emb_size) and FeedForwardBlock(emb_size, forward_expansion, drop_p)",
    "num_heads": "pass num_heads on to both MultiHeadAttention(emb_size, num_heads, drop_p)",
    "forward_expansion": "pass forward_expansion on to FeedForwardBlock(emb_size, forward_expansion, drop_p)",
}


def _expect_hidden_width(pieces: _Pieces, emb_size: int, forward_expansion: int) -> None:
    """The feed-forward block's hidden layer has forward_expansion * emb_size features."""
    widths = sorted({first.out_features for first, _ in pieces.linears})
    hidden = forward_expansion * emb_size
    if hidden not in widths:
        fail(
            f"{pieces.what}: the feed-forward block's hidden layer has {widths[0]} features, expected "
            f"forward_expansion * emb_size = {forward_expansion} * {emb_size} = {hidden}."
            "\nHint: forward_expansion is the factor, not the width: FeedForwardBlock(emb_size, "
            "forward_expansion, drop_p) maps emb_size to expansion * emb_size and back.",
            "feed-forward hidden width",
            "diagnosed",
        )


def _check_cross_paths(pieces: _Pieces, x: Tensor, memory: Tensor, m_mask: Tensor | None, label: str) -> None:
    """On failure: is the student's MultiHeadAttention right with a context?"""
    for mha, weights in zip(pieces.attentions, pieces.weights, strict=True):
        try:
            path = parts.path_of(pieces.block.mirror, mha)
            got = as_tensor(
                _attend(pieces.block, label, x, m_mask, memory, path=path, no_grad=True).output, label
            )
        except AssertionError:
            got = None
        if got is None or not close(got, parts.cross_sdpa(x, memory, weights, pieces.heads, m_mask)):
            fail(
                f"{label}: the MultiHeadAttention inside does not compute cross-attention "
                "(mha(x, mask=memory_mask, context=memory)). Fix it first: run "
                "check_cross_attention(MultiHeadAttention)."
            )


def _explain_block_failure(err, pieces: _Pieces, x: Tensor, t_mask, memory_mask_kind, label: str) -> None:
    """The block raised with memory longer than x: diagnose at equal lengths."""
    if _overflow(err):
        fail(f"{err}\nHint: {FP16_HINT}")
    memory = random_tensor(*x.shape, seed=98, dtype=x.dtype)
    m_mask = parts.make_mask(memory_mask_kind, *x.shape[:2])
    masks = {"tgt_mask": t_mask, "memory_mask": m_mask}
    try:
        result = pieces.block.call(x, memory, label=label, no_grad=True, trace=True, **masks)
    except AssertionError:
        return
    if not isinstance(result.output, Tensor) or tuple(result.output.shape) != tuple(x.shape):
        return
    pieces.order(result.trace)
    with torch.no_grad():
        _name_the_mistake(err, result.output, _decoder_mistakes(pieces, x, memory, t_mask, m_mask), "memory")
    fail(
        f"{err}\nIt runs when memory is as long as x: cross-attention must take its keys and "
        "values from memory (context=memory), and memory_mask (b, 1, 1, memory_len) belongs to "
        "the cross-attention."
    )


# ----------------------------------------------------------------------------- causality
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

    A decoder block (a module without an nn.Embedding: ``forward(x, memory, tgt_mask=...)``) gets a
    causal tgt_mask; a model (``model(src, tgt_in)``, tokens in) must mask by itself. A class is built
    with ``kwargs`` and the judge's weights; a module already built (a trained model, in a notebook) is
    called as it is. No reference is needed: the student's outputs are compared with each other.
    """
    built = isinstance(model_or_block, nn.Module)  # a local object, which the judge cannot build
    name = type(model_or_block).__name__ if built else name_of(model_or_block, "model")
    student = subject(model_or_block, name)
    if built:
        mirror = build_mirror(describe(model_or_block))
        device = next(model_or_block.parameters(), torch.empty(0)).device
    else:
        module = student.build(seed, label=call_text(name, **kwargs), **kwargs)
        mirror = module.mirror

    def call(*args: Any, label: str, **options: Any) -> Tensor:
        if not built:
            return as_tensor(module(*args, label=label, no_grad=True, **options), label)
        result = student.call(*args, label=label, device=device, **options)
        if result.changed_params or result.changed_inputs:
            fail(f"{label} changed its weights or inputs while it ran: forward must leave them as they are.")
        return as_tensor(result.output, label)

    if not parts.find_layers(mirror, nn.Embedding):
        linears = parts.find_layers(mirror, nn.Linear)
        if not linears:
            fail(f"{name}: found no nn.Linear inside to tell its emb_size from.")
        emb_size = linears[0].in_features
        inputs, other = (random_tensor(batch, seq_len, emb_size, seed=seed + i) for i in (0, 2))
        memory = random_tensor(batch, src_len, emb_size, seed=seed + 1)
        mask = parts.make_mask("causal", batch, seq_len)
        label, what = f"{name}(x, memory, tgt_mask=causal)", "the inputs x"

        def run(y: Tensor) -> Tensor:
            return call(y, memory, label=label, tgt_mask=mask)
    else:
        generator = torch.Generator().manual_seed(seed)
        src = torch.randint(3, VOCAB_SIZE, (batch, src_len), generator=generator)
        inputs = torch.randint(3, VOCAB_SIZE, (batch, seq_len), generator=generator)
        inputs[:, 0] = BOS
        other = 3 + (inputs - 3 + 1) % (VOCAB_SIZE - 3)  # another digit at each position
        label, what = f"{name}(src, tgt_in)", "the target tokens tgt_in"

        def run(y: Tensor) -> Tensor:
            return call(src, y, label=label)

    reference = run(inputs)
    if reference.shape[:2] != (batch, seq_len):
        fail(f"{label}: expected an output of shape ({batch}, {seq_len}, ...), got {tuple(reference.shape)}.")
    for t in range(seq_len - 1):
        out = run(torch.cat([inputs[:, : t + 1], other[:, t + 1 :]], 1))
        if not close(out[:, : t + 1], reference[:, : t + 1]):
            diff = (out[:, : t + 1] - reference[:, : t + 1]).abs().amax(dim=(0, 2))
            first = int((diff > 0).nonzero()[0])
            fail(
                f"{label} is not causal: changing {what} after position {t} changed the "
                f"output at position {first} (by up to {float(diff.max()):.3g}). The output at "
                "position t may depend on positions 0..t only: is the causal mask passed to "
                "the decoder's self-attention, with True on and below the diagonal?"
            )


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
    what = f"shift_right(tgt of shape {tuple(tgt.shape)}" + (f", bos={bos})" if bos != BOS else ")")
    result = subject(shift_right, "shift_right").call(tgt, label=what, **({} if bos == BOS else {"bos": bos}))
    got = as_tensor(result.output, what)
    if result.changed_inputs:
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
        *(
            Mistake(
                "shifted left instead of right",
                "put BOS first and drop the last token: BOS, tgt[:, 0], ..., tgt[:, -2].",
                lambda last=last: torch.cat([tgt[:, 1:], last], 1),
            )
            for last in (first, torch.full_like(first, PAD))
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
        hint = f"the decoder's first input is the start token BOS = {bos}."
        mistakes.append(Mistake("BOS missing", hint, lambda: got))
    diagnoses = [lambda: _shift_fit(got, tgt)]
    expect_close(got.double(), expected.double(), what, mistakes, tolerance=EXACT, diagnoses=diagnoses)


def _shift_fit(got: Tensor, tgt: Tensor) -> Diagnosis | None:
    """The shift k for which the student's result holds tgt moved by k along the positions (from
    position 1 on, where the expected result holds target tokens), or along the batch: when it is not
    the expected one position to the right."""
    for axis in (1, 0):
        size = tgt.shape[axis]
        first = 1 if axis == 1 else 0
        for k in sorted(range(1 - size, size), key=lambda k: (abs(k - 1), -k)):
            start, stop = max(first, k), min(size, size + k)
            if (axis, k) in ((1, 1), (0, 0)) or stop - start < max(2, (size - first + 1) // 2):
                continue
            if torch.equal(got.narrow(axis, start, stop - start), tgt.narrow(axis, start - k, stop - start)):
                return _shift_diagnosis(axis, k)
    return None


def _shift_diagnosis(axis: int, k: int) -> Diagnosis:
    hint = "the input at position t is the token before target t: BOS, then tgt[:, :-1]"
    if axis == 0:
        source = f"i - {k}" if k > 0 else f"i + {-k}"
        return Diagnosis(
            "shifted along the batch",
            f"your result moves tgt along the batch axis (axis 0): sequence i holds the tokens of sequence "
            f"{source}",
            f"{hint}: slice and concatenate the positions, axis 1 (tgt[:, :-1], torch.cat(..., dim=1))",
        )
    if k == 0:
        return Diagnosis(
            "not shifted",
            "your result is not shifted: from position 1 on, position t holds target t itself, so the model "
            "would learn to copy its input",
            f"{hint}: BOS pushes the targets one step right, it does not replace the first one",
        )
    if k > 1:
        way = f"right by {k} positions: position t holds target t - {k}"
    else:
        way = f"left by {-k} position{'s' if k < -1 else ''}: position t holds target t + {-k}, a later one"
    return Diagnosis("shifted by the wrong amount", f"your result moves tgt {way}", hint)
