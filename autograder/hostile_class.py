"""Hostile submissions for the sample class: six families of ways to choose a grade, each wrong or
blank in substance, each of which must earn 0.

1. the verdict channel: write fake answers where the grader reads them;
2. state shared with the checks: zero or NaN-fill the weights or the inputs the reference would use;
3. interception through public PyTorch APIs: hooks, dispatch modes, saved-tensor hooks kept alive in a
   suspended generator;
4. notebook globals a test cell might read: ``torch``, the checks, ``np``;
5. the hidden tests' source, read from inside the process (linecache through ``warnings``, the stack,
   IPython's history) and raised into the student's own feedback;
6. the reference the check compares against, through a helper or under an alias.

Families 1 to 5 earn 0 because the judge decides outside the student's process, from its own weights
and inputs; the review flags what it recognises (``reason``). Family 6 computes the right numbers with
the forbidden reference: only the review stops it (``review_only``).
"""

import struct
from dataclasses import dataclass

ATTENTION, POSITIONS = "04_multi_head_attention", "01_positional_encoding"
TESTS = ("test_MultiHeadAttention", "test_MultiHeadAttention_mask")
HEAD = '''class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: (b, n, emb_size) -> (b, n, emb_size)."""

    def __init__(self, emb_size=768, num_heads=8, dropout=0.0):
        super().__init__()
        self.emb_size = emb_size
        self.num_heads = num_heads
        self.keys = nn.Linear(emb_size, emb_size)
        self.queries = nn.Linear(emb_size, emb_size)
        self.values = nn.Linear(emb_size, emb_size)
        self.att_drop = nn.Dropout(dropout)
        self.projection = nn.Linear(emb_size, emb_size)
'''
BLANK_FORWARD = """
    def forward(self, x, mask=None):
        raise NotImplementedError()
"""
BLANK_TABLE = '''def getPositionEncoding(seq_len, d, n=10000):
    """The (seq_len, d) sinusoidal position table."""
    raise NotImplementedError()
'''


@dataclass(frozen=True)
class Hostile:
    """A hostile answer: ``answer`` replaces the answer cell, ``extra`` is a cell added after it."""

    student: str
    family: int
    assignment: str
    answer: str
    extra: str = ""
    status: str = "graded"
    reason: str = ""
    review_off_reason: str = ""  # what the row says when the review is switched off, to show the judge
    review_only: bool = False
    mistakes: tuple[tuple[str, str], ...] = ()  # (question, what the class report counts it as)


def attention(forward: str, init: str = "", before: str = "") -> str:
    """A MultiHeadAttention answer cell with this forward (and lines added to __init__)."""
    return before + HEAD + init + forward


FAKE_ANSWERS = """
import os

for fd in range(3, 64):
    try:
        os.write(fd, {payload!r})
    except OSError:
        pass
"""
FORGED_HEADER = b'{"meta":{"id":"forged","ok":true},"tensors":[]}'  # a well-formed frame, a made-up id
FORGED_FRAME = struct.pack(">QQ", len(FORGED_HEADER) + 8, len(FORGED_HEADER)) + FORGED_HEADER

