"""Generate the student notebooks (``notebooks/``) from the instructor's (``solutions/``)."""

import logging
import os
import re
import sys
import tempfile
from pathlib import Path

from nbgrader.converters import GenerateAssignment
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config, PyFileConfigLoader

ROOT = Path(__file__).resolve().parents[1]
MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*(\n|$)", re.M)  # nbgrader's, around answers
CONFIG_FILE = Path(__file__).with_name("nbgrader_config.py")


def assignments(solutions: Path = ROOT / "solutions") -> list[str]:
    """The assignment ids: the folders of ``solutions/``, in course order."""
    folders = solutions.iterdir()
    return sorted(p.name for p in folders if p.is_dir() and p.name[0].isdigit())


def put_alembic_on_path() -> None:
    """nbgrader's gradebook starts the `alembic` command of its own environment, which may not be on PATH."""
    bin_folder = str(Path(sys.executable).parent)
    if bin_folder not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_folder, os.environ["PATH"]])


def course_config(**overrides: str) -> Config:
    """The repository's nbgrader configuration, with ``CourseDirectory`` overrides."""
    config = PyFileConfigLoader(CONFIG_FILE.name, path=str(CONFIG_FILE.parent)).load_config()
    for key, value in overrides.items():
        setattr(config.CourseDirectory, key, value)
    return config


def release(ids: list[str] | None = None, release_directory: Path | None = None) -> list[Path]:
    """Run nbgrader's generate_assignment for each id (all by default); return the notebooks written.

    nbgrader records the cells in a gradebook as it goes; a throw-away one is used, so that no
    ``gradebook.db`` is left in the repository. ``release_directory`` defaults to ``notebooks/``.
    """
    overrides = {} if release_directory is None else {"release_directory": str(release_directory)}
    put_alembic_on_path()
    written = []
    for assignment in ids or assignments():
        if not (ROOT / "solutions" / assignment).is_dir():
            raise SystemExit(f"no assignment {assignment!r}: expected solutions/{assignment}/")
        with tempfile.TemporaryDirectory() as scratch:
            config = course_config(**overrides, db_url=f"sqlite:///{scratch}/gradebook.db")
            config.CourseDirectory.assignment_id = assignment
            config.GenerateAssignment.force = True
            coursedir = CourseDirectory(config=config)
            converter = GenerateAssignment(coursedir=coursedir, config=config)
            converter.log.setLevel(logging.WARNING)
            converter.start()
        out = Path(coursedir.format_path(coursedir.release_directory, ".", assignment))
        written += sorted(out.glob("*.ipynb"))
    return written
