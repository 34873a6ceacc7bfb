"""Variants of notebooks 05 to 08 that no known mistake names: a general diagnostic must (see
tests/mutations.py). Each wrong one's ``expect`` is a phrase of the diagnostic's sentence."""

from tests.mutations import Variant, variants

RESIDUAL = "return self.fn(x, **kwargs) + x"
NORMALISED = "return (x - mean) / torch.sqrt(var + self.eps) * self.gamma + self.beta"
RESIDUAL_AND_NORM = variants(
    "05_residual_and_layernorm",
    "ResidualAdd",
    "test_ResidualAdd",
    [
        (
            "add-in-place-to-x",
            [(RESIDUAL, "x += self.fn(x, **kwargs)\n        return x")],
            "adding the residual in place",
        ),
        (
            "x-overwritten",
            [(RESIDUAL, "x = self.fn(x, **kwargs)\n        return x + x")],
            "your result is 2·fn(x), where fn(x) + x is expected",
        ),
        (
            "averaged",
            [(RESIDUAL, "return (self.fn(x, **kwargs) + x) / 2")],
            "your result is 0.5·fn(x) + 0.5·x",
        ),
        (
            "add-in-place-to-a-copy",
            [(RESIDUAL, "out = self.fn(x, **kwargs).clone()\n        out += x\n        return out")],
            None,
        ),
    ],
) + variants(
    "05_residual_and_layernorm",
    "LayerNorm",
    "test_LayerNorm",
    [
        (
            "beta-missing",
            [(" * self.gamma + self.beta", " * self.gamma")],
            "does not change when `beta` changes",
        ),
        (
            "gamma-and-beta-swapped",
            [(" * self.gamma + self.beta", " * self.beta + self.gamma")],
            "your result is x̂·beta + gamma",
        ),
        ("eps-hard-coded", [("var + self.eps", "var + 1e-5")], "as if eps were 1e-05"),
        (
            "variance-by-hand",
            [
                (
                    "",
                    """\
        centred = x - x.mean(dim=-1, keepdim=True)
        var = (centred**2).mean(dim=-1, keepdim=True)
        return self.gamma * centred / (var + self.eps).sqrt() + self.beta
""",
                )
            ],
            None,
        ),
    ],
)

FFN_LAYERS = """\
        super().__init__(
            nn.Linear(emb_size, expansion * emb_size),
            nn.GELU(),
            nn.Dropout(drop_p),
            nn.Linear(expansion * emb_size, emb_size),
        )
"""
EXPLICIT_FFN = """\
        super().__init__()
        self.expand = nn.Linear(emb_size, expansion * emb_size)
        self.drop = nn.Dropout(drop_p)
        self.project = nn.Linear(expansion * emb_size, emb_size)

    def forward(self, x):
        return self.project(self.drop(F.gelu(self.expand(x))))
"""
AS_FFN_MODULE = ("class FeedForwardBlock(nn.Sequential):", "class FeedForwardBlock(nn.Module):")
FEED_FORWARD = variants(
    "06_feed_forward",
    "FeedForwardBlock",
    "test_FeedForwardBlock",
    [
        (
            "expansion-hard-coded",
            [
                ("nn.Linear(emb_size, expansion * emb_size)", "nn.Linear(emb_size, 4 * emb_size)"),
                ("nn.Linear(expansion * emb_size, emb_size)", "nn.Linear(4 * emb_size, emb_size)"),
            ],
            "your module ignores `expansion`",
        ),
        ("dropout-hard-coded", [("nn.Dropout(drop_p)", "nn.Dropout(0.1)")], "your module ignores `drop_p`"),
        (
            "residual-inside",
            [("", FFN_LAYERS + "\n    def forward(self, x):\n        return x + super().forward(x)\n")],
            "your result is FFN(x) + x, where FFN(x) is expected",
        ),
        (
            "bias-forgotten-by-hand",
            [AS_FFN_MODULE, ("", EXPLICIT_FFN.replace("self.expand(x)", "x @ self.expand.weight.T"))],
            "does not change when `expand.bias` changes",
        ),
        (
            "explicit-forward",
            [AS_FFN_MODULE, ("", EXPLICIT_FFN)],
            None,
        ),
    ],
)

