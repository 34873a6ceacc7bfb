"""Building blocks of the checks: compare, explain what is wrong, in a message a student can act on.

Every failure is an ``AssertionError`` (nbgrader scores it 0) whose message says what was checked,
what is wrong in one sentence, a hint, then the numbers; it also carries what was found as data
(:func:`failure`: a known mistake, a general diagnosis, or nothing named), for the class report.
Warnings are silenced while checks run: nbgrader scores a test cell that writes to stderr as 0.
"""

import functools
import inspect
import io
import re
import textwrap
import tokenize
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import torch

TOLERANCES = {  # (atol, rtol) by dtype, loose enough for another correct summation order
    torch.float64: (1e-8, 1e-6),
    torch.float32: (2e-5, 1e-4),
    torch.float16: (5e-3, 1e-2),
    torch.bfloat16: (3e-2, 3e-2),
}


@dataclass(frozen=True)
class Mistake:
    """A known mistake: its name, a hint, and the output it would produce."""

    name: str
    hint: str
    output: Callable[[], Any]


KNOWN = re.compile(r"known mistake:? ([^\n]+?)\.(\s|$)")


@dataclass(frozen=True)
class Diagnosis:
    """What a general diagnostic found: a short name (for the class report), one sentence a student can
    act on, and a hint."""

    name: str
    sentence: str
    hint: str = ""


def failure(message: str, mistake: str = "", kind: str = "", finding: bool = False) -> AssertionError:
    """A check's failure: an ``AssertionError`` (what nbgrader and a student see) that carries what was
    found as data: ``mistake`` names it, ``kind`` says how (``known``: a mistake of the check's list;
    ``diagnosed``: a general diagnostic named it; ``""``: nothing named), ``finding`` marks what the
    instructor should hear of too. A message that names a known mistake ("this is the known mistake
    X.") records X, unless ``mistake`` says otherwise."""
    if not mistake and (match := KNOWN.search(message)):
        mistake, kind = match.group(1), "known"
    error = AssertionError(message)
    error.mistake, error.kind, error.finding = mistake, kind or ("known" if mistake else ""), finding
    return error


def fail(message: str, mistake: str = "", kind: str = "") -> NoReturn:
    """Stop the check with a message for the student (see :func:`failure`)."""
    raise failure(message, mistake, kind)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence warnings, which nbgrader would see on stderr and score as a failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextmanager
def precise_math() -> Iterator[None]:
    """Full float32 precision on the GPU: no TF32 in matmuls or convolutions, restored after."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def check(fn: Callable) -> Callable:
    """Decorator of every public check: no warnings (nbgrader zeroes a test cell that writes to
    stderr), full precision (TF32 makes a correct float32 answer differ by ~1e-3 on a GPU), and a
    failure that shows the student's call and the message, not the check's inner frames."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        __tracebackhide__ = True  # noqa: F841 - read by IPython and pytest: the student sees their call
        try:
            with quiet(), precise_math():
                fn(*args, **kwargs)
        except AssertionError as failure:
            # The message is the feedback; the frames inside the checks are noise to a student. An
            # error in the student's own code stays attached as the cause, with its traceback.
            raise failure.with_traceback(None) from failure.__cause__

    return wrapper


def code_without_comments(source: str) -> str:
    """The source's names and operators, joined, without comments or strings."""
    kept = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(textwrap.dedent(source)).readline):
            if token.type in (tokenize.NAME, tokenize.OP):
                kept.append(token.string if token.type == tokenize.OP else f" {token.string} ")
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source
    return "".join(kept)


def forbid_calls(obj: Any, names: Sequence[str], exercise: str) -> None:
    """Fail if the code of ``obj`` (a function or a class) uses one of ``names``.

    Used for shortcuts that would pass the numbers without doing the exercise, e.g. calling
    the reference the check compares against. Comments and strings do not count; a dotted
    name such as ``nn.LayerNorm`` matches only with its dots. Source that cannot be read is
    not judged.
    """
    functions = [obj] if callable(obj) and not isinstance(obj, type) else list(vars(obj).values())
    for fn in functions:
        try:
            code = code_without_comments(inspect.getsource(fn))
        except (OSError, TypeError):
            continue
        for name in names:
            dotted = r"\s*\.\s*".join(re.escape(part) for part in name.split("."))
            if re.search(rf"(?<![\w.]){dotted}(?!\w)|\.\s*{dotted}(?!\w)", code):
                fail(
                    f"{exercise}: your code uses `{name}`. The exercise asks you to build it "
                    f"yourself; `{name}` is what the check compares your result against."
                )


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """A tensor from the student's result (a tensor or an array), or a clear failure."""
    if value is None:
        fail(f"{what} returned None: is a `return` missing?")
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray | list | tuple):
        try:
            return torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            pass
    kind = getattr(value, "type_name", None) or type(value).__name__  # wire.Opaque: the student's type
    fail(f"{what} returned a {kind}; expected an array or a tensor.")


