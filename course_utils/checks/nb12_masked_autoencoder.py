"""Checks of notebook 12, masked autoencoders (MAE): random masking, the encoder of the visible patches,
the light decoder with its mask tokens, and the loss on the masked patches.

The judge owns the randomness: it hands ``noise`` to the student's code, so it knows which patches must
be kept, the ``n_keep`` of smallest noise. Every reference is computed from the judge's own copies (the
mirror's weights, its own inputs) in another formulation than the exercises' argsort and gather: each
patch's rank is counted by comparing the noises pair by pair, and shuffling and unshuffling are products
with one-hot permutation matrices. The given blocks (``course_utils.fast_vit.Block``) of the encoder and
the decoder run as ``nn.TransformerEncoderLayer(norm_first=True)`` holding their weights. Known mistakes
are the same formulas with another permutation, mask, order or normalisation.
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_utils.checks.diagnose import expect_arguments_used
from course_utils.checks.parts import GRAD_SEED, expect_gradients, expect_trained, other_heads
from course_utils.feedback import (
    Diagnosis,
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
from course_utils.judge import subject
from course_utils.reference import AttentionWeights, torch_encoder_layer

EXACT = (0.0, 0.0)
EPS = 1e-6  # added to the variance of a patch before the square root, as in the MAE code
GIVEN_BLOCKS = (
    "keep the skeleton's layers as given: self.blocks holds course_utils.fast_vit.Block modules "
    "(norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)"
)
ENCODER_ARGUMENTS = {
    "num_patches": "num_patches sets the number of rows of self.positions, one per patch",
    "patch_dim": "patch_dim is the size of a flattened patch, the input of self.patch_embed",
    "emb_size": "pass emb_size to the embedding, the positions, the blocks and the LayerNorm",
    "depth": "build depth blocks",
    "num_heads": "pass num_heads to every Block",
}
DECODER_ARGUMENTS = {
    **ENCODER_ARGUMENTS,
    "emb_size": "emb_size is the width of the encoder's output, the input of self.embed",
    "decoder_emb_size": "pass decoder_emb_size to the mask token, the positions, the blocks and the norm",
    "patch_dim": "patch_dim is the size of a flattened patch, the output of self.head",
}


# ----------------------------------------------------------------------------- the judge's masking
def kept(num_patches: int, mask_ratio: float) -> int:
    """How many patches of each sample the encoder sees."""
    return round(num_patches * (1 - mask_ratio))


def noise_of(batch: int, num_patches: int, seed: int) -> Tensor:
    """The judge's noise (b, n), uniform in [0, 1): no two values equal, so the order is unique."""
    return torch.rand(batch, num_patches, generator=torch.Generator().manual_seed(seed))


def ranks(noise: Tensor) -> Tensor:
    """(b, n): how many patches of the same sample have a smaller noise. Patch j is kept iff its rank is
    below n_keep, and its rank is the slot it takes in the shuffled sequence: ids_restore."""
    return (noise[:, None, :] < noise[:, :, None]).sum(-1)


def inverse(permutation: Tensor) -> Tensor:
    """The inverse of each row's permutation: ids_shuffle from ids_restore, and back."""
    slots = torch.arange(permutation.shape[1]).expand_as(permutation)
    return torch.empty_like(permutation).scatter_(1, permutation, slots)


def shuffled(tokens: Tensor, rank: Tensor, n_keep: int) -> Tensor:
    """(b, n, e) -> (b, n_keep, e): the tokens of rank 0 .. n_keep - 1, in that order."""
    pick = F.one_hot(rank, rank.shape[1])[..., :n_keep].to(tokens.dtype)  # (b, n, n_keep)
    return torch.einsum("bjr, bje -> bre", pick, tokens)


def unshuffled(sequence: Tensor, slots: Tensor) -> Tensor:
    """(b, n, d): position j gets the token in slot ``slots[b, j]`` of ``sequence``."""
    take = F.one_hot(slots, sequence.shape[1]).to(sequence.dtype)  # (b, n, n)
    return torch.einsum("bjs, bsd -> bjd", take, sequence)


def mask_of(rank: Tensor, n_keep: int) -> Tensor:
    """(b, n) float: 1 where a patch is removed, in the patches' own order."""
    return (rank >= n_keep).double()


