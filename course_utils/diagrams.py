"""Diagrams of the architecture, drawn with matplotlib (no image files): the ViT pipeline, the pre-norm
encoder block, and multi-head attention with the shape of every tensor. Each returns a Figure whose
labels are text artists, so a test can read what it draws."""

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch, Rectangle

TENSOR = "#dbe7f5"
LAYER = "#fde3b8"
NORM = "#dcefd6"
ATTENTION = "#f5cfc9"
CLASS_TOKEN = "#c0392b"
POSITION = "#8e7cc3"


def _canvas(width: float, height: float, title: str) -> tuple[plt.Figure, plt.Axes]:
    """A blank figure whose data units are inches, so that boxes keep their proportions."""
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set(xlim=(0, width), ylim=(0, height), aspect="equal")
    ax.axis("off")
    ax.set_title(title, fontsize=12)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93)
    return fig, ax


def _box(ax, x, y, text, width=1.9, height=0.55, color=LAYER, fontsize=9) -> None:
    """A rounded box centred on (x, y) holding its label."""
    ax.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=color,
            edgecolor="black",
            linewidth=1,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end, label="", color="black", offset=(0.08, 0.0)) -> None:
    """An arrow from start to end, with an optional label beside its middle."""
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.2, "shrinkA": 0, "shrinkB": 0},
    )
    if label:
        x, y = (start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1]
        ax.text(x, y, label, fontsize=8, color=color, ha="left" if offset[0] >= 0 else "right", va="center")


def _path(ax, points, color="black") -> None:
    """A polyline through points whose last segment is an arrow."""
    xs, ys = zip(*points[:-1], strict=True)
    ax.plot(xs, ys, color=color, lw=1.2)
    _arrow(ax, points[-2], points[-1], color=color)


def _add(ax, x, y, radius=0.2) -> None:
    """The residual addition: a circled plus."""
    ax.add_patch(Circle((x, y), radius, facecolor="white", edgecolor="black", linewidth=1.2))
    ax.text(x, y, "+", ha="center", va="center", fontsize=13)


def _grid(ax, x, y, columns, rows, size, colors, gap=0.0) -> None:
    """Squares of side size, columns x rows, from the lower-left corner (x, y), coloured in turn."""
    for i in range(columns * rows):
        column, row = i % columns, rows - 1 - i // columns
        corner = (x + column * (size + gap), y + row * (size + gap))
        ax.add_patch(
            Rectangle(corner, size, size, facecolor=colors[i % len(colors)], edgecolor="black", lw=0.8)
        )


def _stack(ax, x, y, width, height, count, color, label="") -> None:
    """count slabs (at most four drawn) centred on (x, y), offset like a deck of cards: one per head."""
    shown = min(count, 4)
    step = 0.12
    for i in reversed(range(shown)):
        corner = (x - width / 2 + i * step, y - height / 2 + i * step)
        ax.add_patch(Rectangle(corner, width, height, facecolor=color, edgecolor="black", lw=0.8))
    if label:
        ax.text(x, y, label, ha="center", va="center", fontsize=9)


def draw_encoder_block() -> plt.Figure:
    """The pre-norm encoder block, x + F(LN(x)) twice: LayerNorm -> MultiHeadAttention -> Dropout and
    LayerNorm -> FeedForwardBlock -> Dropout, each wrapped in a ResidualAdd whose identity path goes
    around it. Tokens keep their shape (b, n, e) from the input to the output."""
    fig, ax = _canvas(6.2, 9.0, "Encoder block (pre-norm): x + F(LayerNorm(x)), twice")
    main, side = 2.6, 4.6
    ax.text(main, 0.3, "x   (b, n, e)", ha="center", va="center", fontsize=10)
    for low, sublayer, height, color in (
        (0.55, "MultiHeadAttention", 0.6, ATTENTION),
        (4.35, "FeedForwardBlock\nLinear e→4e, GELU, Linear 4e→e", 0.75, LAYER),
    ):
        branch, norm, middle, drop, add = low + 0.35, low + 0.95, low + 1.85, low + 2.7, low + 3.35
        ax.add_patch(
            FancyBboxPatch(
                (0.35, low + 0.15),
                4.95,
                3.55,
                boxstyle="round,pad=0.02,rounding_size=0.15",
                facecolor="none",
                edgecolor="grey",
                linestyle="--",
            )
        )
        ax.text(0.5, low + 3.5, "ResidualAdd", fontsize=9, color="grey", va="center")
        _arrow(ax, (main, low), (main, norm - 0.275))
        _box(ax, main, norm, "LayerNorm", color=NORM)
        _arrow(ax, (main, norm + 0.275), (main, middle - height / 2))
        _box(ax, main, middle, sublayer, width=3.0, height=height, color=color)
        _arrow(ax, (main, middle + height / 2), (main, drop - 0.2))
        _box(ax, main, drop, "Dropout", height=0.4, color="white")
        _arrow(ax, (main, drop + 0.2), (main, add - 0.2))
        _add(ax, main, add)
        ax.plot([main, side, side], [branch, branch, add], color="black", lw=1.2)
        _arrow(ax, (side, add), (main + 0.2, add))
        ax.text(side + 0.1, (branch + add) / 2, "residual\n(identity)", fontsize=8, va="center")
    _arrow(ax, (main, 7.9 + 0.2), (main, 8.5))
    ax.text(main, 8.7, "out   (b, n, e)", ha="center", va="center", fontsize=10)
    return fig


