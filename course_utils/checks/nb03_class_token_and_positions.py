"""Checks of Q3 (class token) and Q4 (learned and sinusoidal position embeddings).

The student's code runs on the judge's tokens; a learned table holds the judge's values (read off the
mirror), the sinusoidal one is the student's own buffer, compared with the judge's table at float32
precision, the precision the exercise asks it to be computed in, whatever dtype the module is moved to.
A learned table must follow both constructor arguments; a wrong sinusoidal table is read as waves
(:func:`course_utils.checks.nb01_positional_encoding.table_diagnoses`).
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from course_utils.checks.diagnose import Sensitivity, expect_arguments_used
from course_utils.checks.nb01_positional_encoding import LAYOUT, table_diagnoses
from course_utils.checks.parts import GRAD_SEED, expect_gradients
from course_utils.feedback import (
    Mistake,
    as_tensor,
    call_text,
    check,
    expect_close,
    expect_dtype,
    expect_shape,
    fail,
    on,
    random_tensor,
    tolerance_of,
)
from course_utils.judge import Instance, Result, subject
from course_utils.reference import sinusoidal_table

ARGUMENTS = {"argument 1": "x", "argument 2": "cls_token"}
TABLE_ARGUMENTS = {
    "num_positions": "the table has one row per position: torch.randn(num_positions, emb_size)",
    "emb_size": "each row is one emb_size vector: torch.randn(num_positions, emb_size)",
}


def _with_cls_token(x: Tensor, cls_token: Tensor) -> Tensor:
    return torch.cat([cls_token.expand(len(x), -1, -1), x], dim=1)


@check
def check_prepend_cls_token(
    prepend_cls_token: Callable,
    batch: int = 3,
    num_patches: int = 5,
    emb_size: int = 8,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """``prepend_cls_token(x, cls_token)``: (b, n, e) and (1, 1, e) -> (b, n + 1, e), class token first."""
    student = subject(prepend_cls_token, "prepend_cls_token")
    for device in student.devices():
        x = random_tensor(batch, num_patches, emb_size, seed=seed, dtype=dtype)
        cls_token = nn.Parameter(random_tensor(1, 1, emb_size, seed=seed + 1, dtype=dtype))
        shapes = f"x of shape {tuple(x.shape)}, cls_token of shape (1, 1, {emb_size})"
        what = f"prepend_cls_token({shapes}){on(device)}"
        result = student.call(x, cls_token, label=what, device=device, grad=GRAD_SEED)
        got = as_tensor(result.output, what)
        if got.shape[1:] == (num_patches + 1, emb_size) and got.shape[0] == 1 and batch > 1:
            fail(
                f"{what}: expected shape {(batch, num_patches + 1, emb_size)}, got {tuple(got.shape)}: "
                "the class token must be repeated for every image in the batch, "
                "e.g. repeat(cls_token, '() n e -> b n e', b=b)."
            )
        expect_shape(
            got,
            (batch, num_patches + 1, emb_size),
            what,
            "One class token is added in front of the n patch tokens of each image.",
        )
        if result.changed_inputs:
            name = ARGUMENTS.get(result.changed_inputs[0], result.changed_inputs[0])
            fail(f"{what}: your function changed its input {name}; build a new tensor instead.")
        expected = _with_cls_token(x, cls_token.detach())
        expect_close(
            got,
            expected,
            what,
            [
                Mistake(
                    "class token appended last",
                    "the class token goes in front: torch.cat([cls_tokens, x], dim=1).",
                    lambda: torch.roll(expected, -1, dims=1),
                ),
            ],
        )
        if result.no_graph or not result.requires_grad:
            fail(
                f"{what}: the result does not require grad, so cls_token would never be "
                "trained. Use cls_token itself (repeat/expand keep the graph), not .data or a copy."
            )
        expect_gradients(result, [("cls_token", cls_token)], lambda c: _with_cls_token(x, c), what)


def _own(mirror: nn.Module, name: str) -> tuple[str, Tensor | None]:
    """What the module's attribute ``name`` is (``"Parameter"``, ``"Tensor"`` for a buffer, a
    submodule's class, ``"nothing"``) and the judge's value of it, if it is a parameter or a buffer."""
    parameters = dict(mirror.named_parameters(recurse=False))
    if name in parameters:
        return "Parameter", parameters[name]
    buffers = dict(mirror.named_buffers(recurse=False))
    if name in buffers:
        return "Tensor", buffers[name]
    children = dict(mirror.named_children())
    return (children[name].student_class, None) if name in children else ("nothing", None)


@check
def check_learned_positions(
    LearnedPositions: type,
    num_positions: int = 17,
    emb_size: int = 8,
    batch: int = 2,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """``LearnedPositions(num_positions, emb_size)``: a trainable table (the judge's values) added to x."""
    student = subject(LearnedPositions, "LearnedPositions")
    kwargs = dict(num_positions=num_positions, emb_size=emb_size)
    what = call_text("LearnedPositions", **kwargs)
    for device in student.devices():
        module = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        kind, positions = _own(module.mirror, "positions")
        if kind != "Parameter":
            fail(f"{what}.positions should be an nn.Parameter so the optimizer trains it; got {kind}.")
        if device == student.devices()[0]:  # after the kind: a buffer's shape is not in the signature
            others = dict(num_positions=num_positions + 1, emb_size=emb_size + 1)
            expect_arguments_used(student, what, kwargs, others, TABLE_ARGUMENTS)
        _expect_table_shape(positions, num_positions, emb_size, f"{what}.positions")
        table = positions.detach().reshape(num_positions, emb_size)
        result = _check_adds_table(module, table, what, batch, dtype, device, seed, grad=True)
        if result.no_graph or result.param_grads is None or result.param_grads.get("positions") is None:
            fail(f"{what}(x): no gradient reaches positions; add the Parameter itself to x.")


@check
def check_sinusoidal_positions(
    SinusoidalPositions: type,
    num_positions: int = 17,
    emb_size: int = 8,
    batch: int = 2,
    seed: int = 0,
) -> None:
    """``SinusoidalPositions(num_positions, emb_size)``: the fixed table, a buffer in the model's dtype."""
    student = subject(SinusoidalPositions, "SinusoidalPositions")
    what = call_text("SinusoidalPositions", num_positions=num_positions, emb_size=emb_size)
    module = student.build(seed, label=what, num_positions=num_positions, emb_size=emb_size)
    kind, _ = _own(module.mirror, "positions")
    if kind == "Parameter":
        fail(
            f"{what}.positions is an nn.Parameter, so the optimizer would change the fixed "
            "sinusoidal table. Store it with self.register_buffer('positions', table)."
        )
    if kind != "Tensor":
        fail(
            f"{what}.positions is not a registered buffer, so .to(device), .half() and "
            "state_dict() leave it behind. Use self.register_buffer('positions', table)."
        )
    positions = module.values("positions")["positions"]
    expect_dtype(
        positions,
        torch.get_default_dtype(),
        f"{what}.positions",
        "getPositionEncoding returns float64 numpy; convert the table with "
        "torch.tensor(table, dtype=torch.float32) so that float64 does not leak into "
        "the model's output.",
    )
    _expect_table_shape(positions, num_positions, emb_size, f"{what}.positions")
    got = positions.reshape(num_positions, emb_size)
    table = torch.from_numpy(sinusoidal_table(num_positions, emb_size)).float()
    tolerance = tolerance_of(torch.float32)
    diagnoses = table_diagnoses(got, table, 10000, tolerance)
    expect_close(got, table, f"{what}.positions", hint=LAYOUT, tolerance=tolerance, diagnoses=diagnoses)
    for device in student.devices():
        for dtype in (torch.float32, torch.float64, torch.float16):
            moved = module.to(device, dtype)
            label = f"{what}.to({device.type!r}, {dtype})"
            now = moved.values("positions").get("positions")
            if now is None or now.dtype != dtype:
                found = "gone" if now is None else f"{now.dtype}"
                fail(f"{label}.positions is {found}, not {dtype}: a registered buffer moves with the module.")
            # the table holds float32 values (the exercise's precision), in any dtype it is moved to
            precision = tolerance_of(dtype, torch.float32)
            _check_adds_table(moved, table.to(dtype), label, batch, dtype, device, seed, tolerance=precision)


def _expect_table_shape(positions: Tensor, num_positions: int, emb_size: int, what: str) -> None:
    """A position table is (num_positions, emb_size), or that with a leading batch axis of 1."""
    shape = tuple(positions.shape)
    if shape[-2:] != (num_positions, emb_size) or any(s != 1 for s in shape[:-2]):
        swapped = " (rows and columns swapped?)" if shape[-2:] == (emb_size, num_positions) else ""
        fail(
            f"{what} should hold one emb_size vector per position, shape "
            f"{(num_positions, emb_size)}; got {shape}{swapped}."
        )


def _check_adds_table(
    module: Instance,
    table: Tensor,
    what: str,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    seed: int,
    grad: bool = False,
    tolerance: tuple[float, float] | None = None,
) -> Result:
    """``module(x)`` must be x + table, in x's dtype; the call's result (with gradients if ``grad``).

    Where the table is a parameter, a wrong output asks whether it responds to it at all."""
    num_positions, emb_size = table.shape
    x = random_tensor(batch, num_positions, emb_size, seed=seed, dtype=dtype)
    label = f"{what}(x of shape {tuple(x.shape)}, {dtype}){on(device)}"
    result = module.call(x, label=label, grad=GRAD_SEED if grad else None, no_grad=not grad)
    got = as_tensor(result.output, label)
    expect_dtype(got, dtype, label, "Adding the table must not change the dtype of x.")

    def run() -> Tensor:
        return as_tensor(module.call(x, label=label, no_grad=True).output, label)

    def reference() -> Tensor:  # a learned table as the mirror holds it now (Sensitivity changes it)
        kind, learned = _own(module.mirror, "positions")
        return x + (learned.detach().reshape(table.shape) if kind == "Parameter" else table)

    hints = {"positions": "forward adds the table itself: return x + self.positions"}
    weights = Sensitivity(module, run, reference, hints)
    expect_close(
        got,
        x + table,
        label,
        hint="The output is x plus the position table.",
        tolerance=tolerance,
        diagnoses=[weights.ignored, weights.misplaced],
    )
    return result
