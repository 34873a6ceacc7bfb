"""From a submitted notebook to the program the grader runs: the student's code, the instructor's tests.

Tests, locked cells and given code always come from the instructor's source notebook (with the hidden
tests), in the source's order; the submission contributes only what students write: the answer cells,
matched by nbgrader ``grade_id``, and the cells they added, kept after the cell they followed. Anything
done to the cells a student may not change (deleted, edited, re-typed, duplicated, reordered, metadata
or points edited) cannot raise the score and is reported as a finding. A test cell becomes two steps,
its visible checks and its hidden ones, each read into the check calls the judge runs
(:func:`autograder.judge.parse_test`); its code is never run where the student's code runs.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nbformat
from nbgrader.utils import compute_checksum

from autograder.judge import CheckCall, parse_test
from autograder.policy import review

HIDDEN = re.compile(r"^### BEGIN HIDDEN TESTS[ \t]*\n(.*?)^### END HIDDEN TESTS[ \t]*(\n|$)", re.S | re.M)


class MalformedNotebookError(ValueError):
    """The submission is not a notebook the grader can read; the message says why."""


@dataclass(frozen=True)
class Step:
    """One cell the grader runs.

    ``kind`` is ``given`` (instructor code), ``test`` (a graded test cell, without its hidden tests),
    ``hidden`` (those hidden tests), ``answer`` (a student's answer cell), ``extra`` (a cell the
    student added) or ``written`` (a written answer, graded by hand: its text, never run). ``refused``
    lists the review's reasons not to run a student cell; ``checks`` are a test step's check calls,
    which the judge runs.
    """

    kind: str
    cell_id: str
    source: str
    grade_id: str | None = None
    points: float = 0.0
    refused: tuple[str, ...] = ()
    checks: tuple[CheckCall, ...] = ()

    @property
    def title(self) -> str:
        """The test's docstring (its visible first line), or the grade id."""
        first = self.source.strip().splitlines()[0] if self.source.strip() else ""
        return first.strip("\"' ") if first.startswith(('"""', "'''")) else (self.grade_id or self.cell_id)


@dataclass
class Program:
    """The cells to run in order, and what the submission did to the cells it may not change."""

    steps: list[Step]
    findings: list[str] = field(default_factory=list)  # what was done to cells students may not change
    notes: list[str] = field(default_factory=list)  # what is worth knowing about the answer cells

    @property
    def tests(self) -> list[Step]:
        return [s for s in self.steps if s.kind in ("test", "written")]

    @property
    def max_score(self) -> float:
        return sum(s.points for s in self.tests)


def nbgrader_meta(cell: dict) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def read_submission(data: bytes) -> list[dict]:
    """The cells of a submitted ``.ipynb``, or :class:`MalformedNotebookError` saying what is wrong."""
    if not data.strip():
        raise MalformedNotebookError("the file is empty")
    try:
        notebook = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise MalformedNotebookError(
            f"the file is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from err
    except json.JSONDecodeError as err:
        raise MalformedNotebookError(
            f"the file is not valid JSON, so not a notebook (truncated or edited by hand?): "
            f"{err.msg} at line {err.lineno}, column {err.colno}"
        ) from err
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise MalformedNotebookError("the file is JSON but not a notebook: it has no list of cells")
    if notebook.get("nbformat") != 4:
        raise MalformedNotebookError(
            f"notebook format {notebook.get('nbformat')!r} is not supported (expected 4)"
        )
    cells = []
    for number, cell in enumerate(notebook["cells"], 1):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise MalformedNotebookError(f"cell {number} is not a notebook cell")
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)
        if not isinstance(source, str):
            raise MalformedNotebookError(f"cell {number} has a source that is not text")
        metadata = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        cells.append({**cell, "source": source, "metadata": metadata})
    return cells


def checksum(cell: dict) -> str | None:
    """nbgrader's checksum of a cell (source, type, flags, grade id, points); None if unreadable."""
    try:
        return compute_checksum(nbformat.from_dict(cell))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def describe_change(release: dict, submitted: dict) -> str:
    """What differs between a locked cell as released and as submitted."""
    ours, theirs = nbgrader_meta(release), nbgrader_meta(submitted)
    if not theirs:
        return "its nbgrader metadata was removed"
    if submitted["cell_type"] != release["cell_type"]:
        return f"changed from a {release['cell_type']} cell to a {submitted['cell_type']} cell"
    for key in ("grade_id", "points", "grade", "solution", "locked"):
        if ours.get(key) != theirs.get(key):
            return f"its nbgrader {key} changed from {ours.get(key)!r} to {theirs.get(key)!r}"
    if release["source"] != submitted["source"]:
        return "its code was edited"
    return "its nbgrader metadata was edited"


