"""Check of notebook 00's Q1: ``AdditiveAttention``, Bahdanau's attention for an RNN decoder.

The student's module gets the judge's weights; the reference is built from the judge's copy of its
``W``, ``U`` and ``v`` (the mirror), on the judge's inputs: the two input maps act as one linear layer
on the concatenation ``[s; h_j]``, and the weights and the context are read out of
``scaled_dot_product_attention``, whose float mask adds the scores to all-zero query-key products.
Known mistakes are recognised by transforming that reference. The layers' sizes must follow the three
constructor arguments; weights that match no known mistake are asked which of W, U and v they respond
to, and whether one scale of the scores explains them.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_utils.checks.diagnose import Sensitivity, expect_arguments_used
from course_utils.checks.parts import GRAD_SEED, expect_gradients
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
    tolerance_of,
)
from course_utils.judge import Instance, Result, opaque_name, subject

SHORTCUTS = ["scaled_dot_product_attention", "course_utils"]
SQUEEZE = (
    "With a batch of 1 or a single position, `.squeeze()` without an axis drops those axes too: "
    "squeeze only the last axis, `.squeeze(-1)`."
)
LAYERS = "self.W (dec_size -> att_size), self.U (enc_size -> att_size) and self.v (att_size -> 1)"
ARGUMENTS = {
    "dec_size": "W maps the decoder state: self.W = nn.Linear(dec_size, att_size, bias=False)",
    "enc_size": "U maps every encoder state: self.U = nn.Linear(enc_size, att_size)",
    "att_size": "W and U map to att_size features, which v scores: "
    "self.v = nn.Linear(att_size, 1, bias=False)",
}
SCORE = "e_j = v · tanh(W s_prev + U h_j)"
WEIGHT_HINTS = {
    "W.weight": f"the decoder state enters every score: {SCORE}, with W(s_prev) broadcast over the positions",
    "W.bias": f"use the layer itself, self.W(s_prev), bias included: {SCORE}",
    "U.weight": f"every encoder state enters its own score: {SCORE}",
    "U.bias": f"use the layer itself, self.U(h), bias included: {SCORE}",
    "v.weight": f"v turns each tanh vector into one score: self.v(...), then squeeze(-1): {SCORE}",
    "v.bias": f"use the layer itself, self.v(...), bias included: {SCORE}",
}


def padding_mask(batch: int, seq_len: int, seed: int) -> Tensor:
    """(batch, seq_len) bool, True for real tokens: every row keeps at least its first token, the
    first row is padded (when seq_len > 1) and the last row is full (when batch > 1)."""
    generator = torch.Generator().manual_seed(seed + 1000)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
    lengths[0] = (seq_len + 1) // 2
    if batch > 1:
        lengths[-1] = seq_len
    return torch.arange(seq_len) < lengths[:, None]


def _layers(mirror: nn.Module, what: str, sizes: dict[str, tuple[int, int]]) -> dict[str, nn.Linear]:
    """The judge's W, U and v (read off the mirror), as float64 copies: the reference's weights."""
    layers = {}
    for name, (fan_in, fan_out) in sizes.items():
        layer = getattr(mirror, name, None)
        if not isinstance(layer, nn.Linear) or (layer.in_features, layer.out_features) != (fan_in, fan_out):
            fail(
                f"{what} needs self.{name} = nn.Linear({fan_in}, {fan_out}): keep the skeleton's "
                f"__init__ with {LAYERS}."
            )
        copy = nn.Linear(fan_in, fan_out, bias=layer.bias is not None, dtype=torch.float64)
        copy.load_state_dict({k: p.detach().double() for k, p in layer.state_dict().items()})
        layers[name] = copy.requires_grad_(False)
    return layers


def _scores(layers: dict[str, nn.Linear], s: Tensor, h: Tensor, squash: Callable = torch.tanh) -> Tensor:
    """e_j = v · squash(W s + U h_j) for every position j: (b, n). W and U act as one linear layer
    on [s; h_j], with their matrices side by side."""
    W, U, v = layers["W"], layers["U"], layers["v"]
    pairs = torch.cat([s[:, None, :].expand(-1, h.shape[1], -1), h], dim=-1)
    biases = [b for b in (W.bias, U.bias) if b is not None]
    joint = F.linear(pairs, torch.cat([W.weight, U.weight], dim=1), sum(biases) if biases else None)
    return v(squash(joint))[..., 0]


def _attend(scores: Tensor, h: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(context, alpha): a softmax of the scores over the positions that the mask keeps, read out of
    SDPA with zero queries and keys and the scores as its additive mask, and the weighted sum of h."""
    b, n = scores.shape
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    eye = torch.eye(n, dtype=h.dtype, device=h.device).expand(b, n, n)
    values = torch.cat([h, eye], dim=-1)[:, None]  # (b, 1, n, enc_size + n)
    zeros = h.new_zeros(b, 1, n, 1)
    out = F.scaled_dot_product_attention(zeros[:, :, :1], zeros, values, attn_mask=scores[:, None, None, :])
    out = out[:, 0, 0]
    return out[:, : h.shape[-1]], out[:, h.shape[-1] :]


