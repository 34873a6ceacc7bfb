"""Check of notebook 10: ``chunked_attention``, attention computed for a block of queries at a time.

The result is compared with ``F.scaled_dot_product_attention`` on the judge's ``q``, ``k``, ``v`` and
mask: splitting the queries into blocks changes nothing in the numbers. Known mistakes are
recognised by recomputing the output each would give from the whole score matrix (padded and
reshaped where a mistake normalises within a block), never block by block. While the student's
function runs, the probe watches the shapes of the tensors it creates: a score tensor with more
than ``chunk_size`` query rows means the queries were not processed in blocks. Where no known mistake
matches, the check reads the student's attention weights: called with v = the identity over the keys,
the function returns its attention matrix, whose rows, masked entries and temperature say what is wrong.
"""

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from course_utils.checks.diagnose import first_of, masked_weight, rows_sum_to_one, temperature
from course_utils.checks.parts import GRAD_SEED, attention_matrix, expect_gradients, make_mask
from course_utils.feedback import (
    Diagnosis,
    Mistake,
    as_tensor,
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
from course_utils.judge import Result, Subject, subject

SHORTCUTS = [
    "scaled_dot_product_attention",
    "MultiheadAttention",
    "multi_head_attention_forward",
    "course_utils",
]
MASKS = (None, "causal", "padding")

KEY_BLOCKS_HINT = (
    "each query's softmax needs the scores of all n_k keys, so split the queries and give every "
    "block the whole k and v. (Splitting the keys as well is possible only with an online "
    "softmax: keep each row's running maximum and sum, and rescale the earlier blocks' sums and "
    "outputs by exp(old max - new max) when a later block raises the maximum, as FlashAttention "
    "does.)"
)


def _hint_for_error(message: str, n_q: int, chunk_size: int, masked: bool) -> str:
    """A likely cause of the error the student's function raised, or nothing."""
    if "Sizes of tensors must match except in dimension" in message or "stack expects each tensor" in message:
        last = n_q % chunk_size
        return (
            "This is what torch.cat says when the blocks are concatenated along the wrong axis "
            f"(or stacked): with n_q={n_q} and chunk_size={chunk_size} the blocks do not all have "
            f"the same number of rows (the last has {last}). Concatenate them along the query axis: "
            "torch.cat(blocks, dim=-2)."
        )
    if "non-empty list of Tensors" in message:
        return (
            f"No block was computed: with chunk_size={chunk_size} and n_q={n_q} the loop never ran. "
            "range(0, n_q, chunk_size) gives at least one start, also when chunk_size >= n_q."
        )
    if masked and ("must match the size of tensor" in message or "shape mismatch" in message):
        return (
            "Is the mask sliced with the queries? A block of scores is (b, h, rows, n_k): fill it "
            "with the same rows of the mask, mask[..., start:start + rows, :], after the skeleton's "
            "mask.expand(...), which gives the mask one row per query."
        )
    return ""


def _run(
    student: Subject,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    chunk_size: int,
    mask: Tensor | None,
    call: str,
    device: torch.device,
    grad: int | None,
) -> tuple[Result, tuple | None]:
    """The student's result, and the shape of a score tensor with too many rows, if one was made."""
    n_k, head_dim = k.shape[-2], q.shape[-1]
    watch = {"rows": chunk_size, "n_k": n_k, "head_dim": head_dim}
    masks = {} if mask is None else {"mask": mask}
    try:
        result = student.call(q, k, v, chunk_size, label=call, device=device, grad=grad, watch=watch, **masks)
    except AssertionError as err:
        hint = _hint_for_error(str(err), q.shape[-2], chunk_size, mask is not None)
        if hint:
            raise AssertionError(f"{err}\nHint: {hint}") from err
        raise
    # With head_dim == n_k, q itself has n_k columns: the watch cannot tell scores from it.
    return result, result.too_many if head_dim != n_k else None


def _shape_hint(got: Tensor, expected: tuple[int, ...], chunk_size: int) -> str:
    """Name the mistake behind a wrong shape, where the shape tells it."""
    b, h, n_q, d = expected
    if got.ndim == 4 and tuple(got.shape[:2]) == (b, h) and got.shape[-1] == d:
        rows = got.shape[-2]
        if n_q % chunk_size and rows == n_q - n_q % chunk_size:
            return (
                f"Your result matches a known mistake: the last partial block dropped. n_q={n_q} is "
                f"not a multiple of chunk_size={chunk_size}, so the last block holds only "
                f"{n_q % chunk_size} queries: loop over range(0, n_q, chunk_size); "
                "q[..., start:start + chunk_size, :] simply stops at n_q."
            )
        if rows < n_q and rows in (min(chunk_size, n_q), n_q % chunk_size):
            return (
                "Your result has the rows of one block only: is the `return` inside the loop, or "
                "is each block's output not appended to the list before torch.cat?"
            )
    if got.numel() == math.prod(expected):
        return (
            "Your result matches a known mistake: blocks concatenated along the wrong axis (or "
            "stacked). Each block is (b, h, rows, d): torch.cat(blocks, dim=-2) puts the rows "
            "back in the order of the queries."
        )
    return "chunked_attention returns (b, h, n_q, d), one output row per query."


def _scores(q: Tensor, k: Tensor, scale: float) -> Tensor:
    return q @ k.transpose(-2, -1) * scale


def _filled(scores: Tensor, allowed: Tensor | None, fill: str) -> Tensor:
    """Scores with the entries that are not allowed set to -inf or to the dtype's minimum."""
    if allowed is None:
        return scores
    value = float("-inf") if fill == "-inf" else torch.finfo(scores.dtype).min
    return scores.masked_fill(~allowed, value)


def _pad(t: Tensor, dim: int, size: int, value: float) -> Tensor:
    """``t`` padded with ``value`` at the end of ``dim`` to a multiple of ``size``."""
    extra = -t.shape[dim] % size
    if not extra:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, t.new_full(shape, value)], dim=dim)


