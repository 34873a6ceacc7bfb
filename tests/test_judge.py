"""The judge's side of grading: test cells read as check calls, the wire format, the channel.

The channel tests send cells straight to the sandbox (as if a student had found a way past the review)
and check that anything on the grader's channel that is not the answer asked for stops the submission.
"""

import json

import pytest
import torch

from autograder.assemble import Program, Step
from autograder.execute import execute
from autograder.judge import CheckCall, TestCellError, parse_test
from autograder.release import assignments
from autograder.sandbox import Limits, bwrap
from course_utils.wire import WireError, decode, encode, pack, unpack
from tests.notebook_kernel import ROOT

LIMITS = Limits(memory_bytes=2 << 30, answer_bytes=8 << 20)
needs_sandbox = pytest.mark.skipif(bwrap() is None, reason="bubblewrap is not installed")


def test_every_graded_cell_of_every_solution_is_made_of_check_calls():
    for name in assignments():
        notebook = json.loads((ROOT / "solutions" / name / f"{name}.ipynb").read_text())
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code" and cell["metadata"].get("nbgrader", {}).get("grade"):
                source = (
                    "".join(cell["source"])
                    .replace("### BEGIN HIDDEN TESTS", "")
                    .replace("### END HIDDEN TESTS", "")
                )
                assert parse_test(source, name), name


@pytest.mark.parametrize(
    "source, problem",
    [
        ('"""doc"""\nassert MultiHeadAttention(8, 2) is not None', "is not a check call"),
        ("check_multi_head_attention(MultiHeadAttention, dtype=my_dtype)", "is not a literal"),
        ("check_multi_head_attention(MultiHeadAttention, **options)", "cannot be judged"),
        ("check_multi_head_attention(MultiHeadAttention(), emb_size=8)", "is not a name"),
        ("print_everything(MultiHeadAttention)", "is not a check"),
        ("import os\ncheck_multi_head_attention(MultiHeadAttention)", "is not a check call"),
    ],
)
def test_a_test_cell_the_judge_cannot_run_is_named_with_its_line(source, problem):
    with pytest.raises(TestCellError, match=problem):
        parse_test(source)


def test_check_calls_keep_their_literals_and_dtypes():
    (call,) = parse_test(
        '"""doc"""\nfrom course_utils.checks import check_multi_head_attention\n\n'
        'check_multi_head_attention(MultiHeadAttention, mask="causal", dtype=torch.float64, seed=3)'
    )
    assert call == CheckCall(
        "check_multi_head_attention",
        ("MultiHeadAttention",),
        (("mask", "causal"), ("dtype", torch.float64), ("seed", 3)),
        4,
    )


def test_values_cross_the_wire_as_fresh_data():
    t = torch.randn(2, 3, requires_grad=True)
    value = {"x": t, "pair": (1, "a"), "dtype": torch.bfloat16, "half": t.detach().bfloat16()}
    tensors: list = []
    meta = pack(value, tensors)
    got = unpack(*decode(encode(meta, tensors)))
    assert torch.equal(got["x"], t.detach()) and got["x"].data_ptr() != t.data_ptr()
    assert got["pair"] == (1, "a") and got["dtype"] is torch.bfloat16
    assert got["half"].dtype is torch.bfloat16 and torch.equal(got["half"], t.detach().bfloat16())


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00" * 7,
        encode({"a": 1}, [])[:-1],
        encode({"a": 1}, [torch.ones(3)])[:-4],
        encode({"a": 1}, []) + b"extra",
        b'\x00\x00\x00\x00\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00\x04{"a"',
    ],
)
def test_a_frame_that_is_not_one_is_refused(frame):
    with pytest.raises(WireError):
        decode(frame)


def step(name: str, code: str) -> Step:
    return Step("extra", name, code)


def position_test(**kwargs) -> Step:
    call = CheckCall("check_position_encoding", ("getPositionEncoding",), tuple(kwargs.items()), 1)
    return Step("test", "test", "", "test", 3.0, checks=(call,))


@needs_sandbox
@pytest.mark.parametrize(
    "payload, found",
    [
        (b'{"ok": true}\n', "not an answer"),
        (encode({"id": "forged", "ok": True}, []), "a request that was not made"),
    ],
    ids=["junk", "forged-frame"],
)
def test_writing_to_the_channel_stops_the_submission(payload, found):
    """Code that reached os.write finds the grader's channel by its number: what it writes is refused."""
    writes = (
        f"import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, {payload!r})\n"
        "    except OSError:\n        pass"
    )
    steps = [step("writes", writes), step("later", "x = 1"), position_test()]
    outcomes = execute(Program(steps), LIMITS, cell_timeout=30, notebook_timeout=120)
    assert outcomes[0].status == "tampered" and found in outcomes[0].evalue, outcomes[0]
    assert [o.status for o in outcomes[1:]] == ["skipped", "skipped"]


@needs_sandbox
def test_an_answer_over_the_limit_stops_the_submission():
    huge = "import numpy as np\n\ndef getPositionEncoding(seq_len, d, n=10000):\n"
    huge += "    return np.zeros((2000, 1000))"
    outcomes = execute(
        Program([step("huge", huge), position_test()]), LIMITS, cell_timeout=30, notebook_timeout=120
    )
    assert outcomes[1].status == "over limit" and "over the limit" in outcomes[1].evalue, outcomes[1]