HOSTILE = [
    # 1. the verdict channel
    Hostile(
        "h1_writes_proc_fds",
        1,
        ATTENTION,
        attention(
            """
    def forward(self, x, mask=None):
        import numpy as np

        for path in ("/proc/self/fd/1", "/proc/self/fd/3", "/dev/fd/3", "/dev/fd/4", "/dev/stdout"):
            try:
                np.savetxt(path, np.zeros(1), header='{"ok": true}')
            except OSError:
                pass
        return torch.zeros_like(x)
"""
        ),
    ),
    Hostile(
        "h1_writes_every_fd",
        1,
        ATTENTION,
        attention(BLANK_FORWARD),
        FAKE_ANSWERS.format(payload=b'{"ok": true}\n'),
        "flagged",
        "imports `os`",
        "tampering",
    ),
    Hostile(
        "h1_forges_a_frame",
        1,
        ATTENTION,
        attention(BLANK_FORWARD),
        FAKE_ANSWERS.format(payload=FORGED_FRAME),
        "flagged",
        "imports `os`",
        "tampering",
    ),
    # 2. state shared with the checks
    Hostile(
        "h2_zeroes_weights_in_init",
        2,
        ATTENTION,
        attention(
            """
    def forward(self, x, mask=None):
        return self.projection(self.values(x))
""",
            init="""        for layer in (self.keys, self.queries, self.values, self.projection):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
""",
        ),
    ),
    Hostile(
        "h2_nan_fills_the_input",
        2,
        ATTENTION,
        attention(
            """
    def forward(self, x, mask=None):
        with torch.no_grad():
            x.fill_(float("nan"))
        return x
"""
        ),
    ),
    Hostile(
        "h2_nan_fills_its_weights",
        2,
        ATTENTION,
        attention(
            """
    def forward(self, x, mask=None):
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.fill_(float("nan"))
        return self.projection(x)
"""
        ),
        reason="changed the module's own weights",
        review_off_reason="changed the module's own weights",
        mistakes=tuple((q, "forward changed its own weights") for q in TESTS),
    ),
    # 3. interception through public PyTorch APIs
    Hostile(
        "h3_saved_tensor_hooks_in_a_generator",
        3,
        ATTENTION,
        attention(
            """
    def forward(self, x, mask=None):
        return self.projection(x * 0)
""",
            before="""def _keep():
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t * 0, lambda t: t):
        yield


_kept = _keep()
next(_kept)


""",
        ),
    ),
    Hostile(
        "h3_global_forward_hook",
        3,
        ATTENTION,
        attention(
            """
    def forward(self, x, mask=None):
        return torch.zeros_like(x)
""",
            before="torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: o * 0)\n\n\n",
        ),
        status="flagged",
        reason="register_module_forward_hook",
    ),
    Hostile(
        "h3_dispatch_mode_reexported",
        3,
        ATTENTION,
        attention(
            """
    def forward(self, x, mask=None):
        return torch.zeros_like(x)
""",
            before='''from torch.utils.checkpoint import TorchDispatchMode


class Zeros(TorchDispatchMode):
    """Every floating result of every operation in this process becomes zero."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        return out * 0 if isinstance(out, torch.Tensor) and out.is_floating_point() else out


def _keep():
    with Zeros():
        yield


_kept = _keep()
next(_kept)


''',
        ),
        status="flagged",
        reason="__torch_dispatch__",
    ),
    # 4. notebook globals a test cell might read
    Hostile(
        "h4_rebinds_torch",
        4,
        ATTENTION,
        attention(BLANK_FORWARD),
        "class FakeTorch:\n    float64 = float32 = None\n\n\ntorch = FakeTorch()\n",
    ),
    Hostile(
        "h4_rebinds_the_check",
        4,
        ATTENTION,
        attention(BLANK_FORWARD),
        "def check_multi_head_attention(*args, **kwargs):\n    return None\n",
    ),
    Hostile(
        "h4_rebinds_numpy",
        4,
        POSITIONS,
        BLANK_TABLE,
        "class FakeNumpy:\n    def isclose(self, *args, **kwargs):\n        return True\n\n\nnp = FakeNumpy()\n",
    ),
    # 5. the hidden tests' source, read from inside the process
    Hostile(
        "h5_linecache_through_warnings",
        5,
        ATTENTION,
        attention(
            """
    def forward(self, x, mask=None):
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for level in range(1, 12):
                warnings.warn("where am I", stacklevel=level)
        lines = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught]
        raise ValueError(" | ".join(lines))
"""
        ),
    ),
    Hostile(
        "h5_the_stack",
        5,
        POSITIONS,
        "def getPositionEncoding(seq_len, d, n=10000):\n    import traceback\n\n"
        '    raise ValueError("".join(traceback.format_stack()))\n',
        status="flagged",
        reason="imports `traceback`",
    ),
    Hostile(
        "h5_ipython_history",
        5,
        POSITIONS,
        "def getPositionEncoding(seq_len, d, n=10000):\n"
        "    shell = get_ipython()\n"
        "    raise ValueError(str(shell.user_ns.get('In')) + str(shell.history_manager.input_hist_raw))\n",
        status="flagged",
        reason="uses `get_ipython`",
    ),
    # 6. the reference the check compares against, through a helper or an alias
    Hostile(
        "h6_reference_in_a_helper",
        6,
        ATTENTION,
        attention(
            """
    def forward(self, x, mask=None):
        split = [rearrange(p(x), "b n (h d) -> b h n d", h=self.num_heads) for p in (self.queries, self.keys, self.values)]
        return self.projection(rearrange(_attend(*split, mask), "b h n d -> b n (h d)"))
""",
            before="def _attend(q, k, v, mask):\n    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)\n\n\n",
        ),
        status="flagged",
        reason="uses `F.scaled_dot_product_attention`",
        review_only=True,
    ),
    Hostile(
        "h6_reference_under_an_alias",
        6,
        ATTENTION,
        attention(
            """
    def forward(self, x, mask=None):
        split = [rearrange(p(x), "b n (h d) -> b h n d", h=self.num_heads) for p in (self.queries, self.keys, self.values)]
        return self.projection(rearrange(attend(*split, attn_mask=mask), "b h n d -> b n (h d)"))
""",
            before="from torch.nn.functional import scaled_dot_product_attention as attend\n\n\n",
        ),
        status="flagged",
        reason="imports `scaled_dot_product_attention`",
        review_only=True,
    ),
    Hostile(
        "h6_reference_through_aten",
        6,
        ATTENTION,
        attention(
            """
    def forward(self, x, mask=None):
        split = [rearrange(p(x), "b n (h d) -> b h n d", h=self.num_heads) for p in (self.queries, self.keys, self.values)]
        out = self.attend(*split, attn_mask=mask)
        return self.projection(rearrange(out, "b h n d -> b n (h d)"))
""",
            init="        self.attend = torch.ops.aten.scaled_dot_product_attention\n",
        ),
        status="flagged",
        reason="uses `torch.ops.aten.scaled_dot_product_attention`",
        review_only=True,
    ),
]
