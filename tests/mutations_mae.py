"""Variants of notebook 12, the masked autoencoder (see tests/mutations.py): each known mistake of the
masking, the encoder, the decoder and the loss, and correct code written differently."""

from tests.mutations import Variant, variants

NB = "12_masked_autoencoder"

SHUFFLE = "ids_shuffle = torch.argsort(noise, dim=1)"
RESTORE = "ids_restore = torch.argsort(ids_shuffle, dim=1)"
GATHER_KEEP = 'x_visible = torch.gather(x, 1, repeat(ids_keep, "b k -> b k e", e=e))'
MASK_LINES = """\
    mask = torch.ones(b, n, device=x.device)  # in shuffled order: the first n_keep slots are kept
    mask[:, :n_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # (b, n), in the patches' order
"""
MASKING = variants(
    NB,
    "random_masking",
    "test_random_masking",
    [
        (
            "one-permutation-for-the-batch",
            [(SHUFFLE, "ids_shuffle = torch.argsort(noise[0]).expand(b, n)")],
            "the same patches masked for every image",
        ),
        ("argsort-not-inverted", [(RESTORE, "ids_restore = ids_shuffle")], "argsort not inverted"),
        (
            "mask-not-unshuffled",
            [("    mask = torch.gather(mask, 1, ids_restore)  # (b, n), in the patches' order\n", "")],
            "mask left in the shuffled order",
        ),
        (
            "mask-unshuffled-with-ids-shuffle",
            [("mask = torch.gather(mask, 1, ids_restore)", "mask = torch.gather(mask, 1, ids_shuffle)")],
            "mask unshuffled with ids_shuffle instead of ids_restore",
        ),
        (
            "mask-inverted",
            [
                ("mask = torch.ones(b, n,", "mask = torch.zeros(b, n,"),
                ("mask[:, :n_keep] = 0", "mask[:, :n_keep] = 1"),
            ],
            "mask inverted",
        ),
        (
            "largest-noise-kept",
            [(SHUFFLE, SHUFFLE.replace("dim=1)", "dim=1, descending=True)"))],
            "largest noise kept",
        ),
        (
            "own-random-numbers",
            [(SHUFFLE, "ids_shuffle = torch.argsort(torch.rand(b, n, device=x.device), dim=1)")],
            "not the n_keep of smallest noise",
        ),
        (
            "visible-in-original-order",
            [
                (
                    "    return x_visible, mask, ids_restore",
                    "    x_visible = x[mask == 0].reshape(b, n_keep, e)\n"
                    "    return x_visible, mask, ids_restore",
                )
            ],
            "visible tokens in their original order",
        ),
        (
            "ids-restore-for-ids-keep",
            [("ids_keep = ids_shuffle[:, :n_keep]", "ids_keep = ids_restore[:, :n_keep]")],
            "ids_restore used where ids_keep belongs",
        ),
        (
            "all-tokens-kept",
            [("ids_keep = ids_shuffle[:, :n_keep]", "ids_keep = ids_shuffle")],
            "expected exactly round(n·(1 - mask_ratio))",
        ),
        (
            "check-shadowed",
            [
                (RESTORE, "ids_restore = ids_shuffle"),
                (
                    "def random_masking(",
                    "def check_random_masking(*args, **kwargs):\n    pass\n\n\ndef random_masking(",
                ),
            ],
            "argsort not inverted",
        ),
        (
            "advanced-indexing",
            [(GATHER_KEEP, "x_visible = x[torch.arange(b, device=x.device)[:, None], ids_keep]")],
            None,
        ),
        (
            "expand-index",
            [(GATHER_KEEP, "x_visible = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, e))")],
            None,
        ),
        ("mask-from-ids-restore", [(MASK_LINES, "    mask = (ids_restore >= n_keep).float()\n")], None),
        ("boolean-mask", [(MASK_LINES, "    mask = ids_restore >= n_keep\n")], None),
        ("sort-indices", [(SHUFFLE, "ids_shuffle = noise.sort(dim=1).indices")], None),
        (
            "inverse-by-scatter",
            [
                (
                    RESTORE,
                    "ids_restore = torch.empty_like(ids_shuffle).scatter_(\n"
                    "        1, ids_shuffle, torch.arange(n, device=x.device).expand(b, n)\n    )",
                )
            ],
            None,
        ),
    ],
)

