"""The architecture diagrams render and draw the labels they promise."""

import io

import matplotlib
import matplotlib.pyplot as plt
import pytest

from course_utils.diagrams import draw_encoder_block, draw_multi_head_attention, draw_vit_pipeline

matplotlib.use("Agg")


def drawn_text(fig: plt.Figure) -> str:
    """Render the figure (a failure to draw raises here) and return all its text, joined."""
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    texts = [t.get_text() for ax in fig.axes for t in (*ax.texts, ax.title)]
    plt.close(fig)
    return "\n".join(texts)


def test_encoder_block_is_pre_norm_with_two_residual_paths():
    text = drawn_text(draw_encoder_block())
    for label in (
        "LayerNorm",
        "MultiHeadAttention",
        "FeedForwardBlock",
        "ResidualAdd",
        "residual",
        "(b, n, e)",
    ):
        assert label in text, label
    assert text.count("LayerNorm") >= 2 and text.count("+") >= 2 and text.count("ResidualAdd") == 2
    lines = text.splitlines()
    assert lines.index("LayerNorm") < lines.index("MultiHeadAttention"), "the norm comes before the sublayer"


def test_vit_pipeline_names_each_stage():
    text = drawn_text(draw_vit_pipeline())
    for label in ("image", "patches", "Linear", "class token", "position embeddings", "× depth", "head"):
        assert label in text, label


@pytest.mark.parametrize(("emb_size", "num_heads", "seq_len"), [(768, 8, 197), (64, 8, 10), (48, 6, 5)])
def test_multi_head_attention_shows_the_shapes_for_its_sizes(emb_size, num_heads, seq_len):
    text = drawn_text(draw_multi_head_attention(emb_size=emb_size, num_heads=num_heads, seq_len=seq_len))
    head_dim = emb_size // num_heads
    for label in (
        "Linear queries",
        "Linear keys",
        "Linear values",
        "split into heads",
        "softmax over keys",
        "merge heads",
        "Linear projection",
        f"(b, {num_heads}, {seq_len}, {head_dim})",
        f"(b, {num_heads}, {seq_len}, {seq_len})",
        f"(b, {seq_len}, {emb_size})",
    ):
        assert label in text, label


def test_multi_head_attention_refuses_sizes_that_do_not_split():
    with pytest.raises(ValueError, match="divisible"):
        draw_multi_head_attention(emb_size=10, num_heads=3)
