"""Checks of notebook 07: ``TransformerEncoderBlock``, ``TransformerEncoder`` and the ViT parameter count.

The student's module gets the judge's weights; each block is compared with an
``nn.TransformerEncoderLayer(norm_first=True)`` assembled from the judge's copy of its parts (the mirror),
on the judge's inputs. The block's attention is called once on its own, on the judge's normalised input,
to learn which fused-qkv layout it uses (both are correct). Every constructor argument must shape the
module; a wrong result that no known mistake matches is explained by the weights it ignores (each
LayerNorm's scale and shift, the attention, each Linear) or as a wrong sum of the block's terms.
"""

import numbers
from collections.abc import Callable
from itertools import combinations

import torch
from torch import Tensor, nn

from course_utils.checks.diagnose import (
    Sensitivity,
    combination,
    expect_arguments_used,
    parameter_groups,
)
from course_utils.checks.parts import attention_candidates, attention_modules, entries, find_layers, path_of
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
from course_utils.judge import Instance, name_of, opaque_name, subject
from course_utils.probe import library_class
from course_utils.reference import sdpa_attention, torch_encoder_layer

BLOCK = "the block computes h = x + MHA(LN₁(x)), then returns h + FFN(LN₂(h)), each LayerNorm its own"
CHAIN = "the blocks are applied one after another, each to the previous block's output: x = block(x)"
BLOCK_ARGUMENTS = {
    "emb_size": "pass emb_size on to both LayerNorms, MultiHeadAttention and FeedForwardBlock.",
    "num_heads": "pass **kwargs on to MultiHeadAttention(emb_size, **kwargs).",
    "forward_expansion": "pass forward_expansion on: "
    "FeedForwardBlock(emb_size, expansion=forward_expansion).",
}
ENCODER_ARGUMENTS = {
    "num_heads": "pass **kwargs on to every TransformerEncoderBlock(**kwargs).",
    "emb_size": "pass **kwargs on to every TransformerEncoderBlock(**kwargs).",
    "depth": "TransformerEncoder(depth, **kwargs) holds depth blocks: "
    "[TransformerEncoderBlock(**kwargs) for _ in range(depth)].",
}
TORCH_TRANSFORMER = {
    library_class(c) for c in (nn.TransformerEncoderLayer, nn.TransformerEncoder, nn.MultiheadAttention)
}


def builds_on_torch_transformer(mirror: nn.Module) -> bool:
    """Whether a part of the module is PyTorch's Transformer layer or attention (or built on them)."""
    return any(m.library_class in TORCH_TRANSFORMER for m in mirror.modules())


def _attention_module(block: nn.Module, what: str) -> nn.Module:
    found = attention_modules(block)
    if len(found) != 1:
        fail(f"{what}: expected one MultiHeadAttention (from notebook 04) inside, found {len(found)}.")
    if not isinstance(getattr(found[0], "num_heads", None), int):
        fail(f"{what}: its MultiHeadAttention should keep the number of heads in self.num_heads.")
    return found[0]


def _checked_layout(inst: Instance, mha: nn.Module, y: Tensor, what: str) -> int:
    """Which reading of the attention weights (fused-qkv layout) the student's MultiHeadAttention uses,
    once it is known to be right on ``y``."""
    label = f"the MultiHeadAttention inside {what}"
    got = as_tensor(inst.call(y, label=label, path=path_of(inst.mirror, mha), no_grad=True).output, label)
    for layout, weights in enumerate(attention_candidates(mha, what)):
        if close(got, sdpa_attention(y, weights, mha.num_heads)):
            return layout
    fail(
        f"{what}: the MultiHeadAttention inside does not match scaled_dot_product_attention. "
        "Fix it first: run check_multi_head_attention(MultiHeadAttention) from notebook 04."
    )


