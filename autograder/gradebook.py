"""The grades in nbgrader's own gradebook (``DIR/gradebook.db``), for ``nbgrader export`` and formgrader."""

import warnings
from pathlib import Path

from nbgrader.api import Gradebook
from sqlalchemy.exc import SAWarning

from autograder.grade import Assignment
from autograder.release import put_alembic_on_path


def record(results: list[dict], assignments: dict[str, Assignment], database: Path) -> Path:
    """Write every result into the gradebook at ``database``: assignments, their graded cells, students,
    submissions and each question's automatic score (written answers are left for formgrader to grade
    by hand). Rows with nothing handed in are left out, as nbgrader does for a student who did not
    submit."""
    put_alembic_on_path()
    with warnings.catch_warnings(), Gradebook(f"sqlite:///{database}") as gradebook:
        warnings.simplefilter("ignore", SAWarning)  # nbgrader's own session use, harmless
        for name, assignment in assignments.items():
            gradebook.update_or_create_assignment(name)
            gradebook.update_or_create_notebook(name, name)
            for cell in assignment.source["cells"]:
                meta = cell.get("metadata", {}).get("nbgrader", {})
                if meta.get("grade"):
                    gradebook.update_or_create_grade_cell(
                        meta["grade_id"],
                        name,
                        name,
                        max_score=float(meta["points"]),
                        cell_type=cell["cell_type"],
                    )
        for result in results:
            if result["status"] == "missing" or result["assignment"] not in assignments:
                continue
            student, name = result["student_id"], result["assignment"]
            gradebook.update_or_create_student(student)
            gradebook.update_or_create_submission(name, student)
            for question in result["questions"]:
                grade = gradebook.find_grade(question["grade_id"], name, name, student)
                if question["outcome"] == "to grade by hand":  # formgrader shows it as needing a grade
                    grade.auto_score, grade.manual_score = None, None
                else:
                    grade.auto_score = question["score"]
            gradebook.db.commit()
    return database
