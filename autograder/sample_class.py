"""A synthetic class to try the grader on: full marks, zero, partial credit, and every bad case.

``python -m autograder sample-class DIR`` writes it in nbgrader's layout; the tests grade it and
compare each row with the expectation written beside its case here, and the throughput benchmark
grades it with nbgrader and with this grader.
"""

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autograder.hostile_class import ATTENTION, HOSTILE, POSITIONS, Hostile
from autograder.readme import graded
from autograder.release import MARKERS, ROOT

TEST_MASK = "test_MultiHeadAttention_mask"
MASK_POINTS = 2  # what test_MultiHeadAttention_mask is worth

Cells = list[dict]


@dataclass(frozen=True)
class Case:
    """One student's hand-in for one assignment, and the row the grader must give it.

    ``make`` turns the release's cells (answers filled with the solutions) into the submission's;
    ``data`` replaces the file's bytes altogether; ``filename`` overrides ``<assignment>.ipynb``.
    """

    student: str
    assignment: str
    status: str
    score: float
    make: Callable[[Cells], Cells] = lambda cells: cells
    data: Callable[[], bytes] | None = None
    filename: str | None = None
    extra_files: tuple[str, ...] = ()
    reason: str = ""  # a phrase the row's reason must contain
    mistakes: tuple[tuple[str, str], ...] = ()  # (question, what the class report counts it as)


def load(folder: str, assignment: str) -> dict:
    return json.loads((ROOT / folder / assignment / f"{assignment}.ipynb").read_text(encoding="utf-8"))


def automatic_points(assignment: str) -> float:
    """The points of an assignment's graded code cells: what a full solution earns automatically."""
    return sum(
        float(c["metadata"]["nbgrader"]["points"]) for c in graded(assignment) if c["cell_type"] == "code"
    )


FULL = {ATTENTION: automatic_points(ATTENTION), POSITIONS: automatic_points(POSITIONS)}
PARTIAL = FULL[ATTENTION] - MASK_POINTS  # every question but the mask's


