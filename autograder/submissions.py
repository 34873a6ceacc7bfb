"""Find who submitted which notebook, in nbgrader's layout or in an LMS download (folder or zip).

Accepted layouts (``.ipynb_checkpoints`` and ``__MACOSX`` are ignored everywhere):

- nbgrader: ``<student_id>/<assignment_id>/<notebook>.ipynb``;
- one folder per student: ``<student_id>/<notebook>.ipynb``;
- Moodle: ``<Full Name>_<id>_assignsubmission_file_/<notebook>.ipynb`` (student id: ``<id>``);
- Canvas: ``<name>_[LATE_]<user id>_<submission id>_<notebook>.ipynb`` (student id: ``<user id>``);
- ``<student_id>__<notebook>.ipynb`` (two underscores) for any other flat export.

The assignment is the one whose id the notebook's file name contains (``04_multi_head_attention
(1).ipynb`` and ``04_multi_head_attention-2.ipynb`` count). When ``--assignment`` names one assignment
and a student handed in a single notebook whose name names none, that notebook is graded as it, and the
row says so. A student's other files are listed as ignored.
"""

import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

IGNORED_PARTS = {".ipynb_checkpoints", "__MACOSX", ".DS_Store"}
CANVAS = re.compile(r"^(?P<name>[^_]+)_(?:late_)?(?P<student>\d+)_(?P<submission>\d+)_(?P<file>.+)$", re.I)
MOODLE = re.compile(r"^(?P<name>.+)_(?P<student>[^_]+)_assignsubmission_file_?$")
FLAT = re.compile(r"^(?P<student>.+?)__(?P<file>.+)$")
MAX_ZIP_BYTES = 2 << 30


@dataclass
class Submission:
    """One student's notebook for one assignment (``path`` None: nothing was handed in)."""

    student_id: str
    assignment: str
    path: Path | None = None
    notes: list[str] = field(default_factory=list)


def safe_id(text: str) -> str:
    """A student id usable as a file name: letters, digits, ``._@-``; anything else becomes ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._@-]", "_", text.strip()).strip(".") or "unknown"
    return cleaned[:100]


def unpack(archive: Path, into: Path) -> Path:
    """Extract a zip of submissions into ``into``, refusing paths that would land outside it."""
    with zipfile.ZipFile(archive) as zipped:
        if sum(info.file_size for info in zipped.infolist()) > MAX_ZIP_BYTES:
            raise SystemExit(
                f"{archive}: more than {MAX_ZIP_BYTES >> 30} GiB uncompressed; refusing to unpack"
            )
        for info in zipped.infolist():
            target = (into / info.filename).resolve()
            if not target.is_relative_to(into.resolve()):
                raise SystemExit(
                    f"{archive}: entry {info.filename!r} points outside the archive; refusing it"
                )
        zipped.extractall(into)
    return into


def notebooks_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*.ipynb")
        if p.is_file() and not IGNORED_PARTS & set(p.relative_to(folder).parts)
    )


def assignment_named(filename: str, assignments: list[str]) -> str | None:
    """The (longest) assignment id that ``filename`` contains, ignoring case."""
    name = filename.lower()
    found = [a for a in assignments if a.lower() in name]
    return max(found, key=len) if found else None


def owner(path: Path, root: Path) -> tuple[str, str] | None:
    """(student id, the notebook's own file name) from an LMS path, or None if no pattern fits."""
    parts = path.relative_to(root).parts
    if len(parts) >= 2:
        folder = MOODLE.match(parts[0])
        return (folder["student"] if folder else parts[0]), path.name
    for pattern in (CANVAS, FLAT):
        match = pattern.match(path.name)
        if match:
            return match["student"], match["file"]
    return None


def find_submissions(
    root: Path, assignments: list[str], wanted: list[str] | None = None
) -> tuple[list[Submission], list[str]]:
    """Every (student, assignment) to grade under ``root``, and warnings about files that fit no pattern.

    ``assignments`` are all known ids; ``wanted`` restricts to some (each student then gets a row for
    each wanted assignment, ``path=None`` when missing). Without ``wanted``, the assignments graded
    are those handed in by anyone.
    """
    warnings: list[str] = []
    found: dict[tuple[str, str], list[Path]] = defaultdict(list)
    unmatched: dict[str, list[Path]] = defaultdict(list)
    others: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    renamed: dict[tuple[str, str], str] = {}
    nbgrader_layout = any((d / a).is_dir() for d in root.iterdir() if d.is_dir() for a in assignments)
    for path in notebooks_in(root):
        if nbgrader_layout:
            parts = path.relative_to(root).parts
            if len(parts) != 3 or parts[1] not in assignments:
                warnings.append(
                    f"{path.relative_to(root)}: not <student>/<assignment>/<notebook>.ipynb; ignored"
                )
                continue
            student, assignment = safe_id(parts[0]), parts[1]
            found[(student, assignment)].append(path)
            if path.name != f"{assignment}.ipynb":
                renamed[(student, assignment)] = f"graded {path.name} (expected {assignment}.ipynb)"
            continue
        who = owner(path, root)
        if who is None:
            warnings.append(f"{path.relative_to(root)}: the file name names no student; ignored")
            continue
        student, filename = safe_id(who[0]), who[1]
        assignment = assignment_named(filename, assignments)
        if assignment is None:
            unmatched[student].append(path)
        else:
            found[(student, assignment)].append(path)
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).parts
        if (
            path.is_file()
            and path.suffix != ".ipynb"
            and not IGNORED_PARTS & set(relative)
            and len(relative) > 1
        ):
            student = safe_id(MOODLE.sub(r"\g<student>", relative[0]))
            within = relative[1] if nbgrader_layout and len(relative) > 2 else None
            others[(student, within)].append("/".join(relative[1 + bool(within) :]))

    students = sorted({s for s, _ in found} | set(unmatched))
    graded = wanted or sorted({a for _, a in found})
    submissions = []
    for student in students:
        for assignment in graded:
            submission = Submission(student, assignment)
            paths = found.get((student, assignment), [])
            strays = unmatched.get(student, [])
            if not paths and len(strays) == 1 and wanted and len(wanted) == 1:
                paths = strays
                submission.notes.append(f"{strays[0].name} names no assignment; graded as {assignment}")
            elif not paths and strays:
                names = ", ".join(p.name for p in strays)
                submission.notes.append(f"found {names}, whose name names no assignment")
            if len(paths) > 1:
                paths = sorted(paths, key=lambda p: (p.stat().st_mtime, p.name))
                ignored = ", ".join(p.name for p in paths[:-1])
                submission.notes.append(
                    f"several notebooks handed in; graded the newest, {paths[-1].name} (ignored {ignored})"
                )
            submission.path = paths[-1] if paths else None
            if (student, assignment) in renamed and len(paths) == 1:
                submission.notes.append(renamed[(student, assignment)])
            ignored = others.get((student, assignment), []) + others.get((student, None), [])
            if ignored:
                submission.notes.append(f"other files ignored: {', '.join(sorted(ignored)[:5])}")
            submissions.append(submission)
    return submissions, warnings
