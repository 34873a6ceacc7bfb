"""The table of exercises agrees with the notebooks, the checks and the README that derive from it."""

import inspect
import json

from autograder.assemble import split_hidden
from autograder.judge import parse_test
from autograder.readme import updated
from autograder.release import assignments
from course_utils import checks
from course_utils.exercises import EXERCISES, NOTEBOOKS, exercises_of, forbidden_in
from tests.notebook_kernel import ROOT


def graded_calls(notebook: str) -> list:
    cells = json.loads((ROOT / "solutions" / notebook / f"{notebook}.ipynb").read_text())["cells"]
    calls = []
    for cell in cells:
        if cell["cell_type"] == "code" and cell["metadata"].get("nbgrader", {}).get("grade"):
            calls += [c for part in split_hidden("".join(cell["source"])) if part for c in parse_test(part)]
    return calls


def test_every_notebook_and_exercise_is_declared_once():
    assert [n.id for n in NOTEBOOKS] == assignments()
    ids = [e.id for e in EXERCISES]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    for exercise in EXERCISES:
        assert exercise.id[:2] == exercise.notebook[:2], exercise
        assert exercise.kind in ("module", "function"), exercise
        for name in exercise.checks:
            assert callable(getattr(checks, name, None)), f"{exercise.id}: no check {name}"
        assert forbidden_in(exercise.notebook) is not None  # every forbidden path resolves


def test_graded_cells_call_the_checks_of_their_notebooks_exercises_on_them():
    for notebook in assignments():
        own = {(check, e.name) for e in exercises_of(notebook) for check in e.checks}
        calls = graded_calls(notebook)
        called = {(c.function, c.targets[0]) for c in calls}
        assert own <= called, f"{notebook}: never graded: {sorted(own - called)}"
        for call in calls:
            known = {check for e in EXERCISES for check in e.checks} | {"check_answer"}  # questions
            assert call.function in known, f"{notebook}: {call.function} belongs to no exercise"


def test_the_readme_table_is_derived_from_the_exercises():
    text = (ROOT / "README.md").read_text()
    assert text == updated(text), "README.md's table is stale: run `python -m autograder readme`"


def test_every_argument_of_every_exercise_is_varied_by_some_graded_case():
    """A graded case that gives an argument another value than the check's default shows whether the
    student's code uses it; the checks vary the others themselves (``varied_inside``)."""
    unvaried = []
    for exercise in EXERCISES:
        calls = [c for c in graded_calls(exercise.notebook) if c.function in exercise.checks]
        calls = [c for c in calls if c.targets and c.targets[0] == exercise.name]
        for argument in set(exercise.arguments) - set(exercise.varied_inside):
            defaults = {
                c.function: inspect.signature(getattr(checks, c.function)).parameters[argument].default
                for c in calls
                if argument in inspect.signature(getattr(checks, c.function)).parameters
            }
            if not any(
                dict(c.kwargs).get(argument, defaults.get(c.function)) != defaults.get(c.function)
                for c in calls
            ):
                unvaried.append(f"{exercise.id} {exercise.name}: {argument}")
    assert not unvaried, f"never given another value in a graded cell: {unvaried}"
