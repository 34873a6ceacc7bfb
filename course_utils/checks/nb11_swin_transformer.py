"""Checks of notebook 11: the Swin Transformer's windows, window attention with a relative position
bias, the shifted-window mask, patch merging and the Swin block.

The judge computes every reference from its own copies (the mirror's weights, its own inputs), in
another formulation than the exercises':

- windows by ``Tensor.unfold`` (the exercise uses einops); the reverse must give back the judge's input;
- the relative position index by looking each pair's offset up in the list of offsets the table holds;
- the shifted-window mask from which tokens the cyclic shift carried across the image's edge;
- window attention through ``scaled_dot_product_attention``, the bias and the mask one additive mask;
- patch merging by ``F.pixel_unshuffle``;
- the Swin block as *global* attention over all H·W tokens, with an additive mask that lets each token
  see only the tokens of its own (shifted) window that are its neighbours in the image: no roll and no
  windows. Known mistakes (the roll back missing, the mask missing or inverted, ...) are the same
  formula with another geometry.

Where ``timm`` can be imported, the block is compared with timm's ``SwinTransformerBlock`` holding the
judge's weights as well (:func:`timm_swin_block`); where it cannot (CI), that comparison is skipped.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from course_utils.checks.diagnose import HINTS, Sensitivity
from course_utils.checks.parts import (
    GRAD_SEED,
    attention_candidates,
    attention_matrix,
    attention_modules,
    expect_gradients,
    expect_trained,
    find_layers,
    path_of,
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
    fail,
    forbid_calls,
    on,
    random_tensor,
)
from course_utils.judge import Instance, Result, subject
from course_utils.reference import AttentionWeights, sdpa_attention, split_heads

SHORTCUTS = ["scaled_dot_product_attention", "MultiheadAttention", "course_utils", "timm"]
MASKS = (None, "shifted", "random")
TABLE = "relative_position_bias_table"
INDEX = "relative_position_index"
TABLE_HINTS = {
    **HINTS,
    TABLE: f"add the bias self.{TABLE}[self.{INDEX}], rearranged to (heads, N, N), to every head's scores "
    "before the softmax",
}


# ----------------------------------------------------------------------------- windows
def windows_of(x: Tensor, window_size: int) -> Tensor:
    """(b, H, W, c) -> (b·nW, M, M, c): the windows, numbered row-major per image, by ``Tensor.unfold``."""
    m, c = window_size, x.shape[-1]
    return x.unfold(1, m, m).unfold(2, m, m).permute(0, 1, 2, 4, 5, 3).reshape(-1, m, m, c)


def _partition_mistakes(x: Tensor, m: int, expected: Tensor) -> list[Mistake]:
    b, height, width, c = x.shape
    grid = dict(b=b, h=height // m, w=width // m)
    return [
        Mistake(
            "windows numbered column-major",
            "number the windows row by row, as the tokens of an image are read: '(b h w)' in the pattern, "
            "not '(b w h)'.",
            lambda: rearrange(expected, "(b h w) m1 m2 c -> (b w h) m1 m2 c", **grid),
        ),
        Mistake(
            "the batch axis after the windows",
            "the windows of image 0 come first, then those of image 1: '(b h w)', with b first.",
            lambda: rearrange(expected, "(b h w) m1 m2 c -> (h w b) m1 m2 c", **grid),
        ),
        Mistake(
            "rows and columns swapped inside each window",
            "a window is (M, M, c) with its rows first: 'm1 m2' in the same order as in '(h m1) (w m2)'.",
            lambda: expected.transpose(1, 2),
        ),
        Mistake(
            "a reshape without the permute",
            "x.reshape(-1, M, M, c) cuts the memory in runs of M·M tokens along a row, not M×M squares: "
            "split H and W into (h m1) and (w m2) and move m1 next to m2 before merging the axes.",
            lambda: x.reshape(-1, m, m, c),
        ),
    ]


def _reverse_mistakes(windows: Tensor, m: int, height: int, width: int) -> list[Mistake]:
    grid = dict(h=height // m, w=width // m)
    return [
        Mistake(
            "windows read column-major",
            "window number k of an image sits at row k // (W/M), column k % (W/M) of the window grid: "
            "'(b h w)' in the pattern, as in window_partition.",
            lambda: rearrange(windows, "(b w h) m1 m2 c -> b (h m1) (w m2) c", **grid),
        ),
        Mistake(
            "a reshape without the permute",
            "windows.reshape(b, H, W, c) lays the M·M tokens of a window along one row: move the window "
            "axes next to the grid axes first, '(b h w) m1 m2 c -> b (h m1) (w m2) c'.",
            lambda: windows.reshape(-1, height, width, windows.shape[-1]),
        ),
        Mistake(
            "rows and columns swapped inside each window",
            "keep 'm1 m2' in the order of '(h m1) (w m2)'.",
            lambda: rearrange(windows.transpose(1, 2), "(b h w) m1 m2 c -> b (h m1) (w m2) c", **grid),
        ),
    ]


def _changed_inputs(result: Result, call: str) -> None:
    if result.changed_inputs:
        fail(f"{call} changed its {result.changed_inputs[0]} in place: return a new tensor instead.")


@check
def check_window_partition(
    window_partition,
    window_reverse,
    batch: int = 2,
    height: int = 8,
    width: int = 8,
    channels: int = 3,
    window_size: int = 4,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """``window_partition(x, M)`` cuts (b, H, W, c) into (b·nW, M, M, c) row-major windows, and
    ``window_reverse(windows, M, H, W)`` puts them back: the judge's own input again."""
    if height % window_size or width % window_size:
        raise ValueError("height and width must be multiples of window_size")
    partition = subject(window_partition, "window_partition")
    reverse = subject(window_reverse, "window_reverse")
    m, windows = window_size, (height // window_size) * (width // window_size)
    for device in partition.devices():
        x = random_tensor(batch, height, width, channels, seed=seed, dtype=dtype)
        call = f"window_partition(x of shape {tuple(x.shape)}, {m}), {dtype}{on(device)}"
        result = partition.call(x, m, label=call, device=device)
        _changed_inputs(result, call)
        got = as_tensor(result.output, call)
        expected = windows_of(x, m)
        expect_shape(
            got,
            expected.shape,
            call,
            f"{batch} images of {height // m}×{width // m} = {windows} windows each give b·nW = "
            f"{batch * windows} windows of shape ({m}, {m}, {channels}).",
        )
        expect_dtype(got, dtype, call)
        expect_close(got, expected, call, _partition_mistakes(x, m, expected))

        call = (
            f"window_reverse(windows of shape {tuple(expected.shape)}, {m}, {height}, {width}), "
            f"{dtype}{on(device)}"
        )
        result = reverse.call(expected, m, height, width, label=call, device=device)
        _changed_inputs(result, call)
        got = as_tensor(result.output, call)
        swapped = (batch, width, height, channels)
        hint = "H and W are swapped: the grid has H // M rows of windows." if got.shape == swapped else ""
        expect_shape(
            got, x.shape, call, hint or f"window_reverse gives back (b, H, W, c) = {tuple(x.shape)}."
        )
        expect_dtype(got, dtype, call)
        expect_close(got, x, call, _reverse_mistakes(expected, m, height, width))


# ----------------------------------------------------------------------------- relative positions
def _pairs(window_size: int) -> Tensor:
    """(N, N, 2): (row, column) of query i minus those of key j, for the N = M² tokens of a window."""
    m = window_size
    where = torch.cartesian_prod(torch.arange(m), torch.arange(m))  # (N, 2), row-major
    return where[:, None, :] - where[None, :, :]


def reference_index(window_size: int) -> Tensor:
    """(N, N) long: the row of the bias table that holds the offset of each (query, key) pair. The
    table's rows hold the (2M-1)² offsets from (-(M-1), -(M-1)) to (M-1, M-1), row offset first."""
    span = torch.arange(-(window_size - 1), window_size)
    offsets = torch.cartesian_prod(span, span)  # (T, 2): the offset each row of the table stands for
    return (_pairs(window_size)[:, :, None, :] == offsets).all(-1).long().argmax(-1)


def _index_mistakes(window_size: int) -> dict[str, tuple[Tensor, str]]:
    """Wrong index tables, by name, with a hint each."""
    m, stride = window_size, 2 * window_size - 1
    pairs = _pairs(m)
    dr, dc = pairs[..., 0], pairs[..., 1]
    shift = m - 1
    offsets = "offsets r_i - r_j and c_i - c_j run from -(M-1) to M-1"
    return {
        "relative position index not shifted by M - 1 (negative indices)": (
            dr * stride + dc,
            f"the {offsets}: add M - 1 to both so that they run from 0 to 2M - 2 before combining them.",
        ),
        "only the row offset shifted by M - 1": (
            (dr + shift) * stride + dc,
            f"the {offsets}: add M - 1 to the column offset too.",
        ),
        "only the column offset shifted by M - 1": (
            dr * stride + dc + shift,
            f"the {offsets}: add M - 1 to the row offset too.",
        ),
        "row offset multiplied by M instead of 2M - 1": (
            (dr + shift) * m + dc + shift,
            "a shifted column offset takes 2M - 1 values (0 .. 2M - 2): the row offset must step over all "
            "of them, (dr + M - 1) * (2M - 1) + (dc + M - 1).",
        ),
        "row offset multiplied by 2M instead of 2M - 1": (
            (dr + shift) * 2 * m + dc + shift,
            "the table has (2M - 1)² rows: the stride of the row offset is 2M - 1, the number of column "
            "offsets.",
        ),
        "row and column offsets swapped": (
            (dc + shift) * stride + dr + shift,
            "the row offset is the major one: index = (r_i - r_j + M - 1) * (2M - 1) + (c_i - c_j + M - 1).",
        ),
        "key minus query instead of query minus key": (
            (shift - dr) * stride + shift - dc,
            "the offset is that of query i minus that of key j: r_i - r_j and c_i - c_j.",
        ),
    }


def _expect_index(inst: Instance, window_size: int, what: str) -> None:
    """The student's ``relative_position_index`` buffer, where it has one, is the reference index."""
    found = inst.values(INDEX).get(INDEX)
    if found is None:
        return  # computed some other way: judged by the outputs
    expected = reference_index(window_size)
    label = f"{what}.{INDEX}"
    n = window_size**2
    if tuple(found.shape) != (n, n):
        fail(
            f"{label}: expected shape ({n}, {n}), one row of the table for each (query, key) pair; got "
            f"{tuple(found.shape)}."
        )
    if found.is_floating_point() or found.dtype == torch.bool:
        fail(f"{label} is {found.dtype}: an index must be an integer tensor (torch.long).")
    mistakes = [
        Mistake(name, hint, lambda t=table: t.double())
        for name, (table, hint) in _index_mistakes(window_size).items()
    ]
    expect_close(found.double(), expected.double(), label, mistakes)


# ----------------------------------------------------------------------------- window attention
def bias_of(table: Tensor, window_size: int) -> Tensor:
    """(heads, N, N): each head's bias for every (query, key) pair of a window."""
    return table[reference_index(window_size)].permute(2, 0, 1)


def attend(
    x: Tensor, w: AttentionWeights, heads: int, additive: Tensor, scale: float | None = None
) -> Tensor:
    """Multi-head attention of x (B, n, c) with an additive mask broadcastable to (B, heads, n, n)."""
    return sdpa_attention(x, w, heads, additive.to(x.dtype), scale)


def per_window(mask: Tensor, count: int) -> Tensor:
    """The (nW, N, N) mask of one image's windows for all ``count`` = b·nW windows: (b·nW, 1, N, N)."""
    return mask.repeat(count // mask.shape[0], 1, 1)[:, None]


def window_reference(x: Tensor, w: AttentionWeights, heads: int, bias: Tensor, mask: Tensor | None) -> Tensor:
    """Attention inside each window of x (b·nW, N, c): bias (heads, N, N) and mask (nW, N, N) added."""
    additive = bias[None] if mask is None else bias[None] + per_window(mask, len(x))
    return attend(x, w, heads, additive)


def attend_weights(x: Tensor, w: AttentionWeights, heads: int, additive: Tensor | float) -> Tensor:
    """softmax(q·kᵀ/sqrt(d) + additive) as (B, heads, n, n), read out of SDPA with identity values."""
    q, k = (split_heads(x, p, heads) for p in (w.q, w.k))
    return attention_matrix(q, k, None, additive if isinstance(additive, Tensor) else None)


def _attention_mistakes(
    x: Tensor, w: AttentionWeights, heads: int, table: Tensor, m: int, mask: Tensor | None
) -> list[Mistake]:
    n, rows = m * m, table.shape[0]
    extra = 0 if mask is None else per_window(mask, len(x))
    dim = x.shape[-1]

    def with_bias(bias: Tensor, masked: bool = True, **kwargs) -> Tensor:
        return attend(x, w, heads, bias[None] + extra if masked else bias[None], **kwargs)

    bias = bias_of(table, m)
    mistakes = [
        Mistake(
            "relative position bias missing",
            f"add self.{TABLE}[self.{INDEX}] (rearranged to (heads, N, N)) to the scores before the softmax.",
            lambda: with_bias(torch.zeros_like(bias)),
        ),
        Mistake(
            "bias reshaped to (heads, N, N) without the permute",
            f"self.{TABLE}[self.{INDEX}] is (N, N, heads): move the heads axis first, "
            "rearrange(..., 'q k h -> h q k'); a view or reshape mixes the heads.",
            lambda: with_bias(table[reference_index(m)].reshape(heads, n, n)),
        ),
        Mistake(
            "bias added after the softmax",
            "add the bias to the scaled scores q·kᵀ/sqrt(d), before the softmax.",
            lambda: F.linear(
                rearrange(
                    (attend_weights(x, w, heads, extra) + bias) @ split_heads(x, w.v, heads),
                    "b h n d -> b n (h d)",
                ),
                *w.out,
            ),
        ),
        Mistake(
            "scores not scaled",
            "multiply the scores q·kᵀ by self.scale = head_dim ** -0.5 before adding the bias.",
            lambda: with_bias(bias, scale=1.0),
        ),
        Mistake(
            "scaled by 1/sqrt(dim) instead of 1/sqrt(head_dim)",
            f"each head works in head_dim = dim / num_heads = {dim // heads} dimensions: self.scale.",
            lambda: with_bias(bias, scale=dim**-0.5),
        ),
    ]
    for name, (index, hint) in _index_mistakes(m).items():
        if -rows <= int(index.min()) and int(index.max()) < rows:  # other indices raise an IndexError
            mistakes.append(Mistake(name, hint, lambda i=index: with_bias(table[i].permute(2, 0, 1))))
    if mask is not None:
        mistakes.append(
            Mistake(
                "mask ignored",
                "add the mask of each window to its scores: mask is (nW, N, N), the scores (b·nW, heads, N, "
                "N); split b·nW into (b, nW), add mask[None, :, None], merge again.",
                lambda: with_bias(bias, masked=False),
            )
        )
        if len(x) > mask.shape[0] > 1:
            interleaved = mask.repeat_interleave(len(x) // mask.shape[0], 0)[:, None]
            mistakes.append(
                Mistake(
                    "the masks paired with the wrong windows",
                    "the windows are numbered (b nW), image after image: window k has the mask k % nW "
                    "(mask.repeat(b, 1, 1), or split the scores into (b, nW)), not k // b "
                    "(repeat_interleave).",
                    lambda: attend(x, w, heads, bias[None] + interleaved),
                )
            )
    return mistakes


def coordinates(height: int, width: int) -> tuple[Tensor, Tensor]:
    """(H, W) each: the row and the column of every token of an image."""
    return torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")


def same_in_windows(labels: Tensor, window_size: int) -> Tensor:
    """(nW, N, N) bool: whether query i and key j of each window carry the same labels, from labels
    (H, W, k) of the tokens of an image."""
    flags = windows_of(labels[None], window_size).flatten(1, 2)  # (nW, N, k)
    return (flags[:, :, None, :] == flags[:, None, :, :]).all(-1)


def shifted_allowed(height: int, width: int, window_size: int, shift: int) -> Tensor:
    """(nW, N, N) bool, True where query i of a window of the rolled image may attend to key j: both
    were carried across the image's bottom edge by the cyclic shift, or neither (and the same for the
    right edge)."""
    rows, cols = coordinates(height, width)
    return same_in_windows(torch.stack([rows >= height - shift, cols >= width - shift], -1), window_size)


def additive(allowed: Tensor, fill: float = float("-inf")) -> Tensor:
    """The additive mask of a boolean one: 0 where allowed, ``fill`` elsewhere."""
    return torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, fill)


def _test_mask(kind: str, grid: tuple[int, int], window_size: int, seed: int) -> Tensor:
    """The judge's (nW, N, N) additive mask: that of a shifted grid of windows, or a random one."""
    m = window_size
    if kind == "shifted":
        return additive(shifted_allowed(grid[0] * m, grid[1] * m, m, m // 2))
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.rand(grid[0] * grid[1], m * m, m * m, generator=generator) < 0.5
    return additive(allowed | torch.eye(m * m, dtype=torch.bool))


def _table_of(attention: nn.Module, window_size: int, heads: int, what: str) -> Tensor:
    table = getattr(attention, TABLE, None)
    rows = (2 * window_size - 1) ** 2
    if not isinstance(table, Tensor):
        fail(f"{what}: keep the skeleton's self.{TABLE}, the learned bias of every relative position.")
    if tuple(table.shape) != (rows, heads):
        fail(
            f"{what}: self.{TABLE} has shape {tuple(table.shape)}; expected ((2M - 1)², num_heads) = "
            f"({rows}, {heads}), one row per relative position (row offset, column offset)."
        )
    return table.detach()


@check
def check_window_attention(
    WindowAttention: type,
    dim: int = 32,
    window_size: int = 4,
    num_heads: int = 4,
    grid: tuple[int, int] = (2, 2),
    batch: int = 2,
    mask: str | None = None,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """``WindowAttention(dim, window_size, num_heads)(x, mask)`` on the windows x (b·nW, M·M, dim) of
    ``batch`` images of ``grid`` windows, against SDPA with the bias table gathered by the reference index.

    Args:
        mask: None, ``"shifted"`` (the 0/-inf mask of the shifted windows of the grid) or ``"random"``
            (0/-inf, each window its own, every query allowed to see itself).
        grad: also compare the gradient w.r.t. x and check every weight, the bias table too, gets one.
    """
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, not {mask!r}")
    forbid_calls(WindowAttention, SHORTCUTS, "WindowAttention")
    student = subject(WindowAttention, "WindowAttention")
    kwargs = dict(dim=dim, window_size=window_size, num_heads=num_heads)
    what = call_text("WindowAttention", **kwargs)
    n, windows = window_size**2, grid[0] * grid[1]
    for device in student.devices():
        module = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        table = _table_of(module.mirror, window_size, num_heads, what)
        candidates = attention_candidates(module.mirror, what)
        _expect_index(module, window_size, what)
        x = random_tensor(batch * windows, n, dim, seed=seed, dtype=dtype).requires_grad_(grad)
        m = None if mask is None else _test_mask(mask, grid, window_size, seed).to(dtype)
        shown = "" if m is None else f", {mask} mask of shape {tuple(m.shape)}"
        call = f"{what}(x of shape {tuple(x.shape)}{shown}), {dtype}{on(device)}"
        masks = {} if m is None else {"mask": m}
        result = module.call(x, label=call, grad=GRAD_SEED if grad else None, no_grad=not grad, **masks)
        got = as_tensor(result.output, call)
        expect_shape(got, x.shape, call, "Window attention maps (b·nW, N, dim) to the same shape.")
        expect_dtype(got, dtype, call)
        bias = bias_of(table, window_size)
        with torch.no_grad():
            references = [window_reference(x, w, num_heads, bias, m) for w in candidates]
            if not any(close(got, r) for r in references):

                def run() -> Tensor:
                    return as_tensor(module.call(x.detach(), label=call, no_grad=True, **masks).output, call)

                def reference() -> Tensor:
                    return window_reference(x, candidates[0], num_heads, bias_of(table, window_size), m)

                weights = Sensitivity(module, run, reference, TABLE_HINTS)
                mistakes = _attention_mistakes(x.detach(), candidates[0], num_heads, table, window_size, m)
                expect_close(
                    got, references[0], call, mistakes, diagnoses=[weights.ignored, weights.misplaced]
                )
        chosen = next(w for w, r in zip(candidates, references, strict=True) if close(got, r))
        if grad:
            expect_trained(result, call)
            expect_gradients(
                result, [("x", x)], lambda x: window_reference(x, chosen, num_heads, bias, m), call
            )


# ----------------------------------------------------------------------------- the shifted-window mask
def _mask_mistakes(height: int, width: int, m: int, shift: int, expected: Tensor) -> list[Mistake]:
    def allowed_where(labels: Tensor) -> Tensor:
        return same_in_windows(labels, m).double()

    rows, cols = coordinates(height, width)
    origin = torch.stack([(rows + shift) % height // m, (cols + shift) % width // m], -1)
    early = torch.stack([rows >= shift, cols >= shift], -1)
    grid = dict(h=height // m, w=width // m)
    return [
        Mistake(
            "mask inverted",
            "the mask is 0 where two tokens are in the same region (they may attend to each other) and "
            "-inf where they are not.",
            lambda: 1 - expected,
        ),
        Mistake(
            "no region separated: every pair allowed",
            "give each of the regions its own label on the (H, W) grid (the last M - s ... last s rows "
            "and columns hold the tokens the roll wrapped around), cut the label grid into windows, and "
            "forbid the pairs whose labels differ.",
            lambda: torch.ones_like(expected),
        ),
        Mistake(
            "tokens from different original windows kept apart",
            "the shifted windows exist so that neighbours from adjacent windows meet: the mask separates "
            "only the tokens that the roll carried across the image's edge (the last s rows and columns), "
            "not the tokens of different windows of the previous block.",
            lambda: allowed_where(origin),
        ),
        Mistake(
            "regions cut s from the start instead of s from the end",
            "after torch.roll(x, -s) the tokens that wrapped around are the LAST s rows and columns: the "
            "regions are slice(0, -M), slice(-M, -s) and slice(-s, None).",
            lambda: allowed_where(early),
        ),
        Mistake(
            "windows numbered column-major",
            "use your window_partition (row-major windows) to cut the label grid into windows.",
            lambda: rearrange(expected, "(h w) i j -> (w h) i j", **grid),
        ),
    ]


@check
def check_shifted_window_mask(
    shifted_window_mask, height: int = 8, width: int = 8, window_size: int = 4, shift_size: int = 2
) -> None:
    """``shifted_window_mask(H, W, M, s)``: (nW, M·M, M·M), 0 where two tokens of a window of the rolled
    grid may attend to each other, -inf (or a large negative number) where the roll brought them together
    from opposite edges of the image."""
    if height % window_size or width % window_size or not 0 < shift_size < window_size:
        raise ValueError(
            "height and width must be multiples of window_size, and 0 < shift_size < window_size"
        )
    student = subject(shifted_window_mask, "shifted_window_mask")
    m, n = window_size, window_size**2
    windows = (height // m) * (width // m)
    call = f"shifted_window_mask({height}, {width}, {m}, {shift_size})"
    got = as_tensor(student.call(height, width, m, shift_size, label=call).output, call)
    expect_shape(
        got,
        (windows, n, n),
        call,
        f"one (M·M, M·M) mask for each of the {windows} windows of the grid: (nW, M·M, M·M).",
    )
    if got.dtype == torch.bool:
        fail(
            f"{call} returned a boolean mask, but the attention adds the mask to its scores: turn it into 0 "
            "where attention is allowed and float('-inf') where it is not (masked_fill)."
        )
    if not got.is_floating_point():
        fail(f"{call} returned {got.dtype}; expected a float mask of 0 and float('-inf').")
    allowed, blocked = got == 0, got <= -100
    if not (allowed | blocked).all():
        index = tuple(int(i) for i in (~(allowed | blocked)).nonzero()[0])
        fail(
            f"{call}: the mask holds 0 where attention is allowed and float('-inf') (or a large negative "
            f"number, -100 or less) where it is not; at [window, query, key] = {list(index)} it holds "
            f"{float(got[index]):.4g}. A softmax barely changes when a score is lowered by 1: the forbidden "
            "keys must get no weight at all."
        )
    expected = shifted_allowed(height, width, m, shift_size).double()
    expect_close(
        allowed.double(),
        expected,
        f"{call}, read as 1 where it is 0 (attention allowed) and 0 where it is -inf",
        _mask_mistakes(height, width, m, shift_size, expected),
    )


# ----------------------------------------------------------------------------- patch merging
def merged(x: Tensor) -> Tensor:
    """(b, H, W, c) -> (b, H/2, W/2, 4c): the 2×2 neighbours (0, 0), (1, 0), (0, 1), (1, 1) of each
    group, concatenated, by ``F.pixel_unshuffle`` (whose channels come out as (c dh dw))."""
    y = F.pixel_unshuffle(x.permute(0, 3, 1, 2), 2)
    return rearrange(y, "b (c dh dw) h w -> b h w (dw dh c)", dh=2, dw=2)


def _merging_mistakes(x: Tensor, project, expected_merged: Tensor) -> list[Mistake]:
    b, height, width, c = x.shape
    y = F.pixel_unshuffle(x.permute(0, 3, 1, 2), 2)

    def order(pattern: str) -> Tensor:
        return project(rearrange(y, f"b (c dh dw) h w -> b h w ({pattern})", dh=2, dw=2))

    return [
        Mistake(
            "neighbours in the order (0, 0), (0, 1), (1, 0), (1, 1)",
            "Swin (and timm) concatenate x0 = (0, 0), x1 = (1, 0), x2 = (0, 1), x3 = (1, 1), offsets as "
            "(row, column): the row offset changes fastest, '(dw dh c)'.",
            lambda: order("dh dw c"),
        ),
        *(
            Mistake(
                "channels first in the concatenation",
                "concatenate the four neighbours' c features one after the other: the channel axis comes "
                "last in the group, '(dw dh c)'.",
                lambda p=pattern: order(p),
            )
            for pattern in ("c dw dh", "c dh dw")
        ),
        Mistake(
            "a reshape without the permute",
            "x.reshape(b, H/2, W/2, 4c) groups tokens that follow each other in memory, not 2×2 squares: "
            "split H and W into (h dh) and (w dw) and move dh, dw next to c.",
            lambda: project(x.reshape(b, height // 2, width // 2, 4 * c)),
        ),
        Mistake(
            "LayerNorm skipped",
            "normalise the 4c features (self.norm) before the reduction.",
            lambda: F.linear(expected_merged, project.linear.weight),
        ),
    ]


class _Projection:
    """The mirror's LayerNorm(4c) then Linear(4c -> 2c), as one callable."""

    def __init__(self, norm: nn.LayerNorm, linear: nn.Linear) -> None:
        self.norm, self.linear = norm, linear

    def __call__(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x))


def _merging_layers(mirror: nn.Module, dim: int, what: str) -> _Projection:
    norms, linears = find_layers(mirror, nn.LayerNorm), find_layers(mirror, nn.Linear)
    if len(norms) != 1 or tuple(norms[0].normalized_shape) != (4 * dim,):
        shapes = [tuple(n.normalized_shape) for n in norms]
        fail(
            f"{what}: expected one nn.LayerNorm(4 * dim) = LayerNorm({4 * dim}) over the merged features, "
            f"found {len(norms)} {shapes}."
        )
    if len(linears) != 1 or (linears[0].in_features, linears[0].out_features) != (4 * dim, 2 * dim):
        fail(
            f"{what}: expected one nn.Linear(4 * dim, 2 * dim) = Linear({4 * dim}, {2 * dim}), the reduction."
        )
    if linears[0].bias is not None:
        fail(f"{what}: Swin's reduction has no bias: nn.Linear(4 * dim, 2 * dim, bias=False).")
    return _Projection(norms[0], linears[0])


@check
def check_patch_merging(
    PatchMerging: type,
    dim: int = 8,
    height: int = 4,
    width: int = 6,
    batch: int = 2,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """``PatchMerging(dim)(x)``: (b, H, W, dim) -> (b, H/2, W/2, 2·dim), the 2×2 neighbours in the order
    (0, 0), (1, 0), (0, 1), (1, 1), LayerNorm(4·dim), Linear(4·dim -> 2·dim) without bias."""
    student = subject(PatchMerging, "PatchMerging")
    what = call_text("PatchMerging", dim=dim)
    for device in student.devices():
        module = student.build(seed, device=device, dtype=dtype, label=what, dim=dim)
        project = _merging_layers(module.mirror, dim, what)
        x = random_tensor(batch, height, width, dim, seed=seed, dtype=dtype).requires_grad_(grad)
        call = f"{what}(x of shape {tuple(x.shape)}), {dtype}{on(device)}"
        result = module.call(x, label=call, grad=GRAD_SEED if grad else None, no_grad=not grad)
        got = as_tensor(result.output, call)
        expect_shape(
            got,
            (batch, height // 2, width // 2, 2 * dim),
            call,
            "each 2×2 group of tokens becomes one token of 2·dim features: (b, H/2, W/2, 2·dim).",
        )
        expect_dtype(got, dtype, call)
        with torch.no_grad():
            concatenated = merged(x.detach())
            expect_close(
                got, project(concatenated), call, _merging_mistakes(x.detach(), project, concatenated)
            )
        if grad:
            expect_trained(result, call)
            expect_gradients(result, [("x", x)], lambda x: project(merged(x)), call)


# ----------------------------------------------------------------------------- the Swin block
@dataclass(frozen=True)
class BlockParts:
    """The judge's copies of a Swin block's layers."""

    norm1: nn.LayerNorm
    norm2: nn.LayerNorm
    attention: nn.Module
    weights: list[AttentionWeights]
    heads: int
    table: Tensor
    fc1: nn.Linear
    fc2: nn.Linear


def block_parts(block: nn.Module, window_size: int, what: str) -> BlockParts:
    """Find a Swin block's two LayerNorms, its window attention and the MLP's two Linears."""
    norms = find_layers(block, nn.LayerNorm)
    if len(norms) != 2:
        fail(
            f"{what}: a pre-norm Swin block has two nn.LayerNorm layers, norm1 and norm2; found {len(norms)}."
        )
    found = attention_modules(block)
    if len(found) != 1:
        fail(
            f"{what}: expected one WindowAttention inside (queries, keys, values, projection); found "
            f"{len(found)}."
        )
    attention = found[0]
    heads = getattr(attention, "num_heads", None)
    if not isinstance(heads, int):
        fail(f"{what}: its WindowAttention should keep the number of heads in self.num_heads.")
    table = _table_of(attention, window_size, heads, f"the WindowAttention inside {what}")
    inside = {id(m) for m in attention.modules()}
    linears = [m for m in find_layers(block, nn.Linear) if id(m) not in inside]
    if len(linears) != 2:
        fail(f"{what}: expected an MLP of two nn.Linear layers beside the attention; found {len(linears)}.")
    weights = attention_candidates(attention, what)
    return BlockParts(norms[0], norms[1], attention, weights, heads, table, linears[0], linears[1])


def token_geometry(height: int, width: int, window_size: int, roll: int) -> tuple[Tensor, ...]:
    """For each token of a (height, width) image, row-major: its row and column once the image is rolled
    by -roll along both axes, the number of the window it lands in there, and its place in that window."""
    rows, cols = (t.flatten() for t in coordinates(height, width))
    r, c = (rows - roll) % height, (cols - roll) % width
    window = (r // window_size) * (width // window_size) + c // window_size
    place = (r % window_size) * window_size + c % window_size
    return r, c, window, place


def global_mask(
    table: Tensor,
    height: int,
    width: int,
    window_size: int,
    roll: int,
    regions: int,
    inverted: float | None = None,
) -> Tensor:
    """(heads, n, n) additive mask of global attention over the n = H·W tokens that equals attention in
    the windows of the image rolled by -``roll``: each token sees the tokens of its window, with the
    relative position bias of their places in it; with ``regions`` > 0, only those the roll carried
    across the same edges of the image as itself. ``inverted`` is the fill of a mask that forbids the
    pairs it should allow (a known mistake)."""
    r, c, window, place = token_geometry(height, width, window_size, roll)
    same_window = window[:, None] == window[None, :]
    flags = torch.stack([r >= height - regions, c >= width - regions], -1)
    same_region = (flags[:, None] == flags[None, :]).all(-1) if regions else torch.ones_like(same_window)
    bias = table[reference_index(window_size)][place[:, None], place[None, :]].permute(2, 0, 1)
    if inverted is not None:  # the mask's fill where it should be 0, and 0 where it should be the fill
        return (bias + torch.where(same_region, inverted, 0.0)).masked_fill(~same_window, float("-inf"))
    return bias.masked_fill(~(same_window & same_region), float("-inf"))


@dataclass(frozen=True)
class Geometry:
    """How a (possibly wrong) block groups the tokens: the roll, the shift its mask was made for, the
    extra roll its output gets (0 when rolled back right), an inverted mask's fill."""

    roll: int = 0
    regions: int = 0
    misplaced: int = 0
    inverted: float | None = None


def block_forward(
    p: BlockParts,
    weights: AttentionWeights,
    x: Tensor,
    window_size: int,
    geometry: Geometry,
    attention_residual: bool = True,
    mlp_residual: bool = True,
    post_norm: bool = False,
) -> Tensor:
    """The block's output on x (b, H, W, c), with global attention under :func:`global_mask`."""
    b, height, width, c = x.shape
    mask = global_mask(
        p.table, height, width, window_size, geometry.roll, geometry.regions, geometry.inverted
    )

    blocked = (mask == float("-inf")).all(-1).any(0)  # tokens that may see no key: a softmax gives NaN

    def attention(y: Tensor) -> Tensor:
        out = attend(y.reshape(b, height * width, c), weights, p.heads, mask)
        out = out.masked_fill(blocked[:, None], float("nan")).reshape(b, height, width, c)
        return torch.roll(out, shifts=(geometry.misplaced,) * 2, dims=(1, 2)) if geometry.misplaced else out

    def mlp(y: Tensor) -> Tensor:
        return p.fc2(F.gelu(p.fc1(y)))

    if post_norm:
        h = p.norm1(x + attention(x))
        return p.norm2(h + mlp(h))
    a = attention(p.norm1(x))
    h = x + a if attention_residual else a
    m = mlp(p.norm2(h))
    return h + m if mlp_residual else m


def _block_mistakes(p: BlockParts, w: AttentionWeights, x: Tensor, m: int, s: int) -> list[Mistake]:
    right = Geometry(roll=s, regions=s)

    def variant(geometry: Geometry = right, **options) -> Tensor:
        return block_forward(p, w, x, m, geometry, **options)

    mistakes = [
        Mistake(
            "the residual is missing around the attention",
            "x = x + (roll back of the windows' attention on norm1(x)): keep the input as the shortcut.",
            lambda: variant(attention_residual=False),
        ),
        Mistake(
            "the residual is missing around the MLP",
            "return x + self.mlp(self.norm2(x)).",
            lambda: variant(mlp_residual=False),
        ),
        Mistake(
            "post-norm instead of pre-norm",
            "Swin normalises before each sublayer: x + attention(norm1(x)), then x + mlp(norm2(x)).",
            lambda: variant(post_norm=True),
        ),
    ]
    if not s:
        return mistakes
    hint_mask = "pass the mask of the shifted windows to the attention: self.attention(windows, mask=mask)."
    return mistakes + [
        Mistake(
            "the shift not undone (roll back missing)",
            f"after window_reverse, roll the image back: torch.roll(x, shifts=(s, s), dims=(1, 2)), s = {s}; "
            "each token's output must land where its input was.",
            lambda: variant(Geometry(roll=s, regions=s, misplaced=-s)),
        ),
        Mistake(
            "rolled back the wrong way (by -s twice)",
            "the roll back undoes the first roll: shifts=(+s, +s) after shifts=(-s, -s).",
            lambda: variant(Geometry(roll=s, regions=s, misplaced=-2 * s)),
        ),
        Mistake(
            "the windows shifted the wrong way (torch.roll by +s first)",
            "roll the image by -s (shifts=(-s, -s), dims=(1, 2)) before cutting the windows: the mask of "
            "shifted_window_mask is made for that direction; then roll back by +s.",
            lambda: variant(Geometry(roll=-s, regions=s)),
        ),
        Mistake("mask missing", hint_mask, lambda: variant(Geometry(roll=s))),
        Mistake(
            "no shift: regular windows where shift_size > 0",
            f"with shift_size = {s}, roll the normalised image by (-s, -s) along (H, W) before the windows, "
            "pass the mask, and roll back after window_reverse.",
            lambda: variant(Geometry()),
        ),
        *(
            Mistake(
                "mask inverted",
                "the mask is 0 where two tokens are in the same region and -inf where they are not: run "
                "check_shifted_window_mask(shifted_window_mask).",
                lambda fill=fill: variant(Geometry(roll=s, regions=s, inverted=fill)),
            )
            for fill in (float("-inf"), -100.0)
        ),
    ]


def _checked_attention(
    inst: Instance, p: BlockParts, window_size: int, dtype: torch.dtype, seed: int, what: str
):
    """The attention weights' reading, once the student's WindowAttention is right on its own."""
    label = f"the WindowAttention inside {what}"
    n, c = window_size**2, p.fc2.out_features
    x = random_tensor(3, n, c, seed=seed + 17, dtype=dtype)
    got = as_tensor(
        inst.call(x, label=label, path=path_of(inst.mirror, p.attention), no_grad=True).output, label
    )
    bias = bias_of(p.table, window_size)
    for weights in p.weights:
        if close(got, window_reference(x, weights, p.heads, bias, None)):
            return weights
    fail(
        f"{what}: the WindowAttention inside does not give the attention of its windows. Fix it first: run "
        "check_window_attention(WindowAttention)."
    )


def timm_swin_block(
    block: nn.Module,
    height: int,
    width: int,
    window_size: int,
    shift_size: int,
    weights: AttentionWeights | None = None,
) -> nn.Module | None:
    """timm's ``SwinTransformerBlock`` holding the weights of ``block`` (a SwinBlock of the notebook, or
    the judge's copy of one), in eval mode; None where timm cannot be imported."""
    try:
        from timm.models.swin_transformer import SwinTransformerBlock
    except ImportError:
        return None
    p = block_parts(block, window_size, "SwinBlock")
    w = weights or p.weights[0]
    dim, hidden = p.fc1.in_features, p.fc1.out_features
    if min(height, width) <= window_size:
        return None  # timm shrinks the window to the image and does not shift
    try:
        ref = SwinTransformerBlock(
            dim,
            input_resolution=(height, width),
            num_heads=p.heads,
            window_size=window_size,
            shift_size=shift_size,
            mlp_ratio=hidden / dim,
            qkv_bias=w.q[1] is not None,
        )
    except TypeError:  # a timm whose block takes other arguments
        return None
    if ref.mlp.fc1.out_features != hidden:
        return None
    ref = ref.to(p.table.dtype).eval()
    with torch.no_grad():
        for ours, theirs in (
            (p.norm1, ref.norm1),
            (p.norm2, ref.norm2),
            (p.fc1, ref.mlp.fc1),
            (p.fc2, ref.mlp.fc2),
        ):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
        ref.attn.qkv.weight.copy_(torch.cat([w.q[0], w.k[0], w.v[0]]))
        if w.q[1] is not None:
            ref.attn.qkv.bias.copy_(torch.cat([w.q[1], w.k[1], w.v[1]]))
        ref.attn.proj.weight.copy_(w.out[0])
        if w.out[1] is not None:
            ref.attn.proj.bias.copy_(w.out[1])
        else:
            ref.attn.proj.bias.zero_()
        ref.attn.relative_position_bias_table.copy_(p.table)
    return ref


def _one_block(
    student,
    kwargs: dict,
    x: Tensor,
    height: int,
    width: int,
    device: torch.device,
    dtype: torch.dtype,
    grad: bool,
    seed: int,
) -> Tensor:
    """Check one SwinBlock built with ``kwargs`` on x; return the judge's expected output."""
    m, s = kwargs["window_size"], kwargs["shift_size"]
    what = call_text("SwinBlock", **kwargs)
    inst = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
    p = block_parts(inst.mirror, m, what)
    if p.heads != kwargs["num_heads"]:
        fail(f"{what}: its WindowAttention has num_heads={p.heads}, expected {kwargs['num_heads']}.")
    weights = _checked_attention(inst, p, m, dtype, seed, what)
    x = x.detach().clone().requires_grad_(grad)
    call = f"{what}(x of shape {tuple(x.shape)}), {dtype}{on(device)}"
    result = inst.call(x, label=call, grad=GRAD_SEED if grad else None, no_grad=not grad, allow_changes=True)
    if result.changed_inputs:
        fail(f"{call} changed its input x in place: is a residual added in place (x += ...)?")
    got = as_tensor(result.output, call)
    expect_shape(got, x.shape, call, "A Swin block maps (b, H, W, dim) to the same shape.")
    expect_dtype(got, dtype, call)
    with torch.no_grad():
        expected = block_forward(p, weights, x.detach(), m, Geometry(roll=s, regions=s))
        expect_close(got, expected, call, _block_mistakes(p, weights, x.detach(), m, s))
        if dtype in (torch.float32, torch.float64):
            theirs = timm_swin_block(inst.mirror, height, width, m, s, weights)
            if theirs is not None:
                expect_close(got, theirs(x.detach()), f"{call} compared with timm's SwinTransformerBlock")
    if grad:
        expect_trained(result, call)
        expect_gradients(
            result, [("x", x)], lambda x: block_forward(p, weights, x, m, Geometry(roll=s, regions=s)), call
        )
    return expected


@check
def check_swin_block(
    SwinBlock: type,
    dim: int = 32,
    num_heads: int = 4,
    window_size: int = 4,
    shift_size: int | None = None,
    mlp_ratio: float = 4.0,
    height: int = 8,
    width: int = 8,
    batch: int = 2,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """A pair of ``SwinBlock(dim, num_heads, window_size, shift_size, mlp_ratio)``: regular windows
    (shift_size=0), then shifted ones (shift_size, window_size // 2 by default), on x (b, H, W, dim),
    each against global attention restricted to the token's (shifted) window, and against timm's
    ``SwinTransformerBlock`` where timm is installed.

    Args:
        grad: also compare the gradient w.r.t. x and check that every weight gets one.
    """
    shift = window_size // 2 if shift_size is None else shift_size
    if height % window_size or width % window_size or not 0 < shift < window_size:
        raise ValueError(
            "height and width must be multiples of window_size, and 0 < shift_size < window_size"
        )
    student = subject(SwinBlock, "SwinBlock")
    for device in student.devices():
        x = random_tensor(batch, height, width, dim, seed=seed, dtype=dtype)
        for i, s in enumerate((0, shift)):
            kwargs = dict(
                dim=dim, num_heads=num_heads, window_size=window_size, shift_size=s, mlp_ratio=mlp_ratio
            )
            x = _one_block(student, kwargs, x, height, width, device, dtype, grad, seed + i)
