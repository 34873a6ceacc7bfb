"""Variants of notebook 10, fast attention: ``chunked_attention`` (see tests/mutations.py)."""

from tests.mutations import Variant, variants

NOTEBOOK, CELL = "10_fast_attention", "chunked_attention"
PLAIN = (NOTEBOOK, CELL, "test_chunked_attention")
MASKED = (NOTEBOOK, CELL, "test_chunked_attention_mask")

LOOP = "for start in range(0, q.shape[-2], chunk_size):"
SCORES = 'scores = torch.einsum("bhqd, bhkd -> bhqk", q_block, k) * scale'
ROWS = "rows = mask[..., start : start + chunk_size, :]"
FILL = 'scores = scores.masked_fill(~rows, float("-inf"))'
APPEND = 'blocks.append(torch.einsum("bhqk, bhkd -> bhqd", scores.softmax(dim=-1), v))'
CAT = "return torch.cat(blocks, dim=-2)"

# Correct code written differently.
SPLIT_MATMUL = """\
    for start, q_block in zip(range(0, q.shape[-2], chunk_size), q.split(chunk_size, dim=-2), strict=True):
        scores = q_block @ k.transpose(-2, -1) * scale
        if mask is not None:
            rows = mask[..., start : start + q_block.shape[-2], :]
            scores = scores.masked_fill(~rows, torch.finfo(scores.dtype).min)
        blocks.append(torch.softmax(scores, dim=-1) @ v)
    return torch.cat(blocks, dim=2)
"""
WHILE_LOOP = """\
    n_q, start = q.shape[-2], 0
    while start < n_q:
        stop = min(start + chunk_size, n_q)
        scores = torch.matmul(q[:, :, start:stop], k.transpose(2, 3)) / q.shape[-1] ** 0.5
        if mask is not None:
            scores = torch.where(mask[:, :, start:stop], scores, float("-inf"))
        blocks.append(torch.matmul(F.softmax(scores, dim=3), v))
        start = stop
    return torch.cat(blocks, dim=2)
"""
MASK_SPLIT = """\
    masks = [None] * len(q.split(chunk_size, dim=-2)) if mask is None else mask.split(chunk_size, dim=-2)
    for q_block, rows in zip(q.split(chunk_size, dim=-2), masks, strict=True):
        scores = torch.einsum("b h i d, b h j d -> b h i j", q_block * scale, k)
        if rows is not None:
            scores = scores.masked_fill(rows.logical_not(), -torch.inf)
        blocks.append(torch.einsum("b h i j, b h j d -> b h i d", scores.softmax(-1), v))
    return torch.cat(blocks, -2)
"""
ONLINE_SOFTMAX = """\
    for start in range(0, q.shape[-2], chunk_size):
        q_block = q[..., start : start + chunk_size, :] * scale
        top = torch.full(q_block.shape[:-1] + (1,), -torch.inf, dtype=q.dtype, device=q.device)
        total = torch.zeros_like(top)
        out = torch.zeros_like(q_block)
        for key_start in range(0, k.shape[-2], chunk_size):
            scores = q_block @ k[..., key_start : key_start + chunk_size, :].transpose(-2, -1)
            if mask is not None:
                rows = mask[..., start : start + chunk_size, key_start : key_start + chunk_size]
                scores = scores.masked_fill(~rows, torch.finfo(q.dtype).min)
            new_top = torch.maximum(top, scores.amax(dim=-1, keepdim=True))
            exp = (scores - new_top).exp()
            shrink = (top - new_top).exp()
            total = total * shrink + exp.sum(dim=-1, keepdim=True)
            out = out * shrink + exp @ v[..., key_start : key_start + chunk_size, :]
            top = new_top
        blocks.append(out / total)
    return torch.cat(blocks, dim=-2)
"""
CORRECT = [
    ("split-and-matmul-finfo-min", [("", SPLIT_MATMUL)], None),
    ("while-loop-where", [("", WHILE_LOOP)], None),
    ("mask-split-scaled-queries", [("", MASK_SPLIT)], None),
    ("online-softmax-over-key-blocks", [("", ONLINE_SOFTMAX)], None),
]

