"""Variants of notebook 09 that no known mistake names: general diagnostics must (see tests/mutations.py).
Wrong ones expect a phrase of the diagnostic's sentence; correct ones, written differently, expect full
marks."""

from tests.mutations import Variant, variants

NB = "09_masked_attention_and_decoder"
TRIL = "    return torch.ones(n, n, dtype=torch.bool).tril()\n"
MASKS = variants(
    NB,
    "causal_mask",
    "test_causal_mask",
    [
        ("nothing-masked", [("", "    return torch.ones(n, n, dtype=torch.bool)\n")], "True everywhere"),
        (
            "diagonal-only",
            [("", "    return torch.eye(n, dtype=torch.bool)\n")],
            "blocks query 1 from key 0, an earlier position",
        ),
        ("two-diagonals-too-many", [("", TRIL.replace("tril()", "tril(2)"))], "offset by 2"),
        ("upper-transposed", [("", TRIL.replace("tril()", "triu().T"))], None),
        ("full-then-tril", [("", "    return torch.full((n, n), True).tril()\n")], None),
    ],
) + variants(
    NB,
    "padding_mask",
    "test_padding_mask",
    [
        (
            "greater-than-pad",
            [("", "    return (tokens > pad)[:, None, None, :]\n")],
            "False for the real tokens 3, 4",
        ),
        (
            "lengths-off-by-one",
            [
                (
                    "",
                    "    lengths = (tokens != pad).sum(dim=1, keepdim=True)\n"
                    "    return (torch.arange(tokens.shape[1]) <= lengths)[:, None, None, :]\n",
                )
            ],
            "which holds padding (pad = 0)",
        ),
        (
            "lengths",
            [
                (
                    "",
                    "    lengths = (tokens != pad).sum(dim=1, keepdim=True)\n"
                    "    return (torch.arange(tokens.shape[1]) < lengths)[:, None, None, :]\n",
                )
            ],
            None,
        ),
        ("rearranged", [("", '    return rearrange(tokens != pad, "b n -> b 1 1 n")\n')], None),
    ],
)

CROSS = ("MultiHeadAttention", "test_cross_attention")
ENERGY = 'energy = torch.einsum("bhqd, bhkd -> bhqk", queries, keys)'
QUERIES = 'queries = rearrange(self.queries(x), "b n (h d) -> b h n d", h=self.num_heads)'
FILL = 'energy = energy.masked_fill(~mask, float("-inf"))'
CROSS_ATTENTION = variants(
    NB,
    *CROSS,
    [
        (
            "scores-scaled-twice",
            [(ENERGY, ENERGY + " / (self.emb_size // self.num_heads) ** 0.5")],
            "your attention scores are divided by 8 where sqrt(head_dim) = 2.828",
        ),
        (
            "queries-through-the-keys-layer",
            [(QUERIES, QUERIES.replace("self.queries(x)", "self.keys(x)"))],
            "the weight of the query projection (queries) changes: it is not used",
        ),
        (
            "masked-scores-set-to-zero",
            [(FILL, FILL.replace('float("-inf")', "0.0"))],
            "to a key the mask forbids",
        ),
        ("mask-not-negated", [(FILL, FILL.replace("~mask", "mask"))], "to a key the mask forbids"),
        ("matmul-scores", [(ENERGY, "energy = queries @ keys.transpose(-2, -1)")], None),
        ("mask-compared-with-zero", [(FILL, FILL.replace("~mask", "mask == 0"))], None),
    ],
)

BLOCK = ("TransformerDecoderBlock", "test_TransformerDecoderBlock")
SELF = "self.self_attention(self.norm1(x), mask=tgt_mask)"
CROSS_CALL = "self.cross_attention(self.norm2(x), mask=memory_mask, context=memory)"
FEED_FORWARD = "self.feed_forward(self.norm3(x))"
ATTENTIONS = (
    "self.self_attention = MultiHeadAttention(emb_size, num_heads, drop_p)",
    "self.cross_attention = MultiHeadAttention(emb_size, num_heads, drop_p)",
)
FFN = "self.feed_forward = FeedForwardBlock(emb_size, forward_expansion, drop_p)"
SEQUENTIAL_FFN = """self.feed_forward = nn.Sequential(
            nn.Linear(emb_size, forward_expansion * emb_size),
            nn.GELU(),
            nn.Linear(forward_expansion * emb_size, emb_size),
        )"""
DECODER = variants(
    NB,
    *BLOCK,
    [
        (
            "feed-forward-not-normalised",
            [(FEED_FORWARD, "self.feed_forward(x)")],
            "the LayerNorm `norm3` changes: it is not used",
        ),
        (
            "cross-attention-not-normalised",
            [(CROSS_CALL, CROSS_CALL.replace("self.norm2(x)", "x"))],
            "the LayerNorm `norm2` changes: it is not used",
        ),
        (
            "self-attention-module-reused",
            [(CROSS_CALL, CROSS_CALL.replace("self.cross_attention", "self.self_attention"))],
            "of the key projection (keys) in `cross_attention` changes: it is not used",
        ),
        (
            "expansion-taken-for-the-width",
            [(FFN, FFN.replace("forward_expansion,", "forward_expansion * emb_size,"))],
            "the feed-forward block's hidden layer has 4096 features",
        ),
        (
            "num-heads-not-passed",
            [(a, a.replace("num_heads, drop_p", "dropout=drop_p")) for a in ATTENTIONS],
            "your module ignores `num_heads`",
        ),
        (
            "forward-expansion-not-passed",
            [(FFN, FFN.replace("forward_expansion, drop_p", "drop_p=drop_p"))],
            "your module ignores `forward_expansion`",
        ),
        (
            "causal-mask-built-inside",
            [(SELF, SELF.replace("mask=tgt_mask", "mask=causal_mask(x.shape[1]).to(x.device)"))],
            "does not change when input position",
        ),
        ("sequential-feed-forward", [(FFN, SEQUENTIAL_FFN)], None),
        (
            "positional-arguments",
            [
                (SELF, "self.self_attention(self.norm1(x), tgt_mask)"),
                (CROSS_CALL, "self.cross_attention(self.norm2(x), memory_mask, memory)"),
            ],
            None,
        ),
    ],
)

SHIFT = ("shift_right", "test_shift_right")
START = "    start = torch.full_like(tgt[:, :1], bos)\n"
SHIFT_RIGHT = variants(
    NB,
    *SHIFT,
    [
        (
            "bos-over-the-first-target",
            [("", START + "    return torch.cat([start, tgt[:, 1:]], dim=1)\n")],
            "your result is not shifted",
        ),
        (
            "clone-and-set-first",
            [("", "    tgt_in = tgt.clone()\n    tgt_in[:, 0] = bos\n    return tgt_in\n")],
            "your result is not shifted",
        ),
        (
            "shifted-along-the-batch",
            [("", "    return torch.cat([torch.full_like(tgt[:1], bos), tgt[:-1]], dim=0)\n")],
            "along the batch axis (axis 0)",
        ),
        ("cat-then-crop", [("", START + "    return torch.cat([start, tgt], dim=1)[:, :-1]\n")], None),
        (
            "empty-then-fill",
            [
                (
                    "",
                    "    tgt_in = torch.empty_like(tgt)\n    tgt_in[:, 0] = bos\n"
                    "    tgt_in[:, 1:] = tgt[:, :-1]\n    return tgt_in\n",
                )
            ],
            None,
        ),
    ],
)

VARIANTS: list[Variant] = MASKS + CROSS_ATTENTION + DECODER + SHIFT_RIGHT
