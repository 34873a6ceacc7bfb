"""Checks of notebook 08: the patch embedding with its tokens, the classification head, the ViT.

The student's modules get the judge's weights; every expected output is computed from the judge's copy
of them (the mirror), on the judge's inputs. ``check_vit`` judges the assembled model by its structure
(one attention per block, ``num_heads`` passed on), its output shape, the gradients reaching every
parameter and its parameter count against :func:`course_utils.reference.vit_parameter_count`, then its
output against a ViT assembled from its own parts: the PatchEmbedding, each encoder block as an
``nn.TransformerEncoderLayer`` and the head. ``check_overfits`` trains a tiny one on random images and
asks that it memorises them. Every constructor argument of the head and of the ViT must shape them; a
wrong result that no known mistake matches is explained by the weights it ignores, and for the head by
the tokens its scores depend on (the class token alone for pool='cls', every token for 'mean').
For pool='mean' the head may normalise before or after the pooling: the lecture's head averages the tokens
and then normalises, the reference ViT's normalises every token (its encoder norm) and then averages.
"""

import math
import re
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_utils.checks.diagnose import (
    Sensitivity,
    expect_arguments_used,
    parameter_groups,
    token_dependence,
)
from course_utils.checks.nb02_patch_embedding import reference_outputs as patch_projections
from course_utils.checks.nb07_transformer_encoder import (
    alternatives_of,
    another_divisor,
    builds_on_torch_transformer,
    layer_builder,
)
from course_utils.checks.parts import (
    GRAD_SEED,
    attention_modules,
    expect_trained,
    find_layers,
    is_attention,
    path_of,
)
from course_utils.feedback import (
    Diagnosis,
    Mistake,
    as_tensor,
    call_text,
    check,
    close,
    expect_close,
    expect_shape,
    fail,
    on,
    random_tensor,
)
from course_utils.judge import Instance, subject
from course_utils.mirror import parameter_count
from course_utils.reference import vit_parameter_count

VIT_B16 = dict(
    in_channels=3, patch_size=16, emb_size=768, img_size=224, depth=12, n_classes=1000, num_heads=12
)
PARTS = (
    "a ViT is PatchEmbedding -> TransformerEncoder -> ClassificationHead; the PatchEmbedding takes "
    "in_channels, patch_size, emb_size and img_size, the TransformerEncoder depth, emb_size and the "
    "other keyword arguments, the ClassificationHead emb_size and n_classes"
)
ASSEMBLED = (
    "A ViT applies its PatchEmbedding, then each encoder block in turn, then the ClassificationHead "
    "(pooling, LayerNorm, Linear), and nothing else."
)
HEAD_ARGUMENTS = {
    "emb_size": "size the LayerNorm and the Linear with it: nn.LayerNorm(emb_size), "
    "nn.Linear(emb_size, n_classes).",
    "n_classes": "the Linear gives one score per class: nn.Linear(emb_size, n_classes).",
}
EMBEDDING_ARGUMENT = "pass it on: PatchEmbedding(in_channels, patch_size, emb_size, img_size)."
VIT_ARGUMENTS = {
    "in_channels": EMBEDDING_ARGUMENT,
    "patch_size": EMBEDDING_ARGUMENT,
    "emb_size": "pass it on to all three parts: PatchEmbedding(..., emb_size, ...), "
    "TransformerEncoder(depth, emb_size=emb_size, **kwargs), ClassificationHead(emb_size, n_classes).",
    "img_size": EMBEDDING_ARGUMENT,
    "depth": "pass it on: TransformerEncoder(depth, emb_size=emb_size, **kwargs).",
    "n_classes": "pass it on: ClassificationHead(emb_size, n_classes).",
    "num_heads": "pass **kwargs on: TransformerEncoder(depth, emb_size=emb_size, **kwargs).",
}
POOLING = {
    "cls": (
        "with pool='cls' the scores depend on the class token alone, the output at position 0: x[:, 0].",
        "with pool='cls' the scores come from the class token, the output at position 0: x[:, 0].",
    ),
    "mean": (
        "with pool='mean' the scores depend on the mean of all tokens, the class token's output included.",
        "with pool='mean' every token counts, the class token's output included: "
        "Reduce('b n e -> b e', reduction='mean').",
    ),
}
SEES_TOO_MUCH = "sees positions it must not"  # the name token_dependence gives an extra dependence
CLASS_TOKEN = ("cls", "class")  # what the class token's name holds
SCALE, SHIFT = ("gamma", "weight", "scale"), ("beta", "bias", "shift")  # a hand-written LayerNorm's names


