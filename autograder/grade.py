"""Grade a class: every submission in its own sandbox, judged from outside, in parallel.

Each submission's result is written alone (``results/<assignment>/<student>.json``, atomically), and
the CSVs are rebuilt from all results present, so grading again, or regrading one student, never
duplicates or loses a row. A submission that cannot be read or graded gets a row that says why.
With more than one job, submissions are graded by worker processes, one submission at a time each: a
worker is the judge of the submission it grades (``autograder.execute``), and its state is its own.
"""

import json
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from autograder.assemble import MalformedNotebookError, Program, Step, assemble, read_submission
from autograder.execute import Outcome, execute
from autograder.judge import TestCellError
from autograder.sandbox import Limits
from autograder.submissions import Submission
from course_utils.exercises import forbidden_in

STATUSES = ("graded", "incomplete", "flagged", "missing", "malformed", "error")
MESSAGE_LIMIT = 1_500
OUTCOMES = {
    "ok": "passed",
    "error": "failed",
    "timeout": "timed out",
    "crashed": "kernel died",
    "skipped": "not run",
    "tampered": "not run",
    "over limit": "not run",
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

        assignment = cls(name, read(source_dir), read(release_dir))
        try:
            assignment.program([])
        except TestCellError as err:
            raise SystemExit(f"assignment {name}: the judge cannot run {err}") from err
        return assignment

    def program(self, cells: list[dict]) -> Program:
        """The program that grades ``cells`` (a submission's), with this assignment's tests."""
        return assemble(self.source, self.release, cells, forbidden_in(self.name))


def grade_submission(submission: Submission, assignment: Assignment, settings: Settings) -> dict:
    """The result of one submission: score, status, reason, and each question's outcome."""
    result = {
        "student_id": submission.student_id,
        "assignment": submission.assignment,
        "file": submission.path.name if submission.path else "",
        "notes": list(submission.notes),
    }
    try:
        program = assignment.program([])
        if submission.path is None:
            return _finish(result, program, None, "missing", "no notebook handed in")
        try:
            cells = read_submission(submission.path.read_bytes())
        except MalformedNotebookError as err:
            return _finish(result, program, None, "malformed", f"{submission.path.name}: {err}")
        program = assignment.program(cells)
        outcomes = execute(program, settings.limits, settings.cell_timeout, settings.notebook_timeout)
        return _finish(result, program, outcomes)
    except Exception as err:  # noqa: BLE001 - a grader failure must cost this row only, and say so
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        try:
            empty = assignment.program([])  # every question, at zero
        except Exception:  # noqa: BLE001 - the instructor's notebooks themselves are unreadable
            empty = Program([])
        return _finish(result, empty, None, "error", f"grader error: {detail}")


LOST = ("timeout", "crashed", "over limit", "skipped")
LOST_WHEN_STOPPED = ("timeout", "crashed", "over limit")  # what a stopped submission did not run is implied


def _finish(
    result: dict, program: Program, outcomes: list[Outcome] | None, status: str = "", reason: str = ""
) -> dict:
    questions, problems, lost, broken = [], list(program.findings) if outcomes else [], [], []
    stopped = any(o.status in ("tampered", "over limit") for o in outcomes or [])
    if outcomes:
        result["notes"] += program.notes
    for i, step in enumerate(program.steps):
        outcome = outcomes[i] if outcomes else None
        if outcome and outcome.status == "refused":
            problems.append(f"cell {step.grade_id or step.cell_id} not run: {outcome.evalue}")
        elif outcome and outcome.status == "tampered":
            problems.append(f"tampering, found at cell {step.grade_id or step.cell_id}: {outcome.evalue}")
        elif outcome and outcome.status in (LOST_WHEN_STOPPED if stopped else LOST):
            lost.append(f"cell {step.grade_id or step.cell_id}: {outcome.evalue}")
        elif outcome and outcome.ename == "GraderError":
            broken.append(f"cell {step.grade_id}: {outcome.evalue}")
        elif outcome and outcome.finding:
            result["notes"].append(f"{step.grade_id}: {outcome.evalue.splitlines()[0][:300]}")
        elif outcome and outcome.status == "error" and step.kind in ("answer", "extra"):
            result["notes"].append(f"cell {step.cell_id} raised {_message(outcome, '')[:200]}")
        if step.kind in ("test", "written"):
            questions.append(_question(step, outcome, reason))
        elif step.kind == "hidden" and questions:
            questions[-1]["has_hidden_tests"] = True
            if outcome and outcome.status != "not run":
                questions[-1] = _with_hidden(questions[-1], outcome)
    by_hand = sum(s.points for s in program.steps if s.kind == "written")
    if outcomes and by_hand:
        result["notes"].append(
            f"{by_hand:g} point{'' if by_hand == 1 else 's'} of written answers to grade by hand"
        )
    if any(o.status == "tampered" for o in outcomes or []):
        questions = [dict(q, score=0.0) for q in questions]  # a submission caught tampering earns nothing
    if not status:
        status = "error" if broken else "flagged" if problems else "incomplete" if lost else "graded"
        reason = "; ".join(broken + problems + lost)
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
    if step.kind == "written":
        return {
            "grade_id": step.grade_id,
            "title": f"Written answer ({step.grade_id}), graded by hand",
            "max_score": step.points,
            "score": 0.0,
            "outcome": "to grade by hand",
            "message": step.source.strip()[:MESSAGE_LIMIT],
            "failed_part": "",
            "has_hidden_tests": False,
            "mistake": "",
            "mistake_kind": "",
        }
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
        "mistake": "" if passed or outcome is None else outcome.mistake,
        "mistake_kind": "" if passed or outcome is None else outcome.kind,
    }


