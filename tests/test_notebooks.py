"""The notebooks as students and the autograder meet them: solutions, blanks, mistakes, variants."""

import pytest

from tests.mutations import Variant, all_variants, edited_source
from tests.notebook_kernel import ROOT, grade_cells, run_notebook

NOTEBOOKS = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
pytestmark = pytest.mark.notebooks


def points(cell) -> float:
    return float(cell.metadata.nbgrader.points)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_solution_runs_top_to_bottom_with_full_marks(name, solution_run):
    _, runs, nb = solution_run(name)
    errors = {cell_id: run.message for cell_id, run in runs.items() if run.error}
    assert not errors, f"cells failed: {errors}"
    for cell in grade_cells(nb):
        run = runs[cell.id]
        assert run.score(points(cell)) == points(cell), (
            f"{cell.metadata.nbgrader.grade_id} scored less than full: {run.message or run.stderr}"
        )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_untouched_student_notebook_earns_zero_with_clear_messages(name):
    kernel, runs, nb = run_notebook(ROOT / "notebooks" / name / f"{name}.ipynb")
    kernel.close()
    graded = grade_cells(nb)
    assert graded
    self_checks = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("check_")]
    for cell in graded + self_checks:
        run = runs[cell.id]
        if cell in graded:
            assert run.score(points(cell)) == 0, f"{cell.id} gives points to an empty notebook"
        assert run.error is not None, f"{cell.id} passed on an empty notebook"
        question = "check_answer(" in cell.source  # an unanswered question's name is not defined yet
        expected = ("AssertionError", "NameError") if question else ("AssertionError",)
        assert run.error.ename in expected, f"{cell.id} crashed: {run.message}"
        assert "NotImplementedError" in run.message or "not defined" in run.message, run.message


@pytest.mark.parametrize("variant", all_variants(), ids=lambda v: f"{v.notebook[:2]}-{v.name}")
def test_variant_is_graded_as_expected(variant: Variant, solution_run):
    kernel, runs, nb = solution_run(variant.notebook)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    original, graded = cells[variant.cell], cells[variant.test]
    try:
        defined = kernel.run(edited_source(original.source, variant.edits))
        assert defined.error is None, f"the variant itself does not run: {defined.message}"
        run = kernel.run(graded.source)
    finally:
        kernel.run(original.source)
    if variant.expect is None:
        assert run.score(points(graded)) == points(graded), (
            f"a correct variant lost points: {run.message or run.stderr}"
        )
    else:
        assert run.score(points(graded)) == 0, "a wrong implementation earned points"
        assert run.error.ename == "AssertionError", run.message
        assert variant.expect in run.error.evalue, f"message does not name the mistake: {run.message}"
