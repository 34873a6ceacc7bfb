"""Check of Q7: ``FeedForwardBlock``, Linear -> GELU -> Dropout -> Linear."""

import torch
import torch.nn.functional as F
from torch import nn

from course_utils.device import check_devices
from course_utils.feedback import (
    Mistake,
    as_tensor,
    build,
    call_text,
    check,
    close,
    expect_close,
    fail,
    on,
    random_tensor,
    run_student,
)
from course_utils.reference import find_layers


def _linears(module: nn.Module, emb_size: int, expansion: int, what: str) -> list[nn.Linear]:
    linears = find_layers(module, nn.Linear)
    if len(linears) != 2:
        fail(f"{what}: expected two nn.Linear layers (expand, then project back), found {len(linears)}.")
    hidden = expansion * emb_size
    if linears[0].out_features == emb_size and hidden != emb_size:
        fail(
            f"{what}: the first Linear maps {emb_size} -> {emb_size}; this is the known mistake "
            f"no expansion. Hint: the hidden layer has expansion * emb_size = {hidden} units."
        )
    shapes = [(lin.in_features, lin.out_features) for lin in linears]
    if shapes != [(emb_size, hidden), (hidden, emb_size)]:
        fail(
            f"{what}: expected Linear layers {emb_size} -> {hidden} -> {emb_size} "
            f"(expansion = {expansion}), got {shapes}."
        )
    return linears


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
    for device in check_devices():
        kwargs = dict(emb_size=emb_size, expansion=expansion, drop_p=0.0)
        what = call_text("FeedForwardBlock", **kwargs)
        module = build(FeedForwardBlock, seed, **kwargs).to(device, dtype)
        first, second = _linears(module, emb_size, expansion, what)
        x = random_tensor(batch, seq_len, emb_size, seed=seed, dtype=dtype, device=device)
        label = f"{what}(x){on(device)}"
        with torch.no_grad():
            got = as_tensor(run_student(label, module, x), label)
            hidden = first(x)
            if not close(got, second(F.gelu(hidden, approximate="tanh"))):
                expect_close(
                    got,
                    second(F.gelu(hidden)),
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
                )
        kwargs["drop_p"] = 1.0
        dropped = build(FeedForwardBlock, seed, **kwargs).to(device, dtype).train()
        label = call_text("FeedForwardBlock", **kwargs) + f".train()(x){on(device)}"
        with torch.no_grad():
            got = as_tensor(run_student(label, dropped, x), label)
            bias = _linears(dropped, emb_size, expansion, label)[1].bias
            expected = torch.zeros_like(got) + (0 if bias is None else bias)
            if not got.any():
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
