"""Check of Q2: ``PatchEmbedding``, images to a sequence of patch embeddings.

The student's module gets the judge's weights; the outputs a correct patch embedding may give are
computed from the judge's copy of its projection (the mirror), on the judge's images. Its sizes must
follow the constructor's arguments; a wrong output asks which weights it responds to and which pixels
each token depends on (one square patch, row by row).
"""

from itertools import permutations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from course_utils.checks.diagnose import Sensitivity, expect_arguments_used, token_dependence
from course_utils.checks.parts import GRAD_SEED, expect_trained, find_layers
from course_utils.feedback import (
    Mistake,
    as_tensor,
    call_text,
    check,
    close,
    expect_close,
    expect_dtype,
    expect_shape,
    fail,
    on,
    random_tensor,
)
from course_utils.judge import Instance, subject
from course_utils.reference import conv_patch_embedding

ORDERS = [" ".join(p) for p in permutations(("s1", "s2", "c"))]  # any flattening of a patch is valid
PATCHES = "b c (h s1) (w s2) -> b (h w) c s1 s2"
SQUARE_PATCHES = (
    "input position t is patch t of the image (row by row), output position t its token: token t "
    "depends on the pixels of patch t and on nothing else. Cut square patches with "
    "Rearrange('b c (h s1) (w s2) -> b (h w) (s1 s2 c)', s1=patch_size, s2=patch_size)"
)
ARGUMENTS = {
    "in_channels": "a patch holds patch_size * patch_size * in_channels values: "
    "nn.Linear(patch_size * patch_size * in_channels, emb_size)",
    "patch_size": "cut patches of patch_size: Rearrange(..., s1=patch_size, s2=patch_size), and "
    "nn.Linear(patch_size * patch_size * in_channels, emb_size)",
    "emb_size": "each patch is projected to emb_size values: nn.Linear(..., emb_size)",
}


def reference_outputs(
    mirror: nn.Module, x: torch.Tensor, patch_size: int, what: str, orders: list[str] = ORDERS
) -> list[torch.Tensor]:
    """The outputs a correct patch embedding with the mirror's weights may give (one per patch layout
    of ``orders``)."""
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
    return [conv_patch_embedding(x, linears[0], patch_size, order) for order in orders]


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


def _other_patch_size(patch_size: int, img_size: int) -> int:
    """Another patch size that divides the image: the largest smaller one, else the smallest larger."""
    divisors = [p for p in range(1, img_size + 1) if img_size % p == 0 and p != patch_size]
    smaller = [p for p in divisors if p < patch_size]
    return smaller[-1] if smaller else divisors[0]


def _diagnoses(module: Instance, x: torch.Tensor, patch_size: int, what: str) -> list:
    """Which weights the student's output responds to, and which patches each token depends on: those
    of the first row and two of the second, enough to tell rows, columns and strides apart, and few
    enough to stay quick (each is two calls)."""
    h, w = x.shape[-2] // patch_size, x.shape[-1] // patch_size
    patches = rearrange(x, PATCHES, s1=patch_size, s2=patch_size)
    watched = min(h * w, w + 2)

    def image(changed: torch.Tensor) -> torch.Tensor:
        whole = torch.cat([changed, patches[:, watched:]], dim=1)
        return rearrange(whole, "b (h w) c s1 s2 -> b c (h s1) (w s2)", h=h)

    def student(changed: torch.Tensor | None = None) -> torch.Tensor:
        inputs = x if changed is None else image(changed)
        return as_tensor(module.call(inputs, label=what, no_grad=True).output, what)

    def reference(changed: torch.Tensor | None = None) -> torch.Tensor:
        inputs = x if changed is None else image(changed)
        return reference_outputs(module.mirror, inputs, patch_size, what, ORDERS[:1])[0]

    weights = Sensitivity(module, student, reference, {})
    first = patches[:, :watched]
    return [
        weights.ignored,
        weights.misplaced,
        lambda: token_dependence(student, reference, first, SQUARE_PATCHES, SQUARE_PATCHES),
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
        expect_dtype(got, dtype, what)
        if device == student.devices()[0]:  # after the shape: a wrong token count says more
            others = dict(
                in_channels=in_channels + 1,
                patch_size=_other_patch_size(patch_size, img_size),
                emb_size=emb_size + 1,
            )  # img_size is not listed: a patch embedding may rightly not need it
            expect_arguments_used(student, call_text("PatchEmbedding", **kwargs), kwargs, others, ARGUMENTS)
        with torch.no_grad():
            candidates = reference_outputs(module.mirror, x, patch_size, what)
            if not any(close(got, expected) for expected in candidates):
                expect_close(
                    got,
                    candidates[0],
                    what,
                    _mistakes(module.mirror, x, patch_size, candidates[0]),
                    diagnoses=_diagnoses(module, x, patch_size, what),
                )
        if grad:
            expect_trained(result, what)
