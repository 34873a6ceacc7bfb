"""Wrong and alternative implementations of each exercise, as edits of the solution cells.

A variant with ``expect`` is a known mistake: its graded cell must score 0 with a message that
contains ``expect``. A variant with ``expect=None`` is correct code written differently and must
earn full marks.
"""

import re
from dataclasses import dataclass

SOLUTION = re.compile(r"^[ \t]*### BEGIN SOLUTION\n.*?^[ \t]*### END SOLUTION\n?", re.S | re.M)
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


def lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines()}


def lines_only_inside(sources: list[str], *blocks: re.Pattern) -> set[str]:
    """The lines (stripped, over 12 characters, markers aside) that the sources hold only in ``blocks``.

    What must not show once those blocks are removed: solutions for students, hidden tests for anyone.
    """
    inside = set().union(*(lines(b) for s in sources for p in blocks for b in p.findall(s)))
    public = set()
    for source in sources:
        for p in blocks:
            source = p.sub("", source)
        public |= lines(source)
    return {line for line in inside - public if len(line) > 12 and not line.startswith("###")}


@dataclass(frozen=True)
class Variant:
    notebook: str
    cell: str  # grade_id of the solution cell that is edited
    test: str  # grade_id of the graded cell that judges it
    name: str
    edits: tuple[tuple[str, str], ...]  # (old, new) text replacements; old "" replaces the solution
    expect: str | None = None


def edited_source(source: str, edits: tuple[tuple[str, str], ...]) -> str:
    """Apply the edits; each ``old`` must occur exactly once (``""``: the solution block)."""
    for old, new in edits:
        if old == "":
            assert len(SOLUTION.findall(source)) == 1, "expected one solution block"
            source = SOLUTION.sub(lambda _: new.rstrip("\n") + "\n", source)
            continue
        assert source.count(old) == 1, f"expected {old!r} once in the cell"
        source = source.replace(old, new)
    return source


def variants(notebook: str, cell: str, test: str, table: list[tuple]) -> list[Variant]:
    return [Variant(notebook, cell, test, name, tuple(edits), expect) for name, edits, expect in table]


PE = ("01_positional_encoding", "getPositionEncoding", "test_getPositionEncoding")
VECTORISED_PE = """\
    positions = np.arange(seq_len)[:, None]
    denominator = np.power(n, np.arange(0, d, 2) / d)
    P[:, 0::2] = np.sin(positions / denominator)
    P[:, 1::2] = np.cos(positions / denominator)
"""
POSITIONAL = variants(
    *PE,
    [
        (
            "sin-cos-swapped",
            [
                ("P[k, 2 * i] = np.sin", "P[k, 2 * i] = np.cos"),
                ("P[k, 2 * i + 1] = np.cos", "P[k, 2 * i + 1] = np.sin"),
            ],
            "sin and cos swapped",
        ),
        (
            "exponent-i-over-d",
            [("np.power(n, 2 * i / d)", "np.power(n, i / d)")],
            "exponent i/d instead of 2i/d",
        ),
        (
            "return-inside-loop",
            [("np.cos(k / denominator)\n", "np.cos(k / denominator)\n        return P\n")],
            "`return` inside the loop",
        ),
        ("integer-division", [("2 * i / d", "2 * i // d")], "integer division"),
        ("n-hard-coded", [("np.power(n, ", "np.power(10000, ")], "n ignored"),
        ("vectorised", [("", VECTORISED_PE)], None),
        (
            "torch-tensor",
            [("", VECTORISED_PE), ("    return P", "    return torch.tensor(P)")],
            None,
        ),
    ],
)

