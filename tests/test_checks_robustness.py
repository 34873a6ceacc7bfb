"""Whatever a student hands in, a check answers with an AssertionError, never a crash of its own."""

import pytest
import torch
from torch import nn

from course_utils import checks

RESULTS = {
    "None": lambda x: None,
    "the input": lambda x: x,
    "zeros of another shape": lambda x: torch.zeros(1),
    "a string": lambda x: "tensor",
    "a tuple": lambda x: (x, x),
    "float64": lambda x: x.double(),
    "NaN": lambda x: x * float("nan"),
    "an exception": lambda x: 1 / 0,
}


def garbage_module(result):
    class Garbage(nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, x, *args, **kwargs):
            return result(x)

    return Garbage


MODULE_CHECKS = [
    checks.check_patch_embedding,
    checks.check_learned_positions,
    checks.check_sinusoidal_positions,
    checks.check_multi_head_attention,
    checks.check_residual_add,
    checks.check_layer_norm,
    checks.check_feed_forward,
    checks.check_encoder_block,
    checks.check_additive_attention,
    checks.check_cross_attention,
    checks.check_decoder_block,
    checks.check_vit_patch_embedding,
    checks.check_classification_head,
    checks.check_vit,
    checks.check_overfits,
]


@pytest.mark.parametrize("kind", RESULTS)
@pytest.mark.parametrize("check", MODULE_CHECKS, ids=lambda c: c.__name__)
def test_module_checks_fail_cleanly_on_garbage(check, kind):
    with pytest.raises(AssertionError):
        check(garbage_module(RESULTS[kind]))


@pytest.mark.parametrize("kind", RESULTS)
def test_encoder_check_fails_cleanly_on_garbage(kind):
    with pytest.raises(AssertionError):
        checks.check_encoder(garbage_module(RESULTS[kind]), garbage_module(RESULTS[kind]))


@pytest.mark.parametrize("kind", RESULTS)
@pytest.mark.parametrize(
    "check, call",
    [
        (
            checks.check_position_encoding,
            lambda result: lambda seq_len, d, n=10000: result(torch.ones(seq_len, d)),
        ),
        (checks.check_prepend_cls_token, lambda result: lambda x, cls_token: result(x)),
        (checks.check_parameter_count, lambda result: lambda **kwargs: result(torch.ones(1))),
        (checks.check_causal_mask, lambda result: lambda n: result(torch.ones(n, n, dtype=torch.bool))),
        (checks.check_padding_mask, lambda result: lambda tokens, pad=0: result(tokens != pad)),
        (checks.check_shift_right, lambda result: lambda tgt, bos=1: result(tgt)),
        (checks.check_chunked_attention, lambda result: lambda q, k, v, chunk_size, mask=None: result(q)),
    ],
    ids=[
        "position_encoding",
        "prepend_cls_token",
        "parameter_count",
        "causal_mask",
        "padding_mask",
        "shift_right",
        "chunked_attention",
    ],
)
def test_function_checks_fail_cleanly_on_garbage(check, call, kind):
    with pytest.raises(AssertionError):
        check(call(RESULTS[kind]))


def test_a_constructor_that_crashes_is_reported_with_its_error():
    class Broken(nn.Module):
        def __init__(self, **kwargs):
            raise KeyError("emb")

    with pytest.raises(AssertionError, match=r"MultiHeadAttention\(.*\) raised KeyError"):
        checks.check_multi_head_attention(type("MultiHeadAttention", (Broken,), {}))
