"""Run notebook cells in a real Jupyter kernel and score them as nbgrader's autograder does."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client.manager import start_new_kernel
from nbgrader.utils import determine_grade

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 300  # seconds; the slowest cell takes a few seconds on a 2-core CPU


@dataclass
class CellRun:
    """What one cell printed, and whether nbgrader would give it its points."""

    outputs: list = field(default_factory=list)

    @property
    def error(self) -> dict | None:
        return next((o for o in self.outputs if o.output_type == "error"), None)

    @property
    def message(self) -> str:
        """The error as a student sees it: ``Name: message``, or empty."""
        e = self.error
        return f"{e.ename}: {e.evalue}" if e else ""

    @property
    def stderr(self) -> str:
        return "".join(o.text for o in self.outputs if o.output_type == "stream" and o.name == "stderr")

    def score(self, points: float) -> float:
        """nbgrader's score for this output in a graded cell worth ``points``."""
        cell = nbformat.v4.new_code_cell("", outputs=self.outputs)
        cell.metadata["nbgrader"] = {"grade": True, "solution": False, "points": points}
        return determine_grade(cell)[0]


class Kernel:
    """A python3 kernel started in ``cwd``, as nbgrader starts one beside a notebook."""

    def __init__(self, cwd: Path) -> None:
        # COURSE_QUICK shortens the training notebooks to a smoke run; the full runs are benchmarks.
        env = {**os.environ, "COURSE_QUICK": os.environ.get("COURSE_QUICK", "1")}
        self.manager, self.client = start_new_kernel(kernel_name="python3", cwd=str(cwd), env=env)

    def run(self, source: str) -> CellRun:
        run = CellRun()

        def keep(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                run.outputs.append(
                    nbformat.v4.new_output("stream", name=content["name"], text=content["text"])
                )
            elif kind == "error":
                run.outputs.append(
                    nbformat.v4.new_output(
                        "error",
                        ename=content["ename"],
                        evalue=content["evalue"],
                        traceback=content["traceback"],
                    )
                )
            elif kind in ("execute_result", "display_data"):
                output = nbformat.v4.new_output(kind, data=content["data"])
                if kind == "execute_result":
                    output.execution_count = content.get("execution_count")
                run.outputs.append(output)

        self.client.execute_interactive(source, timeout=CELL_TIMEOUT, output_hook=keep, allow_stdin=False)
        return run

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def grade_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The graded code cells: what runs and scores (written answers are graded by hand)."""
    return [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]


def run_notebook(path: Path) -> tuple[Kernel, dict[str, CellRun], nbformat.NotebookNode]:
    """Run every code cell of ``path`` (going on after errors, as nbgrader does).

    Returns the live kernel, each cell's run keyed by cell id, and the notebook.
    """
    nb = read(path)
    kernel = Kernel(path.parent)
    runs = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            runs[cell.id] = kernel.run(cell.source)
    return kernel, runs, nb
