"""Checks of notebook 07: ``TransformerEncoderBlock``, ``TransformerEncoder`` and the ViT parameter count.

The student's module gets the judge's weights; each block is compared with an
``nn.TransformerEncoderLayer(norm_first=True)`` assembled from the judge's copy of its parts (the mirror),
on the judge's inputs. The block's attention is called once on its own, on the judge's normalised input,
to learn which fused-qkv layout it uses (both are correct).
"""

import numbers
from collections.abc import Callable
from itertools import combinations

import torch
from torch import Tensor, nn

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
from course_utils.reference import AttentionWeights, sdpa_attention, torch_encoder_layer

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


def _checked_attention(inst: Instance, mha: nn.Module, y: Tensor, what: str) -> AttentionWeights:
    """The attention weights, once the student's MultiHeadAttention is known to be right on ``y``."""
    label = f"the MultiHeadAttention inside {what}"
    got = as_tensor(inst.call(y, label=label, path=path_of(inst.mirror, mha), no_grad=True).output, label)
    for weights in attention_candidates(mha, what):
        if close(got, sdpa_attention(y, weights, mha.num_heads)):
            return weights
    fail(
        f"{what}: the MultiHeadAttention inside does not match scaled_dot_product_attention. "
        "Fix it first: run check_multi_head_attention(MultiHeadAttention) from notebook 04."
    )


def reference_layer(
    inst: Instance, block: nn.Module, x: Tensor, what: str, norm_first: bool = True
) -> nn.TransformerEncoderLayer:
    """The ``nn.TransformerEncoderLayer`` holding the judge's weights of ``block`` (a part of
    ``inst.mirror``), whose input is ``x``; its attention is called once on the first norm of ``x``."""
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
    with torch.no_grad():
        weights = _checked_attention(inst, mha, norms[0](x), what)
    return torch_encoder_layer(tuple(norms), weights, tuple(linears), mha.num_heads, norm_first).eval()


def _block_mistakes(
    inst: Instance, block: nn.Module, layer: nn.TransformerEncoderLayer, x: Tensor, what: str
) -> list[Mistake]:
    def attention(y):
        return layer._sa_block(y, None, None)

    def feed_forward(y):
        return layer._ff_block(y)

    def without(first: bool, second: bool):
        h = attention(layer.norm1(x)) + (x if first else 0)
        return feed_forward(layer.norm2(h)) + (h if second else 0)

    return [
        Mistake(
            "post-norm instead of pre-norm",
            "ViT normalises before each sublayer: x + MHA(LayerNorm(x)), then "
            "x + FFN(LayerNorm(x)); post-norm is LayerNorm(x + MHA(x)).",
            lambda: reference_layer(inst, block, x, what, norm_first=False)(x),
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
    for device in student.devices():
        block = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        heads = _attention_module(block.mirror, what).num_heads
        if heads != num_heads:
            fail(
                f"{what}: its MultiHeadAttention has num_heads={heads}, expected {num_heads}: "
                "pass **kwargs on to MultiHeadAttention(emb_size, **kwargs)."
            )
        x = random_tensor(batch, seq_len, emb_size, seed=seed, dtype=dtype)
        label = f"{what}(x){on(device)}"
        result = block.call(x, label=label, no_grad=True, allow_changes=True)
        if result.changed_inputs:
            fail(f"{label} changed its input x: is a residual added in place (x += ...)?")
        got = as_tensor(result.output, label)
        with torch.no_grad():
            layer = reference_layer(block, block.mirror, x, what)
            expect_close(got, layer(x), label, _block_mistakes(block, block.mirror, layer, x, what))


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
    for device in student.devices():
        encoder = student.build(seed, device=device, label=what, **kwargs)
        blocks = [m for m in encoder.mirror.modules() if m.student_class == block_class]
        slots = [m for m in entries(encoder.mirror) if m.student_class == block_class]  # repeats kept
        if len(slots) >= depth > len(blocks):
            fail(
                f"{what} holds the same block {depth} times, so every layer shares one set of "
                "weights ([block] * depth). Hint: create a new TransformerEncoderBlock for each layer, "
                "e.g. [TransformerEncoderBlock(**kwargs) for _ in range(depth)]."
            )
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
            expected = x
            for block in blocks:
                expected = reference_layer(encoder, block, expected, what)(expected)
            expect_close(got, expected, label, hint="The blocks are applied one after another.")


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
