"""Variants of notebook 08, the classification head and the assembled ViT (see tests/mutations.py)."""

from tests.mutations import Variant, variants

NB = "08_vision_transformer"
SELECT_POOLING = 'pooling = Reduce("b n e -> b e", reduction="mean") if pool == "mean" else ClassToken()'
HEAD_LAYERS = "super().__init__(pooling, nn.LayerNorm(emb_size), nn.Linear(emb_size, n_classes))"
EXPLICIT_HEAD = """\
        super().__init__()
        self.pool = pool
        self.norm = nn.LayerNorm(emb_size)
        self.fc = nn.Linear(emb_size, n_classes)

    def forward(self, x):
        x = x.mean(dim=1) if self.pool == "mean" else x[:, 0]
        return self.fc(self.norm(x))
"""
NORM_FIRST = """\
        pooling = Reduce("b n e -> b e", reduction="mean") if pool == "mean" else ClassToken()
        super().__init__(nn.LayerNorm(emb_size), pooling, nn.Linear(emb_size, n_classes))
"""
HEAD = variants(
    NB,
    "ClassificationHead",
    "test_ClassificationHead",
    [
        ("pooled-over-batch", [('"b n e -> b e"', '"b n e -> n e"')], "pooled over the batch axis"),
        ("pooled-over-features", [('"b n e -> b e"', '"b n e -> b n"')], "pooled over the feature axis"),
        ("cls-last", [("return x[:, 0]", "return x[:, -1]")], "class token taken from the last position"),
        (
            "no-layernorm",
            [(HEAD_LAYERS, "super().__init__(pooling, nn.Linear(emb_size, n_classes))")],
            "LayerNorm missing",
        ),
        (
            "pool-ignored",
            [(SELECT_POOLING, 'pooling = Reduce("b n e -> b e", reduction="mean")')],
            "mean pooling where pool='cls' asks for the class token",
        ),
        (
            "always-class-token",
            [(SELECT_POOLING, "pooling = ClassToken()")],
            "the class token taken where pool='mean'",
        ),
        ("norm-before-pooling", [("", NORM_FIRST)], None),  # the reference ViT's average-pooling head
        ("max-pooling", [('reduction="mean"', 'reduction="max"')], "values differ from the reference"),
        (
            "check-shadowed",
            [
                ("return x[:, 0]", "return x[:, -1]"),
                (
                    "class ClassToken(nn.Module):",
                    "def check_classification_head(*args, **kwargs):\n    pass\n\n\n"
                    "class ClassToken(nn.Module):",
                ),
            ],
            "class token taken from the last position",
        ),
        (
            "explicit-forward-mean",
            [
                ("class ClassificationHead(nn.Sequential):", "class ClassificationHead(nn.Module):"),
                ("", EXPLICIT_HEAD),
            ],
            None,
        ),
        ("reduction-positional", [('reduction="mean"', '"mean"')], None),
        ("select", [("return x[:, 0]", "return x.select(1, 0)")], None),
    ],
)

ENCODER = "TransformerEncoder(depth, emb_size=emb_size, **kwargs)"
EMBEDDING = "PatchEmbedding(in_channels, patch_size, emb_size, img_size)"
EXPLICIT_VIT = """\
        super().__init__()
        self.embedding = PatchEmbedding(in_channels, patch_size, emb_size, img_size)
        self.encoder = TransformerEncoder(depth, emb_size=emb_size, **kwargs)
        self.head = ClassificationHead(emb_size, n_classes)

    def forward(self, x):
        return self.head(self.encoder(self.embedding(x)))
"""
LINEAR_EMBEDDING = """\
class LinearPatchEmbedding(nn.Module):
    def __init__(self, in_channels, patch_size, emb_size, img_size):
        super().__init__()
        self.projection = nn.Sequential(
            Rearrange("b c (h s1) (w s2) -> b (h w) (s1 s2 c)", s1=patch_size, s2=patch_size),
            nn.Linear(patch_size * patch_size * in_channels, emb_size),
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, emb_size))
        self.positions = nn.Parameter(0.02 * torch.randn(1, (img_size // patch_size) ** 2 + 1, emb_size))

    def forward(self, x):
        x = self.projection(x)
        return torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.positions


class ViT(nn.Sequential):"""
VIT = variants(
    NB,
    "ViT",
    "test_ViT",
    [
        ("num-heads-not-passed", [(ENCODER, "TransformerEncoder(depth, emb_size=emb_size)")], "num_heads"),
        (
            "depth-not-passed",
            [(ENCODER, "TransformerEncoder(emb_size=emb_size, **kwargs)")],
            "expected depth = 2",
        ),
        (
            "shared-blocks",
            [(ENCODER, "nn.Sequential(*[TransformerEncoderBlock(emb_size=emb_size, **kwargs)] * depth)")],
            "the same encoder block",
        ),
        ("encoder-missing", [(ENCODER + ",", "")], "is the TransformerEncoder(depth"),
        (
            "img-size-not-passed",
            [(EMBEDDING, "PatchEmbedding(in_channels, patch_size, emb_size)")],
            "Is every size passed on",
        ),
        (
            "n-classes-not-passed",
            [("ClassificationHead(emb_size, n_classes)", "ClassificationHead(emb_size)")],
            "expected shape (2, 10)",
        ),
        (
            "head-without-layernorm",
            [
                (
                    "ClassificationHead(emb_size, n_classes)",
                    'nn.Sequential(Reduce("b n e -> b e", reduction="mean"), nn.Linear(emb_size, n_classes))',
                )
            ],
            "the head's LayerNorm",
        ),
        (
            "tokens-detached",
            [
                ("class ViT(nn.Sequential):", "class ViT(nn.Module):"),
                ("", EXPLICIT_VIT.replace("self.embedding(x)", "self.embedding(x).detach()")),
            ],
            "no gradient reaches",
        ),
        (
            "check-shadowed",
            [
                (ENCODER, "TransformerEncoder(depth, emb_size=emb_size)"),
                (
                    "class ViT(nn.Sequential):",
                    "def check_vit(*args, **kwargs):\n    pass\n\n\nclass ViT(nn.Sequential):",
                ),
            ],
            "num_heads",
        ),
        (
            "explicit-forward",
            [("class ViT(nn.Sequential):", "class ViT(nn.Module):"), ("", EXPLICIT_VIT)],
            None,
        ),
        (
            "mean-pooling-head",
            [
                (
                    "ClassificationHead(emb_size, n_classes)",
                    'ClassificationHead(emb_size, n_classes, pool="mean")',
                )
            ],
            None,
        ),
        (
            "head-norm-then-mean",
            [
                (
                    "ClassificationHead(emb_size, n_classes)",
                    'nn.Sequential(nn.LayerNorm(emb_size), Reduce("b n e -> b e", reduction="mean"), '
                    "nn.Linear(emb_size, n_classes))",
                )
            ],
            None,
        ),
        (
            "linear-patch-embedding",
            [
                ("class ViT(nn.Sequential):", LINEAR_EMBEDDING),
                (EMBEDDING, EMBEDDING.replace("Patch", "LinearPatch")),
            ],
            None,
        ),
        (
            "keyword-arguments",
            [
                (
                    EMBEDDING,
                    "PatchEmbedding(in_channels=in_channels, patch_size=patch_size, emb_size=emb_size, "
                    "img_size=img_size)",
                )
            ],
            None,
        ),
    ],
)

VARIANTS: list[Variant] = HEAD + VIT
