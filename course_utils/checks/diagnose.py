"""General diagnostics: what is wrong when a result differs and no known mistake matches.

The judge owns the weights and the inputs, so it can ask any implementation general questions and name
what it finds in one sentence a student can act on (a :class:`Diagnosis`):

- **the output alone** (:func:`of_output`): the right values scaled, shifted by one, reversed or
  permuted along an axis, transposed, offset, or all zeros;
- **a combination** (:func:`combination`): the result is an exact mix of known terms with other
  coefficients (a residual missing or doubled);
- **sensitivity** (:class:`Sensitivity`): change one weight at a time (each Linear's weight and bias,
  each LayerNorm's scale and shift, each parameter of its own) and see whether the student's output
  responds where the reference does; a weight ignored, or used where it does not belong;
- **which tokens an output depends on** (:func:`token_dependence`): change one input position at a
  time; an output that sees a token it must not (a mask missing or inverted) or misses one it must;
- **structure** (:func:`ignored_arguments`): build the module with another value of each constructor
  argument; an argument that changes nothing is ignored;
- **one-parameter fits** (:func:`temperature`): the exact scale of the attention scores.
"""

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from course_utils.feedback import Diagnosis, close, fail, tolerance_of
from course_utils.judge import Instance, Subject

ROLES = {
    "queries": "the query projection (queries)",
    "keys": "the key projection (keys)",
    "values": "the value projection (values)",
    "projection": "the output projection (projection)",
    "qkv": "the fused qkv projection",
}
HINTS = {
    "queries": "the queries are self.queries(x), split into heads",
    "keys": "the keys are self.keys(x) (or of the context), split into heads",
    "values": "the values are self.values(x) (or of the context), split into heads, weighted by attention",
    "projection": "after merging the heads, apply self.projection",
}


# ----------------------------------------------------------------------------- the output alone
def of_output(got: Tensor, expected: Tensor, tolerance: tuple[float, float]) -> Diagnosis | None:
    """What comparing the result with the expected one shows by itself, if anything simple."""
    got, expected = got.detach().double(), expected.detach().double()
    if got.shape != expected.shape or not torch.isfinite(got).all() or not expected.any():
        return None
    if not got.any():
        return Diagnosis(
            "all zeros", "your result is all zeros", "is it overwritten, or multiplied by a mask of zeros?"
        )
    scale = float((got * expected).sum() / (expected * expected).sum())
    if abs(scale - 1) > 1e-3 and close(got, scale * expected, tolerance):
        return Diagnosis(
            "result scaled",
            f"your result is {scale:.4g} times the expected one",
            "a factor is missing or extra: a scale, a mean where a sum belongs (or the reverse), a root",
        )
    offset = float((got - expected).mean())
    if close(got, expected + offset, tolerance):
        return Diagnosis(
            "constant offset",
            f"your result is the expected one plus {offset:.4g}",
            "an extra constant or bias?",
        )
    if got.ndim >= 2 and got.shape[-1] == got.shape[-2] and close(got, expected.transpose(-1, -2), tolerance):
        return Diagnosis(
            "last two axes swapped",
            "your result is the expected one with its last two axes swapped",
            "a transpose is missing or extra",
        )
    for axis in range(got.ndim):
        if got.shape[axis] < 2:
            continue
        for shift in (1, -1):
            if close(got, expected.roll(shift, axis), tolerance):
                return Diagnosis(
                    "shifted by one",
                    f"your result is the expected one moved by one position along axis {axis} "
                    f"(of size {got.shape[axis]})",
                    "an index is off by one: a position, the start of a slice, a roll",
                )
        if close(got, expected.flip(axis), tolerance):
            return Diagnosis(
                "reversed",
                f"your result is the expected one in reverse order along axis {axis}",
                "an axis is read backwards",
            )
        if close(got.sort(axis).values, expected.sort(axis).values, tolerance):
            return Diagnosis(
                "reordered",
                f"your result holds the right values in another order along axis {axis} "
                f"(of size {got.shape[axis]})",
                "the order of the axes in a reshape: a view or reshape without the permute it needs, or "
                "a rearrange pattern whose grouped axes are in another order",
            )
    if close(got.flatten().sort().values, expected.flatten().sort().values, tolerance):
        return Diagnosis(
            "reordered",
            "your result holds the right values, arranged differently",
            "how the axes are arranged: a view or reshape without a permute, or an einops pattern",
        )
    return None


