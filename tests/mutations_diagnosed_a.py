"""Variants of notebooks 00-03 and 10 that no known mistake names: general diagnostics must (see
tests/mutations.py). Wrong ones expect a phrase of the diagnostic's sentence; correct ones, written
differently, expect full marks."""

from tests.mutations import Variant, variants

ADDITIVE = ("00_attention_before_transformers", "AdditiveAttention", "test_AdditiveAttention")
ADDITIVE_MASK = ("00_attention_before_transformers", "AdditiveAttention", "test_AdditiveAttention_mask")
STATES = "self.W(s_prev)[:, None, :] + self.U(h)"
SCORES = f"scores = self.v(torch.tanh({STATES})).squeeze(-1)"
CONTEXT = "context = (alpha[:, :, None] * h).sum(dim=1)"
SOFTMAX = "alpha = torch.softmax(scores, dim=-1)"
ADDITIVE_VARIANTS = variants(
    *ADDITIVE,
    [
        ("decoder-state-unused", [(STATES, "self.U(h)")], "`W.weight` changes: it is not used"),
        (
            "U-bias-dropped",
            [(STATES, "self.W(s_prev)[:, None, :] + h @ self.U.weight.T")],
            "`U.bias` changes: it is not used",
        ),
        (
            "v-replaced-by-a-sum",
            [(SCORES, f"scores = torch.tanh({STATES}).sum(dim=-1)")],
            "`v.weight` changes: it is not used",
        ),
        (
            "scores-scaled-like-transformers",
            [(SOFTMAX, "alpha = torch.softmax(scores / self.W.out_features**0.5, dim=-1)")],
            "softmax(e / 2.236), where softmax(e) is expected: the scores are divided by sqrt(att_size)",
        ),
        (
            "context-mean-of-weighted-states",
            [(CONTEXT, CONTEXT.replace(".sum(dim=1)", ".mean(dim=1)"))],
            "times the expected one",
        ),
        ("log-softmax-exp", [(SOFTMAX, "alpha = F.log_softmax(scores, dim=-1).exp()")], None),
    ],
) + variants(
    *ADDITIVE_MASK,
    [
        (
            "scores-scaled-like-transformers-masked",
            [(SOFTMAX, "alpha = torch.softmax(scores / self.W.out_features**0.5, dim=-1)")],
            "softmax(e / 2.236), where softmax(e) is expected: the scores are divided by sqrt(att_size)",
        ),
        ("log-softmax-exp-masked", [(SOFTMAX, "alpha = F.log_softmax(scores, dim=-1).exp()")], None),
    ],
)

PE = ("01_positional_encoding", "getPositionEncoding", "test_getPositionEncoding")
SIN = "P[k, 2 * i] = np.sin(k / denominator)"
COS = "P[k, 2 * i + 1] = np.cos(k / denominator)"
HALVES = """\
    angles = np.arange(seq_len)[:, None] / np.power(n, np.arange(0, d, 2) / d)
    P[:, : d // 2] = np.sin(angles)
    P[:, d // 2 :] = np.cos(angles)
"""
COLUMN_EXPONENT = """\
    positions = np.arange(seq_len)[:, None]
    denominator = np.power(n, np.arange(d) / d)
    P[:, 0::2] = np.sin(positions / denominator[0::2])
    P[:, 1::2] = np.cos(positions / denominator[1::2])
"""
FLOAT32_NUMPY = """\
    positions = np.arange(seq_len, dtype=np.float32)[:, None]
    denominator = np.power(np.float32(n), np.arange(0, d, 2, dtype=np.float32) / np.float32(d))
    P = np.zeros((seq_len, d), dtype=np.float32)
    P[:, 0::2] = np.sin(positions / denominator)
    P[:, 1::2] = np.cos(positions / denominator)
"""
FLOAT32_TORCH = """\
    positions = torch.arange(seq_len, dtype=torch.float32)[:, None]
    denominator = torch.pow(float(n), torch.arange(0, d, 2, dtype=torch.float32) / d)
    P = torch.zeros(seq_len, d)
    P[:, 0::2] = torch.sin(positions / denominator)
    P[:, 1::2] = torch.cos(positions / denominator)
"""
POSITIONAL = variants(
    *PE,
    [
        (
            "positions-from-one",
            [(SIN, SIN.replace("(k /", "((k + 1) /")), (COS, COS.replace("(k /", "((k + 1) /"))],
            "holds position k + 1",
        ),
        (
            "cos-of-the-next-pair",
            [(COS, "P[k, 2 * i + 1] = np.cos(k / np.power(n, 2 * (i + 1) / d))")],
            "your denominator is n^(2/d), the pair's is n^(0/d)",
        ),
        ("exponent-column-index", [("", COLUMN_EXPONENT)], "your denominator is n^(1/d)"),
        ("sin-half-cos-half", [("", HALVES)], "in another order along axis 1"),
        ("transposed-square", [("    return P", "    return P.T")], "last two axes swapped"),
        (
            "cos-in-both-columns",
            [(SIN, SIN.replace("np.sin", "np.cos"))],
            "holds cos(k / 1) where sin(k / 1) is expected",
        ),
        ("float32-numpy", [("", FLOAT32_NUMPY)], None),
        ("float32-torch", [("", FLOAT32_TORCH)], None),
    ],
)

