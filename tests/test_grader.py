"""``python -m autograder grade`` on the sample class: every row, feedback, idempotence, layouts."""

import csv
import json
import re
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook
from nbgrader.utils import determine_grade

from autograder import assemble as assemble_module
from autograder import grade as grade_module
from autograder.__main__ import main
from autograder.classroom import grade_class
from autograder.grade import Assignment, Settings, grade_submission
from autograder.hostile_class import HOSTILE
from autograder.readme import points
from autograder.release import assignments
from autograder.sample_class import (
    ATTENTION,
    CASES,
    FULL,
    MARKERS,
    PARTIAL,
    POSITIONS,
    TEST_MASK,
    Case,
    add_cell,
    automatic_points,
    find,
    hostile,
    load,
    solved,
    write_sample_class,
)
from autograder.sandbox import bwrap
from autograder.submissions import Submission
from tests.mutations import all_variants, edited_source
from tests.notebook_kernel import ROOT

SETTINGS = Settings(cell_timeout=15)
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


def hidden_lines(name: str) -> list[str]:
    """The lines of an assignment's hidden tests (over 12 characters) the release does not show."""
    release = (ROOT / "notebooks" / name / f"{name}.ipynb").read_text()
    return [
        line.strip()
        for cell in json.loads((ROOT / "solutions" / name / f"{name}.ipynb").read_text())["cells"]
        for block in HIDDEN.findall("".join(cell["source"]))
        for line in block.splitlines()
        if len(line.strip()) > 12 and json.dumps(line.strip())[1:-1] not in release
    ]


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Path:
    """The whole sample class graded once, through the command line."""
    root = tmp_path_factory.mktemp("class")
    main(["sample-class", str(root / "submissions")])
    main(["grade", str(root / "submissions"), "--out", str(root / "out"), "--timeout", "15", "--jobs", "2"])
    return root


def test_every_row_has_its_expected_score_status_and_reason(graded):
    grades = {(r["student_id"], r["assignment"]): r for r in rows(graded / "out" / "grades.csv")}
    students = {c.student for c in CASES}
    assert len(grades) == 2 * len(students), "one row per student and assignment, no duplicates"
    assert len(rows(graded / "out" / "grades.csv")) == len(grades)
    wrong = []
    for case in CASES:
        row = grades[(case.student, case.assignment)]
        got = (row["status"], float(row["score"]))
        if got != (case.status, case.score) or case.reason not in row["reason"]:
            wrong.append(f"{case.student}/{case.assignment}: expected {case.status} {case.score} "
                         f"({case.reason!r}), got {got} ({row['reason']!r})")  # fmt: skip
    assert not wrong, "\n".join(wrong)
    handed_in = {(c.student, c.assignment) for c in CASES}
    for (student, assignment), row in grades.items():
        assert row["max_score"] == f"{points(assignment):g}"
        if (student, assignment) not in handed_in:
            assert (row["status"], row["score"]) == ("missing", "0"), row


def test_partial_credit_is_per_question(graded):
    questions = [r for r in rows(graded / "out" / "questions.csv") if r["student_id"] == "partial"]
    by_id = {r["question"]: r for r in questions}
    assert by_id["test_MultiHeadAttention"]["score"] == "4"
    mask = by_id["test_MultiHeadAttention_mask"]
    assert (mask["score"], mask["outcome"]) == ("0", "failed")
    assert "mask ignored" in mask["message"]
    lost = {
        r["question"]: r
        for r in rows(graded / "out" / "questions.csv")
        if r["student_id"] == "loop_in_answer"
    }
    assert lost["test_MultiHeadAttention"]["score"] == "4", "a time-out costs only the question it stops"
    assert lost["test_MultiHeadAttention_mask"]["outcome"] == "timed out"


def test_a_failed_hidden_test_is_told_apart_from_a_visible_one(graded):
    result = json.loads((graded / "out" / "results" / POSITIONS / "hard_codes_d.json").read_text())
    question = next(q for q in result["questions"] if q["grade_id"] == "test_getPositionEncoding")
    assert (question["score"], question["failed_part"]) == (0, "hidden")
    assert question["message"].startswith("A hidden test of this question failed: AssertionError")
    partial = json.loads((graded / "out" / "results" / ATTENTION / "partial.json").read_text())
    parts = {q["grade_id"]: q["failed_part"] for q in partial["questions"]}
    assert (parts["test_MultiHeadAttention"], parts[TEST_MASK]) == ("", "visible")


