"""Grading throughput: plain sequential ``nbgrader autograde`` against ``python -m autograder grade``.

Both grade the same synthetic class, in the same run: ``--students`` students (default 40), each
handing in every assignment of ``--assignments``, a third of them correct, a third partly wrong, a
third blank. Prints notebooks per minute for each, their ratio, and whether every score agrees. With
``--scaling``, this grader also runs with one job, to show how it scales with the cores.

    python benchmarks/grade_throughput.py                       # 40 students × notebooks 01 and 04
    python benchmarks/grade_throughput.py --students 6          # a quick look
    python benchmarks/grade_throughput.py --scaling --json out.json
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI
from nbgrader.coursedir import CourseDirectory

from autograder.classroom import grade_class
from autograder.grade import Settings
from autograder.release import ROOT, course_config, put_alembic_on_path
from autograder.sample_class import (
    ATTENTION,
    MASK_IGNORED,
    POSITIONS,
    Case,
    blank,
    edit_answer,
    load,
    write_sample_class,
)

KINDS = {  # what each third of the class hands in, per assignment
    ATTENTION: {"correct": lambda c: c, "partial": MASK_IGNORED, "blank": blank},
    POSITIONS: {
        "correct": lambda c: c,
        "partial": edit_answer("np.sin(k", "np.cos(k", "getPositionEncoding"),
        "blank": lambda c: load("notebooks", POSITIONS)["cells"],
    },
}


def synthetic_class(students: int, assignments: list[str]) -> list[Case]:
    cases = []
    for i in range(students):
        kind = ("correct", "partial", "blank")[i % 3]
        for assignment in assignments:
            cases.append(Case(f"s{i:03d}_{kind}", assignment, "", 0, KINDS[assignment][kind]))
    return cases


def nbgrader_scores(course: Path, submitted: Path, assignments: list[str]) -> tuple[float, dict]:
    """Seconds and scores of plain ``nbgrader autograde``, one submission after another."""
    put_alembic_on_path()
    course.mkdir(parents=True, exist_ok=True)
    database = f"sqlite:///{course}/gradebook.db"
    config = course_config(root=str(course), source_directory=str(ROOT / "solutions"), db_url=database)
    config.CourseDirectory.submitted_directory = str(submitted)
    api = NbGraderAPI(CourseDirectory(config=config), config=config)
    for assignment in assignments:
        assert api.generate_assignment(assignment)["success"]
    students = sorted(p.name for p in submitted.iterdir())
    start = time.perf_counter()
    for assignment in assignments:
        for student in students:
            result = api.autograde(assignment, student)
            assert result["success"], result["log"]
    seconds = time.perf_counter() - start
    with Gradebook(database) as gradebook:
        scores = {
            (s, a): gradebook.find_submission(a, s).score for a in assignments for s in students
        }  # fmt: skip
    return seconds, scores


def ours(submitted: Path, out: Path, assignments: list[str], jobs: int) -> tuple[float, dict]:
    start = time.perf_counter()
    results = grade_class(submitted, out, wanted=assignments, settings=Settings(), jobs=jobs, progress=False)
    seconds = time.perf_counter() - start
    return seconds, {(r["student_id"], r["assignment"]): r["score"] for r in results}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--assignments", nargs="+", default=[POSITIONS, ATTENTION])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scaling", action="store_true", help="also run this grader with one job")
    parser.add_argument("--skip-nbgrader", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="grade-bench-") as scratch:
        scratch = Path(scratch)
        submitted = write_sample_class(
            scratch / "submitted", synthetic_class(args.students, args.assignments)
        )
        notebooks = args.students * len(args.assignments)
        runs = {}
        if not args.skip_nbgrader:
            runs["nbgrader autograde (sequential)"] = nbgrader_scores(
                scratch / "course", submitted, args.assignments
            )
        for jobs in sorted({args.jobs, 1} if args.scaling else {args.jobs}, reverse=True):
            runs[f"autograder grade --jobs {jobs}"] = ours(
                submitted, scratch / f"out{jobs}", args.assignments, jobs
            )

    names = ", ".join(args.assignments)
    print(f"{notebooks} notebooks ({args.students} students × {names}), {os.cpu_count()} CPUs")
    baseline = next(iter(runs.values()))
    figures = {}
    for name, (seconds, scores) in runs.items():
        rate = notebooks / seconds * 60
        differ = sum(scores[k] != baseline[1][k] for k in baseline[1])
        figures[name] = {"seconds": round(seconds, 1), "notebooks_per_minute": round(rate, 1)}
        print(
            f"{name:<34} {seconds:7.1f} s {rate:7.1f} notebooks/min  ×{baseline[0] / seconds:4.2f}  "
            f"scores differing from the first line: {differ}"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
