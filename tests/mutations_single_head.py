"""Variants of notebook 04's first two exercises: attention for one head (04.1) and the shapes inside
multi-head attention (04.2). See tests/mutations.py: a wrong variant's ``expect`` is a phrase of its
message (a known mistake's name, or a general diagnostic's sentence); ``None`` marks correct code."""

from tests.mutations import variants

NOTEBOOK = "04_multi_head_attention"
SCALE = " / q.shape[-1] ** 0.5"
SCORES = '"bqd, bkd -> bqk", q, k'
SOFTMAX = "weights = torch.softmax(scores, dim=-1)"
READOUT = 'return torch.einsum("bqk, bkv -> bqv", weights, v)'
MASKING = 'scores = scores.masked_fill(~mask, float("-inf"))'
WITH_MATMUL = """\
    scores = q @ k.transpose(-2, -1) * q.size(-1) ** -0.5
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1) @ v
"""
WITH_BMM = """\
    weights = torch.bmm(q, k.transpose(1, 2)).div(q.shape[-1] ** 0.5)
    if mask is not None:
        weights = weights.masked_fill(~mask, float("-inf"))
    return torch.bmm(weights.softmax(-1), v)
"""
CALLS_SDPA = """\
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
"""
TRACED = """\
    x = torch.zeros(b, n, emb_size)
    queries = rearrange(x, "b n (h d) -> b h n d", h=num_heads)
    energy = torch.einsum("bhqd, bhkd -> bhqk", queries, queries)
    att = energy.softmax(dim=-1)
    out_heads = att @ queries
    out = rearrange(out_heads, "b h n d -> b n (h d)")
    shapes = {"queries": queries, "energy": energy, "att": att, "out_heads": out_heads, "out": out}
    return {name: t.shape for name, t in shapes.items()}
"""

ONE_HEAD = variants(
    NOTEBOOK,
    "attention",
    "test_attention",
    [
        ("one-head-not-scaled", [(SCALE, "")], "scores not scaled"),
        (
            "one-head-scaled-after-softmax",
            [(SCALE, ""), (SOFTMAX, SOFTMAX + SCALE)],
            "scaled after the softmax",
        ),
        ("one-head-softmax-over-queries", [("dim=-1", "dim=-2")], "softmax over the wrong axis"),
        ("one-head-q-and-k-swapped", [(SCORES, '"bqd, bkd -> bqk", k, q')], "queries and keys swapped"),
        (
            "one-head-scaled-by-sqrt-2d",
            [(SCALE, " / (2 * q.shape[-1]) ** 0.5")],
            "your attention scores are divided by",
        ),
        ("one-head-not-normalised", [(SOFTMAX, "weights = scores.exp()")], "attention rows must sum to 1"),
        ("one-head-calls-sdpa", [("", CALLS_SDPA)], "uses `scaled_dot_product_attention`"),
        ("one-head-matmul", [("", WITH_MATMUL)], None),
        ("one-head-bmm", [("", WITH_BMM)], None),
        (
            "one-head-other-letters",
            [('"bqd, bkd -> bqk"', '"bid, bjd -> bij"'), ('"bqk, bkv -> bqv"', '"bij, bjv -> biv"')],
            None,
        ),
    ],
) + variants(
    NOTEBOOK,
    "attention",
    "test_attention_mask",
    [
        ("one-head-mask-inverted", [("masked_fill(~mask,", "masked_fill(mask,")], "mask inverted"),
        ("one-head-mask-ignored", [(MASKING, "pass")], "mask ignored"),
        (
            "one-head-mask-after-softmax",
            [(MASKING, "pass"), (READOUT, "weights = weights * mask\n    " + READOUT)],
            "mask applied after the softmax",
        ),
        ("one-head-mask-fill-zero", [('float("-inf")', "0.0")], "masked scores set to 0 instead of -inf"),
        ("one-head-mask-fill-minus-one", [('float("-inf")', "-1.0")], "to a key the mask forbids"),
        ("one-head-mask-finfo-min", [('float("-inf")', "torch.finfo(scores.dtype).min")], None),
    ],
)

SHAPES = variants(
    NOTEBOOK,
    "attention_shapes",
    "test_attention_shapes",
    [
        (
            "shapes-heads-and-head-dim-swapped",
            [('"queries": (b, num_heads, n, head_dim)', '"queries": (b, head_dim, n, num_heads)')],
            "heads and head_dim swapped",
        ),
        (
            "shapes-energy-without-heads",
            [('"energy": (b, num_heads, n, n)', '"energy": (b, n, n)')],
            "the heads axis missing",
        ),
        (
            "shapes-heads-not-merged",
            [('"out": (b, n, emb_size)', '"out": (b, n, num_heads, head_dim)')],
            "heads not merged",
        ),
        ("shapes-traced-with-tensors", [("", TRACED)], None),
        (
            "shapes-as-lists",
            [('"out": (b, n, emb_size)', '"out": [b, n, num_heads * head_dim]')],
            None,
        ),
    ],
)

VARIANTS = ONE_HEAD + SHAPES