def _softmax_within_query_blocks(scores: Tensor, chunk_size: int) -> Tensor:
    """Softmax over dim=-2, each block of chunk_size query rows on its own."""
    n_q = scores.shape[-2]
    padded = _pad(scores, -2, chunk_size, float("-inf"))
    blocks = padded.unflatten(-2, (-1, chunk_size)).softmax(dim=-2)
    return blocks.flatten(-3, -2)[..., :n_q, :]


def _softmax_over_key_blocks(scores: Tensor, v: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Softmax over each block of chunk_size keys on its own: (sum, mean) of the blocks' outputs."""
    padded = _pad(scores, -1, chunk_size, float("-inf")).unflatten(-1, (-1, chunk_size))
    weights = padded.softmax(dim=-1)  # (b, h, n_q, blocks, chunk)
    values = _pad(v, -2, chunk_size, 0.0).unflatten(-2, (-1, chunk_size))  # (b, h, blocks, chunk, d)
    total = torch.einsum("bhqjc, bhjcd -> bhqd", weights, values)
    return total, total / weights.shape[-2]


def _mistakes(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, chunk_size: int) -> list[Mistake]:
    """Known mistakes, computed in float64 from the whole (b, h, n_q, n_k) scores."""
    q, k, v = q.double(), k.double(), v.double()
    n_q, n_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = d**-0.5
    allowed = None if mask is None else mask.expand(*q.shape[:-1], n_k)

    def sdpa(attn_mask: Tensor | None = allowed, **kwargs) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, **kwargs)

    def attend(weights: Tensor) -> Tensor:
        return weights @ v

    fills = ("-inf", "min") if mask is not None else ("-inf",)
    scores = _scores(q, k, scale)
    same_block = (
        torch.arange(n_q, device=q.device)[:, None] // chunk_size
        == torch.arange(n_k, device=q.device)[None, :] // chunk_size
    )
    mistakes = [
        *(
            Mistake(
                "softmax over a block of keys only",
                KEY_BLOCKS_HINT,
                lambda fill=fill, i=i: _softmax_over_key_blocks(
                    _filled(scores, allowed, fill), v, chunk_size
                )[i],
            )
            for fill in fills
            for i in (0, 1)
        ),
        *(
            Mistake(
                "keys and values sliced with the queries",
                "each query attends to all n_k keys: slice only q (and the rows of the mask); "
                "every block uses the whole k and v.",
                lambda fill=fill: attend(
                    _filled(scores, same_block if allowed is None else allowed & same_block, fill).softmax(-1)
                ),
            )
            for fill in fills
        ),
        *(
            Mistake(
                "softmax over the wrong axis",
                "each query's weights over the keys must sum to 1: softmax over the last axis "
                "(dim=-1) of the (b, h, rows, n_k) scores of a block.",
                weights,
            )
            for fill in fills
            for weights in (
                lambda fill=fill: attend(
                    _softmax_within_query_blocks(_filled(scores, allowed, fill), chunk_size)
                ),
                lambda fill=fill: attend(_filled(scores, allowed, fill).softmax(dim=-2)),
                lambda fill=fill: attend(_filled(scores, allowed, fill).softmax(dim=1)),
            )
        ),
        Mistake(
            "scores not scaled",
            f"multiply the scores by the skeleton's scale = d ** -0.5 = 1/sqrt({d}) before the softmax.",
            lambda: sdpa(scale=1.0),
        ),
        Mistake(
            "scores multiplied by sqrt(d) instead of divided",
            "scale = d ** -0.5 is already 1/sqrt(d): multiply the scores by it (or divide by d ** 0.5).",
            lambda: sdpa(scale=d**0.5),
        ),
        Mistake(
            "scores scaled twice (by 1/d)",
            "multiply the scores by scale = 1/sqrt(d) once.",
            lambda: sdpa(scale=1.0 / d),
        ),
        Mistake(
            "scaled after the softmax",
            "multiply the scores by scale before the softmax, not the weights after it.",
            lambda: sdpa(scale=1.0) * scale,
        ),
    ]
    wrong_sizes = {"n_k": n_k, "n_q": n_q, "chunk_size": chunk_size, "h · d": q.shape[1] * d}
    mistakes += [
        Mistake(
            f"scaled by 1/sqrt({name}) instead of 1/sqrt(d): the square root of the wrong size",
            f"d = q.shape[-1] = {d}, the length of each query and key vector, sets the scale: "
            "scale = d ** -0.5, as in the skeleton.",
            lambda size=size: sdpa(scale=size**-0.5),
        )
        for name, size in wrong_sizes.items()
        if size != d
    ]
    if mask is not None:
        rows = torch.arange(n_q, device=q.device) % chunk_size
        mistakes += [
            Mistake(
                "the queries' blocks paired with the wrong mask rows",
                "every block was masked with the first rows of the mask. The rows of a block are "
                "the queries start, ..., start + rows - 1: fill them with the same rows of the mask, "
                "mask[..., start:start + rows, :], not mask[..., :rows, :].",
                lambda: sdpa(attn_mask=allowed[..., rows, :]),
            ),
            Mistake(
                "mask ignored",
                "where the mask is False, fill the block's scores with -inf before the softmax: "
                "scores.masked_fill(~mask_rows, float('-inf')).",
                lambda: sdpa(attn_mask=None),
            ),
            *(
                Mistake(
                    "mask inverted",
                    "the mask is True where attention is allowed: fill the scores where ~mask.",
                    lambda fill=fill: attend(_filled(scores, ~allowed, fill).softmax(-1)),
                )
                for fill in fills
            ),
            Mistake(
                "mask applied after the softmax",
                "mask the scores before the softmax, so that the allowed weights still sum to 1.",
                lambda: attend(scores.softmax(-1) * allowed),
            ),
        ]
    return mistakes