def block_parts(
    block: nn.Module, what: str
) -> tuple[tuple[nn.LayerNorm, nn.LayerNorm], nn.Module, tuple[nn.Linear, nn.Linear]]:
    """An encoder block's two LayerNorms, its MultiHeadAttention and its feed-forward Linears (in the
    judge's copy), or a failure naming what is missing or shared."""
    if builds_on_torch_transformer(block):
        fail(
            f"{what}: build the block from your own MultiHeadAttention, ResidualAdd and "
            "FeedForwardBlock; PyTorch's Transformer layers are what it is checked against."
        )
    norms = find_layers(block, nn.LayerNorm)
    if len(norms) == 1:
        fail(
            f"{what}: both sublayers use the same nn.LayerNorm: this is the known mistake one "
            "LayerNorm shared by both sublayers. Hint: create a new nn.LayerNorm(emb_size) "
            "inside each ResidualAdd; each learns its own scale and shift."
        )
    if len(norms) != 2:
        fail(f"{what}: a pre-norm block has two nn.LayerNorm layers, one per sublayer; found {len(norms)}.")
    mha = _attention_module(block, what)
    in_attention = {id(m) for m in mha.modules()}
    linears = [m for m in find_layers(block, nn.Linear) if id(m) not in in_attention]
    if len(linears) != 2:
        fail(f"{what}: expected a FeedForwardBlock with two nn.Linear layers, found {len(linears)}.")
    return (norms[0], norms[1]), mha, (linears[0], linears[1])


def layer_builder(
    inst: Instance, block: nn.Module, x: Tensor, what: str
) -> Callable[[], nn.TransformerEncoderLayer]:
    """A function that builds the ``nn.TransformerEncoderLayer`` holding the judge's weights of ``block``
    (a part of ``inst.mirror``) as they are when it is called; the block's attention is checked once
    here, on the first norm of ``x``, its input."""
    norms, mha, linears = block_parts(block, what)
    with torch.no_grad():
        layout = _checked_layout(inst, mha, norms[0](x), what)

    def build() -> nn.TransformerEncoderLayer:
        weights = attention_candidates(mha, what)[layout]
        return torch_encoder_layer(norms, weights, linears, mha.num_heads).eval()

    return build


def block_hints(block: nn.Module) -> dict[str, str]:
    """What each weight of an encoder block (a whole mirror) is for, by the name :class:`Sensitivity`
    gives it."""
    (norm1, norm2), mha, linears = block_parts(block, "")
    sublayers = [
        (norm1, f"LN₁ is the first LayerNorm, on attention's input: {BLOCK}."),
        (norm2, f"LN₂ is the second LayerNorm, on the feed-forward block's input: {BLOCK}."),
        (mha, f"apply the attention in the first sublayer: {BLOCK}."),
        *((linear, f"apply the FeedForwardBlock in the second sublayer: {BLOCK}.") for linear in linears),
    ]
    hints = {}
    for part, hint in sublayers:
        for name, _, _ in parameter_groups(part):
            hints[name if part is mha else f"{path_of(block, part)}.{name}"] = hint
    return hints


