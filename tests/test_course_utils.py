"""Unit tests of course_utils: feedback, references, checks on edge cases, plots, data, devices."""

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from autograder.colab import install_cell_id
from course_utils import check_devices, reference
from course_utils.checks import (
    check_multi_head_attention,
    check_parameter_count,
    check_patch_embedding,
    check_position_encoding,
)
from course_utils.data import sample_image
from course_utils.feedback import Mistake, as_tensor, check, expect_close, forbid_calls
from course_utils.judge import subject
from course_utils.plots import (
    plot_attention,
    plot_functions,
    plot_gradient_norms,
    plot_position_encoding,
    show_patches,
)
from tests.notebook_kernel import ROOT, read

matplotlib.use("Agg")


def solution_namespace(name: str) -> dict:
    """The solution notebook's imports and solution cells, executed: the reference answers."""
    namespace: dict = {}
    nb = read(ROOT / "solutions" / name / f"{name}.ipynb")
    code = [c for c in nb.cells if c.cell_type == "code" and c.id != install_cell_id(name)]
    for cell in [code[0], *(c for c in code if c.metadata.get("nbgrader", {}).get("solution"))]:
        exec(compile(cell.source, name, "exec"), namespace)
    return namespace


def test_a_call_explains_an_empty_blank_and_names_other_errors():
    def blank():
        raise NotImplementedError

    with pytest.raises(AssertionError, match="the blank is not filled in yet"):
        subject(blank, "f").call(label="f()")
    with pytest.raises(AssertionError, match=r"f\(\) raised ZeroDivisionError"):
        subject(lambda: 1 / 0, "f").call(label="f()")


def test_a_call_silences_warnings(recwarn):
    import warnings

    subject(lambda: warnings.warn("noisy", stacklevel=1), "f").call(label="f()")
    assert not recwarn.list


def test_expect_close_reports_the_first_wrong_element():
    expected = torch.zeros(2, 3)
    got = expected.clone()
    got[1, 2] = 0.5
    with pytest.raises(
        AssertionError, match=r"1 of 6 values differ .* first at \[1, 2\]: expected 0, got 0\.5"
    ):
        expect_close(got, expected, "thing")


def test_expect_close_names_a_known_mistake_and_reports_shapes():
    expected = torch.arange(6.0).reshape(2, 3)
    mistake = Mistake("flipped", "do not flip", lambda: expected.flip(-1))
    with pytest.raises(AssertionError, match="known mistake: flipped.\nHint: do not flip"):
        expect_close(expected.flip(-1), expected, "thing", [mistake])
    with pytest.raises(AssertionError, match=r"expected shape \(2, 3\), got \(3, 2\)"):
        expect_close(expected.T, expected, "thing")


def test_as_tensor_explains_a_missing_return():
    with pytest.raises(AssertionError, match="returned None: is a `return` missing"):
        as_tensor(None, "f()")
    with pytest.raises(AssertionError, match="returned a str"):
        as_tensor("table", "f()")


def test_forbid_calls_finds_a_shortcut_in_the_source():
    def shortcut(x):
        return F.layer_norm(x, x.shape[-1:])

    with pytest.raises(AssertionError, match="uses `layer_norm`"):
        forbid_calls(shortcut, ["layer_norm"], "LayerNorm")

    def by_hand(x):
        # the same as F.layer_norm, written out
        return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)

    forbid_calls(by_hand, ["layer_norm"], "LayerNorm")


def test_sinusoidal_table_matches_the_formula():
    seq_len, d, n = 7, 6, 100.0
    table = reference.sinusoidal_table(seq_len, d, n)
    k, i = 5, 2
    assert table.shape == (seq_len, d)
    assert np.isclose(table[k, 2 * i], np.sin(k / n ** (2 * i / d)))
    assert np.isclose(table[k, 2 * i + 1], np.cos(k / n ** (2 * i / d)))


def test_conv_patch_embedding_equals_a_linear_map_of_each_patch():
    torch.manual_seed(0)
    x, linear = torch.randn(2, 3, 8, 12), nn.Linear(4 * 4 * 3, 5)
    patches = rearrange(x, "b c (h s1) (w s2) -> b (h w) (s1 s2 c)", s1=4, s2=4)
    got = reference.conv_patch_embedding(x, linear, 4, "s1 s2 c")
    torch.testing.assert_close(got, linear(patches))


