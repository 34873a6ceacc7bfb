"""Grade a class: every submission in its own sandbox, in parallel, into results, CSVs and feedback.

Each submission's result is written alone (``results/<assignment>/<student>.json``, atomically), and
the CSVs are rebuilt from all results present, so grading again, or regrading one student, never
duplicates or loses a row. A submission that cannot be read or graded gets a row that says why.
"""

import json
import os
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from autograder.assemble import MalformedNotebookError, Program, Step, assemble, read_submission
from autograder.execute import Outcome, execute
from autograder.sandbox import Limits
from autograder.submissions import Submission

STATUSES = ("graded", "incomplete", "flagged", "missing", "malformed", "error")
MESSAGE_LIMIT = 1_500
OUTCOMES = {
    "ok": "passed",
    "error": "failed",
    "timeout": "timed out",
    "crashed": "kernel died",
    "skipped": "not run",
}


@dataclass(frozen=True)
class Settings:
    """How to grade: time limits (seconds) and resource limits."""

    cell_timeout: float = 60.0
    notebook_timeout: float = 600.0
    limits: Limits = Limits()


@dataclass(frozen=True)
class Assignment:
    """An assignment's instructor notebook (with hidden tests) and its student release."""

    name: str
    source: dict
    release: dict

    @classmethod
    def load(cls, name: str, source_dir: Path, release_dir: Path) -> "Assignment":
        def read(folder: Path) -> dict:
            path = folder / name / f"{name}.ipynb"
            if not path.is_file():
                raise SystemExit(f"assignment {name}: {path} is missing")
            return json.loads(path.read_text(encoding="utf-8"))

        return cls(name, read(source_dir), read(release_dir))


def grade_submission(submission: Submission, assignment: Assignment, settings: Settings) -> dict:
    """The result of one submission: score, status, reason, and each question's outcome."""
    result = {
        "student_id": submission.student_id,
        "assignment": submission.assignment,
        "file": submission.path.name if submission.path else "",
        "notes": list(submission.notes),
    }
    try:
        program = assemble(assignment.source, assignment.release, [])
        if submission.path is None:
            return _finish(result, program, None, "missing", "no notebook handed in")
        try:
            cells = read_submission(submission.path.read_bytes())
        except MalformedNotebookError as err:
            return _finish(result, program, None, "malformed", f"{submission.path.name}: {err}")
        program = assemble(assignment.source, assignment.release, cells)
        outcomes = execute(program, settings.limits, settings.cell_timeout, settings.notebook_timeout)
        return _finish(result, program, outcomes)
    except Exception as err:  # noqa: BLE001 - a grader failure must cost this row only, and say so
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        try:
            empty = assemble(assignment.source, assignment.release, [])  # every question, at zero
        except Exception:  # noqa: BLE001 - the instructor's notebooks themselves are unreadable
            empty = Program([])
        return _finish(result, empty, None, "error", f"grader error: {detail}")


def _finish(
    result: dict, program: Program, outcomes: list[Outcome] | None, status: str = "", reason: str = ""
) -> dict:
    questions, problems, lost = [], list(program.findings) if outcomes else [], []
    if outcomes:
        result["notes"] += program.notes
    for i, step in enumerate(program.steps):
        outcome = outcomes[i] if outcomes else None
        if outcome and outcome.status == "refused":
            problems.append(f"cell {step.grade_id or step.cell_id} not run: {outcome.evalue}")
        elif outcome and outcome.status in ("timeout", "crashed", "skipped"):
            lost.append(f"cell {step.grade_id or step.cell_id}: {outcome.evalue}")
        elif outcome and outcome.status == "error" and step.kind in ("answer", "extra"):
            result["notes"].append(f"cell {step.cell_id} raised {_message(outcome, '')[:200]}")
        if step.kind == "test":
            questions.append(_question(step, outcome, reason))
        elif step.kind == "hidden" and questions:
            questions[-1]["has_hidden_tests"] = True
            if outcome and outcome.status != "not run":
                questions[-1] = _with_hidden(questions[-1], outcome)
    if not status:
        status = "flagged" if problems else "incomplete" if lost else "graded"
        reason = "; ".join(problems + lost)
    notes = "; ".join(result["notes"])
    result.update(
        score=sum(q["score"] for q in questions),
        max_score=program.max_score,
        status=status,
        reason="; ".join(r for r in (reason, notes) if r),
        findings=problems,
        lost=lost,
        questions=questions,
    )
    return result


def _question(step: Step, outcome: Outcome | None, reason: str) -> dict:
    passed = outcome is not None and outcome.status == "ok"
    return {
        "grade_id": step.grade_id,
        "title": step.title,
        "max_score": step.points,
        "score": step.points if passed else 0.0,
        "outcome": OUTCOMES[outcome.status] if outcome else "not run",
        "message": "" if passed else _message(outcome, reason),
        "failed_part": "" if passed else "visible",
        "has_hidden_tests": False,
    }


def _with_hidden(question: dict, outcome: Outcome) -> dict:
    """The question once its hidden tests ran (only after its visible checks passed)."""
    if outcome.status == "ok":
        return question
    message = f"A hidden test of this question failed: {_message(outcome, '')}"
    return dict(question, score=0.0, outcome=OUTCOMES[outcome.status], message=message, failed_part="hidden")


def _message(outcome: Outcome | None, reason: str) -> str:
    if outcome is None:
        return reason
    if outcome.status == "error":
        text = f"{outcome.ename}: {outcome.evalue}" if outcome.evalue else outcome.ename
    else:
        text = outcome.evalue
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + " [...]"


def result_path(out: Path, assignment: str, student: str) -> Path:
    return out / "results" / assignment / f"{student}.json"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def grade_all(
    submissions: list[Submission],
    assignments: dict[str, Assignment],
    out: Path,
    settings: Settings,
    jobs: int,
    on_result: Callable[[dict], None] = lambda result: None,
) -> list[dict]:
    """Grade ``submissions`` with ``jobs`` in parallel; write each result as soon as it is known."""

    def one(submission: Submission) -> dict:
        result = grade_submission(submission, assignments[submission.assignment], settings)
        write_atomically(
            result_path(out, submission.assignment, submission.student_id), json.dumps(result, indent=1)
        )
        on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, submissions))


def load_results(out: Path) -> list[dict]:
    """Every result under ``out/results``, sorted by student then assignment."""
    results = []
    for path in sorted((out / "results").glob("*/*.json")):
        try:
            results.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as err:
            print(f"warning: {path} is unreadable ({err}); regrade that submission", file=sys.stderr)
    return sorted(results, key=lambda r: (r["student_id"], r["assignment"]))