def test_a_test_cell_writing_to_stderr_keeps_its_points(graded):
    """A progress bar in the student's forward writes to stderr during the tests: plain nbgrader
    would give those cells 0 (shown with its own scoring function); this grader gives full marks."""
    cell = nbformat.v4.new_code_cell(
        "", outputs=[nbformat.v4.new_output("stream", name="stderr", text="1/1")]
    )
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "points": 4}
    assert determine_grade(cell)[0] == 0
    grades = {(r["student_id"], r["assignment"]): r for r in rows(graded / "out" / "grades.csv")}
    row = grades[("writes_stderr", ATTENTION)]
    assert (row["status"], row["score"]) == ("graded", f"{FULL[ATTENTION]:g}")


def test_feedback_shows_each_question_and_message_but_no_hidden_test(graded):
    page = (graded / "out" / "feedback" / "partial" / f"{ATTENTION}.html").read_text()
    assert f"Score: {PARTIAL:g} / {points(ATTENTION):g}" in page
    assert "MultiHeadAttention honours boolean masks" in page, "the question's title"
    assert "mask ignored" in page and "Hint:" in page, "the failed check's message"
    hidden = hidden_lines(ATTENTION) + hidden_lines(POSITIONS)
    assert hidden
    for path in (graded / "out").rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", errors="replace")  # the gradebook too
            leaked = [line for line in hidden if line in text]
            assert not leaked, f"{path} shows hidden test code: {leaked[0]}"


def test_a_hostile_submission_reads_no_hidden_test_and_changes_no_other_grade(graded, tmp_path):
    """Reading and writing files is allowed by the review (numpy and matplotlib do it): the sandbox
    is what keeps the solutions, the other results and the grades out of reach."""
    out = graded / "out"
    solution = ROOT / "solutions" / ATTENTION / f"{ATTENTION}.ipynb"
    attempts = [
        f"import numpy as np\nleak = np.loadtxt({str(solution)!r}, dtype=str, comments=None)",
        f"import numpy as np\nnp.savetxt({str(out / 'grades.csv')!r}, np.zeros(1))",
        f"plt.savefig({str(out / 'results' / ATTENTION / 'full.png')!r})",
    ]
    make = add_cell(attempts[0], base=add_cell(attempts[1], base=add_cell(attempts[2])))
    hostile = Case("hostile", ATTENTION, "graded", FULL[ATTENTION], make)
    honest = [c for c in CASES if c.student in ("full", "partial")]
    write_sample_class(tmp_path / "submissions", [*honest, hostile])
    results = {
        r["student_id"]: r
        for r in grade_class(tmp_path / "submissions", tmp_path / "out", settings=SETTINGS, progress=False)
    }
    assert results["hostile"]["score"] == FULL[ATTENTION]
    reason = results["hostile"]["reason"]
    assert reason.count("raised FileNotFoundError") == 3, f"a read or a write got through: {reason}"
    for student in ("full", "partial"):
        kept = json.loads((out / "results" / ATTENTION / f"{student}.json").read_text())
        assert results[student] == kept, f"{student}'s result changed"
    assert (out / "grades.csv").read_text().startswith("student_id,"), "the class's grades are intact"
    page = (tmp_path / "out" / "feedback" / "hostile" / f"{ATTENTION}.html").read_text()
    assert "BEGIN HIDDEN TESTS" not in page and "check_multi_head_attention(" not in page


def test_the_hostile_class_tries_every_family_three_ways_or_more():
    families = Counter(h.family for h in HOSTILE)
    assert all(families[family] >= 3 for family in range(1, 7)), families
    rows = {c.student: c for c in CASES}
    assert all(rows[h.student].score == 0 for h in HOSTILE)


@pytest.mark.parametrize("case", [h for h in HOSTILE if not h.review_only], ids=lambda h: h.student)
def test_the_judge_holds_where_the_review_is_passed(case, tmp_path, monkeypatch):
    """Each hostile submission of families 1-5, with the review switched off (as if its rules had a
    gap): the judge, outside the sandbox, still gives it 0, and says what it found where it can."""
    monkeypatch.setattr(assemble_module, "review", lambda source, forbidden=None: [])
    write_sample_class(tmp_path, [hostile(case)])
    path = tmp_path / case.student / case.assignment / f"{case.assignment}.ipynb"
    assignment = Assignment.load(case.assignment, ROOT / "solutions", ROOT / "notebooks")
    result = grade_submission(Submission(case.student, case.assignment, path), assignment, SETTINGS)
    assert result["score"] == 0, result["questions"]
    assert case.review_off_reason in result["reason"], result["reason"]
    hidden = hidden_lines(case.assignment)
    leaked = [line for q in result["questions"] for line in hidden if line in q["message"]]
    assert not leaked, f"a hidden test reached the student's feedback: {leaked[0]}"