def draw_vit_pipeline() -> plt.Figure:
    """The Vision Transformer from image to logits: cut into patches, project each with a Linear,
    prepend the class token and add the position embeddings, run depth encoder blocks, and classify
    from the class token with LayerNorm -> Linear."""
    fig, ax = _canvas(16.0, 3.6, "Vision Transformer: from an image to class scores")
    y = 1.9
    blues = [
        "#4a78b5",
        "#6f97cc",
        "#9cb9de",
        "#577f9e",
        "#86a6bf",
        "#b5c9d9",
        "#3f6a8a",
        "#7d9bb0",
        "#a9bed0",
    ]

    _grid(ax, 0.3, y - 0.75, 3, 3, 0.5, blues)
    ax.text(1.05, y - 0.85, "image\n(c, H, W)", ha="center", va="top", fontsize=9)
    _arrow(ax, (1.95, y), (2.45, y))

    _grid(ax, 2.55, y - 0.15, 9, 1, 0.3, blues, gap=0.04)
    ax.text(4.0, y - 0.5, "N = HW / P² patches\n(N, P²·c)", ha="center", va="top", fontsize=9)
    _arrow(ax, (5.6, y), (6.0, y))

    _box(ax, 6.9, y, "Linear\nP²·c → e", width=1.6, height=0.8)
    _arrow(ax, (7.7, y), (8.1, y))

    tokens = [CLASS_TOKEN, *["#f2b66d"] * 9]
    _grid(ax, 8.2, y - 0.15, 10, 1, 0.3, tokens, gap=0.04)
    _grid(ax, 8.2, y + 0.5, 10, 1, 0.3, [POSITION], gap=0.04)
    ax.text(9.9, y + 0.35, "+", ha="center", va="center", fontsize=11)
    ax.text(9.9, y + 0.95, "position embeddings (N+1, e)", ha="center", va="bottom", fontsize=9)
    ax.text(8.35, y - 0.3, "class\ntoken", ha="center", va="top", fontsize=8, color=CLASS_TOKEN)
    ax.text(9.9, y - 0.85, "class token prepended\n(N+1, e)", ha="center", va="top", fontsize=9)
    _arrow(ax, (11.65, y), (12.0, y))

    for shift in (0.2, 0.1):
        ax.add_patch(
            Rectangle((12.1 + shift, y - 0.5 + shift), 1.8, 1.0, facecolor=ATTENTION, edgecolor="black")
        )
    _box(ax, 13.0, y, "encoder block\n× depth", width=1.8, height=1.0, color=ATTENTION)
    ax.text(13.0, y - 0.7, "(N+1, e) → (N+1, e)", ha="center", va="top", fontsize=9)
    _arrow(ax, (14.1, y), (14.4, y))

    ax.add_patch(Rectangle((14.45, y - 0.15), 0.3, 0.3, facecolor=CLASS_TOKEN, edgecolor="black"))
    ax.text(14.6, y - 0.3, "class token\nx[:, 0]  (e,)", ha="center", va="top", fontsize=8)
    _arrow(ax, (14.8, y), (15.05, y))
    _box(ax, 15.45, y + 0.05, "head\nLayerNorm\n→ Linear", width=0.85, height=1.0, color=NORM, fontsize=8)
    ax.text(15.45, y - 0.55, "(n_classes,)", ha="center", va="top", fontsize=8)
    return fig


