"""The Gradescope bundle, run as Gradescope runs it, on a fake /autograder tree."""

import json
import os
import stat
import subprocess
import sys
import zipfile

import jsonschema
import pytest

from autograder.gradescope import RESULTS_SCHEMA, build_bundle
from autograder.readme import points
from autograder.sample_class import ATTENTION, FULL, MASK_IGNORED, POSITIONS, TEST_MASK, edit_answer, solved

TEST = "test_MultiHeadAttention"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("bundles")
    return {a: (a, build_bundle(a, folder / f"{a}.zip")) for a in (ATTENTION, POSITIONS)}


def run_autograder(tmp_path, bundle, files: dict[str, bytes]) -> dict:
    """Unpack the bundle as Gradescope does, hand in ``files``, run ``run_autograder``."""
    assignment, path = bundle
    root = tmp_path / "autograder"
    with zipfile.ZipFile(path) as z:
        z.extractall(root / "source")
        for info in z.infolist():  # zipfile drops permissions; Gradescope keeps them
            if info.external_attr >> 16 & stat.S_IXUSR:
                (root / "source" / info.filename).chmod(0o755)
    (root / "submission").mkdir()
    for name, data in files.items():
        (root / "submission" / name).write_bytes(data)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}
    done = subprocess.run(
        [root / "source" / "run_autograder"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, RESULTS_SCHEMA)
    return results


def notebook(assignment: str, change=lambda cells: cells) -> bytes:
    nb = solved(assignment)
    nb["cells"] = change(nb["cells"])
    return json.dumps(nb).encode()


@pytest.mark.parametrize("assignment", [ATTENTION, POSITIONS])
def test_bundle_has_setup_and_an_executable_run_autograder_at_its_root(bundles, assignment):
    _, path = bundles[assignment]
    with zipfile.ZipFile(path) as z:
        infos = {i.filename: i for i in z.infolist()}
    assert infos["run_autograder"].external_attr >> 16 & stat.S_IXUSR
    assert infos["setup.sh"].external_attr >> 16 & stat.S_IXUSR
    assert f"course/solutions/{assignment}/{assignment}.ipynb" in infos, "the tests, hidden ones included"
    assert (
        "course/course_utils/checks/nb04_multi_head_attention.py" in infos
        and "course/pyproject.toml" in infos
    )
    assert not [n for n in infos if n.startswith("course/solutions/") and assignment not in n]


def test_full_partial_and_broken_submissions(bundles, tmp_path):
    bundle = bundles[ATTENTION]
    full = run_autograder(tmp_path / "full", bundle, {"my_work.ipynb": notebook(ATTENTION)})
    tests = {t["name"].rsplit("(", 1)[-1].rstrip(")"): t for t in full["tests"]}
    assert full["score"] == FULL[ATTENTION] and (tests[TEST]["score"], tests[TEST_MASK]["score"]) == (4, 2)
    assert all(t["visibility"] == "visible" for t in full["tests"])
    assert all(t["status"] == "passed" for name, t in tests.items() if not name.startswith("written"))
    partial = run_autograder(
        tmp_path / "partial", bundle, {f"{ATTENTION}.ipynb": notebook(ATTENTION, MASK_IGNORED)}
    )
    assert partial["score"] == FULL[ATTENTION] - 2
    mask = next(t for t in partial["tests"] if TEST_MASK in t["name"])
    assert (mask["score"], mask["max_score"], mask["status"]) == (0, 2, "failed")
    assert "mask ignored" in mask["output"], "the failed check and its message"
    broken = run_autograder(tmp_path / "broken", bundle, {f"{ATTENTION}.ipynb": b'{"cells": [}'})
    assert broken["score"] == 0 and "not valid JSON" in broken["output"]
    assert sum(t["max_score"] for t in broken["tests"]) == points(ATTENTION), "every question listed"
    assert not any(t["score"] for t in broken["tests"]), "at zero"
    nothing = run_autograder(tmp_path / "nothing", bundle, {"readme.txt": b"forgot it"})
    assert nothing["score"] == 0 and "no notebook handed in" in nothing["output"]


def test_a_failed_hidden_test_keeps_its_output_hidden(bundles, tmp_path):
    bundle = bundles[POSITIONS]  # a hard-coded size passes the visible test of notebook 01 only
    wrong = edit_answer("np.arange(int(d / 2))", "range(2)", "getPositionEncoding")
    results = run_autograder(tmp_path, bundle, {f"{POSITIONS}.ipynb": notebook(POSITIONS, wrong)})
    visible, hidden = results["tests"][:2]  # the table's question, then its hidden output
    assert visible["visibility"] == "visible" and visible["score"] == 0
    assert "hidden test of this question failed" in visible["output"]
    assert "seq_len=50" not in visible["output"] and "d=128" not in visible["output"]
    assert hidden["visibility"] == "hidden" and hidden["max_score"] == 0
    assert "AssertionError" in hidden["output"]