def _weight_mistakes(
    layers: dict[str, nn.Linear], s: Tensor, h: Tensor, mask: Tensor | None, dtype: torch.dtype
) -> list[Mistake]:
    scores = _scores(layers, s, h)
    fills = [float("-inf"), torch.finfo(dtype).min]

    def masked(fill: float) -> Tensor:
        return scores if mask is None else scores.masked_fill(~mask, fill)

    mistakes = [
        *(
            Mistake(
                "softmax over the wrong axis (all weights are 1)",
                "the softmax ran over an axis of size 1: the one v leaves at the end of (b, n, 1), or "
                "the batch when b = 1. Squeeze v's output to (b, n) and take the softmax over the "
                "positions, dim=-1.",
                lambda fill=fill: torch.softmax(masked(fill)[..., None], dim=-1)[..., 0],
            )
            for fill in fills
        ),
        *(
            Mistake(
                "softmax over the wrong axis (over the batch)",
                "alpha has shape (b, n): each row must sum to 1 over the n encoder positions, so the "
                "softmax runs over dim=-1 (or dim=1), not dim=0.",
                lambda fill=fill: torch.softmax(masked(fill), dim=0),
            )
            for fill in fills
        ),
        Mistake(
            "tanh missing",
            "the score is e_j = v^T tanh(W s + U h_j): apply torch.tanh before self.v.",
            lambda: _attend(_scores(layers, s, h, squash=lambda x: x), h, mask)[1],
        ),
        *(
            Mistake(
                "scores e returned instead of the weights alpha",
                "alpha = softmax(e) over the positions: return the weights, not the scores.",
                lambda fill=fill: masked(fill),
            )
            for fill in fills
        ),
    ]
    if mask is not None:
        mistakes += [
            Mistake(
                "mask ignored",
                "where mask is False (padding), set the score to -inf before the softmax: "
                "e.masked_fill(~mask, float('-inf')).",
                lambda: _attend(scores, h, None)[1],
            ),
            Mistake(
                "mask applied after the softmax",
                "zeroing the weights after the softmax leaves rows that no longer sum to 1: fill the "
                "scores with -inf where mask is False, then take the softmax.",
                lambda: _attend(scores, h, None)[1] * mask,
            ),
            *(
                Mistake(
                    "mask inverted",
                    "mask is True for the real tokens: fill the scores where ~mask, not where mask.",
                    lambda fill=fill: torch.softmax(scores.masked_fill(mask, fill), dim=-1),
                )
                for fill in fills
            ),
        ]
    return mistakes


def _context_mistakes(scores: Tensor, h: Tensor, mask: Tensor | None) -> list[Mistake]:
    keep = torch.ones_like(scores) if mask is None else mask.to(h.dtype)
    hint = "the context is the weighted sum c = sum_j alpha_j h_j, e.g. torch.einsum('bn,bne->be', alpha, h)."
    return [
        Mistake("context not weighted by alpha (plain mean of h)", hint, lambda: h.mean(dim=1)),
        Mistake(
            "context not weighted by alpha (mean of the real tokens' h)",
            hint,
            lambda: (h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True),
        ),
        Mistake("context not weighted by alpha (sum of h)", hint, lambda: h.sum(dim=1)),
        Mistake(
            "context weighted by the scores e instead of alpha",
            "weight each h_j by alpha_j = softmax(e)_j, not by the raw score e_j.",
            lambda: torch.einsum("bn,bne->be", scores * keep, h),
        ),
    ]


