"""The judge: a graded test cell, read as check calls and run in the grader's own process.

A test cell of ``solutions/`` is never executed and never sent to the sandbox. Its code is parsed:
the docstring, imports from ``course_utils.checks``, and calls ``check_x(Name, ..., key=literal)``
whose positional arguments name the student's objects and whose keyword arguments are literals (numbers,
strings, tuples, ``None``, ``torch.float64``...). Each call runs here, with :class:`Remote` names in
place of the student's objects: the check sends the probe in the sandbox the cases it made (inputs,
weights) and decides from the answers, computed against its own copies. Anything else in a test cell is
an error of the instructor's notebook, named with its line, raised when the assignment is loaded.
"""

import ast
from dataclasses import dataclass
from typing import Any

import torch

from course_utils import checks
from course_utils.judge import Remote

DTYPES = {f"torch.{name}": getattr(torch, name) for name in ("float16", "bfloat16", "float32", "float64")}


class TestCellError(ValueError):
    """A test cell the judge cannot run as check calls; the message names the line."""

    __test__ = False  # not a pytest class, despite the name


@dataclass(frozen=True)
class CheckCall:
    """``check_x(Target, ..., key=value)`` as data."""

    function: str
    targets: tuple[str, ...]
    kwargs: tuple[tuple[str, Any], ...]
    line: int

    def run(self) -> None:
        """Run the check against the student's objects behind the open ``course_utils.judge.session``."""
        getattr(checks, self.function)(*(Remote(t) for t in self.targets), **dict(self.kwargs))


def parse_test(source: str, where: str = "test cell") -> tuple[CheckCall, ...]:
    """The check calls of a test cell's code, in order; :class:`TestCellError` for anything else."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise TestCellError(f"{where}: line {err.lineno}: not Python ({err.msg})") from err
    calls = []
    for i, statement in enumerate(tree.body):
        line = statement.lineno
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) and i == 0:
            continue  # the docstring
        if isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith(
            "course_utils.checks"
        ):
            for alias in statement.names:
                _known(alias.name, where, line)
            continue
        if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)):
            raise TestCellError(
                f"{where}: line {line}: `{ast.unparse(statement)[:80]}` is not a check call; "
                "a test cell holds only check_x(Name, key=literal, ...) calls, which the judge runs outside "
                "the sandbox"
            )
        calls.append(_call(statement.value, where, line))
    if not calls:
        raise TestCellError(f"{where}: no check call")
    return tuple(calls)


def _known(name: str, where: str, line: int) -> None:
    if not (name.startswith("check_") and callable(getattr(checks, name, None))):
        raise TestCellError(f"{where}: line {line}: `{name}` is not a check of course_utils.checks")


def _call(node: ast.Call, where: str, line: int) -> CheckCall:
    if not isinstance(node.func, ast.Name):
        raise TestCellError(f"{where}: line {line}: call a check by its name, check_x(...)")
    _known(node.func.id, where, line)
    targets = []
    for arg in node.args:
        if not isinstance(arg, ast.Name):
            raise TestCellError(
                f"{where}: line {line}: positional arguments name the student's objects; "
                f"`{ast.unparse(arg)}` is not a name"
            )
        targets.append(arg.id)
    kwargs = []
    for keyword in node.keywords:
        if keyword.arg is None:
            raise TestCellError(f"{where}: line {line}: **kwargs cannot be judged; write each argument")
        kwargs.append((keyword.arg, _literal(keyword.value, where, line)))
    return CheckCall(node.func.id, tuple(targets), tuple(kwargs), line)


def _literal(node: ast.expr, where: str, line: int) -> Any:
    text = ast.unparse(node)
    if text in DTYPES:
        return DTYPES[text]
    try:
        return ast.literal_eval(node)
    except ValueError as err:
        raise TestCellError(
            f"{where}: line {line}: `{text}` is not a literal (numbers, strings, tuples, lists, None, "
            f"or one of {', '.join(DTYPES)})"
        ) from err
