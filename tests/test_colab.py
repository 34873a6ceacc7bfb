"""Every notebook opens in Colab from its badge and installs the course there, and only there."""

import re
import sys
import tomllib
import types

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from autograder.colab import add_colab, install_cell_id
from autograder.release import assignments
from tests.notebook_kernel import ROOT, read

IDS = assignments()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REPOSITORY = PROJECT["urls"]["Repository"]
LINK = re.compile(
    r"\[!\[Open in Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]\((.*?)\)"
)


def notebook(folder: str, name: str):
    return read(ROOT / folder / name / f"{name}.ipynb")


@pytest.mark.parametrize("folder", ["solutions", "notebooks"])
@pytest.mark.parametrize("name", IDS)
def test_badge_opens_the_students_notebook_of_pyprojects_repository(folder, name):
    title = notebook(folder, name).cells[0]
    owner_repo = REPOSITORY.removeprefix("https://github.com/")
    assert LINK.findall(title.source) == [
        f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{name}/{name}.ipynb"
    ]
    assert title.source.startswith("# ") and title.source.splitlines()[2].startswith("[![Open in Colab]")


@pytest.mark.parametrize("name", IDS)
def test_solution_notebooks_are_up_to_date_with_pyproject(name):
    """Rewriting is idempotent, so a stale URL or a hand-edited badge shows as a difference."""
    stored = notebook("solutions", name)
    assert add_colab(notebook("solutions", name), name) == stored, (
        "run `python -m autograder.colab && python -m autograder release`"
    )


def run(source: str, on_colab: bool, monkeypatch) -> list[tuple]:
    """Run a cell as IPython would, on Colab or not; return the line magics it called."""
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    calls = []
    shell = types.SimpleNamespace(run_line_magic=lambda *args: calls.append(args))
    exec(TransformerManager().transform_cell(source), {"get_ipython": lambda: shell})
    return calls


@pytest.mark.parametrize("folder", ["solutions", "notebooks"])
@pytest.mark.parametrize("name", IDS)
def test_install_cell_comes_first_and_pip_installs_the_repository_on_colab_only(folder, name, monkeypatch):
    cell = notebook(folder, name).cells[1]
    assert cell.cell_type == "code" and cell.id == f"{name[:2]}-colab" == install_cell_id(name)
    assert "nbgrader" not in cell.metadata, "the install cell must be neither graded nor an answer"
    assert run(cell.source, on_colab=True, monkeypatch=monkeypatch) == [
        ("pip", f'install --quiet --no-deps "{PROJECT["name"]} @ git+{REPOSITORY}"'),
        ("pip", "install --quiet einops"),
    ]
    assert run(cell.source, on_colab=False, monkeypatch=monkeypatch) == []
