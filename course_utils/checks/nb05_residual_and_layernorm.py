"""Checks of Q6: ``ResidualAdd`` and a LayerNorm written from its formula.

``ResidualAdd`` wraps a sublayer the probe builds (a Linear whose weights the judge draws, found in the
mirror); the LayerNorm's gamma and beta hold the judge's values. The references are computed from the
mirror on the judge's inputs.
"""

import torch
from torch import Tensor, nn

from course_utils.checks.parts import GRAD_SEED, expect_gradients, find_layers
from course_utils.feedback import (
    Mistake,
    as_tensor,
    call_text,
    check,
    expect_close,
    fail,
    forbid_calls,
    on,
    random_tensor,
)
from course_utils.judge import subject
from course_utils.reference import torch_layer_norm
from course_utils.wire import Given

IN_PLACE = (
    "changed its input x: this is the known mistake of adding the "
    "residual in place (x += res). When fn returns its input, as nn.Identity or "
    "nn.Dropout in eval mode do, `+=` overwrites the caller's tensor. "
    "Hint: return self.fn(x, **kwargs) + x."
)


@check
def check_residual_add(
    ResidualAdd: type,
    emb_size: int = 8,
    batch: int = 2,
    seq_len: int = 3,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """``ResidualAdd(fn)(x, **kwargs)`` must be ``fn(x, **kwargs) + x``, leaving x untouched.

    fn is a Linear scaled by a keyword argument (``scale=``), as attention takes ``mask=``.
    """
    student = subject(ResidualAdd, "ResidualAdd")
    for device in student.devices():
        sublayer = Given("sublayer", {"emb_size": emb_size})
        block = student.build(seed, device=device, dtype=dtype, label="ResidualAdd(fn)", fn=sublayer)
        linears = find_layers(block.mirror, nn.Linear)
        if len(linears) != 1:
            fail(
                f"ResidualAdd(fn) holds {len(linears)} nn.Linear layers where fn has one: keep the "
                "wrapped sublayer as it is given, self.fn = fn, as in the skeleton."
            )
        x = random_tensor(batch, seq_len, emb_size, seed=seed, dtype=dtype)
        what = f"ResidualAdd(fn)(x){on(device)}"
        got = as_tensor(block.call(x, label=what, no_grad=True).output, what)
        with torch.no_grad():
            fx = linears[0](x)
        expect_close(
            got,
            fx + x,
            what,
            [
                Mistake("the residual is missing", "return fn(x) + x, not fn(x).", lambda: fx),
                Mistake(
                    "fn is not applied",
                    "return fn(x) + x: call the wrapped sublayer.",
                    lambda: x,
                ),
            ],
        )
        label = f"ResidualAdd(fn)(x, scale=2.0){on(device)}"
        got = as_tensor(block.call(x, label=label, no_grad=True, scale=2.0).output, label)
        expect_close(
            got,
            2 * fx + x,
            label,
            hint="Pass keyword arguments on to fn: forward(self, x, **kwargs) "
            "returns self.fn(x, **kwargs) + x.",
        )
        identity = student.build(
            seed, device=device, dtype=dtype, label="ResidualAdd(nn.Identity())", fn=Given("identity")
        )
        label = f"ResidualAdd(nn.Identity())(x){on(device)}"
        result = identity.call(x, label=label, no_grad=True, allow_changes=True)
        if result.changed_inputs:
            fail(f"{label} {IN_PLACE}")
        expect_close(as_tensor(result.output, label), 2 * x, label)
        leaf = x.clone().requires_grad_()
        label = f"backward through ResidualAdd(nn.Identity())(x){on(device)}"
        result = identity.call(leaf, label=label, grad=GRAD_SEED)
        expect_gradients(result, [("x", leaf)], lambda x: x + x, label)


def _layer_norm_mistakes(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> list[Mistake]:
    n = x.shape[-1]
    var, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
    centred = x - mean
    bvar, bmean = torch.var_mean(x, dim=0, unbiased=False, keepdim=True)
    return [
        Mistake(
            "unbiased variance",
            "LayerNorm uses the biased variance (divide by d, not d - 1): "
            "x.var(dim=-1, unbiased=False, keepdim=True); torch.var's default is unbiased.",
            lambda: centred / torch.sqrt(var * n / (n - 1) + eps) * gamma + beta,
        ),
        Mistake(
            "eps added outside the square root",
            "the formula is (x - mean) / sqrt(var + eps).",
            lambda: centred / (var.sqrt() + eps) * gamma + beta,
        ),
        Mistake(
            "standard deviation where the variance belongs",
            "divide by sqrt(var + eps), the square root of the variance.",
            lambda: centred / torch.sqrt(var.sqrt() + eps) * gamma + beta,
        ),
        Mistake(
            "gamma and beta not applied",
            "scale by self.gamma and shift by self.beta after normalising.",
            lambda: centred / torch.sqrt(var + eps),
        ),
        Mistake(
            "normalised over the wrong axis",
            "LayerNorm normalises each token over its features, the last axis (dim=-1, "
            "keepdim=True); over the batch it would be BatchNorm.",
            lambda: (x - bmean) / torch.sqrt(bvar + eps) * gamma + beta,
        ),
    ]


FLAT = "a nearly constant x (variance close to eps)"


@check
def check_layer_norm(
    LayerNorm: type,
    emb_size: int = 16,
    eps: float = 1e-5,
    batch: int = 3,
    seq_len: int = 4,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """``LayerNorm(emb_size, eps)`` with parameters ``gamma``, ``beta`` against ``nn.LayerNorm``.

    Tried on ordinary inputs and on nearly constant ones, where eps matters.
    """
    forbid_calls(LayerNorm, ["layer_norm", "nn.LayerNorm", "course_utils"], "LayerNorm")
    student = subject(LayerNorm, "LayerNorm")
    what = call_text("LayerNorm", emb_size=emb_size, eps=eps)
    for device in student.devices():
        module = student.build(seed, device=device, dtype=dtype, label=what, emb_size=emb_size, eps=eps)
        parameters = dict(module.mirror.named_parameters(recurse=False))
        gamma, beta = parameters.get("gamma"), parameters.get("beta")
        if not all(p is not None and p.shape == (emb_size,) for p in (gamma, beta)):
            fail(
                f"{what} needs learnable nn.Parameter gamma (ones) and beta (zeros) of shape "
                f"({emb_size},), as in the skeleton."
            )
        gamma64, beta64 = gamma.detach().double(), beta.detach().double()  # the judge's draw
        reference = torch_layer_norm(gamma64, beta64, eps)
        ordinary = 3 * random_tensor(batch, seq_len, emb_size, seed=seed, dtype=dtype) + 2
        flat = 1 + 1e-3 * random_tensor(batch, seq_len, emb_size, seed=seed + 3, dtype=dtype)
        # Near-constant rows lose digits in x - mean; below float64 allow 1e-3 against exact maths.
        loose = None if dtype == torch.float64 else (1e-3, 1e-3)
        for x, kind, tolerance in ((ordinary, "x", None), (flat, FLAT, loose)):
            label = f"{what}({kind}){on(device)} with random gamma and beta"
            got = as_tensor(module.call(x, label=label, no_grad=True).output, label)
            with torch.no_grad():
                expected = reference(x.double()).to(dtype)
                mistakes = _layer_norm_mistakes(x.double(), gamma64, beta64, eps)
            expect_close(got, expected, label, mistakes, tolerance=tolerance)
