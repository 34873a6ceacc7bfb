"""Checks of Q6: ``ResidualAdd`` and a LayerNorm written from its formula.

``ResidualAdd`` wraps a sublayer the probe builds (a Linear whose weights the judge draws, found in the
mirror); the LayerNorm's gamma and beta hold the judge's values. The references are computed from the
mirror on the judge's inputs. A wrong result that no known mistake matches is read as a mix of the
expected terms (fn(x) and x; the normalised x̂, gamma and beta), as a LayerNorm with another eps, or by
which of gamma and beta it responds to.
"""

import torch
from torch import Tensor, nn

from course_utils.checks.diagnose import Sensitivity, combination, expect_arguments_used
from course_utils.checks.parts import GRAD_SEED, expect_gradients, find_layers
from course_utils.feedback import (
    Diagnosis,
    Mistake,
    as_tensor,
    call_text,
    check,
    close,
    expect_close,
    fail,
    forbid_calls,
    on,
    random_tensor,
)
from course_utils.judge import Instance, subject
from course_utils.reference import torch_layer_norm
from course_utils.wire import Given

IN_PLACE = (
    "changed its input x: this is the known mistake of adding the "
    "residual in place (x += res). When fn returns its input, as nn.Identity or "
    "nn.Dropout in eval mode do, `+=` overwrites the caller's tensor. "
    "Hint: return self.fn(x, **kwargs) + x."
)
IN_PLACE_NAME = "adding the residual in place (x += res)"
SUM = (
    "return self.fn(x, **kwargs) + x: the sublayer's output plus the input x as it came in, each once "
    "(x reassigned before the sum is no longer the input)."
)
KWARGS = "Pass keyword arguments on to fn: forward(self, x, **kwargs) returns self.fn(x, **kwargs) + x."
SCALED = f"here fn(x, scale=2.0) = 2·fn(x). {KWARGS}"


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
        result = block.call(x, label=what, no_grad=True, allow_changes=True)
        if result.changed_inputs:
            fail(f"{what} {IN_PLACE}", IN_PLACE_NAME, "known")
        got = as_tensor(result.output, what)
        with torch.no_grad():
            fx = linears[0](x)
        terms = {"fn(x)": fx, "x": x}
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
            diagnoses=[lambda: combination(got, terms, {"fn(x)": 1, "x": 1}, SUM)],
        )
        label = f"ResidualAdd(fn)(x, scale=2.0){on(device)}"
        got = as_tensor(block.call(x, label=label, no_grad=True, scale=2.0).output, label)
        expect_close(
            got,
            2 * fx + x,
            label,
            hint=KWARGS,
            diagnoses=[lambda: combination(got, terms, {"fn(x)": 2, "x": 1}, SCALED)],
        )
        identity = student.build(
            seed, device=device, dtype=dtype, label="ResidualAdd(nn.Identity())", fn=Given("identity")
        )
        label = f"ResidualAdd(nn.Identity())(x){on(device)}"
        result = identity.call(x, label=label, no_grad=True, allow_changes=True)
        if result.changed_inputs:
            fail(f"{label} {IN_PLACE}", IN_PLACE_NAME, "known")
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
AFFINE = "x̂ = (x - mean) / sqrt(var + eps) over the last axis; the result is x̂ * self.gamma + self.beta."
AFFINE_HINTS = {
    "gamma": "scale the normalised x by self.gamma: x̂ * self.gamma + self.beta.",
    "beta": "shift the scaled x̂ by self.beta: x̂ * self.gamma + self.beta.",
}