# ----------------------------------------------------------------------------- the given blocks
def block_layers(blocks: nn.Module, what: str) -> list[nn.TransformerEncoderLayer]:
    """Each given Block of ``blocks`` (on the mirror) as an ``nn.TransformerEncoderLayer`` with its
    weights: pre-norm, GELU, the fused qkv split as (qkv h d)."""
    layers = []
    for block in blocks.children():
        try:
            attn, mlp = block.attn, block.mlp
            q, k, v = zip(attn.qkv.weight.chunk(3), attn.qkv.bias.chunk(3), strict=True)
            weights = AttentionWeights(q, k, v, (attn.proj.weight, attn.proj.bias))
            norms = (block.norm1, block.norm2)
            layers.append(torch_encoder_layer(norms, weights, (mlp.fc1, mlp.fc2), int(attn.num_heads)))
        except (AttributeError, TypeError, ValueError, RuntimeError):
            fail(f"{what}: could not read its blocks: {GIVEN_BLOCKS}.")
    return layers


def part(mirror: nn.Module, name: str, kind: type, what: str) -> Any:
    """The skeleton's attribute ``name`` of the student's module (on the mirror), or a clear failure."""
    found = getattr(mirror, name, None)
    if not isinstance(found, kind):
        fail(f"{what}: expected self.{name} as the skeleton defines it; {GIVEN_BLOCKS}.")
    return found


def positions_of(mirror: nn.Module, n: int, width: int, what: str) -> Tensor:
    """The learned positions, one row per patch, as (1, n, width)."""
    positions = part(mirror, "positions", nn.Parameter, what)
    if positions.numel() != n * width:
        fail(f"{what}: self.positions has shape {tuple(positions.shape)}, expected (1, {n}, {width}).")
    return positions.reshape(1, n, width)


def _three(output: Any, what: str, names: str) -> tuple[Tensor, Tensor, Tensor]:
    if not isinstance(output, tuple | list) or len(output) != 3:
        kind = f"{len(output)} values" if isinstance(output, tuple | list) else f"a {type(output).__name__}"
        fail(f"{what} returned {kind}; expected three: {names}.")
    return tuple(as_tensor(t, f"{what}, item {i}") for i, t in enumerate(output))


def _integers(t: Tensor, what: str) -> None:
    if t.is_floating_point() or t.dtype == torch.bool:
        fail(f"{what}: expected integer indices (torch.argsort gives int64), got dtype {t.dtype}.")


# ----------------------------------------------------------------------------- 12.1 random masking
def _expect_form(
    x_visible: Tensor, mask: Tensor, ids_restore: Tensor, x: Tensor, n_keep: int, call: str
) -> None:
    """The properties of any correct masking: the count kept, a 0/1 mask, a permutation per sample."""
    b, n, e = x.shape
    if x_visible.ndim == 3 and x_visible.shape[1] != n_keep:
        fail(
            f"{call}: x_visible keeps {x_visible.shape[1]} tokens per sample; expected exactly "
            f"round(n·(1 - mask_ratio)) = {n_keep}: x_visible holds the kept tokens only "
            "(ids_keep = ids_shuffle[:, :n_keep])."
        )
    expect_shape(x_visible, (b, n_keep, e), f"{call}: x_visible")
    expect_shape(mask, (b, n), f"{call}: mask", "One 0/1 value per patch.")
    expect_shape(ids_restore, (b, n), f"{call}: ids_restore", "One index per patch.")
    _integers(ids_restore, f"{call}: ids_restore")
    values = mask.double()
    if not ((values == 0) | (values == 1)).all():
        fail(f"{call}: the mask holds values other than 0 and 1 (1 = removed, 0 = kept).")
    removed = values.sum(-1)
    if (removed == n_keep).all() and n_keep != n - n_keep:
        fail(
            f"{call}: your mask is 1 at the {n_keep} kept patches of each sample: this is the known "
            "mistake mask inverted (1 must mark the removed patches).\nHint: start from ones and set "
            "the first n_keep slots (the kept ones, in shuffled order) to 0."
        )
    if not (removed == n - n_keep).all():
        row = int((removed != n - n_keep).nonzero()[0])
        fail(
            f"{call}: the mask of sample {row} marks {int(removed[row])} patches as removed; expected "
            f"n - n_keep = {n - n_keep} in every sample."
        )
    in_order = ids_restore.long().sort(-1).values == torch.arange(n)
    if not in_order.all():
        row = int((~in_order).any(-1).nonzero()[0])
        fail(
            f"{call}: row {row} of ids_restore is not a permutation of 0..{n - 1} "
            f"(got {ids_restore[row].tolist()}): sort each sample's noise along its patches "
            "(torch.argsort(noise, dim=1)), then invert that permutation."
        )


