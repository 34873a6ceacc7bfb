"""What an instructor and each student get back: the gradebook CSVs, a summary, feedback pages.

Nothing here reads a test's source: a question is shown by its title (the docstring line students see
in the released notebook) and the message of the check that failed, never by its hidden code.
"""

import csv
import html
import io
from collections import Counter, defaultdict
from pathlib import Path

from autograder.grade import STATUSES, write_atomically

GRADE_COLUMNS = ["student_id", "assignment", "score", "max_score", "status", "reason"]
QUESTION_COLUMNS = ["student_id", "assignment", "question", "score", "max_score", "outcome", "message"]


def number(value: float) -> str:
    return f"{value:g}"


def write_csvs(results: list[dict], out: Path) -> tuple[Path, Path]:
    """``grades.csv`` (one row per student × assignment) and ``questions.csv`` (one per question)."""
    grades, questions = io.StringIO(), io.StringIO()
    grade_rows = csv.writer(grades, lineterminator="\n")
    question_rows = csv.writer(questions, lineterminator="\n")
    grade_rows.writerow(GRADE_COLUMNS)
    question_rows.writerow(QUESTION_COLUMNS)
    for r in results:
        grade_rows.writerow(
            [
                r["student_id"],
                r["assignment"],
                number(r["score"]),
                number(r["max_score"]),
                r["status"],
                " ".join(r["reason"].split()),  # one line per row
            ]
        )
        for q in r["questions"]:
            message = " ".join(q["message"].split())[:300]
            question_rows.writerow(
                [r["student_id"], r["assignment"], q["grade_id"], number(q["score"]), number(q["max_score"]),
                 q["outcome"], message]
            )  # fmt: skip
    write_atomically(out / "grades.csv", grades.getvalue())
    write_atomically(out / "questions.csv", questions.getvalue())
    return out / "grades.csv", out / "questions.csv"


def summary(results: list[dict]) -> str:
    """A table per assignment (submissions, mean score, statuses) and the rows that need a look."""
    by_assignment: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_assignment[r["assignment"]].append(r)
    header = f"{'assignment':<34} {'rows':>4} {'mean':>7} {'max':>5}  " + " ".join(
        f"{s:>10}" for s in STATUSES
    )
    lines = [header, "-" * len(header)]
    for assignment, rows in sorted(by_assignment.items()):
        counts = Counter(r["status"] for r in rows)
        mean = sum(r["score"] for r in rows) / len(rows)
        lines.append(
            f"{assignment:<34} {len(rows):>4} {mean:>7.2f} {number(rows[0]['max_score']):>5}  "
            + " ".join(f"{counts.get(s, 0):>10}" for s in STATUSES)
        )
    attention = [r for r in results if r["status"] != "graded"]
    if attention:
        lines += ["", "Rows that need a look:"]
        for r in attention:
            reason = r["reason"] if len(r["reason"]) <= 160 else r["reason"][:157] + "..."
            lines.append(f"  {r['student_id']} / {r['assignment']}: {r['status']}: {reason}")
    return "\n".join(lines)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .4rem; text-align: left; }}
td.passed {{ color: #17702e; }} td.lost {{ color: #a31515; }}
pre {{ background: #f6f6f6; padding: .6rem; white-space: pre-wrap; }}
.note {{ background: #fff4d6; padding: .6rem; }}
</style></head><body>
<h1>{title}</h1>
<p><strong>Score: {score} / {max_score}</strong> &middot; status: {status}</p>
{notes}
<table><tr><th>Question</th><th>Score</th><th>Result</th></tr>
{rows}
</table>
{details}
</body></html>
"""


def feedback_html(result: dict) -> str:
    """One student's feedback page for one assignment."""
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(q['title'])}</td><td>{number(q['score'])} / {number(q['max_score'])}</td>"
        f'<td class="{"passed" if q["outcome"] == "passed" else "lost"}">{e(q["outcome"])}</td></tr>'
        for q in result["questions"]
    )
    details = "\n".join(
        f"<h2>{e(q['title'])}</h2>\n<pre>{e(q['message'])}</pre>" for q in result["questions"] if q["message"]
    )
    items = result["findings"] + result["lost"] + result["notes"]
    if result["status"] in ("missing", "malformed", "error"):
        items = [result["reason"]]
    notes = (
        '<div class="note"><p>Please read:</p><ul>'
        + "".join(f"<li>{e(i)}</li>" for i in items)
        + "</ul></div>"
        if items
        else ""
    )
    return PAGE.format(
        title=e(f"{result['assignment']}: feedback for {result['student_id']}"),
        score=number(result["score"]),
        max_score=number(result["max_score"]),
        status=e(result["status"]),
        notes=notes,
        rows=rows,
        details=details,
    )


def write_feedback(result: dict, out: Path) -> Path:
    path = out / "feedback" / result["student_id"] / f"{result['assignment']}.html"
    write_atomically(path, feedback_html(result))
    return path