# ----------------------------------------------------------------------------------------------
# The lecture's full PatchEmbedding: projection, class token in front, learned positions added
# ----------------------------------------------------------------------------------------------


def _one_parameter(
    module: nn.Module, keys: tuple[str, ...], numel: int, what: str, wanted: str
) -> tuple[str, Tensor]:
    found = [(n, p) for n, p in module.named_parameters() if any(k in n.lower() for k in keys)]
    if len(found) != 1 or found[0][1].numel() != numel:
        names = ", ".join(f"`{n}` {tuple(p.shape)}" for n, p in found) or "none"
        fail(f"{what}: expected {wanted}; found {names}.")
    return found[0]


def _tokens(part: nn.Module, emb_size: int, tokens: int, what: str) -> tuple[tuple[str, Tensor], ...]:
    """(name, judge's value) of a PatchEmbedding's class token and of its position table."""
    cls_token = _one_parameter(
        part, CLASS_TOKEN, emb_size, what, f"one class token `cls_token` of {emb_size} values"
    )
    positions = _one_parameter(
        part,
        ("position",),
        tokens * emb_size,
        what,
        f"learned positions `positions`, one row per token: ({tokens}, {emb_size})",
    )
    return cls_token, positions


def _embedded(
    part: nn.Module, x: Tensor, patch_size: int, cls_token: Tensor, positions: Tensor, what: str
) -> list[Tensor]:
    """What a correct PatchEmbedding with the mirror's weights may give (one per patch layout)."""
    emb_size = cls_token.numel()
    cls = cls_token.reshape(1, 1, emb_size).expand(len(x), 1, emb_size)
    table = positions.reshape(-1, emb_size)
    return [torch.cat([cls, p], dim=1) + table for p in patch_projections(part, x, patch_size, what)]


