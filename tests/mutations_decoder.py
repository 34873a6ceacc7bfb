"""Variants of notebook 09, masked attention and the decoder (see tests/mutations.py)."""

from tests.mutations import Variant, variants

NB = "09_masked_attention_and_decoder"
TRIL = "    return torch.ones(n, n, dtype=torch.bool).tril()\n"
MASKS = variants(
    NB,
    "causal_mask",
    "test_causal_mask",
    [
        ("mask-transposed", [("", TRIL.replace("tril()", "triu()"))], "mask transposed"),
        ("diagonal-excluded", [("", TRIL.replace("tril()", "tril(-1)"))], "off by one"),
        ("one-diagonal-too-many", [("", TRIL.replace("tril()", "tril(1)"))], "off by one"),
        ("mask-inverted", [("", TRIL.replace("tril()", "triu(1)"))], "mask inverted"),
        ("float-mask", [("", "    return torch.ones(n, n).tril()\n")], "boolean"),
        ("tril-of-ones-bool", [("", "    return torch.tril(torch.ones(n, n)).bool()\n")], None),
        (
            "not-triu",
            [("", "    return ~torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)\n")],
            None,
        ),
        (
            "arange-compare",
            [("", "    i = torch.arange(n)\n    return i[:, None] >= i[None, :]\n")],
            None,
        ),
    ],
) + variants(
    NB,
    "padding_mask",
    "test_padding_mask",
    [
        ("two-dimensional", [("", "    return tokens != pad\n")], "expected shape"),
        ("padding-inverted", [("", "    return (tokens == pad)[:, None, None, :]\n")], "mask inverted"),
        ("pad-hard-coded", [("(tokens != pad)", "(tokens != 0)")], "pad argument ignored"),
        ("ne-unsqueeze", [("", "    return tokens.ne(pad).unsqueeze(1).unsqueeze(2)\n")], None),
    ],
)

CROSS = ("MultiHeadAttention", "test_cross_attention")
KEYS = 'keys = rearrange(self.keys(context), "b n (h d) -> b h n d", h=self.num_heads)'
VALUES = 'values = rearrange(self.values(context), "b n (h d) -> b h n d", h=self.num_heads)'
FILL = 'energy = energy.masked_fill(~mask, float("-inf"))'
CROSS_ATTENTION = variants(
    NB,
    *CROSS,
    [
        (
            "decoder-states-as-keys-and-values",
            [(KEYS, KEYS.replace("(context)", "(x)")), (VALUES, VALUES.replace("(context)", "(x)"))],
            "the decoder's own states used as keys/values",
        ),
        (
            "decoder-states-as-keys",
            [(KEYS, KEYS.replace("(context)", "(x)"))],
            "the decoder's own states used as keys",
        ),
        ("values-from-x", [(VALUES, VALUES.replace("(context)", "(x)"))], "values from x"),
        (
            "mask-after-softmax",
            [
                (FILL, "pass"),
                (
                    "att = self.att_drop(att)",
                    "att = self.att_drop(att if mask is None else att.masked_fill(~mask, 0.0))",
                ),
            ],
            "mask applied after the softmax",
        ),
        ("mask-ignored", [(FILL, "pass")], "mask ignored"),
        ("minus-1e9-fill", [('float("-inf")', "-1e9")], "float('-inf')"),
        ("finfo-min-fill", [('float("-inf")', "torch.finfo(energy.dtype).min")], None),
        (
            "where-fill",
            [(FILL, 'energy = torch.where(mask, energy, torch.tensor(float("-inf"), dtype=energy.dtype))')],
            None,
        ),
        (
            "context-or",
            [
                (
                    "context = x if context is None else context",
                    "context = context if context is not None else x",
                )
            ],
            None,
        ),
    ],
)

