"""What the class got wrong, for the instructor: named mistakes counted per question.

``python -m autograder grade`` writes ``class_report.csv`` and ``class_report.html`` beside the feedback.
For each question: how many students passed, how many made each named mistake (``known``: from the
check's list; ``diagnosed``: named by a general diagnostic), how many left it blank, whose code raised
(``error``, by exception type), how many failed without a name, and how many lost it otherwise (a
time-out, a kernel that died); for each assignment, the distribution of scores. The page draws both as
bar charts (matplotlib, embedded), so that the misconception to re-teach on Monday is the longest bar.
"""

import base64
import csv
import html
import io
from collections import Counter, defaultdict
from pathlib import Path

from autograder.grade import write_atomically

COLUMNS = ["assignment", "question", "title", "result", "kind", "students"]
LOST = ("timed out", "kernel died", "not run", "to grade by hand")


def tally(results: list[dict]) -> dict[tuple[str, str], Counter]:
    """For each (assignment, question), students counted by (result, kind): ``passed``, a named mistake
    with its kind, ``failed, unnamed``, or how the question was lost."""
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for result in results:
        if result["status"] in ("missing", "malformed", "error"):
            continue
        for q in result["questions"]:
            key = (result["assignment"], q["grade_id"])
            if q["outcome"] == "passed":
                counts[key]["passed", ""] += 1
            elif q["outcome"] in LOST:
                counts[key][q["outcome"], ""] += 1
            elif q.get("mistake"):
                counts[key][q["mistake"], q.get("mistake_kind", "")] += 1
            else:
                counts[key]["failed, unnamed", ""] += 1
    return counts


def rows(results: list[dict]) -> list[list]:
    titles = {(r["assignment"], q["grade_id"]): q["title"] for r in results for q in r["questions"]}
    table = []
    for (assignment, question), counted in sorted(tally(results).items()):
        for (name, kind), students in sorted(counted.items(), key=lambda item: (-item[1], item[0])):
            table.append([assignment, question, titles[assignment, question], name, kind, students])
    return table


def write_class_report(results: list[dict], out: Path) -> tuple[Path, Path]:
    """``class_report.csv`` and ``class_report.html`` in ``out``."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows(results))
    write_atomically(out / "class_report.csv", text.getvalue())
    write_atomically(out / "class_report.html", page(results))
    return out / "class_report.csv", out / "class_report.html"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>What the class got wrong</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; margin-bottom: 1rem; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .35rem; text-align: left; }}
td.n {{ text-align: right; }} .known {{ color: #8a4b00; }} .diagnosed {{ color: #1d4f91; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>What the class got wrong</h1>
<p>Per question: students who passed, each named mistake (<span class="known">known</span>: from the
check's list; <span class="diagnosed">diagnosed</span>: named by a general diagnostic), failures without a
name, and questions lost to a time limit or a refused cell.</p>
{sections}
</body></html>
"""


def page(results: list[dict]) -> str:
    e = html.escape
    counts = tally(results)
    titles = {(r["assignment"], q["grade_id"]): q["title"] for r in results for q in r["questions"]}
    sections = []
    for assignment in sorted({r["assignment"] for r in results}):
        graded = [r for r in results if r["assignment"] == assignment and r["status"] != "missing"]
        parts = [f"<h2>{e(assignment)}</h2>"]
        if graded:
            scores = Counter(r["score"] for r in graded)
            chart = bar_chart(
                [f"{s:g}" for s in sorted(scores)], [scores[s] for s in sorted(scores)], "score", "students"
            )
            parts.append(f"<p>Scores of {len(graded)} students (max {graded[0]['max_score']:g}):</p>{chart}")
        for (name, question), counted in sorted(counts.items()):
            if name != assignment:
                continue
            ordered = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
            table = "".join(
                f'<tr><td class="{e(kind)}">{e(result)}</td><td>{e(kind)}</td><td class="n">{n}</td></tr>'
                for (result, kind), n in ordered
            )
            wrong = [(r, n) for (r, _), n in ordered if r != "passed"]
            chart = bar_chart([r for r, _ in wrong], [n for _, n in wrong], "students", "") if wrong else ""
            parts.append(
                f"<h3>{e(titles[assignment, question])} <small>({e(question)})</small></h3>"
                f"<table><tr><th>result</th><th>kind</th><th>students</th></tr>{table}</table>{chart}"
            )
        sections.append("\n".join(parts))
    return PAGE.format(sections="\n".join(sections))


def bar_chart(labels: list[str], values: list[int], xlabel: str, ylabel: str) -> str:
    """A bar chart as an embedded PNG: horizontal bars for named results, vertical ones for scores."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    horizontal = xlabel == "students"
    figure = Figure(figsize=(7, 0.45 * len(labels) + 1.2) if horizontal else (7, 2.6))
    axes = figure.subplots()
    if horizontal:
        axes.barh([label[:70] for label in labels][::-1], values[::-1], color="#a35d00")
    else:
        axes.bar(labels, values, color="#1d4f91")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if horizontal:
        axes.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return f'<img alt="bar chart" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