def solved(assignment: str) -> dict:
    """The release notebook with every answer cell holding the solution's code."""
    release, source = load("notebooks", assignment), load("solutions", assignment)
    answers = {
        c["metadata"]["nbgrader"]["grade_id"]: MARKERS.sub("", "".join(c["source"]))
        for c in source["cells"]
        if c["metadata"].get("nbgrader", {}).get("solution")
    }
    notebook = copy.deepcopy(release)
    for cell in notebook["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    return notebook


def blank(cells: Cells) -> Cells:
    """Back to the untouched release (for cases that start from a blank notebook)."""
    return copy.deepcopy(load("notebooks", ATTENTION)["cells"])


def find(cells: Cells, grade_id: str) -> int:
    return next(
        i for i, c in enumerate(cells) if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id
    )


def edit_answer(old: str, new: str, grade_id: str = "MultiHeadAttention") -> Callable[[Cells], Cells]:
    def make(cells: Cells) -> Cells:
        cell = cells[find(cells, grade_id)]
        text = "".join(cell["source"])
        assert old in text, f"{old!r} not in the answer"
        cell["source"] = text.replace(old, new)
        return cells

    return make


def add_cell(code: str, after: str = "MultiHeadAttention", base: Callable[[Cells], Cells] = lambda c: c):
    def make(cells: Cells) -> Cells:
        cells = base(cells)
        cell = {"cell_type": "code", "id": "added-by-student", "metadata": {}, "outputs": [], "source": code}
        cells.insert(find(cells, after) + 1, dict(cell, execution_count=None))
        return cells

    return make


def on_test(change: Callable[[Cells, int], None], grade_id: str = "test_MultiHeadAttention_mask", base=None):
    def make(cells: Cells) -> Cells:
        cells = base(cells) if base else cells
        change(cells, find(cells, grade_id))
        return cells

    return make


def _replace_tests_with_pass(cells: Cells) -> Cells:
    cells = blank(cells)
    for grade_id in ("test_MultiHeadAttention", "test_MultiHeadAttention_mask"):
        cells[find(cells, grade_id)]["source"] = "pass"
    return cells


def _set(key: str, value) -> Callable[[Cells, int], None]:
    return lambda cells, i: cells[i]["metadata"]["nbgrader"].__setitem__(key, value)


def _strip_metadata(cells: Cells, i: int) -> None:
    del cells[i]["metadata"]["nbgrader"]


def _answer_twice(cells: Cells) -> Cells:
    return on_test(_duplicate, grade_id="MultiHeadAttention")(cells)


def _without_answer(cells: Cells) -> Cells:
    return [c for c in cells if c["metadata"].get("nbgrader", {}).get("grade_id") != "MultiHeadAttention"]


def _swap_tests(cells: Cells, i: int) -> None:
    j = find(cells, "test_MultiHeadAttention")
    cells[i], cells[j] = cells[j], cells[i]


def _duplicate(cells: Cells, i: int) -> None:
    cells.insert(i + 1, copy.deepcopy(cells[i]))


def _retype(cells: Cells, i: int) -> None:
    cells[i] = {"cell_type": "markdown", "id": cells[i]["id"], "metadata": cells[i]["metadata"],
                "source": cells[i]["source"]}  # fmt: skip


MASK_IGNORED = edit_answer(
    '            energy = energy.masked_fill(~mask, float("-inf"))\n', "            pass\n"
)
LOOP_ON_MASK = edit_answer(
    "        if mask is not None:\n",
    "        while mask is not None:\n            pass\n        if mask is not None:\n",
)
WRITES_STDERR = edit_answer(  # a progress bar in forward: tqdm writes to stderr
    "        queries = ",
    "        from tqdm import tqdm\n\n        for _ in tqdm(range(1), desc='forward'):\n            pass\n"
    "        queries = ",
)
FAKE_CLASS = edit_answer(
    "class MultiHeadAttention(nn.Module):",
    "class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n\n\n"
    "class MultiHeadAttention(nn.Module):",
)
RETURNS_FAKE = edit_answer("        return self.projection(out)\n", "        return AlwaysEqual()\n")


def returns_fake(cells: Cells) -> Cells:
    """forward returns an object that claims to equal anything."""
    return RETURNS_FAKE(FAKE_CLASS(cells))


def truncated() -> bytes:
    return json.dumps(solved(ATTENTION)).encode()[:5000]


CASES = [
    Case("full", ATTENTION, "graded", FULL[ATTENTION]),
    Case("full", POSITIONS, "graded", FULL[POSITIONS]),
    Case("blank", ATTENTION, "graded", 0, blank),
    Case("partial", ATTENTION, "graded", PARTIAL, MASK_IGNORED, mistakes=((TEST_MASK, "mask ignored"),)),
    Case(
        "partial",
        POSITIONS,
        "graded",
        FULL[POSITIONS] - 3,  # the questions' points, not the table's
        edit_answer("np.sin(k", "np.cos(k", "getPositionEncoding"),
    ),
    Case(
        "hard_codes_d",
        POSITIONS,
        "graded",
        FULL[POSITIONS] - 3,
        edit_answer("np.arange(int(d / 2))", "range(2)", "getPositionEncoding"),
    ),
    Case("malformed", ATTENTION, "malformed", 0, data=truncated, reason="not valid JSON"),
    Case("empty", ATTENTION, "malformed", 0, data=lambda: b"", reason="empty"),
    Case(
        "renamed",
        ATTENTION,
        "graded",
        FULL[ATTENTION],
        filename="my attention.ipynb",
        reason="my attention.ipynb",
    ),
    Case(
        "extra_files",
        ATTENTION,
        "graded",
        FULL[ATTENTION],
        extra_files=("notes.txt", "helper.py"),
        reason="notes.txt",
    ),
    Case(
        "loop_in_cell",
        ATTENTION,
        "incomplete",
        FULL[ATTENTION],
        add_cell("while True:\n    pass"),
        reason="time limit",
    ),
    Case(
        "loop_in_answer",
        ATTENTION,
        "incomplete",
        PARTIAL,
        LOOP_ON_MASK,
        reason="test_MultiHeadAttention_mask",
    ),
    Case(
        "huge_memory",
        ATTENTION,
        "graded",
        FULL[ATTENTION],
        add_cell("x = torch.ones(1 << 38)"),
        reason="memory",
    ),
    Case(
        "fork_storm",
        ATTENTION,
        "flagged",
        FULL[ATTENTION],
        add_cell("import os\nwhile True:\n    os.fork()"),
        reason="imports `os`",
    ),
    Case(
        "os_exit",
        ATTENTION,
        "flagged",
        FULL[ATTENTION],
        add_cell("import os\nos._exit(1)"),
        reason="os._exit",
    ),
    Case(
        "sys_exit",
        ATTENTION,
        "graded",
        FULL[ATTENTION],
        add_cell("raise SystemExit('bye')"),
        reason="SystemExit",
    ),
    Case(
        "huge_output",
        ATTENTION,
        "graded",
        FULL[ATTENTION],
        add_cell("for i in range(200_000):\n    print('spam' * 100)"),
    ),
    Case("writes_stderr", ATTENTION, "graded", FULL[ATTENTION], WRITES_STDERR),
    Case("edited_tests", ATTENTION, "flagged", 0, _replace_tests_with_pass, reason="its code was edited"),
    Case(
        "deleted_test",
        ATTENTION,
        "flagged",
        FULL[ATTENTION],
        lambda c: [x for x in c if x.get("id") != "test-MultiHeadAttention-mask"],
        reason="deleted",
    ),
    Case("reordered_tests", ATTENTION, "flagged", FULL[ATTENTION], on_test(_swap_tests), reason="reordered"),
    Case("retyped_test", ATTENTION, "flagged", FULL[ATTENTION], on_test(_retype), reason="markdown"),
    Case("points_edited", ATTENTION, "flagged", 0, on_test(_set("points", 100), base=blank), reason="points"),
    Case(
        "metadata_removed",
        ATTENTION,
        "flagged",
        FULL[ATTENTION],
        on_test(_strip_metadata),
        reason="metadata was removed",
    ),
    Case(
        "grade_id_edited",
        ATTENTION,
        "flagged",
        FULL[ATTENTION],
        on_test(_set("grade_id", "mine")),
        reason="grade_id changed",
    ),
    Case(
        "answer_pasted_twice", ATTENTION, "graded", FULL[ATTENTION], _answer_twice, reason="appears 2 times"
    ),
    Case("answer_deleted", ATTENTION, "graded", FULL[ATTENTION] - 6, _without_answer, reason="is missing"),
    Case(
        "grade_id_duplicated",
        ATTENTION,
        "flagged",
        FULL[ATTENTION],
        on_test(_duplicate),
        reason="appears 2 times",
    ),
    Case(
        "rebinds_torch",
        ATTENTION,
        "flagged",
        0,
        add_cell("torch.allclose = lambda *a, **k: True", base=blank),
        reason="torch.allclose",
    ),
    Case(
        "rebinds_checks",
        ATTENTION,
        "flagged",
        PARTIAL,
        add_cell("import course_utils.feedback as feedback\nfeedback.fail = print", base=MASK_IGNORED),
        reason="course_utils",
        mistakes=((TEST_MASK, "mask ignored"),),
    ),
    Case(
        "rebinds_builtins",
        ATTENTION,
        "flagged",
        0,
        add_cell("import builtins\nbuiltins.AssertionError = Warning", base=blank),
        reason="builtins",
    ),
    Case(
        "ipython_hooks",
        ATTENTION,
        "flagged",
        0,
        add_cell("get_ipython().input_transformers_cleanup.append(lambda lines: [])", base=blank),
        reason="get_ipython",
    ),
    Case(
        "trace_hook",
        ATTENTION,
        "flagged",
        0,
        add_cell("import sys\nsys.settrace(lambda *a: None)", base=blank),
        reason="imports `sys`",
    ),
    Case("fake_equality", ATTENTION, "flagged", FULL[ATTENTION] - 6, returns_fake, reason="__eq__"),
    Case(
        "writes_files",
        ATTENTION,
        "flagged",
        FULL[ATTENTION],
        add_cell("open('../gradebook.db', 'w').write('')"),
        reason="open",
    ),
    Case("reads_history", ATTENTION, "flagged", FULL[ATTENTION], add_cell("print(In)"), reason="uses `In`"),
]


def hostile(case: Hostile) -> Case:
    """A hostile answer (``autograder.hostile_class``) as a case of the sample class: it earns 0."""
    grade_id = "MultiHeadAttention" if case.assignment == ATTENTION else "getPositionEncoding"

    def make(cells: Cells) -> Cells:
        cells = copy.deepcopy(load("notebooks", case.assignment)["cells"])  # blank but for its answer
        cells[find(cells, grade_id)]["source"] = case.answer
        return add_cell(case.extra, after=grade_id)(cells) if case.extra else cells

    return Case(
        case.student, case.assignment, case.status, 0, make, reason=case.reason, mistakes=case.mistakes
    )


CASES += [hostile(h) for h in HOSTILE]


def write_sample_class(root: Path, cases: list[Case] = CASES) -> Path:
    """Write ``cases`` in nbgrader's layout ``root/<student>/<assignment>/<file>``; return ``root``."""
    for case in cases:
        folder = root / case.student / case.assignment
        folder.mkdir(parents=True, exist_ok=True)
        data = case.data() if case.data else None
        if data is None:
            notebook = solved(case.assignment)
            notebook["cells"] = case.make(notebook["cells"])
            data = json.dumps(notebook, indent=1).encode()
        (folder / (case.filename or f"{case.assignment}.ipynb")).write_bytes(data)
        for name in case.extra_files:
            (folder / name).write_text("a student's own file\n")
    return root