# Known mistakes.
NOT_CHUNKED = """\
    scores = torch.einsum("bhqd, bhkd -> bhqk", q, k) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhqk, bhkd -> bhqd", scores.softmax(dim=-1), v)
"""
TORCH_CHUNK = """\
    start = 0
    for q_block in q.chunk(chunk_size, dim=-2):
        scores = q_block @ k.transpose(-2, -1) * scale
        if mask is not None:
            scores = scores.masked_fill(~mask[..., start : start + q_block.shape[-2], :], float("-inf"))
        blocks.append(scores.softmax(dim=-1) @ v)
        start += q_block.shape[-2]
    return torch.cat(blocks, dim=-2)
"""
KEY_BLOCKS = """\
    out = torch.zeros_like(q)
    for start in range(0, k.shape[-2], chunk_size):
        scores = q @ k[..., start : start + chunk_size, :].transpose(-2, -1) * scale
        if mask is not None:
            scores = scores.masked_fill(~mask[..., start : start + chunk_size], float("-inf"))
        out = out + scores.softmax(dim=-1) @ v[..., start : start + chunk_size, :]
    return out
"""
SDPA_PER_BLOCK = """\
    for start in range(0, q.shape[-2], chunk_size):
        rows = None if mask is None else mask[..., start : start + chunk_size, :]
        q_block = q[..., start : start + chunk_size, :]
        blocks.append(F.scaled_dot_product_attention(q_block, k, v, attn_mask=rows))
    return torch.cat(blocks, dim=-2)
"""

VARIANTS: list[Variant] = variants(
    *PLAIN,
    [
        (
            "last-block-dropped",
            [(LOOP, "for start in range(0, q.shape[-2] - chunk_size + 1, chunk_size):")],
            "the last partial block dropped",
        ),
        (
            "last-block-dropped-integer-division",
            [(LOOP, "for start in range(0, q.shape[-2] // chunk_size * chunk_size, chunk_size):")],
            "the last partial block dropped",
        ),
        (
            "cat-on-the-last-axis",
            [(CAT, "return torch.cat(blocks, dim=-1)")],
            "concatenated along the wrong axis",
        ),
        ("cat-on-the-batch-axis", [(CAT, "return torch.cat(blocks)")], "concatenated along the wrong axis"),
        ("blocks-stacked", [(CAT, "return torch.stack(blocks)")], "concatenated along the wrong axis"),
        ("return-inside-loop", [(APPEND, f"{APPEND}\n        {CAT}")], "the rows of one block only"),
        ("keys-in-blocks", [("", KEY_BLOCKS)], "softmax over a block of keys only"),
        (
            "keys-sliced-with-queries",
            [
                (SCORES, SCORES.replace(", k)", ", k[..., start : start + chunk_size, :])")),
                (APPEND, APPEND.replace(", v))", ", v[..., start : start + chunk_size, :]))")),
            ],
            "keys and values sliced with the queries",
        ),
        ("scale-missing", [(SCORES, SCORES.replace(" * scale", ""))], "scores not scaled"),
        (
            "scale-sqrt-n-keys",
            [(SCORES, SCORES.replace(" * scale", " / k.shape[-2] ** 0.5"))],
            "the square root of the wrong size",
        ),
        (
            "scale-sqrt-chunk-size",
            [(SCORES, SCORES.replace(" * scale", " / chunk_size**0.5"))],
            "the square root of the wrong size",
        ),
        ("divided-by-scale", [(SCORES, SCORES.replace(" * scale", " / scale"))], "multiplied by sqrt(d)"),
        (
            "softmax-over-queries",
            [(APPEND, APPEND.replace("dim=-1", "dim=-2"))],
            "softmax over the wrong axis",
        ),
        ("softmax-over-heads", [(APPEND, APPEND.replace("dim=-1", "dim=1"))], "softmax over the wrong axis"),
        ("not-chunked", [("", NOT_CHUNKED)], "not processed in blocks of chunk_size"),
        ("torch-chunk-counts-blocks", [("", TORCH_CHUNK)], "not processed in blocks of chunk_size"),
        ("sdpa-per-block", [("", SDPA_PER_BLOCK)], "uses `scaled_dot_product_attention`"),
        *CORRECT,
    ],
) + variants(
    *MASKED,
    [
        (
            "mask-first-rows",
            [(ROWS, "rows = mask[..., : q_block.shape[-2], :]")],
            "the queries' blocks paired with the wrong mask rows",
        ),
        (
            "mask-not-sliced",
            [(FILL, 'scores = scores.masked_fill(~mask, float("-inf"))')],
            "Is the mask sliced",
        ),
        ("mask-ignored", [(FILL, "pass")], "mask ignored"),
        ("mask-inverted", [(FILL, 'scores = scores.masked_fill(rows, float("-inf"))')], "mask inverted"),
        (
            "mask-inverted-finfo-min",
            [(FILL, "scores = scores.masked_fill(rows, torch.finfo(scores.dtype).min)")],
            "mask inverted",
        ),
        (
            "mask-after-softmax",
            [
                (FILL, "pass"),
                (APPEND, APPEND.replace("scores.softmax(dim=-1)", "scores.softmax(dim=-1) * rows")),
            ],
            "mask applied after the softmax",
        ),
        ("keys-in-blocks-masked", [("", KEY_BLOCKS)], "softmax over a block of keys only"),
        *((f"{name}-masked", edits, expect) for name, edits, expect in CORRECT),
    ],
)
