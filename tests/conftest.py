"""Shared fixtures: solution notebooks run once per session in live kernels."""

from collections.abc import Callable, Iterator

import pytest

from tests.notebook_kernel import ROOT, run_notebook


@pytest.fixture(scope="session")
def solution_run() -> Iterator[Callable]:
    """``solution_run(name)``: (kernel, cell runs, notebook) of the solution, run once, kept alive."""
    runs = {}

    def get(name: str):
        if name not in runs:
            runs[name] = run_notebook(ROOT / "solutions" / name / f"{name}.ipynb")
        return runs[name]

    yield get
    for kernel, _, _ in runs.values():
        kernel.close()