def _read_weights(attend: Callable[[Tensor], Any], q: Tensor, k: Tensor) -> Tensor | None:
    """The student's attention weights (b, h, n_q, n_k): ``attend(v)``, their function on the judge's
    q, k and mask, called with v = the identity over the keys (attention allows values of another width
    than the queries), returns them. None where that call fails or gives something else."""
    b, h, n_k = *k.shape[:2], k.shape[-2]
    try:
        out = attend(torch.eye(n_k, dtype=q.dtype).expand(b, h, n_k, n_k).contiguous())
    except AssertionError:
        return None
    if not isinstance(out, Tensor) or tuple(out.shape) != (*q.shape[:-1], n_k) or not out.is_floating_point():
        return None
    return out.detach().cpu().double()


def _explain_weights(weights: Tensor | None, q: Tensor, k: Tensor, mask: Tensor | None) -> Diagnosis | None:
    """What the student's attention weights show: rows that do not sum to 1, weight on masked keys, the
    scores' temperature, or right weights with an error after them."""
    if weights is None:
        return None
    q64, k64 = q.double(), k.double()
    scale = q.shape[-1] ** -0.5  # that of the queries' width d: v's is another in this reading
    found = first_of(
        lambda: rows_sum_to_one(weights, "attention"),
        lambda: masked_weight(weights, mask),
        lambda: temperature(weights, q64 @ k64.transpose(-2, -1), scale, mask),
    )
    expected = attention_matrix(q64, k64, scale, mask)
    if found is not None or not close(weights, expected, tolerance_of(q.dtype)):
        return found
    return Diagnosis(
        "error after the attention weights",
        "your attention weights are right (read with v = the identity, which makes the output the "
        "weights themselves), but the output is not: the error comes after them",
        "each block's output is its weights applied to the whole v, einsum('bhqk, bhkd -> bhqd', "
        "weights, v); concatenate the blocks along the query axis, torch.cat(blocks, dim=-2)",
    )