def combination(
    got: Tensor, terms: Mapping[str, Tensor], expected: Mapping[str, float], hint: str = ""
) -> Diagnosis | None:
    """The result as an exact mix of ``terms`` (least squares); when its coefficients differ from
    ``expected`` (e.g. ``{"fn(x)": 1, "x": 1}``), say which."""
    basis = torch.stack([t.detach().double().flatten() for t in terms.values()], dim=1)
    target = got.detach().double().flatten()
    if not torch.isfinite(target).all():
        return None
    solution = torch.linalg.lstsq(basis, target[:, None]).solution[:, 0]
    fitted = (basis @ solution).reshape(got.shape)
    if not close(got.double(), fitted, tolerance_of(got.dtype)):
        return None
    found = {name: round(float(c), 3) for name, c in zip(terms, solution, strict=True)}
    if all(abs(found[n] - expected.get(n, 0.0)) < 1e-3 for n in terms):
        return None
    return Diagnosis(
        "terms combined wrongly",
        f"your result is {_formula(found)}, where {_formula(expected)} is expected",
        hint,
    )


def _formula(coefficients: Mapping[str, float]) -> str:
    parts = []
    for name, c in coefficients.items():
        if abs(c) < 1e-3:
            continue
        number = "" if abs(abs(c) - 1) < 1e-3 else f"{abs(c):g}·"
        parts.append(("- " if c < 0 else "+ ") + number + name)
    text = " ".join(parts).removeprefix("+ ") or "0"
    return text.replace("- ", "-", 1) if text.startswith("- ") else text


# ----------------------------------------------------------------------------- sensitivity
def parameter_groups(mirror: nn.Module) -> Iterator[tuple[str, str, list[nn.Parameter]]]:
    """(name, description, [parameter]) of each distinct floating parameter, in order."""
    for name, parameter in mirror.named_parameters():
        if not parameter.is_floating_point():
            continue
        owner, _, own = name.rpartition(".")
        role = ROLES.get(owner.rsplit(".", 1)[-1])
        if role:
            yield owner.rsplit(".", 1)[-1], f"the {own} of {role}", [parameter]
        else:
            yield name, f"`{name}`", [parameter]


class Sensitivity:
    """Change each of the judge's weights in turn (then put it back) and compare how the student's
    output and the reference respond. :meth:`ignored` names a weight the reference depends on and the
    student's output does not; :meth:`misplaced` one the student's output depends on and the reference
    does not. Measured once, on first use."""

    def __init__(
        self,
        inst: Instance,
        run: Callable[[], Tensor],
        reference: Callable[[], Tensor],
        hints: Mapping[str, str] = HINTS,
        seed: int = 11,
    ) -> None:
        self.inst, self.run, self.reference, self.hints, self.seed = inst, run, reference, hints, seed
        self.found: list[tuple[str, str, bool, bool]] | None = None

    def measure(self) -> list[tuple[str, str, bool, bool]]:
        if self.found is None:
            base, expected = self.run(), self.reference()
            generator = torch.Generator().manual_seed(self.seed)
            self.found = []
            for name, description, params in parameter_groups(self.inst.mirror):
                saved = [p.detach().clone() for p in params]
                with torch.no_grad():
                    for p in params:
                        noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
                        spread = p.detach().double().std() + 0.5 if p.numel() > 1 else 1.0
                        p.add_((0.5 * spread * noise).to(p.dtype))
                try:
                    self.inst.load()
                    moved, moved_expected = self.run(), self.reference()
                finally:
                    with torch.no_grad():
                        for p, value in zip(params, saved, strict=True):
                            p.copy_(value)
                    self.inst.load()
                self.found.append(
                    (name, description, _changed(moved, base), _changed(moved_expected, expected))
                )
        return self.found

    def ignored(self) -> Diagnosis | None:
        found = self.measure()
        if len(found) > 1 and not any(student for _, _, student, _ in found) and any(j for *_, j in found):
            return Diagnosis(
                "no weight used",
                "your output does not change when any of the module's weights changes: it does not come "
                "from the module's layers",
                "compute the output from the layers created in __init__, on the input",
            )
        for name, description, student, judge in found:
            if judge and not student:
                return Diagnosis(
                    f"{name} ignored",
                    f"your output does not change when {description} changes: it is not used",
                    self.hints.get(name, ""),
                )
        return None

    def misplaced(self) -> Diagnosis | None:
        for name, description, student, judge in self.measure():
            if student and not judge:
                return Diagnosis(
                    f"{name} used where it does not belong",
                    f"your output changes when {description} changes, but the expected output does not",
                    self.hints.get(name, ""),
                )
        return None


