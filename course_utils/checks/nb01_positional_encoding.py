"""Check of Q1: ``getPositionEncoding``, the sinusoidal position table.

The student's function is called through the probe on the judge's arguments; the table it returns is
compared with the judge's own (:func:`course_utils.reference.sinusoidal_table`), at the precision the
student's table was computed in (a float32 array is judged as float32). Where it differs and no known
mistake matches, :func:`table_diagnoses` reads the table as waves: the positions its rows hold, and the
function and frequency of its first wrong column (also used for notebook 03's buffer).
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from course_utils.checks.diagnose import of_output
from course_utils.feedback import (
    Diagnosis,
    Mistake,
    as_tensor,
    call_text,
    check,
    close,
    expect_close,
    expect_shape,
    fail,
    forbid_calls,
    tolerance_of,
)
from course_utils.judge import subject
from course_utils.reference import sinusoidal_table

LECTURE_CASES = ((4, 4, 100), (16, 8, 10000))
LAYOUT = "row k is position k; columns 2i and 2i+1 hold sin and cos of k / n^(2i/d)."
PAIRS = (
    "both columns of pair i, 2i (sin) and 2i+1 (cos), use the same denominator n^(2i/d), where "
    "i = 0 .. d/2 - 1 counts the pairs, not the columns"
)
Tolerance = tuple[float, float]  # (atol, rtol)
NUMPY_PRECISION = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}


def _mistakes(seq_len: int, d: int, n: float) -> list[Mistake]:
    table = sinusoidal_table(seq_len, d, n)
    swapped = table.reshape(seq_len, -1, 2)[..., ::-1].reshape(seq_len, d)
    as_torch = torch.from_numpy
    return [
        Mistake(
            "sin and cos swapped",
            "even columns 2i hold sin(k / n^(2i/d)), odd columns 2i+1 hold cos.",
            lambda: as_torch(swapped.copy()),
        ),
        Mistake(
            "exponent i/d instead of 2i/d",
            "i counts the sin/cos pairs (0 .. d/2 - 1); the denominator is n ** (2 * i / d).",
            lambda: as_torch(sinusoidal_table(seq_len, 2 * d, n)[:, :d]),
        ),
        Mistake(
            "integer division in the exponent",
            "2 * i // d is 0 for every i < d/2: write 2 * i / d.",
            lambda: as_torch(np.tile(sinusoidal_table(seq_len, 2, n), (1, d // 2))),
        ),
        Mistake(
            "n ignored (10000 hard-coded)",
            "use the argument n in the denominator n ** (2 * i / d).",
            lambda: as_torch(sinusoidal_table(seq_len, d, 10000)) if n != 10000 else None,
        ),
    ]


def precision_of(value: Any) -> torch.dtype:
    """The dtype the student's table was computed in (float64 for lists and integer arrays)."""
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.dtype
    if isinstance(value, np.ndarray):
        return NUMPY_PRECISION.get(value.dtype, torch.float64)
    return torch.float64


def _waves(positions: Tensor, d: int, n: float) -> Tensor:
    """The sinusoidal rows of ``positions`` (any numbers), in float64."""
    angles = positions.double()[:, None] * n ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :d]


def _fit_wave(column: Tensor, tolerance: Tolerance) -> tuple[float, float, float] | None:
    """(ω, amplitude, phase) with ``column[k] = amplitude · sin(ω k + phase)`` for every k, ω in [0, π],
    or None where the column is no such wave. ω comes from c(k+1) + c(k-1) = 2 cos(ω) c(k)."""
    c = column.double()
    if len(c) < 3 or not torch.isfinite(c).all() or not c[1:-1].any():
        return None
    cos_omega = float((c[1:-1] * (c[2:] + c[:-2])).sum() / (2 * (c[1:-1] ** 2).sum()))
    omega = math.acos(min(max(cos_omega, -1.0), 1.0))
    k = torch.arange(len(c), dtype=torch.float64)
    basis = torch.stack([(omega * k).sin(), (omega * k).cos()], dim=1)
    a, b = torch.linalg.lstsq(basis, c[:, None]).solution[:, 0].tolist()
    if not close(basis @ torch.tensor([a, b], dtype=torch.float64), c, tolerance):
        return None
    return omega, math.hypot(a, b), math.atan2(b, a)


def _positions_offset(got: Tensor, n: float, tolerance: Tolerance) -> Diagnosis | None:
    """Row k holds position k + s for one whole number s != 0 (read off the fastest pair's phase)."""
    seq_len, d = got.shape
    fit = _fit_wave(got[:, 0], tolerance) if d >= 2 else None
    if fit is None or abs(fit[0] - 1) > 1e-3 or abs(fit[1] - 1) > 1e-3:
        return None
    first = fit[2]  # sin(k + s): the phase of the first column is s, up to 2π
    turns = [first + 2 * math.pi * m for m in range(-seq_len, seq_len + 1)]
    for s in sorted({round(t) for t in turns if abs(t - round(t)) < 1e-3}, key=abs):
        if s and abs(s) <= 2 * seq_len:
            shifted = _waves(torch.arange(seq_len) + s, d, n)
            if close(got, shifted, tolerance):
                return Diagnosis(
                    "positions shifted",
                    f"row k of your table holds position k {'+' if s > 0 else '-'} {abs(s)} (row 0 holds "
                    f"position {s})",
                    "positions start at 0: row k holds sin and cos of k / n^(2i/d), for k = 0 .. seq_len - 1",
                )
    return None