def _score_scale(alpha: Tensor, scores: Tensor, mask: Tensor | None, att_size: int) -> Diagnosis | None:
    """The one factor c for which alpha = softmax(c · e), when it is not 1: log alpha is c · e up to a
    constant per row, a least-squares fit over the positions that get weight."""
    alpha, scores = alpha.detach().cpu().double(), scores.detach().cpu().double()
    keep = torch.ones_like(alpha, dtype=torch.bool) if mask is None else mask.cpu().clone()
    keep &= alpha > 0
    if not torch.isfinite(alpha).all() or (keep.sum(-1) < 2).all():
        return None
    rows = keep.sum(-1, keepdim=True).clamp(min=1)
    logs = torch.where(keep, alpha.clamp(min=1e-300).log(), 0.0)
    e = torch.where(keep, scores, 0.0)
    y = torch.where(keep, logs - logs.sum(-1, keepdim=True) / rows, 0.0)
    x = torch.where(keep, e - e.sum(-1, keepdim=True) / rows, 0.0)
    if not (x * x).sum() > 0:
        return None
    factor = float((x * y).sum() / (x * x).sum())
    masked = scores if mask is None else scores.masked_fill(~mask.cpu(), float("-inf"))
    fitted = torch.softmax(factor * masked, dim=-1)
    if abs(factor - 1) < 1e-3 or not close(alpha, fitted, tolerance_of(torch.float32)):
        return None
    named = {"sqrt(att_size)": att_size**0.5, "att_size": att_size}
    name = next((n for n, value in named.items() if abs(value * factor - 1) < 1e-3), None)
    return Diagnosis(
        "scores scaled",
        f"your weights are softmax(e / {1 / factor:.4g}), where softmax(e) is expected"
        + (f": the scores are divided by {name}" if name else ""),
        f"additive attention does not scale its scores: alpha = softmax(e) over the positions, {SCORE}",
    )


def _check_weights(
    alpha: Tensor,
    expected: Tensor,
    mask: Tensor | None,
    call: str,
    mistakes: list,
    diagnoses: Sequence[Callable[[], Diagnosis | None]] = (),
) -> None:
    """alpha against the reference: a known mistake by name, else the rules it breaks, else what
    ``diagnoses`` find, else the numbers."""
    what = f"{call}: alpha (the attention weights)"
    if close(alpha, expected):
        return
    for mistake in mistakes:
        variant = mistake.output()
        if variant is not None and close(alpha, variant.to(expected.dtype)):
            expect_close(alpha, expected, what, [Mistake(mistake.name, mistake.hint, lambda v=variant: v)])
    atol, rtol = tolerance_of(expected.dtype)
    got = alpha.detach().cpu().double()
    sums = got.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=atol * got.shape[-1] + rtol, rtol=0):
        row = int((sums - 1).abs().argmax())
        fail(
            f"{what}: each row (one decoder step's weights over the {got.shape[-1]} encoder positions) "
            f"must sum to 1; row {row} sums to {sums[row].item():.6g}. Take the softmax over the "
            "positions (dim=-1), after masking."
        )
    if mask is not None and (got.abs() > atol).masked_fill(mask.cpu(), False).any():
        index = [int(i) for i in ((got.abs() > atol) & ~mask.cpu()).nonzero()[0]]
        fail(
            f"{what}: the weight of padding position {index} is {got[tuple(index)].item():.6g}; "
            "positions where mask is False must get weight 0. Fill their scores with -inf before "
            "the softmax."
        )
    expect_close(alpha, expected, what, diagnoses=diagnoses)


def _diagnoses(
    module: Instance,
    inputs: tuple[Tensor, Tensor, Tensor | None],
    sizes: dict[str, tuple[int, int]],
    call: str,
    alpha: Tensor,
    scores: Tensor,
) -> list[Callable[[], Diagnosis | None]]:
    """Which of W, U and v the student's weights respond to, and one scale of the judge's ``scores``
    that explains them (``inputs`` are s_prev, h and the mask)."""
    s, h, mask = inputs
    masks = {} if mask is None else {"mask": mask}

    def student() -> Tensor:
        output = module.call(s, h, label=call, no_grad=True, **masks).output
        return as_tensor(output[1], f"{call} [1]")

    def reference() -> Tensor:  # from the mirror as it is now (Sensitivity changes it)
        layers = _layers(module.mirror, call, sizes)
        return _attend(_scores(layers, s.double(), h.double()), h.double(), mask)[1]

    def scale() -> Diagnosis | None:
        return _score_scale(alpha, scores, mask, sizes["v"][0])

    weights = Sensitivity(module, student, reference, WEIGHT_HINTS)
    return [weights.ignored, scale, weights.misplaced]