def _changed(after: Tensor, before: Tensor) -> bool:
    """Whether a result moved by more than rounding: the tolerance of its dtype, ten times over."""
    atol, rtol = tolerance_of(before.dtype)
    after, before = after.double(), before.double()
    if not (torch.isfinite(after).all() and torch.isfinite(before).all()):
        return not torch.equal(after.nan_to_num(), before.nan_to_num())  # inf or NaN: moved if it differs
    return bool(((after - before).abs() > 10 * (atol + rtol * before.abs())).any())


def token_dependence(
    run: Callable[[Tensor], Tensor],
    reference: Callable[[Tensor], Tensor],
    x: Tensor,
    too_much: str,
    too_little: str,
    seed: int = 13,
) -> Diagnosis | None:
    """Change one position of ``x`` (b, n, ...) at a time: the output positions that respond, for the
    student and the reference. An output that sees a position it must not (``too_much`` is the hint),
    or misses one it must see (``too_little``), is named with both positions."""
    generator = torch.Generator().manual_seed(seed)
    base, expected = run(x), reference(x)
    for t in range(x.shape[1]):
        moved = x.detach().clone()
        moved[:, t] += torch.randn(moved[:, t].shape, generator=generator, dtype=torch.float64).to(x.dtype)
        student = _positions(run(moved), base)
        judge = _positions(reference(moved), expected)
        extra, missing = sorted(student - judge), sorted(judge - student)
        if extra:
            return Diagnosis(
                "sees positions it must not",
                f"changing input position {t} changes your output at position {extra[0]}, which must not "
                f"depend on it",
                too_much,
            )
        if missing:
            return Diagnosis(
                "misses positions it must see",
                f"your output at position {missing[0]} does not change when input position {t} changes, "
                f"but it must depend on it",
                too_little,
            )
    return None


def _positions(after: Tensor, before: Tensor) -> set[int]:
    """The positions (axis 1) at which an output moved."""
    atol, rtol = tolerance_of(before.dtype)
    moved = (after.double() - before.double()).abs() > 10 * (atol + rtol * before.double().abs())
    return {int(i) for i in moved.flatten(2).any(-1).any(0).nonzero().flatten()} if moved.ndim >= 2 else set()


# ----------------------------------------------------------------------------- structure
def signature(structure: dict) -> list:
    """What a module's structure shows of its constructor's arguments: shapes and simple attributes."""
    return [
        (n["class"], n["config"], [p[:2] for p in n["params"]], [b[:2] for b in n["buffers"]])
        + ([c[0] for c in n["children"]],)
        for n in structure["nodes"]
    ]


