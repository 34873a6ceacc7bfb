"""Whatever a student hands in, a check answers with an AssertionError, never a crash of its own.

The checks tried are every check of every exercise of ``course_utils.exercises``: a class exercise gets
modules whose forward returns garbage, a function exercise gets functions that do.
"""

import inspect

import pytest
import torch
from torch import nn

from course_utils import checks
from course_utils.exercises import EXERCISES

RESULTS = {
    "None": lambda x: None,
    "the input": lambda x: x,
    "zeros of another shape": lambda x: torch.zeros(1),
    "a string": lambda x: "tensor",
    "a tuple": lambda x: (x, x),
    "float64": lambda x: x.double(),
    "NaN": lambda x: x * float("nan"),
    "an exception": lambda x: 1 / 0,
    "an object": lambda x: object(),
}
CHECKS = sorted({(check, e.kind) for e in EXERCISES for check in e.checks})


def first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    found = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    return found[0] if found else torch.ones(4, 4)


def garbage(kind: str, result):
    """A student's class (``module``) or function whose result is ``result`` of its first input."""
    if kind == "function":
        return lambda *args, **kwargs: result(first_tensor(args, kwargs))

    class Garbage(nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, *args, **kwargs):
            return result(first_tensor(args, kwargs))

    return Garbage


def targets(check) -> int:
    """How many of the student's objects a check takes: its parameters without a default."""
    parameters = inspect.signature(check).parameters.values()
    return sum(p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)


@pytest.mark.parametrize("kind", RESULTS)
@pytest.mark.parametrize("name, exercise_kind", CHECKS, ids=[name for name, _ in CHECKS])
def test_every_check_fails_cleanly_on_garbage(name, exercise_kind, kind):
    check = getattr(checks, name)
    with pytest.raises(AssertionError):
        check(*(garbage(exercise_kind, RESULTS[kind]) for _ in range(targets(check))))


def test_a_constructor_that_crashes_is_reported_with_its_error():
    class Broken(nn.Module):
        def __init__(self, **kwargs):
            raise KeyError("emb")

    with pytest.raises(AssertionError, match=r"MultiHeadAttention\(.*\) raised KeyError"):
        checks.check_multi_head_attention(type("MultiHeadAttention", (Broken,), {}))
