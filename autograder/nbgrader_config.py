"""nbgrader configuration of the course: ``solutions/`` is the source, ``notebooks/`` the release.

Used by ``python -m autograder release``, and by nbgrader's own commands through
the repository root's ``nbgrader_config.py``.
"""

from pathlib import Path

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.root = str(Path(__file__).resolve().parents[1])
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.Execute.timeout = 120  # seconds per cell; the checks of a notebook take a few seconds on a CPU
# Files a notebook run leaves beside itself (alignment maps, checkpoints) are not released.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints",
    "*.pyc",
    "__pycache__",
    "feedback",
    "*.npz",
    "*.pt",
    "*.ckpt",
]