def _wrong_column(got: Tensor, expected: Tensor, n: float, tolerance: Tolerance) -> Diagnosis | None:
    """The first wrong column, read as a wave: the function (sin or cos) or the frequency that differs."""
    d = got.shape[1]
    wrong = [j for j in range(d) if not close(got[:, j], expected[:, j], tolerance)]
    fit = _fit_wave(got[:, wrong[0]], tolerance) if wrong and n > 1 else None
    if fit is None:
        return None
    j, (omega, amplitude, phase) = wrong[0], fit
    pair, kind, found = j // 2, ("sin", "cos")[j % 2], _kind(amplitude, phase)
    denominator = n ** (2 * pair / d)
    expected_wave = f"{kind}(k / {denominator:.4g})"
    where = f"column {j} (the {kind} of pair i = {pair})"
    if abs(omega * denominator - 1) < 1e-3:
        if found is None or found == kind:
            return None
        return Diagnosis(
            "sin and cos mixed up",
            f"{where} holds {found}(k / {denominator:.4g}) where {expected_wave} is expected",
            "even columns 2i hold sin, odd columns 2i+1 hold cos, of the same k / n^(2i/d)",
        )
    if omega == 0:
        shown = "a constant"
    else:
        shown = f"{found}(k / {1 / omega:.4g})" if found else "a wave of another frequency"
    sentence = f"{where} holds {shown}, where {kind}(k / n^(2i/d)) = {expected_wave} is expected"
    exponent = d * math.log(1 / omega) / math.log(n) if omega > 0 else -1.0
    if abs(exponent - round(exponent)) < 1e-3 and round(exponent) >= 0:
        sentence += f": your denominator is n^({round(exponent)}/d), the pair's is n^({2 * pair}/d)"
    return Diagnosis("wrong frequency", sentence, PAIRS)


def _kind(amplitude: float, phase: float) -> str | None:
    """``sin``, ``cos``, ``-sin`` or ``-cos`` for a unit wave of that phase, else None."""
    if abs(amplitude - 1) > 1e-3:
        return None
    for name, value in (("sin", 0.0), ("cos", math.pi / 2), ("-sin", math.pi), ("-cos", -math.pi / 2)):
        if abs(math.remainder(phase - value, 2 * math.pi)) < 1e-3:
            return name
    return None


def table_diagnoses(
    got: Tensor, expected: Tensor, n: float, tolerance: Tolerance
) -> list[Callable[[], Diagnosis | None]]:
    """General diagnostics of a (seq_len, d) sinusoidal table: the positions its rows hold, the right
    values arranged otherwise (:func:`of_output`, with this exercise's layout as the hint), then the
    function (sin or cos) and frequency of its first wrong column."""
    got, expected = got.detach().cpu().double(), expected.detach().cpu().double()
    if got.ndim != 2 or got.shape != expected.shape:
        return []

    def rearranged() -> Diagnosis | None:
        found = of_output(got, expected, tolerance)
        return found and replace(found, hint=LAYOUT.removesuffix("."))

    return [
        lambda: _positions_offset(got, n, tolerance),
        rearranged,
        lambda: _wrong_column(got, expected, n, tolerance),
    ]


@check
def check_position_encoding(
    getPositionEncoding: Callable, cases: Sequence[tuple[int, int, float | None]] = LECTURE_CASES
) -> None:
    """Compare ``getPositionEncoding(seq_len, d, n)`` with the sinusoidal table for each case.

    Args:
        getPositionEncoding: the student's function, returning a (seq_len, d) array.
        cases: (seq_len, d, n) triples; d must be even; n=None leaves n at its default, 10000.
    """
    forbid_calls(getPositionEncoding, ["course_utils", "sinusoidal_table"], "getPositionEncoding")
    student = subject(getPositionEncoding, "getPositionEncoding")
    for seq_len, d, n in cases:
        given = {} if n is None else {"n": n}
        n = 10000 if n is None else n
        what = call_text("getPositionEncoding", seq_len=seq_len, d=d, **given)
        output = student.call(seq_len, d, label=what, **given).output
        got = as_tensor(output, what).double()
        expected = torch.from_numpy(sinusoidal_table(seq_len, d, n))
        if tuple(got.shape) == (d, seq_len) and d != seq_len:
            fail(
                f"{what}: expected shape {(seq_len, d)}, got {(d, seq_len)}: rows and columns "
                f"are swapped. {LAYOUT}"
            )
        expect_shape(got, (seq_len, d), what, LAYOUT)
        if seq_len > 1 and not got[1:].any() and expected[1:].any():
            fail(
                f"{what}: every row after row 0 is zero. This is the known mistake `return` "
                "inside the loop. Hint: dedent `return P` so that it runs after both loops."
            )
        tolerance = tolerance_of(torch.float64, precision_of(output))
        expect_close(
            got,
            expected,
            what,
            _mistakes(seq_len, d, n),
            hint=LAYOUT,
            tolerance=tolerance,
            diagnoses=table_diagnoses(got, expected, n, tolerance),
        )