PATCHES = variants(
    "02_patch_embedding",
    "PatchEmbedding",
    "test_PatchEmbedding",
    [
        ("column-major", [("b (h w) (s1 s2 c)", "b (w h) (s1 s2 c)")], "column-major"),
        (
            "view-without-permute",
            [
                (
                    "return self.projection(x)",
                    "return self.projection[1](x.reshape(x.shape[0], -1, self.projection[1].in_features))",
                )
            ],
            "pixels mixed across patches",
        ),
        (
            "two-linears",
            [
                (
                    "nn.Linear(patch_size * patch_size * in_channels, emb_size),",
                    "nn.Linear(patch_size * patch_size * in_channels, emb_size), nn.Linear(emb_size, emb_size),",
                )
            ],
            "expected one learnable projection",
        ),
        (
            "conv-projection",
            [
                (
                    "",
                    """\
        self.projection = nn.Sequential(
            nn.Conv2d(in_channels, emb_size, kernel_size=patch_size, stride=patch_size),
            Rearrange("b e h w -> b (h w) e"),
        )
""",
                )
            ],
            None,
        ),
        ("channels-first-patches", [("(s1 s2 c)", "(c s1 s2)")], None),
    ],
)

CLS = ("03_class_token_and_positions", "prepend_cls_token", "test_prepend_cls_token")
POSITIONS = ("03_class_token_and_positions", "position_embeddings")
TOKENS = (
    variants(
        *CLS,
        [
            (
                "appended-last",
                [("[cls_tokens, x]", "[x, cls_tokens]")],
                "class token appended last",
            ),
            (
                "detached",
                [("repeat(cls_token,", "repeat(cls_token.detach(),")],
                "does not require grad",
            ),
            (
                "expand",
                [("", "    return torch.cat([cls_token.expand(len(x), -1, -1), x], dim=1)")],
                None,
            ),
        ],
    )
    + variants(
        *POSITIONS,
        "test_sinusoidal_positions",
        [
            (
                "plain-attribute",
                [('self.register_buffer("positions", table)', "self.positions = table")],
                "not a registered buffer",
            ),
            (
                "parameter",
                [
                    (
                        'self.register_buffer("positions", table)',
                        "self.positions = nn.Parameter(table)",
                    )
                ],
                "is an nn.Parameter",
            ),
            ("float64-table", [(", dtype=torch.float32)", ")")], "float64"),
            (
                "from-numpy",
                [
                    (
                        "torch.tensor(getPositionEncoding(num_positions, emb_size), dtype=torch.float32)",
                        "torch.from_numpy(getPositionEncoding(num_positions, emb_size)).float()[None]",
                    )
                ],
                None,
            ),
        ],
    )
    + variants(
        *POSITIONS,
        "test_learned_positions",
        [
            (
                "learned-as-buffer",
                [
                    (
                        "self.positions = nn.Parameter(torch.randn(num_positions, emb_size))",
                        'self.register_buffer("positions", torch.randn(num_positions, emb_size))',
                    )
                ],
                "should be an nn.Parameter",
            ),
            (
                "learned-zeros-batched",
                [
                    (
                        "nn.Parameter(torch.randn(num_positions, emb_size))",
                        "nn.Parameter(torch.zeros(1, num_positions, emb_size))",
                    )
                ],
                None,
            ),
        ],
    )
)