def expect_shape(got: torch.Tensor, shape: Sequence[int], what: str, hint: str = "") -> None:
    """Fail unless ``got`` has exactly ``shape``."""
    if tuple(got.shape) != tuple(shape):
        message = f"{what}: expected shape {tuple(shape)}, got {tuple(got.shape)}."
        fail(f"{message} {hint}".strip())


def expect_dtype(got: torch.Tensor, dtype: torch.dtype, what: str, hint: str = "") -> None:
    """Fail unless ``got`` has ``dtype``."""
    if got.dtype != dtype:
        fail(f"{what}: expected dtype {dtype}, got {got.dtype}. {hint}".strip())


def tolerance_of(*dtypes: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for comparing results computed in ``dtypes``: those of the least precise.

    A float32 table compared in a float64 case is judged at float32 precision; a float64 case of
    float64 code stays tight.
    """
    known = [TOLERANCES.get(d, TOLERANCES[torch.float32]) for d in dtypes] or [TOLERANCES[torch.float32]]
    return max(known)


def close(got: torch.Tensor, expected: torch.Tensor, tolerance: tuple[float, float] | None = None) -> bool:
    """Whether two results agree within ``tolerance`` (by default, that of ``expected``'s dtype)."""
    if tuple(got.shape) != tuple(expected.shape):
        return False
    atol, rtol = tolerance or tolerance_of(expected.dtype)
    got, expected = got.detach().cpu().double(), expected.detach().cpu().double()
    return bool(torch.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=True))


def describe_difference(got: torch.Tensor, expected: torch.Tensor, tolerance: tuple[float, float]) -> str:
    """'N of M values differ; first at [i, j]: expected a, got b' — no wall of numbers."""
    atol, rtol = tolerance
    got, expected = got.detach().cpu().double(), expected.detach().cpu().double()
    wrong = ~torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=True)
    index = tuple(int(i) for i in wrong.nonzero()[0])
    where = "[" + ", ".join(map(str, index)) + "]"
    return (
        f"{int(wrong.sum())} of {wrong.numel()} values differ from the reference; "
        f"the first at {where}: expected {expected[index].item():.6g}, "
        f"got {got[index].item():.6g}."
    )


def expect_close(
    got: torch.Tensor,
    expected: torch.Tensor,
    what: str,
    mistakes: Sequence[Mistake] = (),
    hint: str = "",
    tolerance: tuple[float, float] | None = None,
    diagnoses: Sequence[Callable[[], "Diagnosis | None"]] = (),
) -> None:
    """Fail unless ``got`` matches ``expected``; name the known mistake it matches, if any, else what
    the first of ``diagnoses`` finds (general questions asked of the student's code), else what the
    output alone shows (:func:`course_utils.checks.diagnose.of_output`), else the numbers.

    ``tolerance`` is (atol, rtol); by default that of the least precise of ``expected``'s dtype and
    ``got``'s, where ``got`` is float32 or float64 (a float32 result in a float64 case is judged at float32
    precision; a half-precision result never loosens a float32 or float64 case).
    """
    judged = got.dtype if got.dtype in (torch.float32, torch.float64) else expected.dtype
    tolerance = tolerance or tolerance_of(expected.dtype, judged)
    expect_shape(got, expected.shape, what)
    if close(got, expected, tolerance):
        return
    difference = describe_difference(got, expected, tolerance)
    for mistake in mistakes:
        variant = mistake.output()
        if variant is not None and close(got, variant, tolerance):
            fail(
                f"{what}: your result matches a known mistake: {mistake.name}.\nHint: {mistake.hint}\n"
                f"({difference})",
                mistake.name,
                "known",
            )
    if torch.isnan(got).any() and not torch.isnan(expected).any():
        index = tuple(int(i) for i in torch.isnan(got).nonzero()[0])
        fail(
            f"{what}: your result holds NaN, the first at {list(index)}. {hint}".strip(), "NaN in the result"
        )
    from course_utils.checks.diagnose import of_output  # the diagnostics build on this module

    for diagnose in [*diagnoses, lambda: of_output(got, expected, tolerance)]:
        found = diagnose()
        if found is not None:
            advice = f"\nHint: {found.hint}" if found.hint else (f"\nHint: {hint}" if hint else "")
            fail(f"{what}: {found.sentence}{advice}\n({difference})", found.name, "diagnosed")
    fail(f"{what}: {difference} {hint}".strip())


def on(device: torch.device) -> str:
    """' on cuda' for messages from a GPU pass; nothing on the CPU."""
    return "" if device.type == "cpu" else f" on {device.type}"


def call_text(name: str, **kwargs: Any) -> str:
    """How a call reads in a message: ``MultiHeadAttention(emb_size=32, num_heads=4)``."""
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def random_tensor(
    *shape: int, seed: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A seeded standard-normal tensor, identical on every device."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(device, dtype)
