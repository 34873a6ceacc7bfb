"""Questions that check understanding: an answer the student writes down, graded like the exercises.

An answer is a value in the notebook (``answer_04_1 = (12, 197, 197)``). The visible check says whether
it has the right form (a shape, a number, one of the choices); the hidden check, whose literals only the
instructor's notebook holds, says whether it is right and, for an anticipated wrong answer, why it is
wrong. No answer key ships with the course: the released notebook and this module hold none.
"""

import math
import numbers
from typing import Any

from course_utils.feedback import check, fail
from course_utils.judge import subject
from course_utils.wire import Opaque

FORMS = {
    "shape": "a tuple of whole numbers, e.g. (2, 3, 4)",
    "int": "a whole number",
    "number": "a number",
}


@check
def check_answer(
    answer: Any,
    question: str = "",
    form: str = "number",
    expected: Any = None,
    wrong: dict | None = None,
    explain: str = "",
    rel_tol: float | None = None,
) -> None:
    """Check the answer to ``question``: its form (``shape``, ``int``, ``number`` or ``choice:abcd``,
    one letter of those); with ``expected``, whether it is right (a ``number`` within ``rel_tol``, 0.1 %
    by default; whole numbers exactly), naming an
    anticipated wrong answer of ``wrong`` (answer -> why it is wrong), or else saying ``explain``."""
    value = subject(answer, "answer").value(f"the answer to {question}")
    if rel_tol is None:  # whole numbers and shapes are exact; other numbers to 0.1 %
        rel_tol = 0.0 if form in ("int", "shape") else 1e-3
    if isinstance(value, list):
        value = tuple(value)
    _expect_form(value, question, form)
    if expected is None:
        return
    if _same(value, expected, rel_tol):
        return
    for other, why in (wrong or {}).items():
        if _same(value, other, rel_tol):
            fail(f"{question}: {value!r} is not right: {why}", mistake=f"{question}: {value!r}", kind="known")
    fail(f"{question}: {value!r} is not right. {explain}".strip(), mistake=f"{question}: another answer")


def _expect_form(value: Any, question: str, form: str) -> None:
    if isinstance(value, Opaque) or value is None:
        fail(f"{question}: the answer is {'not set' if value is None else value!r}; write {_wanted(form)}.")
    if form.startswith("choice:"):
        choices = form.removeprefix("choice:")
        if not (isinstance(value, str) and len(value.strip()) == 1 and value.strip().lower() in choices):
            letters = ", ".join(choices)
            fail(f"{question}: answer with one letter of {letters}, as a string (e.g. 'a'); got {value!r}.")
        return
    if form == "shape":
        ok = isinstance(value, tuple) and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
        )
    elif form == "int":
        ok = _whole(value)
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        fail(f"{question}: write {_wanted(form)}; got {value!r}.")


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _wanted(form: str) -> str:
    return FORMS.get(form, f"one letter of {', '.join(form.removeprefix('choice:'))}")


def _same(value: Any, other: Any, rel_tol: float) -> bool:
    if isinstance(value, str) and isinstance(other, str):
        return value.strip().lower() == other.strip().lower()
    if isinstance(value, tuple) and isinstance(other, tuple | list):
        return tuple(value) == tuple(other)
    if isinstance(value, numbers.Real) and isinstance(other, numbers.Real) and not isinstance(value, bool):
        return math.isclose(float(value), float(other), rel_tol=rel_tol, abs_tol=1e-12)
    return False
