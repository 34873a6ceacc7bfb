"""Variants of notebook 00, attention before Transformers (see tests/mutations.py)."""

from tests.mutations import Variant, variants

NOTEBOOK = "00_attention_before_transformers"
CELL = "AdditiveAttention"
MASK_LINES = '        if mask is not None:\n            scores = scores.masked_fill(~mask, float("-inf"))\n'
CONTEXT = "context = (alpha[:, :, None] * h).sum(dim=1)"

SIZE_ONE_AXIS = """\
        scores = self.v(torch.tanh(self.W(s_prev)[:, None, :] + self.U(h)))  # (b, n, 1)
        if mask is not None:
            scores = scores.masked_fill(~mask[..., None], float("-inf"))
        alpha = torch.softmax(scores, dim=-1).squeeze(-1)
        context = torch.einsum("bn,bne->be", alpha, h)
"""
MASK_AFTER_SOFTMAX = """\
        scores = self.v(torch.tanh(self.W(s_prev)[:, None, :] + self.U(h))).squeeze(-1)
        alpha = torch.softmax(scores, dim=-1)
        if mask is not None:
            alpha = alpha.masked_fill(~mask, 0.0)
        context = torch.einsum("bn,bne->be", alpha, h)
"""
EINSUM_U_ONCE = """\
        keys = torch.einsum("bne,ae->bna", h, self.U.weight) + self.U.bias  # U h_j for every j at once
        query = self.W(s_prev).unsqueeze(1)
        scores = torch.einsum("bna,oa->bn", torch.tanh(keys + query), self.v.weight)
        if mask is not None:
            scores = torch.where(mask, scores, torch.full_like(scores, -1e9))
        alpha = scores.softmax(dim=1)
        context = torch.einsum("bn,bne->be", alpha, h)
"""
BMM_FINFO_MIN = """\
        energy = self.v(torch.tanh(self.W(s_prev).unsqueeze(1) + self.U(h))).squeeze(2)
        if mask is not None:
            energy = energy.masked_fill(mask == 0, torch.finfo(energy.dtype).min)
        alpha = F.softmax(energy, dim=1)
        context = torch.bmm(alpha.unsqueeze(1), h).squeeze(1)
"""
RENORMALISED = """\
        scores = self.v(torch.tanh(self.W(s_prev)[:, None, :] + self.U(h))).squeeze(-1)
        alpha = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
        if mask is not None:
            alpha = alpha * mask
        alpha = alpha / alpha.sum(dim=-1, keepdim=True)
        context = (h * alpha.unsqueeze(-1)).sum(1)
"""

VARIANTS: list[Variant] = variants(
    NOTEBOOK,
    CELL,
    "test_AdditiveAttention",
    [
        (
            "softmax-over-batch",
            [("torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=0)")],
            "softmax over the wrong axis (over the batch)",
        ),
        (
            "softmax-over-size-one-axis",
            [("", SIZE_ONE_AXIS)],
            "softmax over the wrong axis (all weights are 1)",
        ),
        ("tanh-missing", [("self.v(torch.tanh(", "self.v((")], "tanh missing"),
        ("context-plain-mean", [(CONTEXT, "context = h.mean(dim=1)")], "context not weighted by alpha"),
        (
            "scores-returned",
            [(CONTEXT, CONTEXT + "\n        alpha = scores")],
            "scores e returned instead of the weights alpha",
        ),
        ("U-detached", [("self.U(h))", "self.U(h).detach())")], "no gradient reaches self.U"),
        ("einsum-U-once", [("", EINSUM_U_ONCE)], None),
        ("bmm-finfo-min", [("", BMM_FINFO_MIN)], None),
    ],
) + variants(
    NOTEBOOK,
    CELL,
    "test_AdditiveAttention_mask",
    [
        ("mask-ignored", [(MASK_LINES, "")], "mask ignored"),
        ("mask-after-softmax", [("", MASK_AFTER_SOFTMAX)], "mask applied after the softmax"),
        ("mask-inverted", [("masked_fill(~mask,", "masked_fill(mask,")], "mask inverted"),
        ("einsum-U-once-masked", [("", EINSUM_U_ONCE)], None),
        ("bmm-finfo-min-masked", [("", BMM_FINFO_MIN)], None),
        ("renormalised-after-mask", [("", RENORMALISED)], None),
    ],
)