MHA = ("04_multi_head_attention", "MultiHeadAttention", "test_MultiHeadAttention")
MHA_MASK = ("04_multi_head_attention", "MultiHeadAttention", "test_MultiHeadAttention_mask")
SCALE = "scaling = (self.emb_size // self.num_heads) ** 0.5"
SOFTMAX = "att = F.softmax(energy / scaling, dim=-1)"
FUSED_QKV = """\
        qkv = rearrange(self.qkv(x), "b n (h d qkv) -> qkv b h n d", h=self.num_heads, qkv=3)
        att = (qkv[0] @ qkv[1].transpose(-2, -1)) / (self.emb_size // self.num_heads) ** 0.5
        if mask is not None:
            att = att.masked_fill(~mask, torch.finfo(att.dtype).min)
        att = self.att_drop(att.softmax(dim=-1))
        return self.projection(rearrange(att @ qkv[2], "b h n d -> b n (h d)"))
"""
ATTENTION = variants(
    *MHA,
    [
        (
            "scaled-after-softmax",
            [(SOFTMAX, "att = F.softmax(energy, dim=-1) / scaling")],
            "scaled after the softmax",
        ),
        (
            "tutorial-scaling",
            [
                (SOFTMAX, "att = F.softmax(energy, dim=-1) / scaling"),
                (SCALE, "scaling = self.emb_size ** 0.5"),
            ],
            "scaled after the softmax, and by sqrt(emb_size)",
        ),
        (
            "sqrt-emb-size",
            [(SCALE, "scaling = self.emb_size ** 0.5")],
            "sqrt(emb_size) instead of sqrt(head_dim)",
        ),
        (
            "softmax-wrong-axis",
            [(SOFTMAX, "att = F.softmax(energy / scaling, dim=-2)")],
            "softmax over the wrong axis",
        ),
        (
            "heads-merged-wrong",
            [('"b h n d -> b n (h d)"', '"b h n d -> b n (d h)"')],
            "heads merged in the wrong order",
        ),
        (
            "no-projection",
            [("return self.projection(out)", "return out")],
            "output projection missing",
        ),
        (
            "calls-sdpa",
            [
                (
                    "",
                    """\
        q, k, v = (rearrange(f(x), "b n (h d) -> b h n d", h=self.num_heads)
                   for f in (self.queries, self.keys, self.values))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.projection(rearrange(out, "b h n d -> b n (h d)"))
""",
                )
            ],
            "uses `scaled_dot_product_attention`",
        ),
        (
            "heads-as-d-h",
            [
                (
                    '"b n (h d) -> b h n d", h=self.num_heads)\n        keys',
                    '"b n (d h) -> b h n d", h=self.num_heads)\n        keys',
                ),
                (
                    '"b n (h d) -> b h n d", h=self.num_heads)\n        values',
                    '"b n (d h) -> b h n d", h=self.num_heads)\n        values',
                ),
                (
                    '"b n (h d) -> b h n d", h=self.num_heads)\n        energy',
                    '"b n (d h) -> b h n d", h=self.num_heads)\n        energy',
                ),
                ('"b h n d -> b n (h d)"', '"b h n d -> b n (d h)"'),
            ],
            "(d h) instead of (h d)",
        ),
        (
            "check-shadowed",
            [
                (SOFTMAX, "att = F.softmax(energy, dim=-1) / scaling"),
                (
                    "class MultiHeadAttention(nn.Module):",
                    "def check_multi_head_attention(*args, **kwargs):\n    pass\n\n\nclass MultiHeadAttention(nn.Module):",
                ),
            ],
            "scaled after the softmax",
        ),
        ("other-einsum-letters", [('"bhqd, bhkd -> bhqk"', '"bhid, bhjd -> bhij"')], None),
        (
            "fused-qkv-matmul",
            [
                (
                    "        self.keys = nn.Linear(emb_size, emb_size)\n"
                    "        self.queries = nn.Linear(emb_size, emb_size)\n"
                    "        self.values = nn.Linear(emb_size, emb_size)\n",
                    "        self.qkv = nn.Linear(emb_size, 3 * emb_size)\n",
                ),
                ("", FUSED_QKV),
            ],
            None,
        ),
    ],
) + variants(
    *MHA_MASK,
    [
        (
            "mask-ignored",
            [('energy = energy.masked_fill(~mask, float("-inf"))', "pass")],
            "mask ignored",
        ),
        ("mask-inverted", [("masked_fill(~mask,", "masked_fill(mask,")], "mask inverted"),
        (
            "mask-after-softmax",
            [
                ('energy = energy.masked_fill(~mask, float("-inf"))', "pass"),
                (
                    "att = self.att_drop(att)",
                    "att = self.att_drop(att if mask is None else att.masked_fill(~mask, 0.0))",
                ),
            ],
            "mask applied after the softmax",
        ),
        ("finfo-min-mask", [('float("-inf")', "torch.finfo(energy.dtype).min")], None),
    ],
)

