"""Command line of the course's instructor tools.

``python -m autograder release [ASSIGNMENT ...]``: generate ``notebooks/`` from ``solutions/``.
``python -m autograder grade SUBMISSIONS [--assignment ID ...] [--student ID ...] [--jobs N] [--timeout S]
[--out DIR]``: grade a folder or zip of submissions (layouts: ``autograder/submissions.py``); the
student's code runs in a sandbox, the tests in this process (``autograder/judge.py``).
``python -m autograder gradescope ASSIGNMENT [-o FILE.zip]``: the Gradescope autograder of an assignment.
``python -m autograder walkthrough [ASSIGNMENT ...] [--out DIR] [--quick]``: the solutions, run, as HTML.
``python -m autograder sample-class FOLDER``: a synthetic class (every bad case, a hostile class) to try
``grade`` on.
``python -m autograder readme``: README.md's table of notebooks, from ``course_utils/exercises.py``.
"""

import argparse
from pathlib import Path

from autograder import gradescope
from autograder.readme import write_readme
from autograder.release import release
from autograder.sample_class import write_sample_class
from autograder.sandbox import Limits
from autograder.walkthrough import add_walkthrough_parser


def add_release(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("release", help="generate notebooks/ from solutions/")
    parser.add_argument("assignments", nargs="*", help="assignment ids (default: all)")
    parser.set_defaults(
        handler=lambda args: [print(f"released {p}") for p in release(args.assignments or None)]
    )


def add_grade(commands: argparse._SubParsersAction) -> None:
    from autograder import submissions

    parser = commands.add_parser(
        "grade",
        help="grade a folder or .zip of submissions",
        description=submissions.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("submissions", type=Path, help="folder (nbgrader or LMS layout) or .zip")
    parser.add_argument("--assignment", action="append", help="grade only this assignment (repeatable)")
    parser.add_argument("--student", action="append", help="regrade only this student (repeatable)")
    parser.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: CPUs)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per cell (default 60)")
    parser.add_argument(
        "--notebook-timeout", type=float, default=600.0, help="seconds per notebook (default 600)"
    )
    parser.add_argument("--memory", type=float, default=4.0, help="GiB of memory per submission (default 4)")
    parser.add_argument("--out", type=Path, default=Path("graded"), help="output folder (default ./graded)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=grade)


def grade(args: argparse.Namespace) -> None:
    from autograder.classroom import grade_class, print_summary
    from autograder.grade import Settings

    settings = Settings(
        args.timeout, args.notebook_timeout, Limits(memory_bytes=int(args.memory * (1 << 30)))
    )
    results = grade_class(
        args.submissions,
        args.out,
        args.assignment,
        args.student,
        settings,
        args.jobs,
        progress=not args.quiet,
    )
    print_summary(results, args.out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add_release(commands)
    add_grade(commands)
    gradescope.add_commands(commands)
    add_walkthrough_parser(commands)
    readme = commands.add_parser("readme", help="write README.md's table of notebooks from the exercises")
    readme.set_defaults(handler=lambda a: print(f"wrote {write_readme()}"))
    sample = commands.add_parser(
        "sample-class", help="write a synthetic class of submissions to try `grade` on"
    )
    sample.add_argument("folder", type=Path)
    sample.set_defaults(handler=lambda a: print(f"wrote {write_sample_class(a.folder)}"))
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