def _normalised(x: Tensor, eps: float) -> Tensor:
    var, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def _affine_terms(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> dict[str, Tensor]:
    """What a LayerNorm's result may be a mix of: x̂ scaled by gamma, beta, and the wrong pairings."""
    normalised = _normalised(x, eps)
    return {
        "x̂·gamma": normalised * gamma,
        "beta": beta.expand_as(x),
        "x̂": normalised,
        "x̂·beta": normalised * beta,
        "gamma": gamma.expand_as(x),
    }


def _eps_used(
    got: Tensor, x: Tensor, gamma: Tensor, beta: Tensor, eps: float, tolerance: tuple[float, float] | None
) -> Diagnosis | None:
    """The one eps for which the formula gives ``got`` (x nearly constant, where eps matters), when it is
    not the eps the module was built with: sqrt(var + eps') = (x - mean) * gamma / (got - beta)."""
    got = got.detach().double()
    if got.shape != x.shape or not torch.isfinite(got).all():
        return None
    var, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
    shifted = got - beta
    usable = shifted.abs() > 1e-3 * shifted.abs().max()
    if not usable.any():
        return None
    roots = ((x - mean) * gamma / shifted)[usable]
    fitted = max(float((roots**2 - var.expand_as(x)[usable]).median()), 0.0)
    if abs(fitted - eps) <= 0.05 * eps or not close(got, _normalised(x, fitted) * gamma + beta, tolerance):
        return None
    return Diagnosis(
        "another eps",
        f"your result is what LayerNorm gives as if eps were {fitted:.2g}, where eps={eps:g} was given",
        "use the eps the module was built with: (x - mean) / torch.sqrt(var + self.eps).",
    )


def _layer_norm_diagnoses(
    module: Instance, x: Tensor, got: Tensor, eps: float, label: str, tolerance: tuple[float, float] | None
) -> list:
    """Which of gamma and beta the result responds to, the mix of terms it is, the eps it used."""
    parameters = dict(module.mirror.named_parameters(recurse=False))
    gamma, beta = parameters["gamma"], parameters["beta"]  # read when called: Sensitivity moves them
    x64 = x.double()

    def student() -> Tensor:
        return as_tensor(module.call(x, label=label, no_grad=True).output, label)

    def reference() -> Tensor:
        return torch_layer_norm(gamma.detach().double(), beta.detach().double(), eps)(x64).to(x.dtype)

    def terms() -> Diagnosis | None:
        found = _affine_terms(x64, gamma.detach().double(), beta.detach().double(), eps)
        return combination(got, found, {"x̂·gamma": 1, "beta": 1}, AFFINE)

    weights = Sensitivity(module, student, reference, AFFINE_HINTS)
    return [
        weights.ignored,
        terms,
        lambda: _eps_used(got, x64, gamma.detach().double(), beta.detach().double(), eps, tolerance),
        weights.misplaced,
    ]


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

    Tried on ordinary inputs and on nearly constant ones, where eps matters. ``emb_size`` must size the
    module and, where it keeps an ``eps`` (the skeleton's self.eps), ``eps`` must be the one kept.
    """
    forbid_calls(LayerNorm, ["layer_norm", "nn.LayerNorm", "course_utils"], "LayerNorm")
    student = subject(LayerNorm, "LayerNorm")
    kwargs = dict(emb_size=emb_size, eps=eps)
    what = call_text("LayerNorm", **kwargs)
    for i, device in enumerate(student.devices()):
        module = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        parameters = dict(module.mirror.named_parameters(recurse=False))
        gamma, beta = parameters.get("gamma"), parameters.get("beta")
        if not all(p is not None and p.shape == (emb_size,) for p in (gamma, beta)):
            fail(
                f"{what} needs learnable nn.Parameter gamma (ones) and beta (zeros) of shape "
                f"({emb_size},), as in the skeleton."
            )
        if i == 0:
            alternatives = {"emb_size": emb_size + 1}
            if any("eps" in node["config"] for node in module.structure["nodes"]):
                alternatives["eps"] = eps * 10
            expect_arguments_used(
                student, what, kwargs, alternatives, {"eps": "keep it: self.eps = eps, as in the skeleton."}
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
                diagnoses = _layer_norm_diagnoses(module, x, got, eps, label, tolerance)
                expect_close(got, expected, label, mistakes, tolerance=tolerance, diagnoses=diagnoses)
