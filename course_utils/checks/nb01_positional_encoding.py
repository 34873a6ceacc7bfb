"""Check of Q1: ``getPositionEncoding``, the sinusoidal position table.

The student's function is called through the probe on the judge's arguments; the table it returns is
compared with the judge's own (:func:`course_utils.reference.sinusoidal_table`).
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch

from course_utils.feedback import (
    Mistake,
    as_tensor,
    call_text,
    check,
    expect_close,
    expect_shape,
    fail,
    forbid_calls,
)
from course_utils.judge import subject
from course_utils.reference import sinusoidal_table

LECTURE_CASES = ((4, 4, 100), (16, 8, 10000))
LAYOUT = "row k is position k; columns 2i and 2i+1 hold sin and cos of k / n^(2i/d)."


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
        got = as_tensor(student.call(seq_len, d, label=what, **given).output, what).double()
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
        expect_close(got, expected, what, _mistakes(seq_len, d, n), hint=LAYOUT)