PATCH_PATTERN = '"b c (h s1) (w s2) -> b (h w) (s1 s2 c)"'
PATCH_LINEAR = "nn.Linear(patch_size * patch_size * in_channels, emb_size)"
UNFOLD = """\
        self.projection = nn.Sequential(
            nn.Unfold(kernel_size=patch_size, stride=patch_size),
            Rearrange("b k n -> b n k"),
            nn.Linear(in_channels * patch_size**2, emb_size),
        )
"""
PATCHES = variants(
    "02_patch_embedding",
    "PatchEmbedding",
    "test_PatchEmbedding",
    [
        (
            "strided-pixels",
            [(PATCH_PATTERN, '"b c (s1 h) (s2 w) -> b (h w) (s1 s2 c)"')],
            "changing input position 0 changes your output at position 1",
        ),
        (
            "emb-size-hard-coded",
            [(PATCH_LINEAR, PATCH_LINEAR.replace("emb_size)", "768)"))],
            "ignores `emb_size`",
        ),
        (
            "in-channels-hard-coded",
            [(PATCH_LINEAR, PATCH_LINEAR.replace("in_channels", "3"))],
            "ignores `in_channels`",
        ),
        ("unfold", [("", UNFOLD)], None),
    ],
)

POSITIONS = ("03_class_token_and_positions", "position_embeddings")
LEARNED = "nn.Parameter(torch.randn(num_positions, emb_size))"
TABLE = "table = torch.tensor(getPositionEncoding(num_positions, emb_size), dtype=torch.float32)"
TORCH_TABLE = """\
position = torch.arange(num_positions, dtype=torch.float32)[:, None]
        denominator = torch.pow(10000.0, torch.arange(0, emb_size, 2, dtype=torch.float32) / emb_size)
        table = torch.zeros(num_positions, emb_size)
        table[:, 0::2] = torch.sin(position / denominator)
        table[:, 1::2] = torch.cos(position / denominator)"""
EXP_LOG_TABLE = """\
position = torch.arange(num_positions).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, emb_size, 2) * (-torch.log(torch.tensor(10000.0)) / emb_size))
        table = torch.zeros(num_positions, emb_size)
        table[:, 0::2] = torch.sin(position * div_term)
        table[:, 1::2] = torch.cos(position * div_term)"""
PREALLOCATED = """\
    out = x.new_empty(x.shape[0], x.shape[1] + 1, x.shape[2])
    out[:, :1] = cls_token
    out[:, 1:] = x
    return out
"""
TOKENS = (
    variants(
        *POSITIONS,
        "test_learned_positions",
        [
            (
                "num-positions-hard-coded",
                [(LEARNED, LEARNED.replace("num_positions,", "197,"))],
                "ignores `num_positions`",
            ),
            ("emb-size-hard-coded", [(LEARNED, LEARNED.replace("emb_size)", "768)"))], "ignores `emb_size`"),
        ],
    )
    + variants(
        *POSITIONS,
        "test_sinusoidal_positions",
        [
            (
                "table-from-position-one",
                [(TABLE, TABLE.replace("(num_positions, emb_size)", "(num_positions + 1, emb_size)[1:]"))],
                "holds position k + 1",
            ),
            (
                "table-arguments-swapped",
                [(TABLE, TABLE.replace("(num_positions, emb_size)", "(emb_size, num_positions)"))],
                "rows and columns swapped",
            ),
            ("torch-float32-table", [(TABLE, TORCH_TABLE)], None),
            ("exp-log-float32-table", [(TABLE, EXP_LOG_TABLE)], None),
        ],
    )
    + variants(
        "03_class_token_and_positions",
        "prepend_cls_token",
        "test_prepend_cls_token",
        [
            ("preallocated-copy", [("", PREALLOCATED)], None),
            (
                "repeat-method",
                [("", "    return torch.cat((cls_token.repeat(x.shape[0], 1, 1), x), dim=1)")],
                None,
            ),
        ],
    )
)

FAST = ("10_fast_attention", "chunked_attention", "test_chunked_attention")
FAST_MASK = ("10_fast_attention", "chunked_attention", "test_chunked_attention_mask")
BLOCK_SCORES = 'scores = torch.einsum("bhqd, bhkd -> bhqk", q_block, k) * scale'
FILL = 'scores = scores.masked_fill(~rows, float("-inf"))'
WEIGH = 'blocks.append(torch.einsum("bhqk, bhkd -> bhqd", scores.softmax(dim=-1), v))'
MANUAL_SOFTMAX = """\
exp = (scores - scores.amax(dim=-1, keepdim=True)).exp()
        blocks.append(exp / exp.sum(dim=-1, keepdim=True) @ v)"""
FAST_VARIANTS = variants(
    *FAST,
    [
        (
            "scale-sqrt-heads",
            [(BLOCK_SCORES, BLOCK_SCORES.replace("* scale", "/ q.shape[1] ** 0.5"))],
            "your attention scores are divided by 1.732 where sqrt(head_dim) = 2.828 is expected",
        ),
        (
            "normalised-over-the-whole-block",
            [(WEIGH, "exp = scores.exp()\n        blocks.append(exp / exp.sum() @ v)")],
            "attention rows must sum to 1 over the keys",
        ),
        (
            "softmax-over-the-batch",
            [(WEIGH, WEIGH.replace("dim=-1", "dim=0"))],
            "attention rows must sum to 1 over the keys",
        ),
        ("manual-softmax", [(WEIGH, MANUAL_SOFTMAX)], None),
    ],
) + variants(
    *FAST_MASK,
    [
        (
            "mask-filled-with-zero",
            [(FILL, "scores = scores.masked_fill(~rows, 0.0)")],
            "your attention gives weight",
        ),
        (
            "mask-filled-with-minus-one",
            [(FILL, "scores = scores.masked_fill(~rows, -1.0)")],
            "to a key the mask forbids",
        ),
        ("manual-softmax-masked", [(WEIGH, MANUAL_SOFTMAX)], None),
    ],
)

VARIANTS: list[Variant] = ADDITIVE_VARIANTS + POSITIONAL + PATCHES + TOKENS + FAST_VARIANTS