def ignored_arguments(
    student: Subject, label: str, kwargs: dict, alternatives: Mapping[str, Any], hints: Mapping[str, str] = {}
) -> Diagnosis | None:
    """Build the student's class (structure only) with another value of each argument in turn: an
    argument whose value changes nothing in the module (no shape, no attribute) is ignored."""
    base = signature(student.build(0, meta=True, label=label, **kwargs).structure)
    for name, value in alternatives.items():
        if name not in kwargs:
            raise ValueError(f"ignored_arguments: {name} has no value to compare with in kwargs")
        other = student.build(0, meta=True, label=label, **{**kwargs, name: value}).structure
        if signature(other) == base:
            return Diagnosis(
                f"ignores {name}",
                f"your module ignores `{name}`: built with {name}={kwargs[name]!r} and with "
                f"{name}={value!r}, "
                "it has the same layers, shapes and attributes",
                hints.get(name, f"pass {name} on to the layer that needs it"),
            )
    return None


def expect_arguments_used(
    student: Subject, label: str, kwargs: dict, alternatives: Mapping[str, Any], hints: Mapping[str, str] = {}
) -> None:
    """Fail when the student's class ignores an argument of its constructor (:func:`ignored_arguments`)."""
    found = ignored_arguments(student, label, kwargs, alternatives, hints)
    if found is not None:
        fail(f"{label}: {found.sentence}.\nHint: {found.hint}", found.name, "diagnosed")


