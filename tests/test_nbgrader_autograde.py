"""The instructor's path through nbgrader itself: generate, autograde, read the gradebook."""

import shutil
from pathlib import Path

import pytest
from nbgrader.api import Gradebook
from nbgrader.apps import NbGraderAPI
from nbgrader.coursedir import CourseDirectory

from autograder.readme import points
from autograder.release import course_config, put_alembic_on_path
from autograder.sample_class import automatic_points
from tests.notebook_kernel import ROOT

ASSIGNMENT = "04_multi_head_attention"
pytestmark = pytest.mark.notebooks


def test_nbgrader_autograde_gives_full_marks_to_the_solution_and_zero_to_the_blank(tmp_path: Path):
    put_alembic_on_path()
    config = course_config(
        root=str(tmp_path), source_directory=str(ROOT / "solutions"), db_url=f"sqlite:///{tmp_path}/gb.db"
    )
    api = NbGraderAPI(CourseDirectory(config=config), config=config)
    assert api.generate_assignment(ASSIGNMENT)["success"]
    notebook = f"{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
    for student, source in (("solution", ROOT / "solutions"), ("blank", tmp_path / "notebooks")):
        submitted = tmp_path / "submitted" / student / notebook
        submitted.parent.mkdir(parents=True)
        shutil.copy(source / notebook, submitted)
        result = api.autograde(ASSIGNMENT, student)
        assert result["success"], result["log"]
    with Gradebook(f"sqlite:///{tmp_path}/gb.db") as gradebook:
        full = gradebook.find_submission(ASSIGNMENT, "solution")
        blank = gradebook.find_submission(ASSIGNMENT, "blank")
        assert full.score == automatic_points(ASSIGNMENT) and full.max_score == points(ASSIGNMENT)
        assert blank.score == 0
