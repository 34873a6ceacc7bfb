"""Check of Q7: ``FeedForwardBlock``, Linear -> GELU -> Dropout -> Linear.

The student's block gets the judge's weights; the reference and the known mistakes are computed from
the two Linear layers of the judge's copy (the mirror), on the judge's inputs. Every constructor
argument must shape the block; a wrong result that no known mistake matches is explained by the
weights it ignores or by a residual added inside.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_utils.checks.diagnose import Sensitivity, combination, expect_arguments_used
from course_utils.checks.parts import find_layers, path_of
from course_utils.feedback import (
    Mistake,
    as_tensor,
    call_text,
    check,
    close,
    expect_close,
    fail,
    on,
    random_tensor,
)
from course_utils.judge import Instance, subject

ARGUMENTS = {
    "emb_size": "the block maps emb_size -> expansion * emb_size -> emb_size.",
    "expansion": "the hidden layer has expansion * emb_size units: "
    "nn.Linear(emb_size, expansion * emb_size), then nn.Linear(expansion * emb_size, emb_size).",
    "drop_p": "pass drop_p on to nn.Dropout(drop_p), between GELU and the second Linear.",
}
NO_RESIDUAL = (
    "the FeedForwardBlock returns Linear(Dropout(GELU(Linear(x)))) alone: the residual x is added around it "
    "by ResidualAdd, in the encoder block (notebook 07)."
)


def _linears(mirror: nn.Module, emb_size: int, expansion: int, what: str) -> list[nn.Linear]:
    """The block's two Linear layers in the judge's copy, or a failure naming a known mistake."""
    linears = find_layers(mirror, nn.Linear)
    if len(linears) != 2:
        fail(f"{what}: expected two nn.Linear layers (expand, then project back), found {len(linears)}.")
    hidden = expansion * emb_size
    if linears[0].out_features == emb_size and hidden != emb_size:
        fail(
            f"{what}: the first Linear maps {emb_size} -> {emb_size}; this is the known mistake "
            f"no expansion. Hint: the hidden layer has expansion * emb_size = {hidden} units."
        )
    return linears


def _expect_shapes(linears: list[nn.Linear], emb_size: int, expansion: int, what: str) -> None:
    hidden = expansion * emb_size
    shapes = [(lin.in_features, lin.out_features) for lin in linears]
    if shapes != [(emb_size, hidden), (hidden, emb_size)]:
        fail(
            f"{what}: expected Linear layers {emb_size} -> {hidden} -> {emb_size} "
            f"(expansion = {expansion}), got {shapes}."
        )


def _diagnoses(module: Instance, x: Tensor, got: Tensor, expected: Tensor, label: str) -> list:
    """The weights the block's output ignores (or responds to wrongly), a residual added inside it."""
    first, second = find_layers(module.mirror, nn.Linear)
    hints = {}
    roles = ((first, "the first Linear (emb_size -> expansion * emb_size)"), (second, "the second Linear"))
    for layer, role in roles:
        for name in ("weight", "bias"):
            hints[f"{path_of(module.mirror, layer)}.{name}"] = (
                f"call {role} itself, which computes x @ weight.T + bias: the block is Linear -> GELU -> "
                "Dropout -> Linear."
            )

    def student() -> Tensor:
        return as_tensor(module.call(x, label=label, no_grad=True).output, label)

    def reference() -> Tensor:  # the mirror's weights as they are when called
        return second(F.gelu(first(x)))

    weights = Sensitivity(module, student, reference, hints)
    return [
        weights.ignored,
        lambda: combination(got, {"FFN(x)": expected, "x": x}, {"FFN(x)": 1}, NO_RESIDUAL),
        weights.misplaced,
    ]


@check
def check_feed_forward(
    FeedForwardBlock: type,
    emb_size: int = 16,
    expansion: int = 4,
    batch: int = 2,
    seq_len: int = 5,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """``FeedForwardBlock(emb_size, expansion, drop_p)`` against GELU(x W1 + b1) W2 + b2.

    GELU's tanh approximation is accepted too. With ``drop_p=1`` in training mode every hidden
    unit is dropped, which tells where the dropout sits.
    """
    student = subject(FeedForwardBlock, "FeedForwardBlock")
    for i, device in enumerate(student.devices()):
        kwargs = dict(emb_size=emb_size, expansion=expansion, drop_p=0.0)
        what = call_text("FeedForwardBlock", **kwargs)
        module = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        linears = _linears(module.mirror, emb_size, expansion, what)
        if i == 0:
            alternatives = dict(emb_size=emb_size + 1, expansion=expansion + 1, drop_p=0.5)
            expect_arguments_used(student, what, kwargs, alternatives, ARGUMENTS)
        _expect_shapes(linears, emb_size, expansion, what)
        first, second = linears
        x = random_tensor(batch, seq_len, emb_size, seed=seed, dtype=dtype)
        label = f"{what}(x){on(device)}"
        got = as_tensor(module.call(x, label=label, no_grad=True).output, label)
        with torch.no_grad():
            hidden = first(x)
            if not close(got, second(F.gelu(hidden, approximate="tanh"))):
                expected = second(F.gelu(hidden))
                expect_close(
                    got,
                    expected,
                    label,
                    [
                        Mistake(
                            "ReLU where GELU is asked",
                            "ViT uses nn.GELU(); ReLU is the original Transformer's choice.",
                            lambda: second(F.relu(hidden)),
                        ),
                        Mistake(
                            "SiLU where GELU is asked",
                            "use nn.GELU().",
                            lambda: second(F.silu(hidden)),
                        ),
                        Mistake(
                            "no activation",
                            "put nn.GELU() between the two Linear layers: "
                            "without it the block is a single linear map.",
                            lambda: second(hidden),
                        ),
                    ],
                    diagnoses=_diagnoses(module, x, got, expected, label),
                )
        kwargs["drop_p"] = 1.0
        what = call_text("FeedForwardBlock", **kwargs)
        dropped = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        label = f"{what}.train()(x){on(device)}"
        got = as_tensor(dropped.call(x, label=label, mode="train", no_grad=True).output, label)
        dropped_linears = _linears(dropped.mirror, emb_size, expansion, label)
        _expect_shapes(dropped_linears, emb_size, expansion, label)
        bias = dropped_linears[1].bias
        expected = torch.zeros(batch, seq_len, emb_size, dtype=dtype) + (0 if bias is None else bias.detach())
        if bias is not None and not got.any():
            fail(
                f"{label} is all zeros: dropout sits after the second Linear. "
                "Hint: the order is Linear -> GELU -> Dropout(drop_p) -> Linear; the "
                "encoder block adds its own dropout after the whole block."
            )
        expect_close(
            got,
            expected,
            label,
            hint="With drop_p=1 every hidden unit is dropped, leaving the second "
            "Linear's bias: is nn.Dropout(drop_p) between GELU and the "
            "second Linear?",
        )
