"""Checks of notebook 08: the patch embedding with its tokens, the classification head, the ViT.

``check_vit`` judges the assembled model by its structure (one attention per block, ``num_heads``
passed on), its output shape, the gradients reaching every parameter and its parameter count
against :func:`course_utils.reference.vit_parameter_count`; ``check_overfits`` trains a tiny one
on random images and asks that it memorises them.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_utils.checks.nb07_transformer_encoder import randomise_norms
from course_utils.checks.nb02_patch_embedding import reference_outputs as patch_projections
from course_utils.device import check_devices
from course_utils.feedback import (
    Mistake,
    as_tensor,
    build,
    call_text,
    check,
    close,
    expect_close,
    expect_shape,
    fail,
    on,
    random_tensor,
    run_student,
)
from course_utils.reference import find_layers, vit_parameter_count

FORBIDDEN = (nn.TransformerEncoderLayer, nn.TransformerEncoder, nn.MultiheadAttention)
VIT_B16 = dict(
    in_channels=3, patch_size=16, emb_size=768, img_size=224, depth=12, n_classes=1000, num_heads=12
)
PARTS = (
    "a ViT is PatchEmbedding -> TransformerEncoder -> ClassificationHead; the PatchEmbedding takes "
    "in_channels, patch_size, emb_size and img_size, the TransformerEncoder depth, emb_size and the "
    "other keyword arguments, the ClassificationHead emb_size and n_classes"
)


def _is_attention(module: nn.Module) -> bool:
    return hasattr(module, "projection") and (hasattr(module, "queries") or hasattr(module, "qkv"))


# ----------------------------------------------------------------------------------------------
# The lecture's full PatchEmbedding: projection, class token in front, learned positions added
# ----------------------------------------------------------------------------------------------


def _one_parameter(module: nn.Module, keys: tuple[str, ...], numel: int, what: str, wanted: str) -> Tensor:
    found = [(n, p) for n, p in module.named_parameters() if any(k in n.lower() for k in keys)]
    if len(found) != 1 or found[0][1].numel() != numel:
        names = ", ".join(f"`{n}` {tuple(p.shape)}" for n, p in found) or "none"
        fail(f"{what}: expected {wanted}; found {names}.")
    return found[0][1]


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
    kwargs = dict(in_channels=in_channels, patch_size=patch_size, emb_size=emb_size, img_size=img_size)
    what = call_text("PatchEmbedding", **kwargs)
    tokens = (img_size // patch_size) ** 2 + 1
    for device in check_devices():
        module = build(PatchEmbedding, seed, **kwargs).to(device)
        cls_token = _one_parameter(
            module, ("cls", "class"), emb_size, what, f"one class token `cls_token` of {emb_size} values"
        )
        positions = _one_parameter(
            module,
            ("position",),
            tokens * emb_size,
            what,
            f"learned positions `positions`, one row per token: ({tokens}, {emb_size})",
        )
        x = random_tensor(batch, in_channels, img_size, img_size, seed=seed, device=device)
        label = f"{what}(x){on(device)}"
        got = as_tensor(run_student(label, module, x), label)
        expect_shape(
            got,
            (batch, tokens, emb_size),
            label,
            f"{tokens - 1} patch tokens and the class token in front: N + 1 = {tokens} tokens.",
        )
        with torch.no_grad():
            cls = cls_token.reshape(1, 1, emb_size).expand(batch, 1, emb_size)
            table = positions.reshape(tokens, emb_size)
            candidates = [
                torch.cat([cls, p], dim=1) + table for p in patch_projections(module, x, patch_size, what)
            ]
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
        if not got.requires_grad:
            fail(f"{label}: the result does not require grad: is forward run under torch.no_grad()?")
        grads = torch.autograd.grad(got.sum(), [cls_token, positions], allow_unused=True)
        for name, grad in zip(("cls_token", "positions"), grads, strict=True):
            if grad is None:
                fail(f"{label}: no gradient reaches `{name}`; use the Parameter itself, not .data or a copy.")


# ----------------------------------------------------------------------------------------------
# The classification head
# ----------------------------------------------------------------------------------------------


def _head_linear(head: nn.Module, emb_size: int, n_classes: int, what: str) -> nn.Linear:
    linears = find_layers(head, nn.Linear)
    if len(linears) != 1:
        fail(f"{what}: expected one nn.Linear(emb_size, n_classes), found {len(linears)} Linear layers.")
    linear = linears[0]
    if (linear.in_features, linear.out_features) != (emb_size, n_classes):
        fail(
            f"{what}: the Linear maps {linear.in_features} -> {linear.out_features}; expected "
            f"emb_size -> n_classes = {emb_size} -> {n_classes}."
        )
    return linear


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
            Mistake(
                "LayerNorm applied to the tokens before the pooling",
                "pool first, then normalise the pooled vector: Reduce -> LayerNorm -> Linear.",
                lambda: linear(norm(x).mean(dim=1)),
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

    The reference is computed with the student's own LayerNorm and Linear (given random scales
    and shifts first). With ``seq_len == emb_size`` pooling over the wrong axis still runs, and
    is named.
    """
    for device in check_devices():
        for pool in pools:
            kwargs = dict(emb_size=emb_size, n_classes=n_classes, pool=pool)
            what = call_text("ClassificationHead", **kwargs)
            head = build(ClassificationHead, seed, **kwargs).to(device, dtype)
            linear = _head_linear(head, emb_size, n_classes, what)
            norms = find_layers(head, nn.LayerNorm)
            if len(norms) > 1:
                fail(f"{what}: expected one nn.LayerNorm(emb_size), found {len(norms)}.")
            randomise_norms(head, seed)
            x = random_tensor(batch, seq_len, emb_size, seed=seed, dtype=dtype, device=device)
            label = f"{what}(x of shape {tuple(x.shape)}){on(device)}"
            with torch.no_grad():
                got = as_tensor(run_student(label, head, x), label)
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
                if norms:
                    norm = norms[0]
                else:  # a hand-written LayerNorm starts as scale 1, shift 0

                    def norm(v: Tensor) -> Tensor:
                        return F.layer_norm(v, v.shape[-1:])

                pooled = x.mean(dim=1) if pool == "mean" else x[:, 0]
                expected = linear(norm(pooled))
                expect_close(got, expected, label, _head_mistakes(x, pool, norm, linear))


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