LN_BODY = """\
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, unbiased=False, keepdim=True)
"""
RESIDUAL = variants(
    "05_residual_and_layernorm",
    "ResidualAdd",
    "test_ResidualAdd",
    [
        (
            "residual-missing",
            [("return self.fn(x, **kwargs) + x", "return self.fn(x, **kwargs)")],
            "the residual is missing",
        ),
        (
            "slide-in-place",
            [
                (
                    "return self.fn(x, **kwargs) + x",
                    "res = x\n        x = self.fn(x, **kwargs)\n        x += res\n        return x",
                )
            ],
            "adding the residual in place",
        ),
        (
            "kwargs-dropped",
            [("return self.fn(x, **kwargs) + x", "return self.fn(x) + x")],
            "Pass keyword arguments",
        ),
        ("residual-first", [("return self.fn(x, **kwargs) + x", "return x + self.fn(x, **kwargs)")], None),
        (
            "add-function",
            [("return self.fn(x, **kwargs) + x", "return torch.add(self.fn(x, **kwargs), x)")],
            None,
        ),
    ],
) + variants(
    "05_residual_and_layernorm",
    "LayerNorm",
    "test_LayerNorm",
    [
        ("unbiased-variance", [("unbiased=False", "unbiased=True")], "unbiased variance"),
        (
            "eps-outside-root",
            [("torch.sqrt(var + self.eps)", "(torch.sqrt(var) + self.eps)")],
            "eps added outside the square root",
        ),
        (
            "wrong-axis",
            [("x.mean(dim=-1,", "x.mean(dim=0,"), ("x.var(dim=-1,", "x.var(dim=0,")],
            "normalised over the wrong axis",
        ),
        ("no-affine", [(" * self.gamma + self.beta", "")], "gamma and beta not applied"),
        (
            "calls-torch",
            [
                (
                    "",
                    "        return nn.functional.layer_norm(x, x.shape[-1:], self.gamma, self.beta)",
                )
            ],
            "uses `layer_norm`",
        ),
        (
            "var-mean-rsqrt",
            [
                (
                    "",
                    """\
        var, mean = torch.var_mean(x, dim=-1, correction=0, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.gamma + self.beta
""",
                )
            ],
            None,
        ),
    ],
)

FFN = ("06_feed_forward", "FeedForwardBlock", "test_FeedForwardBlock")
FEED_FORWARD = variants(
    *FFN,
    [
        ("relu", [("nn.GELU()", "nn.ReLU()")], "ReLU where GELU is asked"),
        (
            "no-expansion",
            [
                ("nn.Linear(emb_size, expansion * emb_size)", "nn.Linear(emb_size, emb_size)"),
                ("nn.Linear(expansion * emb_size, emb_size)", "nn.Linear(emb_size, emb_size)"),
            ],
            "no expansion",
        ),
        ("no-activation", [("            nn.GELU(),\n", "")], "no activation"),
        (
            "dropout-last",
            [
                (
                    "            nn.Dropout(drop_p),\n            nn.Linear(expansion * emb_size, emb_size),",
                    "            nn.Linear(expansion * emb_size, emb_size),\n            nn.Dropout(drop_p),",
                )
            ],
            "dropout sits after the second Linear",
        ),
        ("tanh-gelu", [("nn.GELU()", 'nn.GELU(approximate="tanh")')], None),
    ],
)

