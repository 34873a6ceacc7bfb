""" "Open in Colab": a badge under each notebook's title and a cell that installs the course on Colab.

Both are derived from ``[project.urls] Repository`` in pyproject.toml, the one place the repository's
address is written. ``python -m autograder.colab`` rewrites the solution notebooks (idempotently);
``python -m autograder release`` then carries the change to ``notebooks/``.
"""

import re
import tomllib

import nbformat

from autograder.release import ROOT, assignments

BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE = re.compile(r"\n*\[!\[Open in Colab\]\(.*?\)\]\(.*?\)\n*")


def project() -> dict:
    """The ``[project]`` table of pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def repository_url() -> str:
    """The course repository on GitHub, e.g. ``https://github.com/owner/repo``."""
    return project()["urls"]["Repository"]


def colab_url(assignment: str) -> str:
    """Colab's address of the student notebook of ``assignment`` on the main branch."""
    repository = repository_url().removeprefix("https://github.com/")
    path = f"notebooks/{assignment}/{assignment}.ipynb"
    return f"https://colab.research.google.com/github/{repository}/blob/main/{path}"


def badge(assignment: str) -> str:
    return f"[![Open in Colab]({BADGE_IMAGE})]({colab_url(assignment)})"


def install_source() -> str:
    """The first code cell: pip-installs the course package on Colab, does nothing anywhere else.

    ``--no-deps`` keeps Colab's own PyTorch (the course pins a CPU-friendly one for laptops); of the
    course's dependencies only einops may be missing there.
    """
    requirement = f"{project()['name']} @ git+{repository_url()}"
    return (
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:  # elsewhere the course is installed already\n'
        f'    %pip install --quiet --no-deps "{requirement}"\n'
        "    %pip install --quiet einops"
    )


def install_cell_id(assignment: str) -> str:
    return f"{assignment[:2]}-colab"


def add_colab(nb: nbformat.NotebookNode, assignment: str) -> nbformat.NotebookNode:
    """Put the badge under the title of the first (markdown) cell and the install cell after it.

    Idempotent: an earlier badge or install cell is replaced, so a changed URL is picked up.
    """
    title = nb.cells[0]
    if title.cell_type != "markdown" or not title.source.startswith("# "):
        raise ValueError(f"{assignment}: the first cell must be markdown starting with the '# ' title")
    heading, _, rest = BADGE.sub("\n", title.source).partition("\n")
    title.source = f"{heading}\n\n{badge(assignment)}\n\n{rest.lstrip()}".rstrip()
    cell_id = install_cell_id(assignment)
    nb.cells = [c for c in nb.cells if c.get("id") != cell_id]
    nb.cells.insert(1, nbformat.v4.new_code_cell(install_source(), id=cell_id))
    return nb


def main() -> None:
    for assignment in assignments():
        path = ROOT / "solutions" / assignment / f"{assignment}.ipynb"
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        if nbformat.writes(add_colab(nb, assignment)) != before:
            nbformat.write(nb, path)
            print(f"updated {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