def _check_parameter_count(ViT: type, kwargs: dict, meta: bool) -> None:
    what = call_text("ViT", **kwargs)
    if meta:  # the weights' shapes without their memory: ViT-B/16 costs nothing
        with torch.device("meta"):
            model = build(ViT, 0, **kwargs)
    else:
        model = build(ViT, 0, **kwargs)
    got = sum(p.numel() for p in model.parameters())
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


def _check_structure(model: nn.Module, what: str, depth: int, num_heads: int) -> None:
    if any(isinstance(m, FORBIDDEN) for m in model.modules()):
        fail(
            f"{what}: build the ViT from your own blocks; PyTorch's Transformer layers are what "
            "the earlier notebooks checked them against."
        )
    entries = [m for _, m in model.named_modules(remove_duplicate=False) if _is_attention(m)]
    distinct = list({id(m): m for m in entries}.values())
    if len(entries) >= depth > len(distinct):
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
    reaching every parameter, and parameter count, for this configuration and for ViT-B/16 (built
    on the meta device).
    """
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
    for device in check_devices():
        model = build(ViT, seed, **kwargs).to(device)
        _check_structure(model, what, depth, num_heads)
        x = random_tensor(batch, in_channels, img_size, img_size, seed=seed, device=device)
        label = f"{what}(x of shape {tuple(x.shape)}){on(device)}"
        try:
            got = as_tensor(run_student(label, model, x), label)
        except AssertionError as err:
            raise AssertionError(f"{err}\nHint: {PARTS}. Is every size passed on?") from err
        expect_shape(
            got,
            (batch, n_classes),
            label,
            "A ViT gives one row of n_classes scores per image: (b, c, h, w) -> (b, N + 1, e) "
            "-> (b, N + 1, e) -> (b, n_classes).",
        )
        if not got.requires_grad:
            fail(
                f"{label}: the result does not require grad, so no parameter would be trained: "
                "is part of forward run under torch.no_grad(), or detached?"
            )
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(got.sum(), [p for _, p in named], allow_unused=True)
        missing = [n for (n, _), g in zip(named, grads, strict=True) if g is None]
        if missing:
            fail(
                f"{label}: no gradient reaches {', '.join(f'`{n}`' for n in missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''}: is part of the model skipped, or detached?"
            )
    _check_parameter_count(ViT, kwargs, meta=False)
    _check_parameter_count(ViT, VIT_B16, meta=True)


@check
def check_overfits(ViT: type, steps: int = 100, lr: float = 1e-3, n_images: int = 16, seed: int = 0) -> None:
    """A tiny ViT trained with Adam memorises ``n_images`` random 3×16×16 images with random labels.

    A correct model reaches 100% training accuracy in about 15–35 steps; ``steps`` leaves room.
    """
    kwargs = dict(in_channels=3, patch_size=4, emb_size=32, img_size=16, depth=2, n_classes=10, num_heads=4)
    what = call_text("ViT", **kwargs)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 10, (n_images,), generator=generator)
    task = (
        f"{what} trained with Adam(lr={lr}) for {steps} steps on {n_images} random images with random labels"
    )
    for device in check_devices():
        model = build(ViT, seed, **kwargs).to(device).train()
        x, y = images.to(device), labels.to(device)
        parameters = [p for p in model.parameters() if p.requires_grad]
        if not parameters:
            fail(f"{what} has no trainable parameters.")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model: more threads cost more than they give
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                optimizer = torch.optim.Adam(parameters, lr=lr)
                for step in range(steps):
                    label = f"{what}(x of shape {tuple(x.shape)}){on(device)}"
                    logits = as_tensor(run_student(label, model, x), label)
                    expect_shape(logits, (n_images, 10), label, "One row of n_classes scores per image.")
                    loss = F.cross_entropy(logits.float(), y)
                    if not torch.isfinite(loss):
                        fail(f"{task}{on(device)}: the loss is {loss.item()} at step {step}.")
                    optimizer.zero_grad()
                    run_student(f"the backward pass through {label}", loss.backward)
                    optimizer.step()
        finally:
            torch.set_num_threads(threads)
        model.eval()
        with torch.no_grad():
            accuracy = (run_student(f"{what}(x)", model, x).argmax(-1) == y).float().mean().item()
        if accuracy < 1:
            fail(
                f"{task}{on(device)} reaches {accuracy:.0%} training accuracy, expected 100%: a correct "
                f"ViT memorises them in about 30 steps. Is every part of the model trained (no "
                f".detach(), no torch.no_grad() in forward, no frozen parameters)?"
            )
