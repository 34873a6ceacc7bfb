"""End to end in a browser: a student fills in notebook 01 in JupyterLab, runs it, and validates it.

Headless Chromium (Debian's ``chromium`` package) drives JupyterLab with nbgrader's extension,
serving a temporary copy of ``notebooks/01_positional_encoding/``. Screenshots of each state go to
``test-artifacts/browser/``.
"""

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from autograder.sample_class import find, load, solved
from tests.jupyter_lab import CHROMIUM, CHROMIUM_ARGS, jupyter_lab
from tests.mutations import POSITIONAL, edited_source
from tests.notebook_kernel import ROOT, read

NAME = "01_positional_encoding"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
SWAPPED = next(v for v in POSITIONAL if v.name == "sin-cos-swapped")
PASSES = "getPositionEncoding passes the self-check."
TIMEOUT = 60_000  # milliseconds for the kernel to start or a run to finish; it takes a few seconds
pytestmark = pytest.mark.notebooks


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """JupyterLab's page of a fresh copy of the student notebook, its kernel started.

    The server's log and a screenshot of the last state (where a failing run stopped) are kept too.
    """
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium chromium-driver` for the browser test")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    root = shutil.copytree(ROOT / "notebooks" / NAME, tmp_path / NAME)
    answer_the_questions(root / f"{NAME}.ipynb")
    with (
        jupyter_lab(root, tmp_path / "jupyter", ARTIFACTS / "jupyterlab.log") as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        try:
            page.set_default_timeout(TIMEOUT)
            expect.set_options(timeout=TIMEOUT)
            page.goto(url(f"{NAME}.ipynb"))
            expect(page.locator("#jp-main-statusbar")).to_contain_text("| Idle")
            yield page
        finally:
            screenshot(page, f"{NAME}-last")
            browser.close()


def answer_the_questions(path: Path) -> None:
    """The student has answered the notebook's questions already: only the exercise is left to do."""
    notebook, release = solved(NAME), load("notebooks", NAME)
    exercise = find(release["cells"], SWAPPED.cell)
    notebook["cells"][exercise] = release["cells"][exercise]
    path.write_text(json.dumps(notebook))


def solution_source() -> str:
    nb = read(ROOT / "solutions" / NAME / f"{NAME}.ipynb")
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == SWAPPED.cell)


def answer(page: Page, source: str) -> None:
    """Replace the exercise cell's text, as a paste would, and run all cells."""
    cell = page.locator(".jp-CodeCell", has_text="def getPositionEncoding(")
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(source)
    page.locator(".lm-MenuBar-item", has_text=re.compile("^Run$")).click()
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
    cell.evaluate("cell => cell.scrollIntoView({block: 'start'})")


def validate(page: Page) -> Locator:
    """Click nbgrader's Validate button (it saves first); return the results dialog."""
    page.locator(".validate-button").click()
    dialog = page.locator(".jp-Dialog", has_text="Validation Results")
    expect(dialog).to_be_visible()
    return dialog


def screenshot(page: Page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png")


def test_student_sees_the_self_check_pass_then_name_a_known_mistake(page: Page):
    self_check = page.locator(".jp-CodeCell", has_text=PASSES).locator(".jp-OutputArea-output")

    answer(page, solution_source())
    expect(self_check).to_have_text(PASSES)
    screenshot(page, f"{NAME}-self-check-passes")
    dialog = validate(page)
    expect(dialog).to_contain_text("Success! Your notebook passes all the tests.")
    screenshot(page, f"{NAME}-validate-passes")
    dialog.get_by_role("button", name="Ok").click()

    answer(page, edited_source(solution_source(), SWAPPED.edits))
    expect(self_check).to_contain_text(re.compile(f"AssertionError: .* known mistake: {SWAPPED.expect}"))
    screenshot(page, f"{NAME}-known-mistake")
    dialog = validate(page)
    expect(dialog).to_contain_text("The following cell failed:")
    expect(dialog).to_contain_text(SWAPPED.expect)
    screenshot(page, f"{NAME}-validate-fails")