@check
def check_vit_patch_embedding(
    PatchEmbedding: type,
    in_channels: int = 3,
    patch_size: int = 4,
    emb_size: int = 16,
    img_size: int = 16,
    batch: int = 2,
    seed: int = 0,
) -> None:
    """``PatchEmbedding(...)(x)``: the patch tokens, a class token in front, learned positions added."""
    student = subject(PatchEmbedding, "PatchEmbedding")
    kwargs = dict(in_channels=in_channels, patch_size=patch_size, emb_size=emb_size, img_size=img_size)
    what = call_text("PatchEmbedding", **kwargs)
    tokens = (img_size // patch_size) ** 2 + 1
    for device in student.devices():
        module = student.build(seed, device=device, label=what, **kwargs)
        (cls_name, cls_token), (positions_name, positions) = _tokens(module.mirror, emb_size, tokens, what)
        x = random_tensor(batch, in_channels, img_size, img_size, seed=seed)
        label = f"{what}(x){on(device)}"
        result = module.call(x, label=label, grad=GRAD_SEED)
        got = as_tensor(result.output, label)
        expect_shape(
            got,
            (batch, tokens, emb_size),
            label,
            f"{tokens - 1} patch tokens and the class token in front: N + 1 = {tokens} tokens.",
        )
        with torch.no_grad():
            table = positions.reshape(tokens, emb_size)
            candidates = _embedded(module.mirror, x, patch_size, cls_token, positions, what)
            if not any(close(got, expected) for expected in candidates):
                projected = candidates[0] - table
                expect_close(
                    got,
                    candidates[0],
                    label,
                    [
                        Mistake(
                            "positions not added",
                            "return x + self.positions after putting the class token in front.",
                            lambda: projected,
                        ),
                        Mistake(
                            "class token appended last",
                            "the class token goes in front: torch.cat([cls_tokens, x], dim=1).",
                            lambda: torch.roll(projected, -1, dims=1) + table,
                        ),
                    ],
                )
        if result.no_graph or result.param_grads is None:
            fail(f"{label}: the result does not require grad: is forward run under torch.no_grad()?")
        for shown, name in (("cls_token", cls_name), ("positions", positions_name)):
            if result.param_grads.get(name) is None:
                fail(
                    f"{label}: no gradient reaches `{shown}`; use the Parameter itself, not .data or a copy."
                )


# ----------------------------------------------------------------------------------------------
# The classification head
# ----------------------------------------------------------------------------------------------


def _head_linear(linears: list[nn.Module], emb_size: int, n_classes: int, what: str) -> nn.Linear:
    if len(linears) != 1:
        fail(f"{what}: expected one nn.Linear(emb_size, n_classes), found {len(linears)} Linear layers.")
    linear = linears[0]
    if (linear.in_features, linear.out_features) != (emb_size, n_classes):
        fail(
            f"{what}: the Linear maps {linear.in_features} -> {linear.out_features}; expected "
            f"emb_size -> n_classes = {emb_size} -> {n_classes}."
        )
    return linear


def _scale_and_shift(module: nn.Module, emb_size: int) -> tuple[Tensor, Tensor] | None:
    """A hand-written LayerNorm's scale and shift: a part with two parameters of shape (emb_size,),
    told apart by their names (gamma/weight/scale, beta/bias/shift), else by their order."""
    own = list(module.named_parameters(recurse=False))
    if len(own) != 2 or any(tuple(p.shape) != (emb_size,) for _, p in own):
        return None
    scales = [p for n, p in own if any(k in n.lower() for k in SCALE)]
    shifts = [p for n, p in own if any(k in n.lower() for k in SHIFT)]
    if len(scales) == len(shifts) == 1 and scales[0] is not shifts[0]:
        return scales[0], shifts[0]
    return own[0][1], own[1][1]


def _head_norm(modules: list[nn.Module], emb_size: int, what: str) -> Callable[[Tensor], Tensor]:
    """The head's LayerNorm with the judge's weights: an nn.LayerNorm of the mirror, or a hand-written
    one read off it; where there is none, a plain normalisation, so that a missing one is named."""
    norms = [m for m in modules if isinstance(m, nn.LayerNorm)]
    if len(norms) > 1:
        fail(f"{what}: expected one nn.LayerNorm(emb_size), found {len(norms)}.")
    if norms:
        return norms[0]
    for module in modules:
        found = _scale_and_shift(module, emb_size)
        if found is not None:
            eps = getattr(module, "eps", None)
            eps = float(eps) if isinstance(eps, int | float) and not isinstance(eps, bool) else 1e-5
            return lambda v: F.layer_norm(v, (emb_size,), *found, eps=eps)
    return lambda v: F.layer_norm(v, (emb_size,))


def _pooled(x: Tensor, pool: str) -> Tensor:
    return x.mean(dim=1) if pool == "mean" else x[:, 0]


def _head_outputs(x: Tensor, pool: str, norm, linear: nn.Linear) -> list[Tensor]:
    """What a correct head may give: pool, LayerNorm, Linear (the lecture's order); for pool='mean' also
    LayerNorm on every token, then the mean, then Linear (the reference ViT's average-pooling head, whose
    encoder norm comes before the pooling). For pool='cls' the two orders are the same."""
    outputs = [linear(norm(_pooled(x, pool)))]
    if pool == "mean":
        outputs.append(linear(norm(x).mean(dim=1)))
    return outputs


def _head_mistakes(x: Tensor, pool: str, norm, linear: nn.Linear) -> list[Mistake]:
    def classify(v: Tensor) -> Tensor:
        return linear(norm(v))

    mean, first = x.mean(dim=1), x[:, 0]
    mistakes = [
        Mistake(
            "LayerNorm missing",
            "the head is pooling -> nn.LayerNorm(emb_size) -> nn.Linear(emb_size, n_classes).",
            lambda: linear(mean if pool == "mean" else first),
        ),
        Mistake(
            "class token taken from the last position",
            "prepend_cls_token put the class token in front: its output is x[:, 0].",
            lambda: classify(x[:, -1]),
        ),
        Mistake(
            "pooled over the feature axis",
            "average over the tokens, the middle axis: Reduce('b n e -> b e', reduction='mean').",
            lambda: classify(x.mean(dim=-1)) if x.shape[1] == x.shape[2] else None,
        ),
    ]
    if pool == "mean":
        mistakes += [
            Mistake(
                "the class token taken where pool='mean' asks for the mean of all tokens",
                "with pool='mean', average all tokens: Reduce('b n e -> b e', reduction='mean').",
                lambda: classify(first),
            ),
        ]
    else:
        mistakes.append(
            Mistake(
                "mean pooling where pool='cls' asks for the class token",
                "with pool='cls', keep only the class token's output, x[:, 0].",
                lambda: classify(mean),
            )
        )
    return mistakes


@check
def check_classification_head(
    ClassificationHead: type,
    emb_size: int = 12,
    n_classes: int = 5,
    batch: int = 3,
    seq_len: int = 12,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    pools: tuple[str, ...] = ("mean", "cls"),
) -> None:
    """``ClassificationHead(emb_size, n_classes, pool)``: pool the tokens, LayerNorm, Linear.

    The reference is computed with the judge's copy of the head's LayerNorm (an nn.LayerNorm or a
    hand-written one) and Linear. With ``seq_len == emb_size`` pooling over the wrong axis still runs,
    and is named.
    """
    student = subject(ClassificationHead, "ClassificationHead")
    for i, device in enumerate(student.devices()):
        for pool in pools:
            kwargs = dict(emb_size=emb_size, n_classes=n_classes, pool=pool)
            what = call_text("ClassificationHead", **kwargs)
            if i == 0 and pool == pools[0]:
                alternatives = dict(emb_size=emb_size + 1, n_classes=n_classes + 1)
                expect_arguments_used(student, what, kwargs, alternatives, HEAD_ARGUMENTS)
            head = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
            linear = _head_linear(find_layers(head.mirror, nn.Linear), emb_size, n_classes, what)
            norm = _head_norm(list(head.mirror.modules()), emb_size, what)
            x = random_tensor(batch, seq_len, emb_size, seed=seed, dtype=dtype)
            label = f"{what}(x of shape {tuple(x.shape)}){on(device)}"
            got = as_tensor(head.call(x, label=label, no_grad=True).output, label)
            if tuple(got.shape) == (seq_len, n_classes) and seq_len != batch:
                fail(
                    f"{label}: expected shape {(batch, n_classes)}, got {tuple(got.shape)}: this is "
                    "the known mistake pooled over the batch axis. Hint: average over the tokens, "
                    "keeping one vector per image: Reduce('b n e -> b e', reduction='mean')."
                )
            if tuple(got.shape) == (batch, seq_len, n_classes):
                fail(
                    f"{label}: expected shape {(batch, n_classes)}, got {tuple(got.shape)}: the "
                    "tokens are not pooled. Hint: one vector per image goes into the Linear, the "
                    "mean of all tokens (pool='mean') or the class token x[:, 0] (pool='cls')."
                )
            expect_shape(got, (batch, n_classes), label, "One row of n_classes scores per image.")
            with torch.no_grad():
                expected = _head_outputs(x, pool, norm, linear)
                if any(close(got, e) for e in expected):
                    continue
                expect_close(
                    got,
                    expected[0],
                    label,
                    _head_mistakes(x, pool, norm, linear),
                    diagnoses=_head_diagnoses(head, x, pool, norm, linear, label),
                )


def _head_diagnoses(head: Instance, x: Tensor, pool: str, norm, linear: nn.Linear, label: str) -> list:
    """The head's weights its scores ignore, and the tokens they depend on, against the pooling's."""

    def student(inputs: Tensor = x) -> Tensor:
        return as_tensor(head.call(inputs, label=label, no_grad=True).output, label)

    def reference(inputs: Tensor = x) -> Tensor:  # the mirror's weights as they are when called
        return linear(norm(_pooled(inputs, pool)))

    def tokens() -> Diagnosis | None:
        def scores(run):  # (b, n_classes) as the one output position: which input tokens move it
            return lambda inputs: run(inputs)[:, None]

        found = token_dependence(scores(student), scores(reference), x, *POOLING[pool])
        position = None if found is None else re.search(r"input position (\d+)", found.sentence)
        if position is None:
            return found
        token = position.group(1)
        seen = found.name == SEES_TOO_MUCH
        verb, must = ("change", "must not") if seen else ("do not change", "must")
        sentence = f"your scores {verb} when token {token} of the input changes, but they {must} depend on it"
        return replace(found, sentence=sentence)

    hint = "the head is pooling -> LayerNorm -> Linear, each with its own weights."
    weights = Sensitivity(head, student, reference, {n: hint for n, _, _ in parameter_groups(head.mirror)})
    return [weights.ignored, tokens, weights.misplaced]


# ----------------------------------------------------------------------------------------------
# The whole ViT
# ----------------------------------------------------------------------------------------------


def _parts(
    in_channels: int, patch_size: int, emb_size: int, img_size: int, depth: int, n_classes: int, **_
) -> dict[str, int]:
    """Parts of a ViT's parameter count, to name the one a wrong count adds or leaves out."""
    e, m = emb_size, 4 * emb_size
    return {
        "the class token (or the class token's position: one position per token, N + 1)": e,
        "the head's LayerNorm": 2 * e,
        "the head's Linear": (e + 1) * n_classes,
        "the position embeddings": ((img_size // patch_size) ** 2 + 1) * e,
        "the patch projection": (patch_size**2 * in_channels + 1) * e,
        "one encoder block": 4 * (e * e + e) + 2 * 2 * e + (e * m + m + m * e + e),
    }


def _check_parameter_count(model: Instance, kwargs: dict) -> None:
    """The number of parameters of ``model`` (built with ``kwargs``) against a ViT's."""
    got = parameter_count(model.structure)
    k = kwargs
    expected = vit_parameter_count(
        k["patch_size"],
        k["emb_size"],
        k["depth"],
        k["num_heads"],
        4 * k["emb_size"],
        k["img_size"],
        k["in_channels"],
        k["n_classes"],
    )
    if got == expected:
        return
    difference, parts = got - expected, _parts(**kwargs)
    more = "more" if difference > 0 else "fewer"
    what = call_text("ViT", **kwargs)
    message = f"{what} has {got:,} parameters, expected {expected:,}: {abs(difference):,} {more}"
    for name, size in parts.items():
        if abs(difference) == size:
            fail(f"{message}, which is {name}.")
    block = parts["one encoder block"]
    if difference % block == 0:
        fail(
            f"{message}, the size of {abs(difference) // block} encoder blocks: "
            "pass depth on to TransformerEncoder."
        )
    names = list(parts)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            if abs(difference) == parts[first] + parts[second]:
                fail(f"{message}, which is {first} and {second}.")
    fail(f"{message}. Hint: {PARTS}.")


def _check_structure(mirror: nn.Module, what: str, depth: int, num_heads: int) -> None:
    if builds_on_torch_transformer(mirror):
        fail(
            f"{what}: build the ViT from your own blocks; PyTorch's Transformer layers are what "
            "the earlier notebooks checked them against."
        )
    slots = [m for _, m in mirror.named_modules(remove_duplicate=False) if is_attention(m)]  # repeats kept
    distinct = attention_modules(mirror)
    if len(slots) >= depth > len(distinct):
        fail(
            f"{what} holds the same encoder block {depth} times, so every layer shares one set of "
            "weights ([block] * depth). Hint: TransformerEncoder(depth, ...) creates depth new blocks."
        )
    if not distinct:
        fail(
            f"{what} holds no MultiHeadAttention: is the TransformerEncoder(depth, emb_size=emb_size, "
            "**kwargs) missing between the PatchEmbedding and the ClassificationHead?"
        )
    if len(distinct) != depth:
        fail(
            f"{what} has {len(distinct)} MultiHeadAttention modules, expected depth = {depth}, one per "
            "encoder block: pass depth on, TransformerEncoder(depth, emb_size=emb_size, **kwargs)."
        )
    heads = sorted({getattr(m, "num_heads", None) for m in distinct}, key=str)
    if heads != [num_heads]:
        fail(
            f"{what}: its attention has num_heads {heads}, expected {num_heads}: pass **kwargs on, "
            "TransformerEncoder(depth, emb_size=emb_size, **kwargs)."
        )


def _embedding_part(mirror: nn.Module, what: str) -> nn.Module:
    """The ViT's PatchEmbedding: the part that holds the class token (and no attention)."""
    owners = [
        m
        for m in mirror.modules()
        if any(k in n.lower() for n, _ in m.named_parameters(recurse=False) for k in CLASS_TOKEN)
    ]
    if len(owners) != 1 or attention_modules(owners[0]):
        fail(
            f"{what}: expected one PatchEmbedding part holding the projection, the class token "
            f"`cls_token` and the positions, ahead of the encoder: {PARTS}."
        )
    return owners[0]


def _blocks(mirror: nn.Module, what: str) -> list[nn.Module]:
    """The encoder block around each attention module: the nearest part holding two LayerNorms."""
    blocks = []
    for mha in attention_modules(mirror):
        names = path_of(mirror, mha).split(".")
        around = (mirror.get_submodule(".".join(names[:i])) for i in range(len(names) - 1, -1, -1))
        block = next((m for m in around if len(find_layers(m, nn.LayerNorm)) >= 2), None)
        if block is None:
            fail(
                f"{what}: no encoder block around its MultiHeadAttention `{'.'.join(names)}`: a block "
                "holds two nn.LayerNorm, the attention and a FeedForwardBlock (notebook 07)."
            )
        blocks.append(block)
    return blocks


def _head(
    mirror: nn.Module, parts: list[nn.Module], emb_size: int, n_classes: int, what: str
) -> tuple[nn.Linear, Callable[[Tensor], Tensor], tuple[str, ...]]:
    """The head's Linear and LayerNorm (what lies outside the PatchEmbedding and the blocks) and the
    poolings it may use: its ``pool`` attribute, or either where it keeps none."""
    inside = {id(m) for part in parts for m in part.modules()}
    rest = [m for m in mirror.modules() if id(m) not in inside]
    linear = _head_linear(
        [m for m in rest if isinstance(m, nn.Linear)], emb_size, n_classes, f"{what}'s head"
    )
    norm = _head_norm(rest, emb_size, f"{what}'s head")
    pools = [m.pool for m in rest if getattr(m, "pool", None) in ("mean", "cls")]
    return linear, norm, tuple(pools[:1]) or ("mean", "cls")


def _assembled(model: Instance, x: Tensor, kwargs: dict, what: str) -> Callable[[], list[Tensor]]:
    """A function giving the logits of a ViT assembled from the mirror's parts, with their weights as
    they are when it is called: PatchEmbedding, each encoder block as an nn.TransformerEncoderLayer,
    pooling, LayerNorm, Linear; one per patch layout and pooling allowed. Each block's attention is
    checked once, here."""
    mirror, patch_size, emb_size = model.mirror, kwargs["patch_size"], kwargs["emb_size"]
    embedding = _embedding_part(mirror, what)
    tokens = (kwargs["img_size"] // patch_size) ** 2 + 1
    (_, cls_token), (_, positions) = _tokens(embedding, emb_size, tokens, what)
    blocks = _blocks(mirror, what)
    builds, h = [], _embedded(embedding, x, patch_size, cls_token, positions, what)[0]
    for i, block in enumerate(blocks):
        builds.append(layer_builder(model, block, h, f"encoder block {i + 1} of {what}"))
        h = builds[-1]()(h)
    linear, norm, pools = _head(mirror, [embedding, *blocks], emb_size, kwargs["n_classes"], what)

    def logits() -> list[Tensor]:
        layers = [build() for build in builds]
        found = []
        for h in _embedded(embedding, x, patch_size, cls_token, positions, what):
            for layer in layers:
                h = layer(h)
            found += [out for pool in pools for out in _head_outputs(h, pool, norm, linear)]
        return found

    return logits


def _vit_alternatives(kwargs: dict) -> dict:
    """Another valid value of each of a ViT's arguments (image size divisible by the patch size,
    emb_size by num_heads)."""
    k = kwargs
    return alternatives_of(
        in_channels=k["in_channels"] + 1,
        patch_size=another_divisor(k["img_size"], k["patch_size"]),
        emb_size=k["emb_size"] + k["num_heads"],
        img_size=k["img_size"] + k["patch_size"],
        depth=k["depth"] + 1,
        n_classes=k["n_classes"] + 1,
        num_heads=another_divisor(k["emb_size"], k["num_heads"]),
    )


@check
def check_vit(
    ViT: type,
    in_channels: int = 3,
    patch_size: int = 4,
    emb_size: int = 32,
    img_size: int = 16,
    depth: int = 2,
    n_classes: int = 10,
    num_heads: int = 4,
    batch: int = 2,
    seed: int = 0,
) -> None:
    """``ViT(in_channels, patch_size, emb_size, img_size, depth, n_classes, num_heads=...)``.

    Its structure (depth distinct attention modules with ``num_heads``), output shape, gradients
    reaching every parameter, parameter count, for this configuration and for ViT-B/16 (built on the
    meta device), and then its output against a ViT assembled from its own parts.
    """
    student = subject(ViT, "ViT")
    kwargs = dict(
        in_channels=in_channels,
        patch_size=patch_size,
        emb_size=emb_size,
        img_size=img_size,
        depth=depth,
        n_classes=n_classes,
        num_heads=num_heads,
    )
    what = call_text("ViT", **kwargs)
    runs = []
    for i, device in enumerate(student.devices()):
        model = student.build(seed, device=device, label=what, **kwargs)
        _check_structure(model.mirror, what, depth, num_heads)
        x = random_tensor(batch, in_channels, img_size, img_size, seed=seed)
        label = f"{what}(x of shape {tuple(x.shape)}){on(device)}"
        try:
            result = model.call(x, label=label, grad=GRAD_SEED)
            got = as_tensor(result.output, label)
        except AssertionError as err:
            raise AssertionError(f"{err}\nHint: {PARTS}. Is every size passed on?") from err.__cause__
        expect_shape(
            got,
            (batch, n_classes),
            label,
            "A ViT gives one row of n_classes scores per image: (b, c, h, w) -> (b, N + 1, e) "
            "-> (b, N + 1, e) -> (b, n_classes).",
        )
        if i == 0:
            expect_arguments_used(student, what, kwargs, _vit_alternatives(kwargs), VIT_ARGUMENTS)
        expect_trained(result, label)
        runs.append((model, x, got, label))
    _check_parameter_count(runs[0][0], kwargs)
    b16 = student.build(0, meta=True, label=call_text("ViT", **VIT_B16), **VIT_B16)
    _check_parameter_count(b16, VIT_B16)
    for model, x, got, label in runs:
        with torch.no_grad():
            assembled = _assembled(model, x, kwargs, what)
            candidates = assembled()
            if not any(close(got, expected) for expected in candidates):
                expect_close(
                    got,
                    candidates[0],
                    f"{label} does not match a ViT assembled from its own parts",
                    hint=ASSEMBLED,
                    diagnoses=_vit_diagnoses(model, x, assembled, label),
                )


def _vit_diagnoses(model: Instance, x: Tensor, assembled: Callable[[], list[Tensor]], label: str) -> list:
    """The weights the ViT's output ignores, or responds to where the assembled ViT does not."""

    def student() -> Tensor:
        return as_tensor(model.call(x, label=label, no_grad=True).output, label)

    hints = {name: ASSEMBLED for name, _, _ in parameter_groups(model.mirror)}
    weights = Sensitivity(model, student, lambda: assembled()[0], hints)
    return [weights.ignored, weights.misplaced]


@check
def check_overfits(ViT: type, steps: int = 100, lr: float = 1e-3, n_images: int = 16, seed: int = 0) -> None:
    """A tiny ViT trained with Adam memorises ``n_images`` random 3×16×16 images with random labels.

    A correct model reaches 100% training accuracy in about 15–35 steps; ``steps`` leaves room.
    """
    student = subject(ViT, "ViT")
    kwargs = dict(in_channels=3, patch_size=4, emb_size=32, img_size=16, depth=2, n_classes=10, num_heads=4)
    what = call_text("ViT", **kwargs)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 10, (n_images,), generator=generator)
    task = (
        f"{what} trained with Adam(lr={lr}) for {steps} steps on {n_images} random images with random labels"
    )
    for device in student.devices():
        model = student.build(seed, device=device, label=what, **kwargs)
        label = f"{what}(x of shape {tuple(images.shape)}){on(device)}"
        losses, logits, reply = model.train_steps(images, labels, steps, lr, classes=10, label=label)
        if reply.get("no_parameters"):
            fail(f"{what} has no trainable parameters.")
        if "bad_output" in reply:  # ask again, for what it gave
            got = as_tensor(model.call(images, label=label, mode="train", no_grad=True).output, label)
            expect_shape(got, (n_images, 10), label, "One row of n_classes scores per image.")
            fail(f"{label}: while training, it gave something other than scores of shape {(n_images, 10)}.")
        if losses and not math.isfinite(losses[-1]):
            fail(f"{task}{on(device)}: the loss is {losses[-1]} at step {len(losses) - 1}.")
        logits = as_tensor(logits, f"{what}(x)")
        expect_shape(logits, (n_images, 10), f"{what}(x)", "One row of n_classes scores per image.")
        accuracy = (logits.argmax(-1) == labels).float().mean().item()
        if accuracy < 1:
            fail(
                f"{task}{on(device)} reaches {accuracy:.0%} training accuracy, expected 100%: a correct "
                f"ViT memorises them in about 30 steps. Is every part of the model trained (no "
                f".detach(), no torch.no_grad() in forward, no frozen parameters)?"
            )
