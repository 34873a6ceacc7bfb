"""Checks of Q3 (class token) and Q4 (learned and sinusoidal position embeddings)."""

from collections.abc import Callable

import torch
from torch import nn

from course_utils.device import check_devices
from course_utils.feedback import (
    Mistake,
    as_tensor,
    build,
    call_text,
    check,
    expect_close,
    expect_dtype,
    expect_shape,
    fail,
    on,
    random_tensor,
    run_student,
)
from course_utils.reference import sinusoidal_table


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
    for device in check_devices():
        x = random_tensor(batch, num_patches, emb_size, seed=seed, dtype=dtype, device=device)
        cls_token = nn.Parameter(random_tensor(1, 1, emb_size, seed=seed + 1, dtype=dtype, device=device))
        x_before = x.clone()
        shapes = f"x of shape {tuple(x.shape)}, cls_token of shape (1, 1, {emb_size})"
        what = f"prepend_cls_token({shapes}){on(device)}"
        got = as_tensor(run_student(what, prepend_cls_token, x, cls_token), what)
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
        if not torch.equal(x, x_before):
            fail(f"{what}: your function changed its input x; build a new tensor instead.")
        expected = torch.empty_like(got)
        expected[:, :1], expected[:, 1:] = cls_token.detach(), x
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
        if not got.requires_grad:
            fail(
                f"{what}: the result does not require grad, so cls_token would never be "
                "trained. Use cls_token itself (repeat/expand keep the graph), not .data or a copy."
            )
        (grad,) = torch.autograd.grad(got.sum(), cls_token)
        expect_close(grad, torch.full_like(grad, batch), f"gradient of the sum of {what} w.r.t. cls_token")


@check
def check_learned_positions(
    LearnedPositions: type,
    num_positions: int = 17,
    emb_size: int = 8,
    batch: int = 2,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """``LearnedPositions(num_positions, emb_size)``: a trainable table added to the tokens."""
    for device in check_devices():
        module = build(LearnedPositions, seed, num_positions=num_positions, emb_size=emb_size)
        module = module.to(device, dtype)
        what = call_text("LearnedPositions", num_positions=num_positions, emb_size=emb_size)
        positions = getattr(module, "positions", None)
        if not isinstance(positions, nn.Parameter):
            fail(
                f"{what}.positions should be an nn.Parameter so the optimizer trains it; "
                f"got {type(positions).__name__}."
            )
        if positions.numel() != num_positions * emb_size:
            fail(
                f"{what}.positions should hold one emb_size vector per position, shape "
                f"{(num_positions, emb_size)}; got {tuple(positions.shape)}."
            )
        _check_adds_table(
            module,
            positions.detach().reshape(num_positions, emb_size),
            what,
            batch,
            dtype,
            device,
            seed,
        )
        x = random_tensor(batch, num_positions, emb_size, seed=seed, dtype=dtype, device=device)
        got = as_tensor(run_student(f"{what}(x)", module, x), f"{what}(x)")
        grad = None
        if got.requires_grad:
            (grad,) = torch.autograd.grad(got.sum(), positions, allow_unused=True)
        if grad is None:
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
    what = call_text("SinusoidalPositions", num_positions=num_positions, emb_size=emb_size)
    module = build(SinusoidalPositions, seed, num_positions=num_positions, emb_size=emb_size)
    positions = getattr(module, "positions", None)
    if isinstance(positions, nn.Parameter):
        fail(
            f"{what}.positions is an nn.Parameter, so the optimizer would change the fixed "
            "sinusoidal table. Store it with self.register_buffer('positions', table)."
        )
    if "positions" not in dict(module.named_buffers()):
        fail(
            f"{what}.positions is not a registered buffer, so .to(device), .half() and "
            "state_dict() leave it behind. Use self.register_buffer('positions', table)."
        )
    expect_dtype(
        positions,
        torch.get_default_dtype(),
        f"{what}.positions",
        "getPositionEncoding returns float64 numpy; convert the table with "
        "torch.tensor(table, dtype=torch.float32) so that float64 does not leak into "
        "the model's output.",
    )
    table = torch.from_numpy(sinusoidal_table(num_positions, emb_size)).float()
    expect_close(positions.reshape(-1, emb_size), table, f"{what}.positions")
    for device in check_devices():
        for dtype in (torch.float32, torch.float64, torch.float16):
            moved = module.to(device, dtype)
            label = f"{what}.to({device.type!r}, {dtype})"
            if moved.positions.dtype != dtype or moved.positions.device.type != device.type:
                fail(
                    f"{label}.positions is {moved.positions.dtype} on {moved.positions.device}: "
                    "a registered buffer moves with the module."
                )
            _check_adds_table(moved, table.to(device, dtype), label, batch, dtype, device, seed)
    module.to("cpu", torch.float32)


def _check_adds_table(module, table, what, batch, dtype, device, seed) -> None:
    """``module(x)`` must be x + table, in x's dtype."""
    num_positions, emb_size = table.shape
    x = random_tensor(batch, num_positions, emb_size, seed=seed, dtype=dtype, device=device)
    label = f"{what}(x of shape {tuple(x.shape)}, {dtype}){on(device)}"
    with torch.no_grad():
        got = as_tensor(run_student(label, module, x), label)
    expect_dtype(got, dtype, label, "Adding the table must not change the dtype of x.")
    expect_close(got, x + table, label, hint="The output is x plus the position table.")