def _expect_samples_differ(mask: Tensor, ids_restore: Tensor, expected_mask: Tensor, call: str) -> None:
    """Different noise, different masks: one mask for the whole batch is a known mistake."""
    if mask.shape[0] < 2 or (expected_mask == expected_mask[:1]).all():
        return
    n_keep = int((expected_mask[0] == 0).sum())
    in_shuffled_order = torch.cat([torch.zeros(n_keep), torch.ones(mask.shape[1] - n_keep)]).double()
    if (mask.double() == in_shuffled_order).all():
        fail(
            f"{call}: every sample's mask is {n_keep} zeros then ones: this is the known mistake mask "
            "left in the shuffled order.\nHint: the mask is built in shuffled order (the kept tokens "
            "first); put it back in the patches' own order with torch.gather(mask, 1, ids_restore)."
        )
    if (mask.double() == mask[:1].double()).all() or (ids_restore == ids_restore[:1]).all():
        fail(
            f"{call}: every image of the batch has the same patches removed, although each sample has "
            "its own noise: this is the known mistake the same patches masked for every image.\nHint: "
            "argsort each row of noise (dim=1); one permutation for the whole batch lets the model "
            "learn which patches are always visible."
        )


def _noise_not_followed(mask: Tensor, expected_mask: Tensor) -> Diagnosis | None:
    """Other patches removed than the noise says: the noise ignored (or drawn anew)."""
    if torch.equal(mask.double(), expected_mask):
        return None
    return Diagnosis(
        "noise not followed",
        "the patches your masking keeps are not the n_keep of smallest noise",
        "the randomness is the `noise` argument: sort each image's patches by it, smallest first "
        "(torch.argsort(noise, dim=1)), and draw no random numbers of your own",
    )


def masking_mistakes(rank: Tensor, n_keep: int) -> dict[str, list[Mistake]]:
    """Known mistakes of ids_restore and of the mask, from the judge's ranks."""
    n = rank.shape[1]
    descending = n - 1 - rank
    shuffle = inverse(rank)
    return {
        "ids_restore": [
            Mistake(
                "argsort not inverted (ids_restore is ids_shuffle)",
                "ids_shuffle = argsort(noise) says which patch goes to each slot; ids_restore must say, "
                "for each patch, which slot it went to: the inverse permutation, argsort(ids_shuffle).",
                lambda: shuffle.double(),
            ),
            Mistake(
                "largest noise kept (argsort in descending order)",
                "keep the patches of the smallest noise: torch.argsort(noise, dim=1), ascending.",
                lambda: descending.double(),
            ),
        ],
        "mask": [
            Mistake(
                "mask inverted (1 must mark the removed patches)",
                "start from ones and set the first n_keep slots (the kept ones, in shuffled order) to 0.",
                lambda: 1 - mask_of(rank, n_keep),
            ),
            Mistake(
                "mask unshuffled with ids_shuffle instead of ids_restore",
                "the mask in shuffled order goes back to the patches' order with ids_restore: "
                "torch.gather(mask, 1, ids_restore).",
                lambda: (shuffle >= n_keep).double(),
            ),
            Mistake(
                "largest noise kept (argsort in descending order)",
                "keep the patches of the smallest noise: torch.argsort(noise, dim=1), ascending.",
                lambda: mask_of(descending, n_keep),
            ),
        ],
    }


def visible_mistakes(x: Tensor, rank: Tensor, n_keep: int) -> list[Mistake]:
    """Known mistakes of x_visible: the right tokens in another order, or other tokens."""
    kept_in_place = rank < n_keep

    def in_original_order() -> Tensor:
        return x[kept_in_place].reshape(x.shape[0], n_keep, x.shape[-1])

    return [
        Mistake(
            "visible tokens in their original order, not in the order of ids_keep",
            "x_visible[:, r] is the token ids_keep[:, r] = ids_shuffle[:, r]: the decoder appends the "
            "mask tokens after them and unshuffles with ids_restore, which expects this order.",
            in_original_order,
        ),
        Mistake(
            "ids_restore used where ids_keep belongs",
            "gather the tokens at ids_keep = ids_shuffle[:, :n_keep], the first n_keep entries of "
            "argsort(noise); ids_restore is for putting them back.",
            lambda: shuffled(x, inverse(rank), n_keep),
        ),
    ]


