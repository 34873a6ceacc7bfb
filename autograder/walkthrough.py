"""A static HTML walkthrough for self-study: every solution notebook run top to bottom and rendered.

Solutions stay; nbgrader's hidden tests are removed from the pages. Each notebook runs in a kernel
whose working directory is a temporary copy of its folder, so nothing is written into ``solutions/``.
"""

import argparse
import html
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter
from nbgrader.preprocessors import ClearHiddenTests

from autograder.release import MARKERS, ROOT, assignments

CELL_TIMEOUT = 3600  # seconds; generous: the full training run of notebook 08 on a slow CPU
SOLUTIONS = ROOT / "solutions"


class WalkthroughError(RuntimeError):
    """Some notebooks failed to run; the others were built."""


def title(nb: nbformat.NotebookNode) -> str:
    """The notebook's first markdown heading, without its ``#`` marks."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return "Untitled"


def execute(nb: nbformat.NotebookNode, folder: Path, quick: bool) -> None:
    """Run ``nb`` in place, in a kernel started in a temporary copy of ``folder``."""
    env = {k: v for k, v in os.environ.items() if k != "COURSE_QUICK"}
    if quick:
        env["COURSE_QUICK"] = "1"  # the training notebooks make a smoke run
    with tempfile.TemporaryDirectory() as scratch:
        copy = shutil.copytree(folder, Path(scratch) / folder.name)
        NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3").execute(cwd=str(copy), env=env)


def failure(nb: nbformat.NotebookNode, folder: Path, quick: bool) -> str:
    """Execute ``nb``; return why it failed (the failing cell and its error), or "" if it ran."""
    try:
        execute(nb, folder, quick)
    except CellExecutionError as error:
        failed = [c.id for c in nb.cells if any(o.output_type == "error" for o in c.get("outputs", []))]
        return f"cell {failed[-1] if failed else '?'}: {error.ename}: {error.evalue}"
    except Exception as error:  # a kernel that died or timed out: report it, build the others
        return f"{type(error).__name__}: {error}"
    return ""


def render(nb: nbformat.NotebookNode) -> str:
    """The notebook as one self-contained HTML page, its hidden tests removed and the written answers'
    model answers shown as plain text (without nbgrader's solution markers)."""
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = MARKERS.sub("", cell.source)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title(nb)}})
    return body


def index_page(entries: list[tuple[str, str, bool]], quick: bool) -> str:
    """The table of contents: (assignment, title, built) in course order; failed ones are not links."""
    items = "\n".join(
        f'  <li><a href="{name}.html">{html.escape(text)}</a></li>'
        if built
        else f"  <li>{html.escape(text)} (failed to run)</li>"
        for name, text, built in entries
    )
    mode = "a quick run (COURSE_QUICK=1: training shortened)" if quick else "a full run"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Course walkthrough</title>'
        f"</head>\n<body>\n<h1>Course walkthrough</h1>\n<p>The solution notebooks with their outputs, "
        f"from {mode}.</p>\n<ol>\n{items}\n</ol>\n</body>\n</html>\n"
    )


def build_walkthrough(ids: list[str] | None, out: Path, quick: bool, solutions: Path | None = None) -> Path:
    """Execute and render each solution notebook (all by default) into ``out``; return index.html.

    A notebook that fails is reported on stderr and the others are still built; then
    ``WalkthroughError`` names the failed ones. ``solutions`` defaults to the course's.
    """
    solutions = solutions or SOLUTIONS
    ids = ids or assignments(solutions)
    for name in ids:
        if not (solutions / name).is_dir():
            raise SystemExit(f"no assignment {name!r}: expected {solutions.name}/{name}/")
    out.mkdir(parents=True, exist_ok=True)
    entries, failed = [], []
    for name in ids:
        nb = nbformat.read(solutions / name / f"{name}.ipynb", as_version=4)
        start = time.perf_counter()
        reason = failure(nb, solutions / name, quick)
        entries.append((name, title(nb), not reason))
        if reason:
            print(f"FAILED {name}, {reason}", file=sys.stderr)
            failed.append(name)
            continue
        (out / f"{name}.html").write_text(render(nb), encoding="utf-8")
        print(f"built {name} in {time.perf_counter() - start:.0f} s")
    index = out / "index.html"
    index.write_text(index_page(entries, quick), encoding="utf-8")
    if failed:
        raise WalkthroughError(f"{len(failed)} of {len(ids)} notebooks failed: {', '.join(failed)}")
    return index


def _command(args: argparse.Namespace) -> None:
    try:
        index = build_walkthrough(args.assignments or None, args.out, args.quick)
    except WalkthroughError as error:
        raise SystemExit(f"walkthrough: {error}") from None
    print(f"wrote {index}")


def add_walkthrough_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``walkthrough`` subcommand; its ``handler`` default runs it with the parsed arguments."""
    parser = subparsers.add_parser("walkthrough", help="execute the solutions into a static HTML walkthrough")
    parser.add_argument("assignments", nargs="*", help="assignment ids (default: all)")
    parser.add_argument("--out", type=Path, default=Path("build/walkthrough"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="COURSE_QUICK=1: shorten the training runs")
    parser.set_defaults(handler=_command)
    return parser
