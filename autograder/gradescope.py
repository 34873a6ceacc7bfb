"""Gradescope: the autograder bundle of one assignment, and what runs inside it per submission.

``python -m autograder gradescope ASSIGNMENT [-o FILE.zip]`` writes the zip to upload as a
"programming assignment" autograder (choose the Ubuntu 24.04 base image: the course needs Python
3.11 or newer). Gradescope unpacks it into ``/autograder/source``, runs ``setup.sh`` once, then
``run_autograder`` for each submission, which grades ``/autograder/submission/*.ipynb`` with the same
engine as ``python -m autograder grade`` and writes ``/autograder/results/results.json``.

Each question becomes a test that students see, with the check's message when it fails; the
message of a failed *hidden* test goes into a second test with ``visibility: hidden`` (and no points),
so that neither the hidden tests' code nor their output reaches a student.
"""

import argparse
import json
import zipfile
from pathlib import Path

from autograder.grade import Assignment, Settings, grade_submission
from autograder.release import ROOT, assignments
from autograder.submissions import Submission, assignment_named

COURSE = "course"  # the course's copy inside the bundle: source/course/...
BUNDLED = ("pyproject.toml", "README.md", "course_utils", "autograder")
SETUP = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu 24.04 base image).
set -euo pipefail
apt-get update
apt-get install -y python3 python3-venv bubblewrap
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
/autograder/venv/bin/pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
/autograder/venv/bin/pip install /autograder/source/course
"""
RUN = """\
#!/usr/bin/env bash
# Gradescope runs this for every submission. AUTOGRADER_ROOT and AUTOGRADER_PYTHON exist for tests.
set -euo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}}"
exec "$PYTHON" -m autograder gradescope-run --root "$ROOT" --assignment {assignment}
"""
# The parts of Gradescope's documented results.json that this grader writes.
VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
FORMAT = {"enum": ["text", "html", "simple_format", "md", "ansi"]}
RESULTS_SCHEMA = {
    "type": "object",
    "required": ["score", "tests", "output", "visibility", "stdout_visibility"],
    "additionalProperties": False,
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number"},
        "output": {"type": "string"},
        "output_format": FORMAT,
        "visibility": VISIBILITY,
        "stdout_visibility": VISIBILITY,
        "tests": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "score", "max_score", "output", "visibility"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "number": {"type": "string"},
                    "score": {"type": "number"},
                    "max_score": {"type": "number"},
                    "status": {"enum": ["passed", "failed"]},
                    "output": {"type": "string"},
                    "output_format": FORMAT,
                    "visibility": VISIBILITY,
                },
            },
        },
    },
}


def build_bundle(assignment: str, out: Path) -> Path:
    """Write the Gradescope autograder zip of ``assignment`` to ``out``."""
    if assignment not in assignments():
        raise SystemExit(f"unknown assignment {assignment!r}; known: {', '.join(assignments())}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, text in (("setup.sh", SETUP), ("run_autograder", RUN.format(assignment=assignment))):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100755 << 16  # an executable file
            bundle.writestr(info, text)
        files = [ROOT / f"{folder}/{assignment}/{assignment}.ipynb" for folder in ("solutions", "notebooks")]
        for name in BUNDLED:
            path = ROOT / name
            files += sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) or [
                path
            ]
        for path in files:
            bundle.write(path, f"{COURSE}/{path.relative_to(ROOT)}")
    return out


def pick_notebook(folder: Path, assignment: str) -> tuple[Path | None, list[str]]:
    """The submitted notebook to grade, and notes on the choice."""
    notebooks = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    named = [p for p in notebooks if assignment_named(p.name, [assignment])]
    if named:
        others = [p.name for p in notebooks if p != named[0]]
        return named[0], [f"other notebooks ignored: {', '.join(others)}"] if others else []
    if len(notebooks) == 1:
        return notebooks[0], [f"graded {notebooks[0].name} (expected {assignment}.ipynb)"]
    if notebooks:
        return None, [f"found {len(notebooks)} notebooks and none named {assignment}.ipynb"]
    return None, []


def results_json(result: dict) -> dict:
    """Gradescope's results.json for one graded submission."""
    tests = []
    for number, q in enumerate(result["questions"], 1):
        hidden_failed = q["failed_part"] == "hidden"
        output = "Passed." if q["score"] == q["max_score"] else q["message"]
        if hidden_failed:
            output = (
                "The visible checks pass, but a hidden test of this question failed; "
                "its details are not shown. Check other sizes, dtypes, masks and gradients."
            )
        tests.append(
            {
                "name": f"{q['title']} ({q['grade_id']})",
                "number": str(number),
                "score": q["score"],
                "max_score": q["max_score"],
                "status": "passed" if q["score"] == q["max_score"] else "failed",
                "output": output,
                "visibility": "visible",
            }
        )
        if hidden_failed:
            tests.append(
                {
                    "name": f"{q['grade_id']}: hidden tests (for the instructor)",
                    "number": f"{number}.hidden",
                    "score": 0,
                    "max_score": 0,
                    "output": q["message"],
                    "visibility": "hidden",
                }
            )
    summary = [f"Score: {result['score']:g} / {result['max_score']:g} ({result['status']})"]
    summary += [f"- {item}" for item in result["findings"] + result["lost"] + result["notes"]]
    if result["status"] in ("missing", "malformed", "error"):
        summary.append(result["reason"])
    return {
        "score": result["score"],
        "output": "\n".join(summary),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def run(root: Path, assignment: str, settings: Settings | None = None) -> dict:
    """Grade ``root/submission`` and write ``root/results/results.json``; return what was written."""
    course = root / "source" / COURSE
    path, notes = pick_notebook(root / "submission", assignment)
    submission = Submission("submission", assignment, path, notes)
    source = Assignment.load(assignment, course / "solutions", course / "notebooks")
    result = grade_submission(submission, source, settings or Settings())
    results = results_json(result)
    (root / "results").mkdir(parents=True, exist_ok=True)
    (root / "results" / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return results


def default_zip(args: argparse.Namespace) -> Path:
    return ROOT / "build" / "gradescope" / f"{args.assignment}.zip"


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``gradescope`` (build the zip) and ``gradescope-run`` (inside Gradescope)."""
    build = commands.add_parser("gradescope", help="build the Gradescope autograder zip of an assignment")
    build.add_argument("assignment")
    build.add_argument("-o", "--output", type=Path, help="zip to write (default: build/gradescope/<id>.zip)")
    build.set_defaults(
        handler=lambda a: print(f"wrote {build_bundle(a.assignment, a.output or default_zip(a))}")
    )
    inside = commands.add_parser("gradescope-run", help="(inside Gradescope) grade /autograder/submission")
    inside.add_argument("--root", type=Path, default=Path("/autograder"))
    inside.add_argument("--assignment", required=True)
    inside.set_defaults(handler=lambda a: run(a.root, a.assignment))