def test_regrading_one_student_changes_nothing_else(graded, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(graded / "out", out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    grade_class(graded / "submissions", out, students=["partial"], settings=SETTINGS, jobs=1, progress=False)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    del before[out / "gradebook.db"], after[out / "gradebook.db"]  # SQLite's own bytes may move
    assert after == before, "regrading reproduces the same bytes and touches no other row"
    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gradebook:
        assert gradebook.find_submission(ATTENTION, "partial").score == PARTIAL
        assert gradebook.find_submission(ATTENTION, "full").score == FULL[ATTENTION]
        handed_in = sum(c.assignment == ATTENTION for c in CASES)
        assert len(gradebook.assignment_submissions(ATTENTION)) == handed_in


def test_parallel_grading_equals_sequential(tmp_path):
    chosen = [c for c in CASES if c.student in ("full", "partial", "malformed", "sys_exit")]
    write_sample_class(tmp_path / "submissions", chosen)
    outputs = []
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        grade_class(tmp_path / "submissions", out, settings=SETTINGS, jobs=jobs, progress=False)
        outputs.append(
            {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".db"}
        )
    assert outputs[0] == outputs[1]


def test_lms_zip_with_canvas_and_moodle_names(tmp_path):
    notebook = json.dumps(solved(POSITIONS)).encode()
    archive = tmp_path / "downloads.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"doejane_1001_555_{POSITIONS}.ipynb", notebook)
        z.writestr(f"roeric_LATE_1002_556_{POSITIONS}-1.ipynb", b"{not json")
        z.writestr(f"Ann Lee_2001_assignsubmission_file_/{POSITIONS} (2).ipynb", notebook)
        z.writestr("Bo Chen_2002_assignsubmission_file_/homework.ipynb", notebook)
        z.writestr("Bo Chen_2002_assignsubmission_file_/notes.txt", b"mine")
        z.writestr("__MACOSX/._junk.ipynb", b"")
    out = tmp_path / "out"
    grade_class(archive, out, wanted=[POSITIONS], settings=SETTINGS, jobs=2, progress=False)
    got = {r["student_id"]: (r["status"], r["score"], r["reason"]) for r in rows(out / "grades.csv")}
    full = f"{FULL[POSITIONS]:g}"
    by_hand = "1 point of written answers to grade by hand"
    assert got["1001"] == ("graded", full, by_hand)
    assert got["1002"][:2] == ("malformed", "0")
    assert got["2001"] == ("graded", full, by_hand)
    assert got["2002"][:2] == ("graded", full)
    assert "homework.ipynb names no assignment; graded as" in got["2002"][2] and "notes.txt" in got["2002"][2]
    assert set(got) == {"1001", "1002", "2001", "2002"}


def test_zip_entries_outside_the_archive_are_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../../escaped.ipynb", b"{}")
    with pytest.raises(SystemExit, match="outside the archive"):
        grade_class(archive, tmp_path / "out", settings=SETTINGS, progress=False)
    assert not (tmp_path.parent / "escaped.ipynb").exists()


def test_unknown_assignment_and_missing_folder_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="no such folder"):
        grade_class(tmp_path / "nothing", tmp_path / "out", progress=False)
    (tmp_path / "subs").mkdir()
    with pytest.raises(SystemExit, match="unknown assignment 'nope'"):
        grade_class(tmp_path / "subs", tmp_path / "out", wanted=["nope"], progress=False)


def test_without_bubblewrap_the_grader_warns_loudly(tmp_path, monkeypatch, request):
    monkeypatch.setenv("AUTOGRADER_NO_SANDBOX", "1")
    bwrap.cache_clear()
    request.addfinalizer(bwrap.cache_clear)
    write_sample_class(tmp_path / "subs", [Case("full", POSITIONS, "graded", FULL[POSITIONS])])
    with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):
        results = grade_class(tmp_path / "subs", tmp_path / "out", settings=SETTINGS, progress=False)
    assert [(r["status"], r["score"]) for r in results] == [("graded", FULL[POSITIONS])]