def another_divisor(n: int, d: int) -> int | None:
    """Another divisor of ``n`` than ``d`` (another number of heads for emb_size, another patch size for
    img_size), or None where there is none."""
    return next((c for c in (2 * d, d // 2, 1, n) if c and c != d and not n % c), None)


def alternatives_of(**values: int | None) -> dict[str, int]:
    """The other values to build a module with, leaving out an argument that has none."""
    return {name: value for name, value in values.items() if value is not None}


def _block_mistakes(layer: nn.TransformerEncoderLayer, x: Tensor) -> list[Mistake]:
    def attention(y):
        return layer._sa_block(y, None, None)

    def feed_forward(y):
        return layer._ff_block(y)

    def without(first: bool, second: bool):
        h = attention(layer.norm1(x)) + (x if first else 0)
        return feed_forward(layer.norm2(h)) + (h if second else 0)

    def post_norm():
        h = layer.norm1(x + attention(x))
        return layer.norm2(h + feed_forward(h))

    return [
        Mistake(
            "post-norm instead of pre-norm",
            "ViT normalises before each sublayer: x + MHA(LayerNorm(x)), then "
            "x + FFN(LayerNorm(x)); post-norm is LayerNorm(x + MHA(x)).",
            post_norm,
        ),
        Mistake(
            "the residual is missing around attention",
            "wrap LayerNorm -> MultiHeadAttention -> Dropout in ResidualAdd.",
            lambda: without(False, True),
        ),
        Mistake(
            "the residual is missing around the feed-forward block",
            "wrap LayerNorm -> FeedForwardBlock -> Dropout in ResidualAdd.",
            lambda: without(True, False),
        ),
        Mistake(
            "no residual connections",
            "wrap both sublayers in ResidualAdd.",
            lambda: without(False, False),
        ),
    ]


@check
def check_encoder_block(
    TransformerEncoderBlock: type,
    emb_size: int = 32,
    num_heads: int = 4,
    forward_expansion: int = 4,
    batch: int = 2,
    seq_len: int = 5,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> None:
    """The block against ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu")``."""
    student = subject(TransformerEncoderBlock, "TransformerEncoderBlock")
    kwargs = dict(emb_size=emb_size, num_heads=num_heads, forward_expansion=forward_expansion)
    what = call_text("TransformerEncoderBlock", **kwargs)
    for i, device in enumerate(student.devices()):
        block = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        heads = _attention_module(block.mirror, what).num_heads
        if heads != num_heads:
            fail(
                f"{what}: its MultiHeadAttention has num_heads={heads}, expected {num_heads}: "
                "pass **kwargs on to MultiHeadAttention(emb_size, **kwargs)."
            )
        linears = block_parts(block.mirror, what)[2]
        if i == 0:
            alternatives = alternatives_of(
                num_heads=another_divisor(emb_size, num_heads),
                emb_size=emb_size + num_heads,
                forward_expansion=forward_expansion + 1,
            )
            expect_arguments_used(student, what, kwargs, alternatives, BLOCK_ARGUMENTS)
        hidden = linears[0].out_features
        if hidden != forward_expansion * emb_size:
            fail(
                f"{what}: its FeedForwardBlock has {hidden} hidden units, expected forward_expansion * "
                f"emb_size = {forward_expansion * emb_size}.\nHint: {BLOCK_ARGUMENTS['forward_expansion']}",
                "hidden width",
                "diagnosed",
            )
        x = random_tensor(batch, seq_len, emb_size, seed=seed, dtype=dtype)
        label = f"{what}(x){on(device)}"
        result = block.call(x, label=label, no_grad=True, allow_changes=True)
        if result.changed_inputs:
            fail(f"{label} changed its input x: is a residual added in place (x += ...)?")
        got = as_tensor(result.output, label)
        with torch.no_grad():
            build = layer_builder(block, block.mirror, x, what)
            layer = build()
            expect_close(
                got,
                layer(x),
                label,
                _block_mistakes(layer, x),
                diagnoses=_block_diagnoses(block, build, x, got, label),
            )


def _block_diagnoses(
    block: Instance, build: Callable[[], nn.TransformerEncoderLayer], x: Tensor, got: Tensor, label: str
) -> list:
    """The weights the block's output ignores or responds to wrongly; its sum of terms."""

    def student() -> Tensor:
        return as_tensor(block.call(x, label=label, no_grad=True, allow_changes=True).output, label)

    def terms():
        layer = build()
        attended = layer._sa_block(layer.norm1(x), None, None)
        h = x + attended
        found = {"x": x, "MHA(LN₁(x))": attended, "FFN(LN₂(h))": layer._ff_block(layer.norm2(h))}
        return combination(got, found, {"x": 1, "MHA(LN₁(x))": 1, "FFN(LN₂(h))": 1}, f"{BLOCK}.")

    weights = Sensitivity(block, student, lambda: build()(x), block_hints(block.mirror))
    return [weights.ignored, terms, weights.misplaced]


@check
def check_encoder(
    TransformerEncoder: type,
    TransformerEncoderBlock: type,
    depth: int = 3,
    emb_size: int = 32,
    num_heads: int = 4,
    batch: int = 2,
    seq_len: int = 5,
    seed: int = 0,
) -> None:
    """``TransformerEncoder(depth, **kwargs)``: depth distinct blocks applied in turn."""
    student = subject(TransformerEncoder, "TransformerEncoder")
    block_class = name_of(TransformerEncoderBlock, "TransformerEncoderBlock")
    kwargs = dict(depth=depth, emb_size=emb_size, num_heads=num_heads)
    what = call_text("TransformerEncoder", **kwargs)
    for i, device in enumerate(student.devices()):
        encoder = student.build(seed, device=device, label=what, **kwargs)
        blocks = [m for m in encoder.mirror.modules() if m.student_class == block_class]
        slots = [m for m in entries(encoder.mirror) if m.student_class == block_class]  # repeats kept
        if len(slots) >= depth > len(blocks):
            fail(
                f"{what} holds the same block {depth} times, so every layer shares one set of "
                "weights ([block] * depth). Hint: create a new TransformerEncoderBlock for each layer, "
                "e.g. [TransformerEncoderBlock(**kwargs) for _ in range(depth)]."
            )
        if i == 0:
            alternatives = alternatives_of(
                num_heads=another_divisor(emb_size, num_heads), emb_size=emb_size + num_heads, depth=depth + 1
            )
            expect_arguments_used(student, what, kwargs, alternatives, ENCODER_ARGUMENTS)
        if len(blocks) != depth:
            fail(f"{what}: expected {depth} TransformerEncoderBlock layers, found {len(blocks)}.")
        heads = {_attention_module(b, what).num_heads for b in blocks}
        if heads != {num_heads}:
            fail(
                f"{what}: the blocks' attention has num_heads {sorted(heads)}, expected "
                f"{num_heads}: pass **kwargs on to every TransformerEncoderBlock."
            )
        x = random_tensor(batch, seq_len, emb_size, seed=seed)
        label = f"{what}(x){on(device)}"
        got = as_tensor(encoder.call(x, label=label, no_grad=True).output, label)
        with torch.no_grad():
            builds, expected = [], x
            for block in blocks:
                builds.append(layer_builder(encoder, block, expected, what))
                expected = builds[-1]()(expected)
            expect_close(
                got,
                expected,
                label,
                hint="The blocks are applied one after another.",
                diagnoses=_encoder_diagnoses(encoder, builds, x, label),
            )


def _encoder_diagnoses(
    encoder: Instance, builds: list[Callable[[], nn.TransformerEncoderLayer]], x: Tensor, label: str
) -> list:
    """The weights the encoder's output ignores, or responds to where the chained blocks do not."""

    def chained() -> Tensor:
        h = x
        for build in builds:
            h = build()(h)
        return h

    def student() -> Tensor:
        return as_tensor(encoder.call(x, label=label, no_grad=True).output, label)

    hints = {name: f"{CHAIN}." for name, _, _ in parameter_groups(encoder.mirror)}
    weights = Sensitivity(encoder, student, chained, hints)
    return [weights.ignored, weights.misplaced]


def _components(patch_size, emb_size, depth, mlp_size, img_size, in_channels, n_classes):
    """Named parts of a ViT's parameter count, to name the one a wrong count leaves out."""
    e, tokens = emb_size, (img_size // patch_size) ** 2 + 1
    return {
        "the class token": e,
        "the position embeddings": tokens * e,
        "the patch projection's bias": e,
        "the patch projection": (patch_size**2 * in_channels + 1) * e,
        "the final LayerNorm": 2 * e,
        "the classification head": (e + 1) * n_classes,
        "the head's bias": n_classes,
        "the LayerNorms inside the blocks": depth * 4 * e,
        "the biases inside the blocks": depth * (5 * e + mlp_size),
        "the output projection of attention": depth * (e * e + e),
    }


@check
def check_parameter_count(vit_parameter_count: Callable) -> None:
    """``vit_parameter_count(patch_size, emb_size, depth, mlp_size, img_size, in_channels, n_classes)``."""
    from course_utils.reference import vit_parameter_count as reference

    student = subject(vit_parameter_count, "vit_parameter_count")
    cases = [  # (patch, emb, depth, heads, mlp, img, channels, classes): ViT-B/16, L/16, H/14, a tiny one
        (16, 768, 12, 12, 3072, 224, 3, 1000),
        (16, 1024, 24, 16, 4096, 224, 3, 1000),
        (14, 1280, 32, 16, 5120, 224, 3, 1000),
        (4, 64, 2, 4, 128, 32, 1, 10),
    ]
    for patch, emb, depth, heads, mlp, img, channels, classes in cases:
        args = dict(
            patch_size=patch,
            emb_size=emb,
            depth=depth,
            mlp_size=mlp,
            img_size=img,
            in_channels=channels,
            n_classes=classes,
        )
        what = call_text("vit_parameter_count", **args)
        got = student.call(label=what, **args).output
        expected = reference(patch, emb, depth, heads, mlp, img, channels, classes)
        if not isinstance(got, numbers.Integral) or isinstance(got, bool):
            kind = opaque_name(got) or type(got).__name__
            fail(
                f"{what} returned a {kind}; expected an int (use // for the "
                "number of patches, and int() around anything from numpy or math)."
            )
        if got == expected:
            continue
        parts = _components(patch, emb, depth, mlp, img, channels, classes)
        for r in (1, 2):
            for names in combinations(parts, r):
                if expected - got == sum(parts[n] for n in names):
                    fail(f"{what} = {got:,}, expected {expected:,}: the difference is {' and '.join(names)}.")
        fail(f"{what} = {got:,}, expected {expected:,} (off by {got - expected:+,}).")