@check
def check_random_masking(
    random_masking: Callable,
    batch: int = 2,
    num_patches: int = 16,
    emb_size: int = 8,
    mask_ratio: float = 0.75,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """``random_masking(x, mask_ratio, noise)`` -> (x_visible, mask, ids_restore), each sample keeping the
    round(n·(1 - mask_ratio)) patches of smallest noise.

    Checks the properties first (the count kept, a 0/1 mask with 1 = removed, ids_restore a permutation,
    each sample masked differently, ids_restore undoing the shuffle), then every value.
    """
    student = subject(random_masking, "random_masking")
    n_keep = kept(num_patches, mask_ratio)
    x = random_tensor(batch, num_patches, emb_size, seed=seed, dtype=dtype).requires_grad_(grad)
    noise = noise_of(batch, num_patches, seed + 1)
    rank = ranks(noise)
    expected_mask = mask_of(rank, n_keep)
    what = (
        f"random_masking(x of shape {tuple(x.shape)}, {dtype}, mask_ratio={mask_ratio}, "
        f"noise of shape {tuple(noise.shape)})"
    )
    for device in student.devices():
        call = what + on(device)
        result = student.call(
            x, mask_ratio, noise, label=call, device=device, grad=GRAD_SEED if grad else None
        )
        if result.changed_inputs:
            fail(f"{call} changed its {result.changed_inputs[0]} in place: build new tensors instead.")
        x_visible, mask, ids_restore = _three(result.output, call, "(x_visible, mask, ids_restore)")
        _expect_form(x_visible, mask, ids_restore, x, n_keep, call)
        _expect_samples_differ(mask, ids_restore, expected_mask, call)
        mistakes = masking_mistakes(rank, n_keep)
        expect_close(
            ids_restore.double(),
            rank.double(),
            f"{call}: ids_restore",
            mistakes["ids_restore"],
            "ids_restore = argsort(argsort(noise)): for each patch, its slot in the shuffled order.",
            tolerance=EXACT,
            diagnoses=[lambda: _noise_not_followed(mask, expected_mask)],
        )
        expect_close(mask.double(), expected_mask, f"{call}: mask", mistakes["mask"], tolerance=EXACT)
        with torch.no_grad():
            expected = shuffled(x.detach(), rank, n_keep)
            restored = unshuffled(torch.cat([x_visible, torch.zeros_like(x)[:, n_keep:]], 1), rank)
            if not close(restored[expected_mask == 0], x.detach()[expected_mask == 0]):
                expect_close(
                    x_visible,
                    expected,
                    f"{call}: x_visible, put back in order with ids_restore, is not x at the kept patches",
                    visible_mistakes(x.detach(), rank, n_keep),
                )
        expect_dtype(x_visible, dtype, f"{call}: x_visible", "Gather the tokens of x; keep their dtype.")
        expect_close(x_visible, expected, f"{call}: x_visible", visible_mistakes(x.detach(), rank, n_keep))
        if grad:
            expect_gradients(result, [("x", x)], lambda x: shuffled(x, rank, n_keep), call)


# ----------------------------------------------------------------------------- 12.2 the encoder
def _expect_same_masking(mask: Tensor, ids_restore: Tensor, rank: Tensor, n_keep: int, call: str) -> None:
    """The encoder hands on the mask and ids_restore of random_masking on the judge's noise."""
    expect_shape(mask, rank.shape, f"{call}: mask")
    expect_shape(ids_restore, rank.shape, f"{call}: ids_restore")
    if not (torch.equal(ids_restore.long(), rank) and torch.equal(mask.double(), mask_of(rank, n_keep))):
        fail(
            f"{call}: the mask and ids_restore it returns are not those of random_masking on the noise it "
            "was given. Mask with random_masking(x, mask_ratio, noise) (run check_random_masking first) and "
            "return its mask and ids_restore as they are."
        )


class EncoderParts:
    """The student's encoder read off the mirror: embedding, positions, blocks, final norm."""

    def __init__(self, mirror: nn.Module, num_patches: int, emb_size: int, what: str) -> None:
        self.embed = part(mirror, "patch_embed", nn.Linear, what)
        self.positions = positions_of(mirror, num_patches, emb_size, what)
        self.layers = block_layers(part(mirror, "blocks", nn.Module, what), what)
        self.norm = part(mirror, "norm", nn.LayerNorm, what)

    def __call__(
        self, patches: Tensor, rank: Tensor, n_keep: int, where: str = "before", norm=True
    ) -> Tensor:
        """The latent of the visible patches; ``where`` the positions are added: before the masking
        (right), after it (each visible token gets the position of its slot), or ``"nowhere"``."""
        tokens = self.embed(patches)
        if where == "before":
            tokens = tokens + self.positions
        x = shuffled(tokens, rank, n_keep)
        if where == "after":
            x = x + self.positions[:, :n_keep]
        for layer in self.layers:
            x = layer(x)
        return self.norm(x) if norm else x


@check
def check_mae_encoder(
    MAEEncoder: type,
    num_patches: int = 16,
    patch_dim: int = 16,
    emb_size: int = 32,
    depth: int = 1,
    num_heads: int = 4,
    batch: int = 2,
    mask_ratio: float = 0.75,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """``MAEEncoder(num_patches, patch_dim, emb_size, depth, num_heads)(patches, mask_ratio, noise)`` ->
    (latent of the visible patches (b, n_keep, emb_size), mask, ids_restore): positions added before the
    masking, the blocks and the final LayerNorm on the visible tokens only."""
    student = subject(MAEEncoder, "MAEEncoder")
    kwargs = dict(num_patches=num_patches, patch_dim=patch_dim, emb_size=emb_size, depth=depth)
    kwargs["num_heads"] = num_heads
    what = call_text("MAEEncoder", **kwargs)
    n_keep = kept(num_patches, mask_ratio)
    patches = random_tensor(batch, num_patches, patch_dim, seed=seed, dtype=dtype).requires_grad_(grad)
    noise = noise_of(batch, num_patches, seed + 1)
    rank = ranks(noise)
    for device in student.devices():
        encoder = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        parts = EncoderParts(encoder.mirror, num_patches, emb_size, what)
        call = (
            f"{what}(patches of shape {tuple(patches.shape)}, {dtype}, mask_ratio={mask_ratio}, noise)"
            f"{on(device)}"
        )
        result = encoder.call(
            patches, mask_ratio, noise, label=call, grad=GRAD_SEED if grad else None, no_grad=not grad
        )
        latent, mask, ids_restore = _three(result.output, call, "(latent, mask, ids_restore)")
        if latent.shape[:2] == (batch, num_patches) and n_keep != num_patches:
            fail(
                f"{call}: the latent has one token per patch ({num_patches}), where only the n_keep = "
                f"{n_keep} visible ones go in: this is the known mistake mask tokens (or all patches) fed "
                "to the encoder.\nHint: the encoder never sees the masked patches, not even as mask "
                "tokens: run the blocks on x_visible, the first result of random_masking."
            )
        expect_shape(latent, (batch, n_keep, emb_size), f"{call}: latent")
        _expect_same_masking(mask, ids_restore, rank, n_keep, call)
        p = patches.detach()
        with torch.no_grad():
            mistakes = [
                Mistake(
                    "positions added after the masking",
                    "add self.positions to all n tokens before random_masking: each visible token "
                    "then carries the position of its own patch, not that of its slot after the shuffle.",
                    lambda: parts(p, rank, n_keep, "after"),
                ),
                Mistake(
                    "positions not added",
                    "add self.positions to the embedded patches, before the masking.",
                    lambda: parts(p, rank, n_keep, "nowhere"),
                ),
                Mistake(
                    "final LayerNorm missing",
                    "after the blocks, apply self.norm.",
                    lambda: parts(p, rank, n_keep, norm=False),
                ),
            ]
            expect_close(latent, parts(p, rank, n_keep).to(dtype), f"{call}: latent", mistakes)
        if grad:
            expect_trained(result, call)
            expect_gradients(result, [("patches", patches)], lambda q: parts(q, rank, n_keep), call)
        if device.type == "cpu":
            alternatives = dict(
                num_patches=num_patches + 1,
                patch_dim=patch_dim + 1,
                emb_size=emb_size + num_heads,
                depth=depth + 1,
                num_heads=other_heads(emb_size, num_heads),
            )
            expect_arguments_used(student, what, kwargs, alternatives, ENCODER_ARGUMENTS)


# ----------------------------------------------------------------------------- 12.3 the decoder
class DecoderParts:
    """The student's decoder read off the mirror: embedding, mask token, positions, blocks, norm, head."""

    def __init__(self, mirror: nn.Module, num_patches: int, width: int, what: str) -> None:
        self.embed = part(mirror, "embed", nn.Linear, what)
        token = part(mirror, "mask_token", nn.Parameter, what)
        if token.numel() != width:
            fail(f"{what}: self.mask_token has shape {tuple(token.shape)}, expected (1, 1, {width}).")
        self.token = token.reshape(1, 1, width)
        self.positions = positions_of(mirror, num_patches, width, what)
        self.layers = block_layers(part(mirror, "blocks", nn.Module, what), what)
        self.norm = part(mirror, "norm", nn.LayerNorm, what)
        self.head = part(mirror, "head", nn.Linear, what)

    def __call__(
        self,
        latent: Tensor,
        ids_restore: Tensor,
        slots: Tensor | None = None,
        tokens_first: bool = False,
        zero_token: bool = False,
        positions: str = "all",
        norm: bool = True,
    ) -> Tensor:
        """Predicted pixels (b, n, patch_dim). The right decoder by default; the options make the known
        mistakes: other ``slots`` for the unshuffle, the mask tokens before the visible ones, zeros for
        the mask token, positions on the ``"visible"`` tokens only, added ``"before"`` the unshuffle, or
        ``"none"``, and no final norm."""
        x = self.embed(latent)  # (b, n_keep, d)
        b, n_keep, d = x.shape
        n = ids_restore.shape[1]
        token = torch.zeros_like(self.token) if zero_token else self.token
        fill = token.expand(b, n - n_keep, d)
        sequence = torch.cat([fill, x] if tokens_first else [x, fill], 1)  # (b, n, d), shuffled order
        if positions == "before":
            sequence = sequence + self.positions
        full = unshuffled(sequence, ids_restore if slots is None else slots)
        if positions == "all":
            full = full + self.positions
        elif positions == "visible":
            full = full + self.positions * (ids_restore < n_keep)[..., None].to(full.dtype)
        for layer in self.layers:
            full = layer(full)
        return self.head(self.norm(full) if norm else full)


def decoder_mistakes(parts: DecoderParts, latent: Tensor, ids_restore: Tensor) -> list[Mistake]:
    identity = torch.arange(ids_restore.shape[1]).expand_as(ids_restore)
    return [
        Mistake(
            "positions not added to the mask tokens",
            "add self.positions after the unshuffle, to all n tokens: a mask token knows which patch to "
            "predict only from its position.",
            lambda: parts(latent, ids_restore, positions="visible"),
        ),
        Mistake(
            "not unshuffled (the mask tokens left at the end)",
            "after appending the mask tokens, put every token back at its patch: "
            "torch.gather(x, 1, ids_restore[..., None].expand(-1, -1, d)).",
            lambda: parts(latent, ids_restore, slots=identity),
        ),
        Mistake(
            "unshuffled with ids_shuffle instead of ids_restore (argsort not inverted)",
            "position j of the restored sequence takes the token in slot ids_restore[:, j]: gather with "
            "ids_restore itself, not with its inverse.",
            lambda: parts(latent, ids_restore, slots=inverse(ids_restore)),
        ),
        Mistake(
            "mask tokens put before the visible tokens",
            "ids_restore counts the visible tokens first (slots 0..n_keep - 1), then the removed ones: "
            "torch.cat([x, mask_tokens], dim=1).",
            lambda: parts(latent, ids_restore, tokens_first=True),
        ),
        Mistake(
            "positions added before the unshuffle",
            "add self.positions after torch.gather has put the tokens back in the patches' order; "
            "before it, token j would get the position of its slot in the shuffled order.",
            lambda: parts(latent, ids_restore, positions="before"),
        ),
        Mistake(
            "positions not added",
            "add self.positions to the restored sequence (to every token, mask tokens included).",
            lambda: parts(latent, ids_restore, positions="none"),
        ),
        Mistake(
            "mask tokens are zeros, not the learned self.mask_token",
            "fill the removed slots with self.mask_token, expanded to (b, n - n_keep, d).",
            lambda: parts(latent, ids_restore, zero_token=True),
        ),
        Mistake(
            "final LayerNorm missing",
            "after the blocks, apply self.norm, then self.head.",
            lambda: parts(latent, ids_restore, norm=False),
        ),
    ]


@check
def check_mae_decoder(
    MAEDecoder: type,
    num_patches: int = 16,
    patch_dim: int = 16,
    emb_size: int = 32,
    decoder_emb_size: int = 16,
    depth: int = 1,
    num_heads: int = 2,
    batch: int = 2,
    mask_ratio: float = 0.75,
    dtype: torch.dtype = torch.float32,
    grad: bool = False,
    seed: int = 0,
) -> None:
    """``MAEDecoder(num_patches, patch_dim, emb_size, decoder_emb_size, depth, num_heads)(latent,
    ids_restore)`` -> predicted pixels (b, n, patch_dim): embed, append the mask tokens, unshuffle, add
    the positions to every token, the blocks, the norm and the head."""
    student = subject(MAEDecoder, "MAEDecoder")
    kwargs = dict(num_patches=num_patches, patch_dim=patch_dim, emb_size=emb_size)
    kwargs |= dict(decoder_emb_size=decoder_emb_size, depth=depth, num_heads=num_heads)
    what = call_text("MAEDecoder", **kwargs)
    n_keep = kept(num_patches, mask_ratio)
    latent = random_tensor(batch, n_keep, emb_size, seed=seed, dtype=dtype).requires_grad_(grad)
    ids_restore = ranks(noise_of(batch, num_patches, seed + 1))
    for device in student.devices():
        decoder = student.build(seed, device=device, dtype=dtype, label=what, **kwargs)
        parts = DecoderParts(decoder.mirror, num_patches, decoder_emb_size, what)
        call = (
            f"{what}(latent of shape {tuple(latent.shape)}, {dtype}, ids_restore of shape "
            f"{tuple(ids_restore.shape)}){on(device)}"
        )
        result = decoder.call(
            latent, ids_restore, label=call, grad=GRAD_SEED if grad else None, no_grad=not grad
        )
        pred = as_tensor(result.output, call)
        expect_shape(
            pred, (batch, num_patches, patch_dim), call, "One prediction of patch_dim pixels per patch."
        )
        expect_dtype(pred, dtype, call)
        z = latent.detach()
        with torch.no_grad():
            expected = parts(z, ids_restore).to(dtype)
            expect_close(pred, expected, call, decoder_mistakes(parts, z, ids_restore))
        if grad:
            expect_trained(result, call)
            expect_gradients(result, [("latent", latent)], lambda z: parts(z, ids_restore), call)
        if device.type == "cpu":
            alternatives = dict(
                num_patches=num_patches + 1,
                patch_dim=patch_dim + 1,
                emb_size=emb_size + 1,
                decoder_emb_size=decoder_emb_size + num_heads,
                depth=depth + 1,
                num_heads=other_heads(decoder_emb_size, num_heads),
            )
            expect_arguments_used(student, what, kwargs, alternatives, DECODER_ARGUMENTS)


# ----------------------------------------------------------------------------- 12.4 the loss
def normalised(target: Tensor, correction: int = 1, dim: int = -1) -> Tensor:
    """Each patch's pixels minus their mean, over sqrt(variance + 1e-6)."""
    variance, mean = torch.var_mean(target, dim=dim, keepdim=True, correction=correction)
    return (target - mean) / (variance + EPS).sqrt()


def masked_mean(per_patch: Tensor, mask: Tensor) -> Tensor:
    """The mean of a (b, n) loss over the patches where ``mask`` is 1, as a weighted average."""
    weights = mask.to(per_patch.dtype).flatten()
    return torch.dot(per_patch.flatten(), weights) / weights.sum()


def loss_reference(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool) -> Tensor:
    target = normalised(target) if norm_pix else target
    return masked_mean((pred - target).square().sum(-1) / pred.shape[-1], mask)


def loss_mistakes(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool) -> list[Mistake]:
    goal = normalised(target) if norm_pix else target
    per_patch = (pred - goal).square().mean(-1)
    mistakes = [
        Mistake(
            "loss over all patches",
            "MAE learns from the masked patches only: average the per-patch error where mask == 1, "
            "(loss * mask).sum() / mask.sum().",
            lambda: per_patch.mean(),
        ),
        Mistake(
            "loss over the visible patches (mask inverted)",
            "mask is 1 at the removed patches, the ones to reconstruct: weight the loss by mask, "
            "not by 1 - mask.",
            lambda: masked_mean(per_patch, 1 - mask),
        ),
        Mistake(
            "pixels of a patch summed, not averaged",
            "first the mean squared error of each patch over its pixels (.mean(dim=-1)), then the mean over "
            "the masked patches.",
            lambda: masked_mean(per_patch * pred.shape[-1], mask),
        ),
        Mistake(
            "divided by the number of all patches, not of the masked ones",
            "divide the sum over the masked patches by mask.sum(), the number of masked patches.",
            lambda: (per_patch * mask).sum() / mask.numel(),
        ),
        Mistake(
            "summed, not averaged, over the masked patches",
            "divide the sum over the masked patches by mask.sum().",
            lambda: (per_patch * mask).sum(),
        ),
    ]
    if norm_pix:
        raw = (pred - target).square().mean(-1)
        mistakes += [
            Mistake(
                "norm_pix ignored",
                "with norm_pix=True, normalise each target patch first: subtract its mean and divide by "
                "sqrt(its variance + 1e-6), over the pixels of the patch (dim=-1).",
                lambda: masked_mean(raw, mask),
            ),
            Mistake(
                "biased variance (divided by P instead of P - 1)",
                "use the variance as target.var(dim=-1, keepdim=True) gives it, PyTorch's default "
                "(unbiased, divided by P - 1), as the MAE code does.",
                lambda: masked_mean((pred - normalised(target, 0)).square().mean(-1), mask),
            ),
            Mistake(
                "normalised across the patches instead of within each patch",
                "take the mean and the variance of each patch over its own pixels: dim=-1 of (b, n, P).",
                lambda: masked_mean((pred - normalised(target, dim=1)).square().mean(-1), mask),
            ),
        ]
    return mistakes


@check
def check_mae_loss(
    mae_loss: Callable,
    batch: int = 2,
    num_patches: int = 16,
    patch_dim: int = 16,
    mask_ratio: float = 0.75,
    norm_pix: bool = False,
    dtype: torch.dtype = torch.float32,
    grad: bool = True,
    seed: int = 0,
) -> None:
    """``mae_loss(pred, target, mask, norm_pix)``: the mean over the masked patches (mask == 1) of each
    patch's mean squared error; with ``norm_pix``, each target patch normalised first. Some target
    patches are blank (all 0), as the digits' background is."""
    student = subject(mae_loss, "mae_loss")
    n_keep = kept(num_patches, mask_ratio)
    mask = mask_of(ranks(noise_of(batch, num_patches, seed + 1)), n_keep).to(dtype)
    pred = random_tensor(batch, num_patches, patch_dim, seed=seed, dtype=dtype).requires_grad_(grad)
    generator = torch.Generator().manual_seed(seed + 2)
    target = torch.rand(batch, num_patches, patch_dim, generator=generator, dtype=torch.float64).to(dtype)
    target[:, ::3] = 0  # blank patches: their variance is 0
    options = {"norm_pix": True} if norm_pix else {}
    what = (
        f"mae_loss(pred and target of shape {tuple(pred.shape)}, {dtype}, mask of shape {tuple(mask.shape)}"
        + (", norm_pix=True)" if norm_pix else ")")
    )
    for device in student.devices():
        call = what + on(device)
        result = student.call(
            pred, target, mask, label=call, device=device, grad=GRAD_SEED if grad else None, **options
        )
        if result.changed_inputs:
            fail(f"{call} changed its {result.changed_inputs[0]} in place: build new tensors instead.")
        got = as_tensor(result.output, call)
        expect_shape(got, (), call, "The loss is one number: average, do not keep a value per patch.")
        p = pred.detach()
        with torch.no_grad():
            expected = loss_reference(p, target, mask, norm_pix)
            hint = (
                "Add 1e-6 to the variance before the square root: a blank patch has variance 0."
                if norm_pix
                else ""
            )
            expect_close(got, expected, call, loss_mistakes(p, target, mask, norm_pix), hint)
        if grad:
            expect_gradients(
                result, [("pred", pred)], lambda q: loss_reference(q, target, mask, norm_pix), call
            )
