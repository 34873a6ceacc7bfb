"""Check of Q2: ``PatchEmbedding``, images to a sequence of patch embeddings.

The student's module gets the judge's weights; the outputs a correct patch embedding may give are
computed from the judge's copy of its projection (the mirror), on the judge's images.
"""

from itertools import permutations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from course_utils.checks.parts import GRAD_SEED, expect_trained, find_layers
from course_utils.feedback import (
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
from course_utils.judge import subject
from course_utils.reference import conv_patch_embedding

ORDERS = [" ".join(p) for p in permutations(("s1", "s2", "c"))]  # any flattening of a patch is valid


def reference_outputs(mirror: nn.Module, x: torch.Tensor, patch_size: int, what: str) -> list[torch.Tensor]:
    """The outputs a correct patch embedding with the mirror's weights may give (one per patch layout)."""
    convs, linears = find_layers(mirror, nn.Conv2d), find_layers(mirror, nn.Linear)
    if len(convs) == 1 and not linears:
        conv = convs[0]
        out = F.conv2d(x, conv.weight, conv.bias, stride=conv.stride, padding=conv.padding)
        return [rearrange(out, "b e h w -> b (h w) e")]
    if len(linears) != 1 or convs:
        fail(
            f"{what}: expected one learnable projection, an nn.Linear after Rearrange "
            f"(or an nn.Conv2d), found {len(linears)} Linear and {len(convs)} Conv2d layers."
        )
    return [conv_patch_embedding(x, linears[0], patch_size, order) for order in ORDERS]


def _mistakes(mirror: nn.Module, x: torch.Tensor, patch_size: int, expected: torch.Tensor) -> list[Mistake]:
    b, c, height, width = x.shape
    h, w = height // patch_size, width // patch_size
    linears = find_layers(mirror, nn.Linear)
    return [
        Mistake(
            "patches taken column-major",
            "number patches row by row: '(h w)' in the Rearrange pattern, not '(w h)'.",
            lambda: rearrange(expected, "b (h w) e -> b (w h) e", h=h, w=w),
        ),
        Mistake(
            "pixels mixed across patches (a view/reshape without a permute)",
            "x.view(b, -1, patch_size * patch_size * c) groups neighbouring pixels of one row, "
            "not a square patch. Let Rearrange('b c (h s1) (w s2) -> b (h w) (s1 s2 c)') "
            "move the axes.",
            lambda: linears[0](x.reshape(b, h * w, -1)) if linears else None,
        ),
    ]


@check
def check_patch_embedding(
    PatchEmbedding: type,
    in_channels: int = 3,
    patch_size: int = 16,
    emb_size: int = 768,
    img_size: int = 224,
    batch: int = 2,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """Compare ``PatchEmbedding(...)(x)`` with a strided convolution holding the judge's weights.

    Args:
        PatchEmbedding: the student's class.
        grad: also check that gradients reach the projection's weights.
    """
    student = subject(PatchEmbedding, "PatchEmbedding")
    kwargs = dict(in_channels=in_channels, patch_size=patch_size, emb_size=emb_size, img_size=img_size)
    num_patches = (img_size // patch_size) ** 2
    for device in student.devices():
        what = call_text("PatchEmbedding", **kwargs)
        module = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        what += f"(x){on(device)}"
        x = random_tensor(batch, in_channels, img_size, img_size, seed=seed, dtype=dtype)
        result = module.call(x, label=what, grad=GRAD_SEED if grad else None, no_grad=not grad)
        got = as_tensor(result.output, what)
        expect_shape(
            got,
            (batch, num_patches, emb_size),
            what,
            f"A {img_size}x{img_size} image in {patch_size}x{patch_size} patches gives "
            f"({img_size}/{patch_size})^2 = {num_patches} tokens of size emb_size.",
        )
        with torch.no_grad():
            candidates = reference_outputs(module.mirror, x, patch_size, what)
            if not any(close(got, expected) for expected in candidates):
                expect_close(got, candidates[0], what, _mistakes(module.mirror, x, patch_size, candidates[0]))
        if grad:
            expect_trained(result, what)
