"""``python -m autograder grade``: from a folder or zip of submissions to grades and feedback."""

import os
import sys
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from autograder.class_report import write_class_report
from autograder.grade import Assignment, Settings, grade_all, load_results
from autograder.gradebook import record
from autograder.release import ROOT, assignments
from autograder.report import summary, write_csvs, write_feedback
from autograder.sandbox import bwrap, warn_unsandboxed
from autograder.submissions import find_submissions, safe_id, unpack


def grade_class(
    submissions: Path,
    out: Path,
    wanted: list[str] | None = None,
    students: list[str] | None = None,
    settings: Settings | None = None,
    jobs: int | None = None,
    source_dir: Path = ROOT / "solutions",
    release_dir: Path = ROOT / "notebooks",
    progress: bool = True,
) -> list[dict]:
    """Grade every submission found under ``submissions`` (or only ``students``'); write ``out``.

    Returns all results in ``out`` (those graded now and those kept from earlier runs).
    """
    if not submissions.exists():
        raise SystemExit(f"{submissions}: no such folder or zip file")
    known = assignments(source_dir)
    for name in wanted or []:
        if name not in known:
            raise SystemExit(f"unknown assignment {name!r}; known: {', '.join(known)}")
    if not bwrap():
        warn_unsandboxed()
    with tempfile.TemporaryDirectory(prefix="autograder-unzip-") as unzipped:
        root = unpack(submissions, Path(unzipped)) if submissions.suffix == ".zip" else submissions
        found, warnings = find_submissions(root, known, wanted)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if students:
            chosen = {safe_id(s) for s in students}
            missing = chosen - {s.student_id for s in found}
            if missing:
                raise SystemExit(f"no submission from {', '.join(sorted(missing))} in {submissions}")
            found = [s for s in found if s.student_id in chosen]
        if not found:
            raise SystemExit(f"{submissions}: no notebooks found (see `python -m autograder grade --help`)")
        course = {
            a: Assignment.load(a, source_dir, release_dir) for a in sorted({s.assignment for s in found})
        }
        out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(found), desc="grading", unit="notebook", disable=not progress, file=sys.stderr)
        try:
            jobs = jobs or os.cpu_count() or 1
            grade_all(found, course, out, settings or Settings(), jobs, on_result=lambda r: bar.update())
        finally:
            bar.close()
    results = load_results(out)
    for result in results:
        write_feedback(result, out)
    write_csvs(results, out)
    write_class_report(results, out)
    names = sorted({r["assignment"] for r in results} & set(known))  # results of older courses stay
    record(results, {a: Assignment.load(a, source_dir, release_dir) for a in names}, out / "gradebook.db")
    return results


def print_summary(results: list[dict], out: Path) -> None:
    print(summary(results))
    print(
        f"\nWrote {out / 'grades.csv'}, {out / 'questions.csv'}, feedback/<student>/<assignment>.html and "
        f"{out / 'class_report.html'} (what the class got wrong)"
    )
