"""The release: student notebooks are a fresh nbgrader generation, leak nothing, store no outputs."""

import re
import subprocess
import sys

import nbformat
import pytest

from autograder.release import assignments, release
from tests.mutations import HIDDEN, SOLUTION, lines, lines_only_inside
from tests.notebook_kernel import ROOT, read

IDS = assignments()


def test_every_assignment_has_a_committed_student_notebook():
    assert IDS, "no assignments in solutions/"
    for name in IDS:
        assert (ROOT / "notebooks" / name / f"{name}.ipynb").is_file(), f"{name} was never released"


def test_student_notebooks_equal_a_fresh_generation(tmp_path):
    release(release_directory=tmp_path)
    for name in IDS:
        fresh = read(tmp_path / name / f"{name}.ipynb")
        committed = read(ROOT / "notebooks" / name / f"{name}.ipynb")
        assert fresh == committed, f"notebooks/{name} is stale: run `python -m autograder release`"


@pytest.mark.parametrize("name", IDS)
def test_student_notebook_holds_no_solution_and_no_hidden_test(name):
    """No line that the source has only inside solution or hidden-test blocks reaches students."""
    sources = [c.source for c in read(ROOT / "solutions" / name / f"{name}.ipynb").cells]
    secrets = lines_only_inside(sources, SOLUTION, HIDDEN)
    student = read(ROOT / "notebooks" / name / f"{name}.ipynb")
    text = nbformat.writes(student)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    leaked = secrets & set().union(*(lines(c.source) for c in student.cells))
    assert not leaked, f"{name} leaks: {sorted(leaked)[:3]}"


@pytest.mark.parametrize("folder", ["solutions", "notebooks"])
def test_notebooks_are_stored_without_outputs(folder):
    for path in sorted((ROOT / folder).rglob("*.ipynb")):
        for cell in read(path).cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path} stores outputs"


@pytest.mark.parametrize("name", IDS)
def test_nbgrader_metadata_is_complete(name):
    nb = read(ROOT / "solutions" / name / f"{name}.ipynb")
    cells = [c.metadata.nbgrader for c in nb.cells if "nbgrader" in c.metadata]
    grade_ids = [c.grade_id for c in cells]
    assert len(grade_ids) == len(set(grade_ids)), "grade ids must be unique"
    graded = [c for c in cells if c.grade and not c.solution]
    assert graded and all(c.locked and c.points > 0 for c in graded)
    marked = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    written = [c for c in marked if c.cell_type == "markdown"]
    assert all(c.metadata.nbgrader.solution and c.metadata.nbgrader.points > 0 for c in written)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade") and cell.cell_type == "code":
            assert cell.source.startswith('"""'), "a graded cell starts with a docstring"
            assert "### BEGIN HIDDEN TESTS" in cell.source, "a graded cell has hidden tests"


def test_release_command_refuses_an_unknown_assignment():
    result = subprocess.run(
        [sys.executable, "-m", "autograder", "release", "no_such_assignment"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode != 0 and "no assignment 'no_such_assignment'" in result.stderr


def test_code_is_ruff_clean():
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "."], capture_output=True, text=True, cwd=ROOT
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_environment_yml_lists_the_dependencies_of_pyproject():
    import tomllib

    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted([*project["dependencies"], "-e ."])


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.endswith("-m pytest")]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert commands == [ci], f"README: {commands}, .ci/run: {ci}"


DETAILS = re.compile(r"<details>.*?</details>", re.S)
MARKED = re.compile(r"^[ \t]*### BEGIN SOLUTION[ \t]*\n(.*?)^[ \t]*### END SOLUTION", re.S | re.M)


def plain(text: str) -> str:
    """Code as compared: no spaces, one kind of quote, no trailing comma or comment."""
    text = re.sub(r"#[^\n'\"]*$", "", text, flags=re.M)
    return re.sub(r"\s+", "", text).replace("'", '"').rstrip(",")


@pytest.mark.parametrize("name", assignments())
def test_no_notebook_prints_a_blanks_solution_above_it(name):
    """Above each blank, the text explains (equation, shapes, concept) and never shows a line of the
    answer; the exact call lives in a hint the student opens on purpose (a collapsed <details>)."""
    shown: list[str] = []  # what a student reads before each blank: markdown and code, hints aside
    leaked = []
    for cell in read(ROOT / "solutions" / name / f"{name}.ipynb").cells:
        for block in MARKED.findall(cell.source):
            answer = {plain(line) for line in block.splitlines() if len(plain(line)) > 12}
            leaked += [f"{cell.id}: {line}" for line in answer if any(line in text for text in shown)]
        shown.append(plain(DETAILS.sub("", MARKED.sub("", cell.source))))
    assert not leaked, f"solution lines shown above their blank: {leaked[:5]}"