@check
def check_chunked_attention(
    chunked_attention,
    batch: int = 2,
    heads: int = 3,
    n_q: int = 10,
    n_k: int = 10,
    head_dim: int = 8,
    chunk_size: int = 4,
    mask: str | None = None,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """Compare ``chunked_attention(q, k, v, chunk_size, mask=...)`` with SDPA on the same inputs.

    Args:
        chunked_attention: the student's function; ``q`` is (batch, heads, n_q, head_dim),
            ``k`` and ``v`` are (batch, heads, n_k, head_dim).
        mask: None, ``"causal"`` ((n_q, n_k)) or ``"padding"`` ((batch, 1, 1, n_k)), boolean,
            True where attention is allowed; passed as ``mask=``.
        grad: also compare the gradients w.r.t. q, k and v with SDPA's.
    """
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, not {mask!r}")
    forbid_calls(chunked_attention, SHORTCUTS, "chunked_attention")
    student = subject(chunked_attention, "chunked_attention")
    for device in student.devices():
        q = random_tensor(batch, heads, n_q, head_dim, seed=seed, dtype=dtype)
        k = random_tensor(batch, heads, n_k, head_dim, seed=seed + 1000, dtype=dtype)
        v = random_tensor(batch, heads, n_k, head_dim, seed=seed + 2000, dtype=dtype)
        for t in (q, k, v):
            t.requires_grad_(grad)
        m = make_mask(mask, batch, n_q, n_k)
        masks = {} if m is None else {"mask": m}
        shown = f", {mask} mask of shape {tuple(m.shape)}" if mask else ""
        call = (
            f"chunked_attention(q of shape {tuple(q.shape)}, k and v of shape {tuple(k.shape)}, "
            f"chunk_size={chunk_size}{shown}), {dtype}{on(device)}"
        )
        result, too_many = _run(student, q, k, v, chunk_size, m, call, device, GRAD_SEED if grad else None)
        got = as_tensor(result.output, call)
        shape = (batch, heads, n_q, head_dim)
        expect_shape(got, shape, call, _shape_hint(got, shape, chunk_size))
        expect_dtype(got, dtype, call)
        with torch.no_grad():
            expected = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
            q0, k0 = q.detach(), k.detach()

            def attend(values: Tensor) -> Any:
                return student.call(q0, k0, values, chunk_size, label=call, device=device, **masks).output

            expect_close(
                got,
                expected,
                call,
                _mistakes(q0, k0, v.detach(), m, chunk_size),
                diagnoses=[lambda: _explain_weights(_read_weights(attend, q0, k0), q0, k0, m)],
            )
        if too_many is not None:
            fail(
                f"{call}: the numbers are right, but the queries were not processed in blocks of "
                f"chunk_size: your code creates a tensor of shape {too_many}, a value for each of "
                f"{too_many[-2]} queries and {n_k} keys at once (scores, or a float copy of the mask).\n"
                f"Hint: slice q[..., start:start + chunk_size, :] and the same rows of the mask, and "
                f"compute the scores block by block, so that no more than a (b, h, {chunk_size}, {n_k}) "
                "block of them exists at a time. (torch.chunk(x, n) cuts x into n pieces; "
                "x.split(chunk_size, dim=-2) into pieces of chunk_size rows.)"
            )
        if grad:
            _check_gradients(result, q, k, v, m, call)


def _check_gradients(result: Result, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, call: str) -> None:
    """The gradients w.r.t. q, k and v match those of SDPA on the judge's inputs."""
    if result.no_graph or not result.requires_grad:
        fail(f"{call}: the result has no gradient. Is part of the computation detached?")
    expect_gradients(
        result,
        [("q", q), ("k", k), ("v", v)],
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        call,
    )
