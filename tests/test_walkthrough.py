"""The static HTML walkthrough: solutions executed and rendered, hidden tests gone, failures reported."""

import argparse
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from autograder import walkthrough
from autograder.walkthrough import add_walkthrough_parser, build_walkthrough
from tests.mutations import HIDDEN, SOLUTION, lines, lines_only_inside
from tests.notebook_kernel import ROOT, read

NAME = "01_positional_encoding"
pytestmark = pytest.mark.notebooks


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def text_of(page: Path) -> str:
    """What a reader sees: the page's text, tags (syntax highlighting included) removed."""
    parser = _Text()
    parser.feed(page.read_text(encoding="utf-8"))
    return "".join(parser.parts)


def test_page_shows_solutions_and_plots_but_no_hidden_test(tmp_path: Path):
    folder = ROOT / "solutions" / NAME
    files_before = sorted(folder.iterdir())
    index = build_walkthrough([NAME], tmp_path / "site", quick=True)

    page = tmp_path / "site" / f"{NAME}.html"
    assert "data:image/png;base64," in page.read_text(encoding="utf-8"), "plots are not embedded"
    shown = lines(text_of(page))
    sources = [c.source for c in read(folder / f"{NAME}.ipynb").cells if c.cell_type == "code"]
    solution = set().union(*(lines(b) for s in sources for b in SOLUTION.findall(s)))
    assert "P[k, 2 * i] = np.sin(k / denominator)" in solution
    assert solution <= shown, "the solution code is not on the page"
    assert "[ 0.8415  0.5403  0.0998  0.995 ]" in shown, "the lecture's table was not printed"
    hidden = lines_only_inside(sources, HIDDEN)
    assert hidden, "expected hidden tests in the notebook"
    assert not hidden & shown, f"hidden tests are on the page: {hidden & shown}"
    assert "check_position_encoding(getPositionEncoding, cases=[(4, 4, 100)])" in shown, "graded cell gone"

    assert f'<a href="{NAME}.html">Notebook 01 — Positional encoding</a>' in index.read_text()
    assert sorted(folder.iterdir()) == files_before, "the run wrote into solutions/"


def _course(root: Path, cells: dict[str, str]) -> Path:
    """A course of one-cell notebooks ``{name: source}`` under ``root``."""
    for name, source in cells.items():
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# Title of {name}")])
        nb.cells.append(nbformat.v4.new_code_cell(source, id=name.split("_")[1]))
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        (root / name).mkdir(parents=True)
        nbformat.write(nb, root / name / f"{name}.ipynb")
    return root


def test_a_failing_notebook_is_named_and_the_others_are_built(tmp_path: Path, monkeypatch, capsys):
    course = _course(
        tmp_path / "course",
        {
            "01_ok": "import os\nprint('quick:', os.environ.get('COURSE_QUICK'), 'in', os.getcwd())",
            "02_broken": "raise ValueError('broken on purpose')",
            "03_ok": "print('after the failure')",
        },
    )
    monkeypatch.setattr(walkthrough, "SOLUTIONS", course)
    commands = argparse.ArgumentParser().add_subparsers()
    add_walkthrough_parser(commands)
    args = commands.choices["walkthrough"].parse_args(["--out", str(tmp_path / "site"), "--quick"])

    with pytest.raises(SystemExit) as exit_:
        args.handler(args)
    assert exit_.value.code == "walkthrough: 1 of 3 notebooks failed: 02_broken"
    assert "FAILED 02_broken, cell broken: ValueError: broken on purpose" in capsys.readouterr().err

    site = tmp_path / "site"
    assert not (site / "02_broken.html").exists()
    first = text_of(site / "01_ok.html")
    assert "quick: 1 in" in first and str(course / "01_ok") not in first, "not quick, or run in place"
    assert "after the failure" in text_of(site / "03_ok.html")
    index = (site / "index.html").read_text()
    assert '<a href="01_ok.html">Title of 01_ok</a>' in index and '<a href="03_ok.html">' in index
    assert "<li>Title of 02_broken (failed to run)</li>" in index


def test_unknown_assignment_is_refused(tmp_path: Path):
    with pytest.raises(SystemExit, match="no assignment 'nope'"):
        build_walkthrough(["nope"], tmp_path, quick=True)
