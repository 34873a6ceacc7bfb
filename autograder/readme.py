"""The README's table of notebooks, derived from ``course_utils.exercises`` and the notebooks' points.

``python -m autograder readme`` rewrites the table between its two markers; a test fails when the
README's table is not what this gives.
"""

import json
from pathlib import Path

from autograder.release import ROOT
from course_utils.exercises import NOTEBOOKS, exercises_of

BEGIN, END = "<!-- notebooks: python -m autograder readme -->", "<!-- end of notebooks -->"


def graded(notebook: str, solutions: Path = ROOT / "solutions") -> list[dict]:
    """A notebook's graded cells."""
    cells = json.loads((solutions / notebook / f"{notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
    return [c for c in cells if c["metadata"].get("nbgrader", {}).get("grade")]


def points(notebook: str) -> float:
    """The points of a notebook's graded cells."""
    return sum(float(c["metadata"]["nbgrader"].get("points", 0)) for c in graded(notebook))


def questions(notebook: str) -> str:
    """The understanding questions of a notebook (cells calling ``check_answer``) and its written ones."""
    cells = graded(notebook)
    asked = sum("check_answer(" in "".join(c["source"]) for c in cells if c["cell_type"] == "code")
    written = sum(c["cell_type"] == "markdown" for c in cells)
    return (
        " + ".join(p for p in (f"{asked}" if asked else "", f"{written} written" if written else "") if p)
        or "–"
    )


def table() -> str:
    """The markdown table: each notebook, its exercises (numbered NN.k), points and what else it holds."""
    rows = [
        "| # | Notebook | You write | Questions | Points | Also inside |",
        "|---|---|---|---|---|---|",
    ]
    for notebook in NOTEBOOKS:
        link = f"[{notebook.title}](notebooks/{notebook.id}/{notebook.id}.ipynb)"
        exercises = ", ".join(f"{e.id} {e.described}" for e in exercises_of(notebook.id))
        asked, total = questions(notebook.id), points(notebook.id)
        rows.append(f"| {notebook.id[:2]} | {link} | {exercises} | {asked} | {total:g} | {notebook.also} |")
    return "\n".join(rows)


def updated(text: str) -> str:
    """``text`` (the README) with the table between the markers made anew."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return f"{text[:start]}\n{table()}\n{text[end:]}"


def write_readme(path: Path = ROOT / "README.md") -> Path:
    path.write_text(updated(path.read_text(encoding="utf-8")), encoding="utf-8")
    return path
