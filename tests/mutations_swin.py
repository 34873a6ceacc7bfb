"""Variants of notebook 11, the Swin Transformer's parts (see tests/mutations.py)."""

from tests.mutations import Variant, variants

NB = "11_swin_transformer"

PARTITION = 'return rearrange(x, "b (h m1) (w m2) c -> (b h w) m1 m2 c", m1=M, m2=M)'
REVERSE = 'return rearrange(windows, "(b h w) m1 m2 c -> b (h m1) (w m2) c", h=H // M, w=W // M)'
VIEW_PARTITION = """\
b, H, W, c = x.shape
    x = x.view(b, H // M, M, W // M, M, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, M, M, c)"""
VIEW_REVERSE = """\
c = windows.shape[-1]
    x = windows.view(-1, H // M, W // M, M, M, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, c)"""
UNFLATTEN_PARTITION = """\
x = x.unflatten(1, (-1, M)).unflatten(3, (-1, M))  # (b, h, m1, w, m2, c)
    return x.transpose(2, 3).flatten(0, 2)"""
UNFLATTEN_REVERSE = """\
x = windows.unflatten(0, (-1, H // M, W // M)).transpose(2, 3)  # (b, h, m1, w, m2, c)
    return x.flatten(3, 4).flatten(1, 2)"""
WINDOWS = variants(
    NB,
    "window_partition",
    "test_window_partition",
    [
        (
            "windows-column-major",
            [("-> (b h w) m1 m2 c", "-> (b w h) m1 m2 c")],
            "windows numbered column-major",
        ),
        (
            "batch-after-windows",
            [("-> (b h w) m1 m2 c", "-> (h w b) m1 m2 c")],
            "the batch axis after the windows",
        ),
        (
            "reshape-without-permute",
            [(PARTITION, "return x.reshape(-1, M, M, x.shape[-1])")],
            "a reshape without the permute",
        ),
        (
            "reverse-column-major",
            [('"(b h w) m1 m2 c -> b (h m1) (w m2) c"', '"(b w h) m1 m2 c -> b (h m1) (w m2) c"')],
            "windows read column-major",
        ),
        (
            "reverse-height-width-swapped",
            [("h=H // M, w=W // M", "h=W // M, w=H // M")],
            "H and W are swapped",
        ),
        ("view-permute", [(PARTITION, VIEW_PARTITION), (REVERSE, VIEW_REVERSE)], None),
        ("unflatten", [(PARTITION, UNFLATTEN_PARTITION), (REVERSE, UNFLATTEN_REVERSE)], None),
    ],
)

INDEX = """\
    dr = rows[:, None] - rows[None, :] + (M - 1)  # (M², M²): r_i - r_j, from 0 to 2M - 2
    dc = cols[:, None] - cols[None, :] + (M - 1)
    return dr * (2 * M - 1) + dc"""
MESHGRID_INDEX = """\
    coords = torch.stack(torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (M - 1)  # (N, N, 2)
    return relative @ torch.tensor([2 * M - 1, 1])"""
FORWARD_START = """\
        q, k, v = (
            rearrange(f(x), "B n (h d) -> B h n d", h=self.num_heads)
            for f in (self.queries, self.keys, self.values)
        )"""
FORWARD_END = 'return self.projection(rearrange(out, "B h n d -> B n (h d)"))'
TIMM_FORWARD = """\
        n, N, c = x.shape
        q, k, v = (
            f(x).view(n, N, self.num_heads, -1).transpose(1, 2)
            for f in (self.queries, self.keys, self.values)
        )
        attention = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attention = attention + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attention = attention.view(-1, windows, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attention = attention.view(-1, self.num_heads, N, N)
        out = attention.softmax(dim=-1) @ v
        return self.projection(out.transpose(1, 2).reshape(n, N, c))
        q = k = v = x  # the rest of the solution, left unreachable below"""
BIAS = 'scores = scores + rearrange(bias, "q k h -> h q k")'
MASKED = """\
            scores = rearrange(scores, "(b w) h q k -> b w h q k", w=mask.shape[0]) + mask[None, :, None]
            scores = rearrange(scores, "b w h q k -> (b w) h q k")"""