def test_a_grader_failure_costs_only_its_row(tmp_path, monkeypatch):
    write_sample_class(tmp_path / "subs", [c for c in CASES if c.student in ("full", "partial")])

    def broken(program, *args):
        attention = [s for s in program.steps if s.grade_id == "MultiHeadAttention" and s.kind == "answer"]
        if any("masked_fill" not in s.source for s in attention):
            raise OSError("disk full")
        return real(program, *args)

    real = grade_module.execute
    monkeypatch.setattr(grade_module, "execute", broken)
    results = grade_class(  # one job: grading in this process, where the failure is planted
        tmp_path / "subs", tmp_path / "out", wanted=[ATTENTION], settings=SETTINGS, jobs=1, progress=False
    )
    rows = {r["student_id"]: r for r in results}
    assert (rows["partial"]["status"], rows["partial"]["reason"]) == (
        "error",
        "grader error: OSError: disk full",
    )
    listed = rows["partial"]["questions"]
    assert sum(q["max_score"] for q in listed) == points(ATTENTION), "every question listed"
    assert not any(q["score"] for q in listed), "at zero"
    assert (rows["full"]["status"], rows["full"]["score"]) == ("graded", FULL[ATTENTION])


def test_every_solution_earns_full_marks_in_the_sandbox(tmp_path):
    """All eleven notebooks, training ones included, run in the sandbox as they do in JupyterLab."""
    for name in assignments():
        folder = tmp_path / "subs" / "solver" / name
        folder.mkdir(parents=True)
        (folder / f"{name}.ipynb").write_text(json.dumps(solved(name)))
    results = grade_class(tmp_path / "subs", tmp_path / "out", progress=False)  # 60 s a cell: training
    assert len(results) == len(assignments())
    short = [f"{r['assignment']}: {r['score']}/{r['max_score']} {r['reason']}" for r in results
             if (r["status"], r["score"]) != ("graded", automatic_points(r["assignment"]))]  # fmt: skip
    assert not short, "\n".join(short)


def test_variants_keep_their_outcome_through_the_grader(tmp_path):
    """A wrong and a correct variant of each notebook, graded in the sandbox by the judge: the outcome
    and the named mistake they get in a notebook's kernel (``test_notebooks.py``), here too."""
    chosen = {}
    for variant in all_variants():
        chosen.setdefault((variant.notebook, variant.expect is None), variant)
    for i, variant in enumerate(chosen.values()):
        notebook, source = solved(variant.notebook), load("solutions", variant.notebook)["cells"]
        answer = edited_source("".join(source[find(source, variant.cell)]["source"]), variant.edits)
        notebook["cells"][find(notebook["cells"], variant.cell)]["source"] = MARKERS.sub("", answer)
        folder = tmp_path / "subs" / f"v{i:02d}" / variant.notebook
        folder.mkdir(parents=True)
        (folder / f"{variant.notebook}.ipynb").write_text(json.dumps(notebook))
    results = grade_class(tmp_path / "subs", tmp_path / "out", settings=SETTINGS, jobs=2, progress=False)
    graded = {(r["student_id"], r["assignment"]): r for r in results}
    wrong = []
    for i, variant in enumerate(chosen.values()):
        row = graded[(f"v{i:02d}", variant.notebook)]
        question = next(q for q in row["questions"] if q["grade_id"] == variant.test)
        if variant.expect is None and question["score"] != question["max_score"]:
            wrong.append(f"{variant.notebook} {variant.name}: lost points: {question['message'][:300]}")
        if variant.expect is not None and (question["score"] or variant.expect not in question["message"]):
            wrong.append(
                f"{variant.notebook} {variant.name}: {question['score']} {question['message'][:300]}"
            )
    assert not wrong, "\n".join(wrong)


def test_the_class_report_counts_what_the_sample_class_got_wrong(graded):
    """Each named mistake the sample class is known to make, counted in class_report.csv as often as
    the class makes it; the page holds the same tables and a chart per question."""
    counted = {
        (r["assignment"], r["question"], r["result"]): (r["kind"], int(r["students"]))
        for r in rows(graded / "out" / "class_report.csv")
    }
    declared = Counter((c.assignment, question, mistake) for c in CASES for question, mistake in c.mistakes)
    assert declared, "the sample class declares its mistakes"
    for key, students in declared.items():
        assert key in counted, f"{key} is not in the class report"
        assert counted[key] == ("known" if key[2] == "mask ignored" else "diagnosed", students), key
    for assignment, question in {k[:2] for k in counted}:  # every graded submission, counted once
        total = sum(n for (a, q, _), (_, n) in counted.items() if (a, q) == (assignment, question))
        assert total == sum(c.assignment == assignment and c.status != "malformed" for c in CASES), question
    page = (graded / "out" / "class_report.html").read_text()
    assert "mask ignored" in page and page.count("data:image/png;base64,") >= 4