def _with_hidden(question: dict, outcome: Outcome) -> dict:
    """The question once its hidden tests ran (only after its visible checks passed)."""
    if outcome.status == "ok":
        return question
    message = f"A hidden test of this question failed: {_message(outcome, '')}"
    found = {"mistake": outcome.mistake, "mistake_kind": outcome.kind}
    return dict(
        question, score=0.0, outcome=OUTCOMES[outcome.status], message=message, failed_part="hidden", **found
    )


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

    if jobs <= 1:  # here, one after another
        results = []
        for submission in submissions:
            results.append(_grade_and_write(submission, assignments[submission.assignment], settings, out))
            on_result(results[-1])
        return results
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's threads
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker) as pool:
        futures = {
            pool.submit(_grade_and_write, s, assignments[s.assignment], settings, out): s for s in submissions
        }
        done = {}
        for future in as_completed(futures):
            submission = futures[future]
            try:
                done[id(submission)] = future.result()
            except Exception as err:  # noqa: BLE001 - a worker that died costs its row only, and says so
                reason = f"grader error: the worker grading it failed ({type(err).__name__}: {err})"
                row = {"student_id": submission.student_id, "assignment": submission.assignment, "notes": []}
                done[id(submission)] = _finish(row, Program([]), None, "error", reason)
                path = result_path(out, submission.assignment, submission.student_id)
                write_atomically(path, json.dumps(done[id(submission)], indent=1))
            on_result(done[id(submission)])
    return [done[id(s)] for s in submissions]


def _worker() -> None:
    """A grading worker computes with one thread: the machine's cores go to the parallel submissions."""
    import torch

    torch.set_num_threads(1)


def _grade_and_write(submission: Submission, assignment: Assignment, settings: Settings, out: Path) -> dict:
    result = grade_submission(submission, assignment, settings)
    write_atomically(
        result_path(out, submission.assignment, submission.student_id), json.dumps(result, indent=1)
    )
    return result


def load_results(out: Path) -> list[dict]:
    """Every result under ``out/results``, sorted by student then assignment."""
    results = []
    for path in sorted((out / "results").glob("*/*.json")):
        try:
            results.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as err:
            print(f"warning: {path} is unreadable ({err}); regrade that submission", file=sys.stderr)
    return sorted(results, key=lambda r: (r["student_id"], r["assignment"]))