EMBED = "tokens = self.patch_embed(patches) + self.positions  # (b, n, e): positions before the masking"
MASK_CALL = "x, mask, ids_restore = random_masking(tokens, mask_ratio, noise)  # (b, n_keep, e)"
ENCODER = variants(
    NB,
    "MAEEncoder",
    "test_MAEEncoder",
    [
        (
            "all-patches-through-the-encoder",
            [
                (
                    MASK_CALL,
                    "_, mask, ids_restore = random_masking(tokens, mask_ratio, noise)\n"
                    "        x = tokens * (1 - mask[..., None])",
                )
            ],
            "mask tokens (or all patches) fed to the encoder",
        ),
        (
            "positions-after-masking",
            [
                (EMBED, "tokens = self.patch_embed(patches)"),
                (MASK_CALL, MASK_CALL + "\n        x = x + self.positions[:, : x.shape[1]]"),
            ],
            "positions added after the masking",
        ),
        ("no-positions", [(EMBED, "tokens = self.patch_embed(patches)")], "positions not added"),
        (
            "no-final-norm",
            [("latent = self.norm(self.blocks(x))", "latent = self.blocks(x)")],
            "final LayerNorm missing",
        ),
        (
            "noise-drawn-anew",
            [
                (
                    MASK_CALL,
                    "x, mask, ids_restore = random_masking(tokens, mask_ratio, torch.rand_like(noise))",
                )
            ],
            "not those of random_masking",
        ),
        (
            "blocks-in-a-loop",
            [
                (
                    "latent = self.norm(self.blocks(x))",
                    "for block in self.blocks:\n            x = block(x)\n        latent = self.norm(x)",
                )
            ],
            None,
        ),
        (
            "keyword-arguments",
            [
                (
                    MASK_CALL,
                    "x, mask, ids_restore = random_masking(tokens, mask_ratio=mask_ratio, noise=noise)",
                )
            ],
            None,
        ),
    ],
)

CAT = "x = torch.cat([x, self.mask_token.expand(b, n - n_keep, d)], dim=1)  # (b, n, d), shuffled order"
UNSHUFFLE = (
    'x = torch.gather(x, 1, repeat(ids_restore, "b n -> b n d", d=d))  # (b, n, d), the patches\' order'
)
POSITIONS = "x = x + self.positions  # every token, the mask tokens too"
POSITIONS_ON_VISIBLE = """\
ids_keep = torch.argsort(ids_restore, dim=1)[:, :n_keep]
        x = x + torch.gather(self.positions.expand(b, -1, -1), 1, repeat(ids_keep, "b k -> b k d", d=d))
        """