def assemble(
    source: dict, release: dict, submitted: list[dict], forbidden: Mapping[str, object] | None = None
) -> Program:
    """The program for ``submitted`` cells, given the instructor's ``source`` and ``release`` notebooks.

    ``source`` and ``release`` are notebook dicts (``nbformat.read`` or JSON); ``submitted`` comes
    from :func:`read_submission`; ``forbidden`` are the library objects the assignment's checks compare
    against, which no student cell may use (:func:`autograder.policy.review`). A test cell that is not
    made of check calls raises :class:`autograder.judge.TestCellError`.
    """
    source_cells = [dict(c, source=_text(c["source"])) for c in source["cells"]]
    release_cells = [dict(c, source=_text(c["source"])) for c in release["cells"]]
    released = {nbgrader_meta(c).get("grade_id") or c.get("id"): c for c in release_cells}
    findings: list[str] = []
    notes: list[str] = []

    def key(cell: dict) -> str | None:
        return nbgrader_meta(cell).get("grade_id") or cell.get("id")

    slot_of = {key(c): i for i, c in enumerate(source_cells)}
    answers = {key(c) for c in source_cells if nbgrader_meta(c).get("solution")}
    written = {key(c) for c in source_cells if c["cell_type"] != "code" and _is_written(c)}
    texts: dict[str, str] = {}
    locked = {key(c) for c in source_cells if _is_locked(c)}
    given_sources = {c["source"]: key(c) for c in source_cells if c["cell_type"] == "code"}

    by_slot: dict[int, list[dict]] = {}
    slot, seen_locked = -1, []
    by_id = {c.get("id"): key(c) for c in source_cells if c.get("id")}
    for cell in submitted:
        name = nbgrader_meta(cell).get("grade_id") or cell.get("id")
        if name not in slot_of and cell.get("id") in by_id:
            name = by_id[cell["id"]]  # nbgrader's metadata was removed, the cell's id remains
        if name not in slot_of and cell["cell_type"] == "code" and cell["source"] in given_sources:
            name = given_sources[cell["source"]]  # a given cell whose id was lost
        if name in slot_of:
            slot = slot_of[name]
            if name in written:
                texts[name] = cell["source"]
            elif name in answers:
                if cell["cell_type"] == "code":
                    by_slot.setdefault(slot, []).append(cell)
                else:
                    notes.append(f"answer cell {name} was turned into a {cell['cell_type']} cell")
            elif name in locked:
                seen_locked.append(name)
                expected = nbgrader_meta(released.get(name, {})).get("checksum")
                if expected and checksum(cell) != expected:
                    findings.append(f"test cell {name}: {describe_change(released[name], cell)}")
        elif cell["cell_type"] == "code" and cell["source"].strip():
            if nbgrader_meta(cell).get("grade_id"):
                findings.append(
                    f"cell with unknown nbgrader grade_id {name!r} (run as the student's own code)"
                )
            by_slot.setdefault(slot, []).append(dict(cell, extra=True))

    order = [k for k in (key(c) for c in release_cells) if k in locked]
    for name in order:
        count = seen_locked.count(name)
        if count == 0:
            findings.append(f"test cell {name} was deleted")
        elif count > 1:
            findings.append(f"test cell {name} appears {count} times")
    present = list(dict.fromkeys(n for n in seen_locked))
    if present != [n for n in order if n in present]:
        findings.append("test cells were reordered")

    def student(cell: dict, grade_id: str | None = None) -> Step:
        refused = tuple(str(v) for v in review(cell["source"], forbidden))
        kind = "answer" if grade_id else "extra"
        return Step(
            kind, str(cell.get("id") or grade_id or "added-cell"), cell["source"], grade_id, refused=refused
        )

    steps: list[Step] = [student(c) for c in by_slot.get(-1, [])]
    for i, cell in enumerate(source_cells):
        meta, name = nbgrader_meta(cell), key(cell)
        if name in written:  # a written answer, graded by hand: kept as the student wrote it
            answer = texts.get(name, released.get(name, cell)["source"])
            steps.append(Step("written", name, answer, name, float(meta.get("points", 0))))
        elif cell["cell_type"] != "code":
            pass
        elif name in answers:
            mine = [c for c in by_slot.get(i, []) if not c.get("extra")]
            if len(mine) > 1:
                notes.append(f"answer cell {name} appears {len(mine)} times (all copies ran, in order)")
            if not mine:
                notes.append(f"answer cell {name} is missing (the blank from the release ran instead)")
                mine = [dict(released.get(name, cell), extra=False)]
            steps += [student(c, grade_id=name) for c in mine]
        elif meta.get("grade"):
            visible, hidden = split_hidden(cell["source"])
            points = float(meta.get("points", 0))
            steps.append(
                Step("test", name, visible, name, points, checks=parse_test(visible, f"test cell {name}"))
            )
            if hidden:
                checks = parse_test(hidden, f"hidden tests of {name}")
                steps.append(Step("hidden", name, hidden, name, checks=checks))
        else:
            steps.append(Step("given", name or f"cell-{i}", cell["source"]))
        steps += [student(c) for c in by_slot.get(i, []) if c.get("extra")]
    return Program(steps, findings, notes)


def split_hidden(source: str) -> tuple[str, str]:
    """(the visible part, the hidden tests) of a test cell; the hidden part runs as a cell of its own,
    so that a result can say which part failed. Markers that are not at the top level stay put."""
    match = HIDDEN.search(source)
    if not match:
        return source, ""
    return source[: match.start()] + source[match.end() :], match.group(1)


def _is_written(cell: dict) -> bool:
    """A manually graded answer: a markdown cell that is both a solution and graded."""
    meta = nbgrader_meta(cell)
    return bool(meta.get("solution") and meta.get("grade"))


def _is_locked(cell: dict) -> bool:
    meta = nbgrader_meta(cell)
    return bool(meta.get("grade") or meta.get("locked")) and not meta.get("solution")


def _text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else source