@check
def check_additive_attention(
    AdditiveAttention: type,
    dec_size: int = 6,
    enc_size: int = 8,
    att_size: int = 5,
    batch: int = 3,
    seq_len: int = 7,
    mask: bool = False,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """Compare ``AdditiveAttention(dec_size, enc_size, att_size)(s_prev, h, mask)`` with Bahdanau's
    formula on the judge's ``W``, ``U`` and ``v``.

    Args:
        mask: also pass a (batch, seq_len) padding mask, True for real tokens.
        grad: also check that W, U and v get gradients, and compare the gradients w.r.t. the inputs.
    """
    forbid_calls(AdditiveAttention, SHORTCUTS, "AdditiveAttention")
    student = subject(AdditiveAttention, "AdditiveAttention")
    kwargs = dict(dec_size=dec_size, enc_size=enc_size, att_size=att_size)
    sizes = {"W": (dec_size, att_size), "U": (enc_size, att_size), "v": (att_size, 1)}
    what = call_text("AdditiveAttention", **kwargs)
    others = dict(dec_size=dec_size + 1, enc_size=enc_size + 1, att_size=att_size + 1)
    expect_arguments_used(student, what, kwargs, others, ARGUMENTS)
    for device in student.devices():
        module = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        layers = _layers(module.mirror, what, sizes)
        s = random_tensor(batch, dec_size, seed=seed + 1, dtype=dtype).requires_grad_(grad)
        h = random_tensor(batch, seq_len, enc_size, seed=seed + 2, dtype=dtype).requires_grad_(grad)
        m = padding_mask(batch, seq_len, seed) if mask else None
        call = f"{what}(s_prev of shape {tuple(s.shape)}, h of shape {tuple(h.shape)}"
        call += (f", mask of shape {tuple(m.shape)}" if mask else "") + f", {dtype}){on(device)}"
        masks = {} if m is None else {"mask": m}
        try:
            result = module.call(
                s, h, label=call, grad=GRAD_SEED if grad else None, no_grad=not grad, **masks
            )
        except AssertionError as err:
            if 1 in (batch, seq_len) and "NotImplementedError" not in str(err):
                fail(f"{err}\nHint: {SQUEEZE}")
            raise
        output = result.output
        if not isinstance(output, tuple | list) or len(output) != 2:
            kind = opaque_name(output) or type(output).__name__
            fail(f"{call} returned a {kind}; forward must return (context, alpha).")
        context, alpha = (as_tensor(r, f"{call} [{i}]") for i, r in enumerate(output))
        order = "forward returns (context, alpha), in this order"
        expect_shape(context, (batch, enc_size), f"{call}: context", f"{order}; context is (b, enc_size).")
        expect_shape(alpha, (batch, seq_len), f"{call}: alpha", f"{order}; alpha is (b, n). {SQUEEZE}")
        expect_dtype(context, dtype, f"{call}: context")
        expect_dtype(alpha, dtype, f"{call}: alpha")

        s64, h64 = s.detach().double(), h.detach().double()
        with torch.no_grad():
            scores = _scores(layers, s64, h64)
            expected_context, expected_alpha = (r.to(dtype) for r in _attend(scores, h64, m))
            diagnoses = _diagnoses(module, (s.detach(), h.detach(), m), sizes, call, alpha, scores)
            mistakes = _weight_mistakes(layers, s64, h64, m, dtype)
            _check_weights(alpha, expected_alpha, m, call, mistakes, diagnoses)
            expect_close(
                context,
                expected_context,
                f"{call}: context",
                [
                    Mistake(k.name, k.hint, lambda k=k: k.output().to(dtype))
                    for k in _context_mistakes(scores, h64, m)
                ],
            )
        if grad:
            _check_gradients(result, layers, s64, h64, m, call)


def _check_gradients(
    result: Result,
    layers: dict[str, nn.Linear],
    s: Tensor,
    h: Tensor,
    mask: Tensor | None,
    call: str,
) -> None:
    """W, U and v receive gradients (``layers`` name their parameters), and the gradients w.r.t. s_prev
    and h match the reference's (``s`` and ``h`` are the judge's float64 copies of the inputs)."""
    if result.no_graph or result.param_grads is None:
        fail(
            f"{call}: the result does not require grad, so nothing would be trained: is forward run "
            "under torch.no_grad(), or detached (.detach(), .item(), .numpy())?"
        )
    for name, layer in layers.items():
        for p, _ in layer.named_parameters():
            g = result.param_grads.get(f"{name}.{p}")
            if g is None or not g.any():
                fail(
                    f"{call}: no gradient reaches self.{name}.{p}. Is part of forward detached, or computed "
                    "outside the graph (.item(), .numpy(), torch.no_grad())?"
                )
    expect_gradients(
        result, [("s_prev", s), ("h", h)], lambda s, h: _attend(_scores(layers, s, h), h, mask), call
    )