@pytest.mark.parametrize("mask", [None, "causal", "padding"])
def test_sdpa_reference_equals_nn_multihead_attention(mask):
    from course_utils.checks.parts import make_mask

    torch.manual_seed(0)
    linears = [nn.Linear(16, 16) for _ in range(4)]
    weights = reference.AttentionWeights(*((lin.weight, lin.bias) for lin in linears))
    x, m = torch.randn(3, 5, 16), make_mask(mask, 3, 5)
    torch_mha = reference.torch_multihead_attention(weights, num_heads=4)
    blocked = None if m is None else ~m.expand(3, 4, 5, 5).flatten(0, 1)
    expected = torch_mha(x, x, x, attn_mask=blocked, need_weights=False)[0]
    torch.testing.assert_close(reference.sdpa_attention(x, weights, 4, m), expected)


def test_fused_qkv_layouts_read_back_the_same_projections():
    torch.manual_seed(0)
    q, k, v = (torch.randn(8, 8) for _ in range(3))
    module = nn.Module()
    module.num_heads, module.projection, module.qkv = 2, nn.Linear(8, 8), nn.Linear(8, 24)
    with torch.no_grad():
        module.qkv.weight.copy_(torch.cat([q, k, v]))  # timm's (qkv h d) layout
    first = reference.attention_weights_of(module)[0]
    for got, expected in zip((first.q[0], first.k[0], first.v[0]), (q, k, v), strict=True):
        torch.testing.assert_close(got, expected)


def test_vit_parameter_count_matches_the_published_sizes():
    assert reference.vit_parameter_count(16, 768, 12, 12, 3072) == 86_567_656
    assert reference.vit_parameter_count(16, 1024, 24, 16, 4096) == 304_326_632
    assert reference.vit_parameter_count(14, 1280, 32, 16, 5120) == 632_045_800


def test_parameter_count_check_names_what_is_missing():
    with pytest.raises(AssertionError, match="the classification head"):
        check_parameter_count(lambda **a: reference.vit_parameter_count(
            a["patch_size"], a["emb_size"], a["depth"], 4, a["mlp_size"], a["img_size"],
            a["in_channels"], a["n_classes"]) - (a["emb_size"] + 1) * a["n_classes"])  # fmt: skip


def test_position_check_rejects_transposed_tables():
    def transposed(seq_len, d, n=10000):
        angles = np.arange(seq_len)[:, None] / n ** (np.arange(0, d, 2) / d)
        return np.stack([np.sin(angles), np.cos(angles)], -1).reshape(seq_len, d).T

    with pytest.raises(AssertionError, match="rows and columns are swapped"):
        check_position_encoding(transposed, cases=[(6, 4, 100)])


def test_patch_check_explains_a_wrong_number_of_tokens():
    class Pooled(nn.Module):
        def __init__(self, in_channels, patch_size, emb_size, img_size):
            super().__init__()
            self.linear = nn.Linear(in_channels, emb_size)

        def forward(self, x):
            return self.linear(x.mean(dim=(2, 3)))[:, None]

    with pytest.raises(AssertionError, match=r"expected shape \(2, 196, 768\), got \(2, 1, 768\)"):
        check_patch_embedding(Pooled)


def test_attention_check_asks_for_the_skeleton_layers():
    class Bare(nn.Module):
        def __init__(self, emb_size, num_heads, dropout):
            super().__init__()

        def forward(self, x, mask=None):
            return x

    with pytest.raises(AssertionError, match="Keep the skeleton's layers"):
        check_multi_head_attention(Bare)


def test_checks_run_on_the_cpu_and_on_cuda_when_there_is_one():
    devices = [d.type for d in check_devices()]
    assert devices[0] == "cpu"
    assert ("cuda" in devices) == torch.cuda.is_available()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_attention_check_passes_a_correct_module_on_cuda():
    mha = solution_namespace("04_multi_head_attention")["MultiHeadAttention"]
    check_multi_head_attention(mha, mask="causal", grad=True)
    check_multi_head_attention(mha, dtype=torch.float16)


def test_sample_image_is_a_square_rgb_picture():
    image = sample_image(64)
    assert image.shape == (3, 64, 64) and image.min() >= 0 and image.max() <= 1
    assert image.std() > 0.05


def test_plots_draw_figures():
    figures = [
        plot_position_encoding(reference.sinusoidal_table(10, 8)),
        show_patches(sample_image(32), patch_size=8),
        plot_attention(torch.softmax(torch.randn(2, 4, 4), -1), labels=list("abcd")),
        plot_gradient_norms({"a": [1.0, 0.1], "b": [1.0, 1.0]}),
        plot_functions({"GELU": F.gelu}),
    ]
    assert all(isinstance(f, matplotlib.figure.Figure) and f.axes for f in figures)


def test_checks_use_full_precision_and_restore_the_students_settings():
    seen = []

    @check
    def probe():
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()))

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        probe()
        assert seen == [(False, "highest")]
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