POST_NORM = """\
        x = self.norm1(x + self.dropout(self.self_attention(x, mask=tgt_mask)))
        x = self.norm2(x + self.dropout(self.cross_attention(x, mask=memory_mask, context=memory)))
        return self.norm3(x + self.dropout(self.feed_forward(x)))
"""
INIT = """\
        self.norm1 = nn.LayerNorm(emb_size)
        self.self_attention = MultiHeadAttention(emb_size, num_heads, drop_p)
        self.norm2 = nn.LayerNorm(emb_size)
        self.cross_attention = MultiHeadAttention(emb_size, num_heads, drop_p)
        self.norm3 = nn.LayerNorm(emb_size)
        self.feed_forward = FeedForwardBlock(emb_size, forward_expansion, drop_p)
"""
REORDERED_INIT = """\
        self.feed_forward = FeedForwardBlock(emb_size, forward_expansion, drop_p)
        self.cross_attention = MultiHeadAttention(emb_size, num_heads, drop_p)
        self.self_attention = MultiHeadAttention(emb_size, num_heads, drop_p)
        self.norm3, self.norm1, self.norm2 = (nn.LayerNorm(emb_size) for _ in range(3))
"""
BLOCK = ("TransformerDecoderBlock", "test_TransformerDecoderBlock")
SELF = "self.self_attention(self.norm1(x), mask=tgt_mask)"
CROSS_CALL = "self.cross_attention(self.norm2(x), mask=memory_mask, context=memory)"
DECODER = variants(
    NB,
    *BLOCK,
    [
        (
            "post-norm",
            [
                (
                    "        x = x + self.dropout(" + SELF + ")\n"
                    "        x = x + self.dropout(" + CROSS_CALL + ")\n"
                    "        return x + self.dropout(self.feed_forward(self.norm3(x)))\n",
                    POST_NORM,
                )
            ],
            "post-norm instead of pre-norm",
        ),
        (
            "shared-layernorm",
            [
                ("self.norm2 = nn.LayerNorm(emb_size)", "self.norm2 = self.norm1"),
                ("self.norm3 = nn.LayerNorm(emb_size)", "self.norm3 = self.norm1"),
            ],
            "a LayerNorm shared between sublayers",
        ),
        (
            "norm1-used-twice",
            [("self.cross_attention(self.norm2(x)", "self.cross_attention(self.norm1(x)")],
            "one LayerNorm used before two sublayers",
        ),
        ("self-attention-unmasked", [(SELF, "self.self_attention(self.norm1(x))")], "not masked"),
        (
            "cross-attention-on-decoder-states",
            [(CROSS_CALL, "self.cross_attention(self.norm2(x))")],
            "the decoder's states as keys/values",
        ),
        (
            "memory-mask-dropped",
            [(CROSS_CALL, "self.cross_attention(self.norm2(x), context=memory)")],
            "memory_mask not applied",
        ),
        ("other-registration-order", [(INIT, REORDERED_INIT)], None),
        (
            "residual-written-first",
            [
                (
                    "        x = x + self.dropout(" + SELF + ")\n",
                    "        x = self.dropout(" + SELF + ") + x\n",
                ),
                (
                    "        return x + self.dropout(self.feed_forward(self.norm3(x)))\n",
                    "        y = self.norm3(x)\n        return x + self.dropout(self.feed_forward(y))\n",
                ),
            ],
            None,
        ),
    ],
)

SHIFT = ("shift_right", "test_shift_right")
SHIFT_RIGHT = variants(
    NB,
    *SHIFT,
    [
        ("not-shifted", [("", "    return tgt.clone()\n")], "targets not shifted right"),
        (
            "shifted-left",
            [("", "    return torch.cat([tgt[:, 1:], torch.full_like(tgt[:, :1], bos)], dim=1)\n")],
            "shifted left",
        ),
        (
            "bos-missing",
            [("", "    return torch.cat([torch.zeros_like(tgt[:, :1]), tgt[:, :-1]], dim=1)\n")],
            "BOS missing",
        ),
        ("whole-target-kept", [("tgt[:, :-1]], dim=1)", "tgt], dim=1)")], "the last target token is dropped"),
        ("pad-function", [("", "    return F.pad(tgt[:, :-1], (1, 0), value=bos)\n")], None),
        (
            "roll-and-set",
            [("", "    tgt_in = tgt.roll(1, dims=1)\n    tgt_in[:, 0] = bos\n    return tgt_in\n")],
            None,
        ),
    ],
)

VARIANTS: list[Variant] = MASKS + CROSS_ATTENTION + DECODER + SHIFT_RIGHT