ENCODER = "07_transformer_encoder"
SHARED_NORM = """\
        norm = nn.LayerNorm(emb_size)
        super().__init__(
            ResidualAdd(nn.Sequential(norm, MultiHeadAttention(emb_size, **kwargs), nn.Dropout(drop_p))),
            ResidualAdd(nn.Sequential(norm, FeedForwardBlock(emb_size, forward_expansion), nn.Dropout(drop_p))),
        )
"""
POST_NORM = """\
        super().__init__()
        self.attention = MultiHeadAttention(emb_size, **kwargs)
        self.feed_forward = FeedForwardBlock(emb_size, expansion=forward_expansion, drop_p=forward_drop_p)
        self.norm1, self.norm2 = nn.LayerNorm(emb_size), nn.LayerNorm(emb_size)

    def forward(self, x):
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.feed_forward(x))
"""
EXPLICIT_PRE_NORM = POST_NORM.replace(
    "self.norm1(x + self.attention(x))", "x + self.attention(self.norm1(x))"
).replace("self.norm2(x + self.feed_forward(x))", "x + self.feed_forward(self.norm2(x))")
BLOCKS = (
    variants(
        ENCODER,
        "TransformerEncoderBlock",
        "test_TransformerEncoderBlock",
        [
            ("shared-layernorm", [("", SHARED_NORM)], "one LayerNorm shared by both sublayers"),
            ("post-norm", [("", POST_NORM)], "post-norm instead of pre-norm"),
            (
                "attention-residual-missing",
                [
                    (
                        "            ResidualAdd(\n                nn.Sequential(\n"
                        "                    nn.LayerNorm(emb_size),\n                    MultiHeadAttention",
                        "            (\n                nn.Sequential(\n"
                        "                    nn.LayerNorm(emb_size),\n                    MultiHeadAttention",
                    )
                ],
                "the residual is missing around attention",
            ),
            (
                "kwargs-not-passed",
                [("MultiHeadAttention(emb_size, **kwargs)", "MultiHeadAttention(emb_size)")],
                "num_heads",
            ),
            ("explicit-forward", [("", EXPLICIT_PRE_NORM)], None),
        ],
    )
    + variants(
        ENCODER,
        "TransformerEncoder",
        "test_TransformerEncoder",
        [
            (
                "one-block-repeated",
                [
                    (
                        "*[TransformerEncoderBlock(**kwargs) for _ in range(depth)]",
                        "*[TransformerEncoderBlock(**kwargs)] * depth",
                    )
                ],
                "the same block",
            ),
            (
                "kwargs-dropped",
                [("TransformerEncoderBlock(**kwargs) for", "TransformerEncoderBlock() for")],
                "num_heads",
            ),
            (
                "module-list-one-block",
                [
                    (
                        "",
                        "        block = TransformerEncoderBlock(**kwargs)\n        super().__init__(*nn.ModuleList([block] * depth))",
                    )
                ],
                "the same block",
            ),
            (
                "module-list",
                [
                    (
                        "",
                        """\
        blocks = nn.ModuleList(TransformerEncoderBlock(**kwargs) for _ in range(depth))
        super().__init__(*blocks)
""",
                    )
                ],
                None,
            ),
        ],
    )
    + variants(
        ENCODER,
        "vit_parameter_count",
        "test_vit_parameter_count",
        [
            (
                "no-class-token",
                [("tokens = e + (num_patches + 1) * e", "tokens = (num_patches + 1) * e")],
                "class token",
            ),
            ("no-head-bias", [("e * n_classes + n_classes", "e * n_classes")], "the head's bias"),
            (
                "float-count",
                [
                    (
                        "num_patches = (img_size // patch_size) ** 2",
                        "num_patches = (img_size / patch_size) ** 2",
                    )
                ],
                "expected an int",
            ),
        ],
    )
)

VARIANTS = POSITIONAL + PATCHES + TOKENS + ATTENTION + RESIDUAL + FEED_FORWARD + BLOCKS


def all_variants() -> list[Variant]:
    """Every notebook's variants, including those kept in their own modules."""
    from tests import (
        mutations_decoder,
        mutations_diagnosed_a,
        mutations_diagnosed_b,
        mutations_diagnosed_c,
        mutations_fast,
        mutations_mae,
        mutations_rnn,
        mutations_single_head,
        mutations_swin,
        mutations_vit,
    )

    return (
        mutations_rnn.VARIANTS
        + VARIANTS
        + mutations_vit.VARIANTS
        + mutations_decoder.VARIANTS
        + mutations_fast.VARIANTS
        + mutations_diagnosed_a.VARIANTS
        + mutations_diagnosed_b.VARIANTS
        + mutations_diagnosed_c.VARIANTS
        + mutations_swin.VARIANTS
        + mutations_single_head.VARIANTS
        + mutations_mae.VARIANTS
    )
