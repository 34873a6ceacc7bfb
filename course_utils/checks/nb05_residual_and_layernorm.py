"""Checks of Q6: ``ResidualAdd`` and a LayerNorm written from its formula."""

import torch
from torch import Tensor, nn

from course_utils.device import check_devices
from course_utils.feedback import (
    Mistake,
    as_tensor,
    build,
    call_text,
    check,
    expect_close,
    fail,
    forbid_calls,
    on,
    random_tensor,
    run_student,
)
from course_utils.reference import torch_layer_norm


class _Scaled(nn.Module):
    """A sublayer with a keyword argument, as attention has ``mask=``."""

    def __init__(self, emb_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(emb_size, emb_size)

    def forward(self, x: Tensor, scale: float = 1.0) -> Tensor:
        return scale * self.linear(x)


@check
def check_residual_add(
    ResidualAdd: type,
    emb_size: int = 8,
    batch: int = 2,
    seq_len: int = 3,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """``ResidualAdd(fn)(x, **kwargs)`` must be ``fn(x, **kwargs) + x``, leaving x untouched."""
    for device in check_devices():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fn = _Scaled(emb_size).to(device, dtype)
        block = build(ResidualAdd, seed, fn=fn)
        x = random_tensor(batch, seq_len, emb_size, seed=seed, dtype=dtype, device=device)
        what = f"ResidualAdd(fn)(x){on(device)}"
        with torch.no_grad():
            got = as_tensor(run_student(what, block, x), what)
            fx = fn(x)
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
            got = as_tensor(run_student(label, block, x, scale=2.0), label)
            expect_close(
                got,
                2 * fx + x,
                label,
                hint="Pass keyword arguments on to fn: forward(self, x, **kwargs) "
                "returns self.fn(x, **kwargs) + x.",
            )
            identity = build(ResidualAdd, seed, fn=nn.Identity())
            before = x.clone()
            label = f"ResidualAdd(nn.Identity())(x){on(device)}"
            got = as_tensor(run_student(label, identity, x), label)
            if not torch.equal(x, before):
                fail(
                    f"{label} changed its input x: this is the known mistake of adding the "
                    "residual in place (x += res). When fn returns its input, as nn.Identity or "
                    "nn.Dropout in eval mode do, `+=` overwrites the caller's tensor. "
                    "Hint: return self.fn(x, **kwargs) + x."
                )
            expect_close(got, 2 * x, label)
        leaf = x.clone().requires_grad_()
        label = f"backward through ResidualAdd(nn.Identity())(x){on(device)}"
        out = as_tensor(run_student(label, identity, leaf), label)
        (grad,) = run_student(label, torch.autograd.grad, out.sum(), leaf)
        expect_close(grad, torch.full_like(grad, 2.0), f"gradient of {label}")


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
    for device in check_devices():
        module = build(LayerNorm, seed, emb_size=emb_size, eps=eps).to(device, dtype)
        what = call_text("LayerNorm", emb_size=emb_size, eps=eps)
        gamma, beta = getattr(module, "gamma", None), getattr(module, "beta", None)
        if not all(isinstance(p, nn.Parameter) and p.shape == (emb_size,) for p in (gamma, beta)):
            fail(
                f"{what} needs learnable nn.Parameter gamma (ones) and beta (zeros) of shape "
                f"({emb_size},), as in the skeleton."
            )
        with torch.no_grad():
            gamma.copy_(random_tensor(emb_size, seed=seed + 1))
            beta.copy_(random_tensor(emb_size, seed=seed + 2))
        gamma64, beta64 = gamma.detach().double(), beta.detach().double()
        reference = torch_layer_norm(gamma64, beta64, eps)
        ordinary = 3 * random_tensor(batch, seq_len, emb_size, seed=seed, dtype=dtype, device=device) + 2
        flat = 1 + 1e-3 * random_tensor(batch, seq_len, emb_size, seed=seed + 3, dtype=dtype, device=device)
        # Near-constant rows lose digits in x - mean; below float64 allow 1e-3 against exact maths.
        loose = None if dtype == torch.float64 else (1e-3, 1e-3)
        for x, kind, tolerance in ((ordinary, "x", None), (flat, FLAT, loose)):
            label = f"{what}({kind}){on(device)} with random gamma and beta"
            with torch.no_grad():
                got = as_tensor(run_student(label, module, x), label)
                expected = reference(x.double()).to(dtype)
                mistakes = _layer_norm_mistakes(x.double(), gamma64, beta64, eps)
                expect_close(got, expected, label, mistakes, tolerance=tolerance)