ATTENTION = variants(
    NB,
    "WindowAttention",
    "test_WindowAttention",
    [
        (
            "index-not-shifted",
            [
                ("rows[:, None] - rows[None, :] + (M - 1)", "rows[:, None] - rows[None, :]"),
                ("cols[:, None] - cols[None, :] + (M - 1)", "cols[:, None] - cols[None, :]"),
            ],
            "not shifted by M - 1",
        ),
        ("index-stride-m", [("dr * (2 * M - 1) + dc", "dr * M + dc")], "multiplied by M instead of 2M - 1"),
        (
            "index-stride-2m",
            [("dr * (2 * M - 1) + dc", "dr * (2 * M) + dc")],
            "multiplied by 2M instead of 2M - 1",
        ),
        ("index-offsets-swapped", [("dr * (2 * M - 1) + dc", "dc * (2 * M - 1) + dr")], "offsets swapped"),
        ("bias-missing", [(BIAS, "pass")], "relative position bias missing"),
        (
            "bias-without-permute",
            [('rearrange(bias, "q k h -> h q k")', "bias.reshape(self.num_heads, *bias.shape[:2])")],
            "without the permute",
        ),
        ("scores-not-scaled", [(" * self.scale  #", "  #")], "scores not scaled"),
        ("mask-ignored", [(MASKED, "            pass")], "mask ignored"),
        (
            "mask-repeat-interleave",
            [
                (
                    MASKED,
                    "            scores = scores + mask.repeat_interleave(len(x) // len(mask), 0)[:, None]",
                )
            ],
            "paired with the wrong windows",
        ),
        ("meshgrid-index", [(INDEX, MESHGRID_INDEX)], None),
        ("timm-style-forward", [(FORWARD_START, TIMM_FORWARD)], None),
        (
            "mask-repeat",
            [(MASKED, "            scores = scores + mask.repeat(len(x) // len(mask), 1, 1)[:, None]")],
            None,
        ),
    ],
)

REGIONS = """\
    for rows in (slice(0, -M), slice(-M, -s), slice(-s, None)):
        for cols in (slice(0, -M), slice(-M, -s), slice(-s, None)):"""
THREE_SLICES = "(slice(0, -M), slice(-M, -s), slice(-s, None))"
FILL = 'return torch.zeros(same.shape).masked_fill(~same, float("-inf"))'
ORIGINAL_WINDOWS = """\
    region = 0
    numbers = torch.arange((H // M) * (W // M), dtype=torch.float32).reshape(H // M, W // M)
    numbers = numbers.repeat_interleave(M, 0).repeat_interleave(M, 1)  # each token's window before the roll
    labels = torch.roll(numbers, shifts=(-s, -s), dims=(0, 1))[None, :, :, None]
    for rows in ():
        for cols in ():"""
ARITHMETIC_LABELS = """\
    region = 0
    rows = torch.arange(H)[:, None] >= H - s  # the rows and columns the roll wrapped around
    cols = torch.arange(W)[None, :] >= W - s
    labels = (2 * rows + cols).float()[None, :, :, None]
    for rows in ():
        for cols in ():"""
MASK = variants(
    NB,
    "shifted_window_mask",
    "test_shifted_window_mask",
    [
        ("mask-inverted", [("masked_fill(~same,", "masked_fill(same,")], "mask inverted"),
        ("no-regions", [(FILL, "return torch.zeros(same.shape)")], "no region separated"),
        (
            "regions-from-the-start",
            [(REGIONS, REGIONS.replace(THREE_SLICES, "(slice(0, s), slice(s, None))"))],
            "regions cut s from the start",
        ),
        (
            "original-windows-kept-apart",
            [("    region = 0\n" + REGIONS, ORIGINAL_WINDOWS)],
            "tokens from different original windows kept apart",
        ),
        ("minus-one", [('float("-inf"))', "-1.0)")], "large negative number"),
        ("boolean", [(FILL, "return same")], "boolean mask"),
        ("minus-hundred", [('float("-inf"))', "-100.0)")], None),
        ("where", [(FILL, 'return torch.where(same, 0.0, float("-inf"))')], None),
        (
            "two-regions-per-axis",
            [(REGIONS, REGIONS.replace(THREE_SLICES, "(slice(0, -s), slice(-s, None))"))],
            None,
        ),
        ("labels-by-arithmetic", [("    region = 0\n" + REGIONS, ARITHMETIC_LABELS)], None),
    ],
)