# ----------------------------------------------------------------------------- one-parameter fits
def temperature(
    weights: Tensor, scores: Tensor, expected_scale: float, mask: Tensor | None
) -> Diagnosis | None:
    """The one scale s for which softmax(s · scores) is ``weights`` (attention weights read off the
    student's module), when it is not the expected one."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))

    def error(s: float) -> float:
        return float((torch.softmax(scores * s, dim=-1) - weights).abs().max())

    candidates = torch.logspace(-4, 4, 161, base=2.0, dtype=torch.float64) * expected_scale
    best = min(candidates.tolist(), key=error)
    low, high = best / 2**0.05, best * 2**0.05
    for _ in range(60):  # golden-section search on [low, high]
        a, b = high - (high - low) / 1.618, low + (high - low) / 1.618
        low, high = (low, b) if error(a) < error(b) else (a, high)
    best = (low + high) / 2
    if error(best) > 1e-4 or abs(best / expected_scale - 1) < 1e-3:
        return None
    return Diagnosis(
        "scores scaled wrongly",
        f"your attention scores are divided by {1 / best:.4g} where sqrt(head_dim) = "
        f"{1 / expected_scale:.4g} "
        "is expected",
        "divide the scores q·kᵀ by sqrt(head_dim), the size of one head's queries, once, before the softmax",
    )


def rows_sum_to_one(weights: Tensor, what: str = "attention") -> Diagnosis | None:
    """Each row of attention weights (over the keys, the last axis) must sum to 1."""
    sums = weights.double().sum(-1)
    wrong = (sums - 1).abs() > 1e-3
    if not wrong.any():
        return None
    index = tuple(int(i) for i in wrong.nonzero()[0])
    return Diagnosis(
        "rows do not sum to 1",
        f"{what} rows must sum to 1 over the keys; the row at {list(index)} sums to {float(sums[index]):.4g}",
        "take the softmax over the keys (the last axis of the scores), after scaling and masking, and do not "
        "scale or mask the weights after it",
    )


def masked_weight(weights: Tensor, mask: Tensor | None) -> Diagnosis | None:
    """Weight on a position the mask forbids."""
    if mask is None:
        return None
    blocked = (weights.double().abs() > 1e-6) & ~mask.expand_as(weights)
    if not blocked.any():
        return None
    index = tuple(int(i) for i in blocked.nonzero()[0])
    return Diagnosis(
        "weight on masked positions",
        f"your attention gives weight {float(weights[index]):.4g} to a key the mask forbids "
        f"(at {list(index)})",
        "fill the scores where the mask is False with -inf before the softmax (mask is True where attention "
        "is allowed)",
    )


def read_attention(
    inst: Instance,
    node: nn.Module,
    x: Tensor,
    label: str,
    context: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor | None:
    """The attention weights (b, h, n_query, n_key) of the student's MultiHeadAttention ``node`` (a part
    of ``inst.mirror``), read off its output: with identity values and output projection loaded, its
    output is, head by head, the weights applied to the keys' own features, which a least-squares solve
    takes back. None where the module is not laid out as the skeleton (queries, keys, values,
    projection), a head has fewer features than there are keys, or the output is not such a product."""
    layers = dict(node.named_children())
    if not all(isinstance(layers.get(n), nn.Linear) for n in ("queries", "keys", "values", "projection")):
        return None
    source = x if context is None else context
    heads, width = int(node.num_heads), x.shape[-1]
    if width % heads or source.shape[1] > width // heads or layers["values"].weight.shape != (width, width):
        return None
    identity = [layers["values"], layers["projection"]]
    saved = [(p, p.detach().clone()) for layer in identity for p in layer.parameters(recurse=False)]
    with torch.no_grad():
        for layer in identity:
            layer.weight.copy_(torch.eye(width, dtype=layer.weight.dtype))
            if layer.bias is not None:
                layer.bias.zero_()
    kwargs = {k: v for k, v in (("mask", mask), ("context", context)) if v is not None}
    path = next(name for name, m in inst.mirror.named_modules() if m is node)
    try:
        inst.load()
        out = inst.call(x, label=label, path=path, no_grad=True, **kwargs).output
    finally:
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)
        inst.load()
    if not isinstance(out, Tensor) or out.shape != x.shape:
        return None
    split = "b n (h d) -> b h n d"
    out_h, keys = (rearrange(t.double(), split, h=heads) for t in (out, source))
    weights = out_h @ torch.linalg.pinv(keys)
    return weights if close(weights @ keys, out_h, tolerance_of(x.dtype)) else None


def explain_attention(
    weights: Tensor, expected: Tensor, scores: Tensor, scale: float, mask: Tensor | None
) -> Diagnosis:
    """What the attention weights read off the student's module show, against the expected ones
    (``scores`` are q·kᵀ, unscaled; ``scale`` is 1/sqrt(head_dim))."""
    weights, expected = weights.double(), expected.double()
    found = first_of(
        lambda: rows_sum_to_one(weights, "attention"),
        lambda: masked_weight(weights, mask),
        lambda: temperature(weights, scores.double(), scale, mask),
    )
    if found is not None:
        return found
    tolerance = tolerance_of(torch.float32)
    if close(weights, expected, tolerance):
        return Diagnosis(
            "error after the attention weights",
            "your attention weights are right (read with identity values and output projection), but the "
            "output is not: the error comes after them",
            "weight the values with them (einsum('bhqk, bhkd -> bhqd', att, values)), merge the heads with "
            "rearrange(out, 'b h n d -> b n (h d)'), then apply self.projection",
        )
    if weights.shape[-1] == weights.shape[-2] and close(weights, expected.transpose(-1, -2), tolerance):
        return Diagnosis(
            "attention matrix transposed",
            "your attention matrix is transposed: row i must hold query i's weights over the keys",
            "the scores are einsum('bhqd, bhkd -> bhqk', queries, keys), softmax over the last axis",
        )
    index = tuple(int(i) for i in (~torch.isclose(weights, expected, *tolerance[::-1])).nonzero()[0])
    return Diagnosis(
        "attention weights differ",
        f"your attention weights (read with identity values and output projection) differ from "
        f"softmax(q·kᵀ / sqrt(head_dim)): at [batch, head, query, key] = {list(index)}, expected "
        f"{float(expected[index]):.4g}, got {float(weights[index]):.4g}",
        "energy = einsum('bhqd, bhkd -> bhqk', queries, keys); scale by sqrt(head_dim); mask; softmax over "
        "the keys (dim=-1)",
    )


def first_of(*diagnoses: Callable[[], Diagnosis | None]) -> Diagnosis | None:
    """The first diagnosis that finds something."""
    for diagnose in diagnoses:
        found = diagnose()
        if found is not None:
            return found
    return None