def draw_multi_head_attention(*, emb_size: int = 768, num_heads: int = 8, seq_len: int = 197) -> plt.Figure:
    """Multi-head self-attention with the shape of each tensor for these sizes: the three projections,
    the split into heads, one score matrix and softmax per head, the weighted sum of the values, the
    merge of the heads and the output projection.

    Args:
        emb_size: e, the width of a token; must be divisible by num_heads.
        num_heads: h, the number of heads; each works in d = e / h dimensions.
        seq_len: n, the number of tokens.
    """
    if emb_size % num_heads:
        raise ValueError(f"emb_size ({emb_size}) must be divisible by num_heads ({num_heads}).")
    e, h, n, d = emb_size, num_heads, seq_len, emb_size // num_heads
    fig, ax = _canvas(
        17.0, 6.6, f"Multi-head attention: e = {e}, h = {h} heads of d = e/h = {d}, n = {n} tokens"
    )
    rows = {"Q": 4.9, "K": 3.2, "V": 1.5}
    names = {"Q": "queries", "K": "keys", "V": "values"}

    _box(ax, 0.9, rows["K"], f"x\n(b, n, e)\n(b, {n}, {e})", width=1.4, height=1.0, color=TENSOR)
    for key, y in rows.items():
        _path(ax, [(1.6, rows["K"]), (1.8, rows["K"]), (1.8, y), (2.2, y)])
        _box(ax, 3.0, y, f"Linear {names[key]}\nW_{key}: e → e", width=1.6, height=0.7)
        _arrow(ax, (3.8, y), (4.3, y))
        _stack(ax, 5.3, y, 1.5, 0.75, h, TENSOR, f"{key}  (b, h, n, d)\n(b, {h}, {n}, {d})")
    ax.text(
        4.3,
        6.0,
        "split into heads: e = h·d,\neach head a slice of d features",
        ha="left",
        va="center",
        fontsize=9,
    )

    _path(ax, [(6.45, rows["Q"]), (6.9, rows["Q"]), (6.9, 4.3), (7.3, 4.3)])
    _path(ax, [(6.45, rows["K"]), (6.9, rows["K"]), (6.9, 3.8), (7.3, 3.8)])
    _box(ax, 8.3, 4.05, "scores per head\nQ Kᵀ / √d", width=2.0, height=0.8, color=ATTENTION)
    ax.text(8.3, 4.55, "one dot product per query-key pair", ha="center", va="bottom", fontsize=8)
    _arrow(ax, (9.3, 4.05), (9.75, 4.05))
    ax.text(9.52, 3.55, "(b, h, n, n)", ha="center", va="top", fontsize=8)

    _box(ax, 10.65, 4.05, "softmax over keys\n(the last axis)", width=1.8, height=0.8, color=ATTENTION)
    ax.text(10.65, 4.65, "mask: -inf where not allowed", ha="center", va="bottom", fontsize=8)
    _arrow(ax, (10.65, 3.65), (10.65, 3.1))
    _stack(ax, 10.65, 2.6, 1.0, 0.8, h, ATTENTION)
    _grid(ax, 10.25, 2.25, 4, 4, 0.16, ["#f5cfc9", "#e08a7e", "#c0392b", "#f9e3df"])
    ax.text(
        10.0,
        2.6,
        f"att: one n × n map per head\n(b, h, n, n) = (b, {h}, {n}, {n})",
        fontsize=8,
        ha="right",
        va="center",
    )

    _path(ax, [(6.45, rows["V"]), (10.0, rows["V"])])
    _arrow(ax, (10.65, 2.05), (10.65, 1.8))
    _box(ax, 10.65, rows["V"], "att · V", width=1.3, height=0.55, color=ATTENTION)
    ax.text(10.65, 1.15, "each query: a weighted mean of the values", ha="center", va="top", fontsize=8)
    _arrow(ax, (11.3, rows["V"]), (11.8, rows["V"]))
    _stack(ax, 12.75, rows["V"], 1.4, 0.75, h, TENSOR, f"(b, h, n, d)\n(b, {h}, {n}, {d})")
    _arrow(
        ax,
        (13.8, rows["V"]),
        (13.8, 2.45),
        "merge heads:\nconcatenate their d\nfeatures back to e",
        offset=(0.1, 0),
    )
    _box(ax, 13.8, 2.85, f"(b, n, e)\n(b, {n}, {e})", width=1.4, height=0.75, color=TENSOR)
    _arrow(ax, (13.8, 3.25), (13.8, 3.8))
    _box(ax, 13.8, 4.2, "Linear projection\ne → e", width=1.7, height=0.7)
    _arrow(ax, (14.65, 4.2), (15.2, 4.2))
    _box(ax, 16.05, 4.2, f"out\n(b, n, e)\n(b, {n}, {e})", width=1.5, height=1.0, color=TENSOR)
    return fig