PAPER_SLICES = (
    "x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)"
)
MERGE = 'x = rearrange(x, "b (h dh) (w dw) c -> b h w (dw dh c)", dh=2, dw=2)'
MERGING = variants(
    NB,
    "PatchMerging",
    "test_PatchMerging",
    [
        ("row-major-neighbours", [("(dw dh c)", "(dh dw c)")], "(0, 0), (0, 1), (1, 0), (1, 1)"),
        ("channels-first", [("(dw dh c)", "(c dw dh)")], "channels first"),
        (
            "reshape-without-permute",
            [(MERGE, "x = x.reshape(b, H // 2, W // 2, 4 * c)")],
            "reshape without the permute",
        ),
        ("norm-skipped", [("self.reduction(self.norm(x))", "self.reduction(x)")], "LayerNorm skipped"),
        (
            "paper-slices",
            [(MERGE, PAPER_SLICES)],
            None,
        ),
        (
            "timm-reshape-permute",
            [(MERGE, "x = x.reshape(b, H // 2, 2, W // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)")],
            None,
        ),
    ],
)

ROLL = "x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))"
ROLL_BACK = "x = torch.roll(x, shifts=(s, s), dims=(1, 2))"
MASK_LINE = "mask = shifted_window_mask(H, W, M, s).to(x) if s > 0 else None"
INVERTED_MASK = (
    'mask = torch.where(shifted_window_mask(H, W, M, s) == 0, float("-inf"), 0.0).to(x) if s else None'
)
RESIDUALS = "x = shortcut + x\n        return x + self.mlp(self.norm2(x))"
PARTITIONED = 'windows = rearrange(window_partition(x, M), "B m1 m2 c -> B (m1 m2) c")'
REVERSED = 'x = window_reverse(rearrange(windows, "B (m1 m2) c -> B m1 m2 c", m1=M), M, H, W)'
BLOCK = variants(
    NB,
    "SwinBlock",
    "test_SwinBlock",
    [
        ("roll-back-missing", [(ROLL_BACK, "pass")], "roll back missing"),
        ("rolled-back-the-wrong-way", [(ROLL_BACK, ROLL)], "rolled back the wrong way"),
        (
            "shifted-the-wrong-way",
            [
                (ROLL + "  # the shifted", ROLL_BACK + "  # the shifted"),
                (ROLL_BACK + "  # every", ROLL + "  # every"),
            ],
            "shifted the wrong way",
        ),
        ("mask-missing", [("self.attention(windows, mask=mask)", "self.attention(windows)")], "mask missing"),
        (
            "mask-inverted",
            [(MASK_LINE, INVERTED_MASK)],
            "mask inverted",
        ),
        (
            "shift-ignored",
            [("M, s = self.window_size, self.shift_size", "M, s = self.window_size, 0")],
            "no shift",
        ),
        (
            "attention-residual-missing",
            [("x = shortcut + x", "pass")],
            "residual is missing around the attention",
        ),
        (
            "post-norm",
            [
                ("        x = self.norm1(x)\n", ""),
                (RESIDUALS, "x = self.norm1(shortcut + x)\n        return self.norm2(x + self.mlp(x))"),
            ],
            "post-norm instead of pre-norm",
        ),
        ("roll-by-size-minus-shift", [(ROLL, "x = torch.roll(x, shifts=(H - s, W - s), dims=(1, 2))")], None),
        (
            "view-instead-of-rearrange",
            [
                (PARTITIONED, "windows = window_partition(x, M).view(-1, M * M, c)"),
                (REVERSED, "x = window_reverse(windows.view(-1, M, M, c), M, H, W)"),
            ],
            None,
        ),
    ],
)

VARIANTS: list[Variant] = WINDOWS + ATTENTION + MASK + MERGING + BLOCK
