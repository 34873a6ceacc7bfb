"""The README's table of notebooks, derived from ``course_utils.exercises`` and the notebooks' points.

``python -m autograder readme`` rewrites the table between its two markers; a test fails when the
README's table is not what this gives.
"""

import json
from pathlib import Path

from autograder.release import ROOT
from course_utils.exercises import NOTEBOOKS, exercises_of

BEGIN, END = "<!-- notebooks: python -m autograder readme -->", "<!-- end of notebooks -->"


def points(notebook: str, solutions: Path = ROOT / "solutions") -> float:
    """The points of a notebook's graded cells."""
    cells = json.loads((solutions / notebook / f"{notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
    meta = [c["metadata"].get("nbgrader", {}) for c in cells]
    return sum(float(m.get("points", 0)) for m in meta if m.get("grade"))


def table() -> str:
    """The markdown table: each notebook, its exercises (numbered NN.k), points and what else it holds."""
    rows = [
        "| # | Notebook | You write | Points | Also inside |",
        "|---|---|---|---|---|",
    ]
    for notebook in NOTEBOOKS:
        link = f"[{notebook.title}](notebooks/{notebook.id}/{notebook.id}.ipynb)"
        exercises = ", ".join(f"{e.id} {e.described}" for e in exercises_of(notebook.id))
        rows.append(
            f"| {notebook.id[:2]} | {link} | {exercises} | {points(notebook.id):g} | {notebook.also} |"
        )
    return "\n".join(rows)


def updated(text: str) -> str:
    """``text`` (the README) with the table between the markers made anew."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return f"{text[:start]}\n{table()}\n{text[end:]}"


def write_readme(path: Path = ROOT / "README.md") -> Path:
    path.write_text(updated(path.read_text(encoding="utf-8")), encoding="utf-8")
    return path