BLOCK = """\
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(emb_size), nn.LayerNorm(emb_size)
        self.attention = MultiHeadAttention(emb_size, **kwargs)
        self.feed_forward = FeedForwardBlock(emb_size, expansion=forward_expansion, drop_p=forward_drop_p)
        self.drop = nn.Dropout(drop_p)

    def forward(self, x):
        h = x + self.drop(self.attention(self.norm1(x)))
        return h + self.drop(self.feed_forward(self.norm2(h)))
"""
AS_MODULE = ("class TransformerEncoderBlock(nn.Sequential):", "class TransformerEncoderBlock(nn.Module):")
BLOCKS = variants(
    "07_transformer_encoder",
    "TransformerEncoderBlock",
    "test_TransformerEncoderBlock",
    [
        (
            "forward-expansion-ignored",
            [
                (
                    "FeedForwardBlock(emb_size, expansion=forward_expansion, drop_p=forward_drop_p)",
                    "FeedForwardBlock(emb_size, drop_p=forward_drop_p)",
                )
            ],
            "your module ignores `forward_expansion`",
        ),
        (
            "first-norm-reused",
            [AS_MODULE, ("", BLOCK.replace("self.norm2(h)", "self.norm1(h)"))],
            "does not change when `norm2.weight` changes",
        ),
        (
            "residual-from-the-input",
            [AS_MODULE, ("", BLOCK.replace("return h + self.drop", "return x + self.drop"))],
            "your result is x + FFN(LN₂(h))",
        ),
        ("explicit-forward-with-dropout", [AS_MODULE, ("", BLOCK)], None),
        (
            "layer-norms-with-another-eps",
            [AS_MODULE, ("", BLOCK.replace("nn.LayerNorm(emb_size)", "nn.LayerNorm(emb_size, eps=1e-6)"))],
            None,
        ),
    ],
) + variants(
    "07_transformer_encoder",
    "TransformerEncoder",
    "test_TransformerEncoder",
    [
        (
            "blocks-not-chained",
            [
                ("class TransformerEncoder(nn.Sequential):", "class TransformerEncoder(nn.Module):"),
                (
                    "",
                    """\
        super().__init__()
        self.blocks = nn.ModuleList(TransformerEncoderBlock(**kwargs) for _ in range(depth))

    def forward(self, x):
        for block in self.blocks:
            out = block(x)
        return out
""",
                ),
            ],
            "does not change when `blocks.0.",
        ),
        (
            "depth-hard-coded",
            [("for _ in range(depth)", "for _ in range(3)")],
            "your module ignores `depth`",
        ),
        (
            "loop-in-forward",
            [
                ("class TransformerEncoder(nn.Sequential):", "class TransformerEncoder(nn.Module):"),
                (
                    "",
                    """\
        super().__init__()
        self.blocks = nn.ModuleList(TransformerEncoderBlock(**kwargs) for _ in range(depth))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x
""",
                ),
            ],
            None,
        ),
    ],
)

NB08 = "08_vision_transformer"
PATCH_MEAN = """\
class PatchMean(nn.Module):
    def forward(self, x):
        return x[:, 1:].mean(dim=1)  # the patches only, without the class token


class ClassToken"""
HEAD = variants(
    NB08,
    "ClassificationHead",
    "test_ClassificationHead",
    [
        ("second-token", [("return x[:, 0]", "return x[:, 1]")], "do not change when token 0 of the input"),
        (
            "mean-without-class-token",
            [('Reduce("b n e -> b e", reduction="mean")', "PatchMean()"), ("class ClassToken", PATCH_MEAN)],
            "do not change when token 0 of the input",
        ),
        (
            "imagenet-classes",
            [("nn.Linear(emb_size, n_classes)", "nn.Linear(emb_size, 1000)")],
            "your module ignores `n_classes`",
        ),
        ("class-token-by-index", [("return x[:, 0]", "return x.narrow(1, 0, 1).squeeze(1)")], None),
    ],
)
VIT = variants(
    NB08,
    "ViT",
    "test_ViT",
    [
        (
            "ten-classes",
            [("ClassificationHead(emb_size, n_classes)", "ClassificationHead(emb_size, 10)")],
            "your module ignores `n_classes`",
        ),
        (
            "rgb-only",
            [
                (
                    "PatchEmbedding(in_channels, patch_size, emb_size, img_size)",
                    "PatchEmbedding(3, patch_size, emb_size, img_size)",
                )
            ],
            "your module ignores `in_channels`",
        ),
    ],
)

VARIANTS: list[Variant] = RESIDUAL_AND_NORM + FEED_FORWARD + BLOCKS + HEAD + VIT