DECODER = variants(
    NB,
    "MAEDecoder",
    "test_MAEDecoder",
    [
        (
            "positions-only-on-visible-tokens",
            [(CAT, POSITIONS_ON_VISIBLE + CAT), (POSITIONS, "")],
            "positions not added to the mask tokens",
        ),
        ("not-unshuffled", [(UNSHUFFLE, "")], "not unshuffled"),
        (
            "unshuffled-with-ids-shuffle",
            [
                (
                    UNSHUFFLE,
                    'x = torch.gather(x, 1, repeat(torch.argsort(ids_restore, dim=1), "b n -> b n d", d=d))',
                )
            ],
            "unshuffled with ids_shuffle instead of ids_restore",
        ),
        (
            "mask-tokens-first",
            [(CAT, "x = torch.cat([self.mask_token.expand(b, n - n_keep, d), x], dim=1)")],
            "mask tokens put before the visible tokens",
        ),
        (
            "positions-before-unshuffle",
            [(POSITIONS, ""), (UNSHUFFLE, POSITIONS + "\n        " + UNSHUFFLE)],
            "positions added before the unshuffle",
        ),
        ("no-positions", [(POSITIONS, "")], "positions not added"),
        (
            "zero-mask-tokens",
            [
                (
                    CAT,
                    "x = torch.cat([x, torch.zeros(b, n - n_keep, d, dtype=x.dtype, device=x.device)], 1)",
                )
            ],
            "mask tokens are zeros",
        ),
        (
            "no-final-norm",
            [("return self.head(self.norm(self.blocks(x)))", "return self.head(self.blocks(x))")],
            "final LayerNorm missing",
        ),
        (
            "advanced-indexing",
            [(UNSHUFFLE, "x = x[torch.arange(b, device=x.device)[:, None], ids_restore]")],
            None,
        ),
        (
            "expand-index",
            [(UNSHUFFLE, "x = torch.gather(x, 1, ids_restore[..., None].expand(-1, -1, d))")],
            None,
        ),
        (
            "scatter-with-ids-shuffle",
            [
                (
                    UNSHUFFLE,
                    "ids_shuffle = torch.argsort(ids_restore, dim=1)\n"
                    '        x = torch.zeros_like(x).scatter(1, repeat(ids_shuffle, "b n -> b n d", d=d), x)',
                )
            ],
            None,
        ),
        (
            "mask-tokens-repeated",
            [(CAT, "x = torch.cat([x, self.mask_token.repeat(b, n - n_keep, 1)], dim=1)")],
            None,
        ),
    ],
)

PER_PATCH = "loss = ((pred - target) ** 2).mean(dim=-1)  # (b, n): one error per patch"
MASKED_MEAN = "return (loss * mask).sum() / mask.sum()"
NORMALISE = """\
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
"""
LOSS = variants(
    NB,
    "mae_loss",
    "test_mae_loss",
    [
        ("all-patches", [(MASKED_MEAN, "return loss.mean()")], "loss over all patches"),
        (
            "visible-patches",
            [(MASKED_MEAN, "return (loss * (1 - mask)).sum() / (1 - mask).sum()")],
            "loss over the visible patches",
        ),
        (
            "pixels-summed",
            [(PER_PATCH, "loss = ((pred - target) ** 2).sum(dim=-1)")],
            "pixels of a patch summed",
        ),
        (
            "divided-by-all-patches",
            [(MASKED_MEAN, "return (loss * mask).mean()")],
            "divided by the number of all patches",
        ),
        ("boolean-index", [(MASKED_MEAN, "return loss[mask.bool()].mean()")], None),
        ("mse-loss", [(MASKED_MEAN, "return F.mse_loss(pred[mask.bool()], target[mask.bool()])")], None),
        ("count-nonzero", [(MASKED_MEAN, "return torch.sum(loss * mask) / torch.count_nonzero(mask)")], None),
    ],
)

VAR = "var = target.var(dim=-1, keepdim=True)"
NORM_PIX = variants(
    NB,
    "mae_loss",
    "test_mae_loss_norm_pix",
    [
        ("norm-pix-ignored", [(NORMALISE, "")], "norm_pix ignored"),
        (
            "biased-variance",
            [(VAR, "var = target.var(dim=-1, keepdim=True, unbiased=False)")],
            "biased variance",
        ),
        ("no-epsilon", [("(var + 1e-6) ** 0.5", "var**0.5")], "Add 1e-6 to the variance"),
        (
            "normalised-across-patches",
            [
                ("mean = target.mean(dim=-1, keepdim=True)", "mean = target.mean(dim=1, keepdim=True)"),
                (VAR, "var = target.var(dim=1, keepdim=True)"),
            ],
            "normalised across the patches",
        ),
        ("sqrt", [("(var + 1e-6) ** 0.5", "torch.sqrt(var + 1e-6)")], None),
        (
            "var-mean",
            [
                (
                    "mean = target.mean(dim=-1, keepdim=True)\n        " + VAR,
                    "var, mean = torch.var_mean(target, dim=-1, keepdim=True)",
                )
            ],
            None,
        ),
    ],
)

VARIANTS: list[Variant] = MASKING + ENCODER + DECODER + LOSS + NORM_PIX
