"""The static review of student cells: correct code of every kind passes, tampering does not."""

import json

import pytest

from autograder.policy import review
from tests.mutations import all_variants, edited_source
from tests.notebook_kernel import ROOT

ALLOWED = [
    "class A(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self._cache = None",
    "for _ in range(3):\n    pass",
    "nn.init.xavier_uniform_(layer.weight)",
    "@torch.no_grad()\ndef f(x):\n    return x.masked_fill(~m, float('-inf'))",
    "x = f'{a.shape} {b!r}'",
    "import torch.nn.functional as F\nfrom einops.layers.torch import Rearrange",
    "class E(nn.Module):\n    def __init__(self, n):\n        self.b = nn.ModuleList([B()] * n)",
    "def __repr__(self):\n    return 'A()'",
    "x = y.astype(np.float32)",
    "ok = isinstance(m, (nn.Linear, nn.LayerNorm))",
    "def f(x: torch.Tensor) -> torch.Tensor:\n    return F.gelu(x)",
    "act = F.gelu",
    "if __name__ == '__main__':\n    pass",
    "print(1 +)",  # not Python: runs, and the student sees the SyntaxError
]
REFUSED = {
    "import os\nos.system('rm -rf /')": "imports `os`",
    "torch.allclose = lambda *a, **k: True": "assigns to `torch.allclose`",
    "t = torch\nt.allclose = print": "assigns to `t.allclose`",
    "def h(self=nn.Linear):\n    pass": "holds the class `nn.Linear`",
    "setattr(torch, 'allclose', print)": "uses `setattr`",
    "import course_utils.feedback as f": "imports `course_utils.feedback`",
    "from course_utils.reference import sdpa_attention": "imports `course_utils.reference`",
    "import builtins": "imports `builtins`",
    "__builtins__['print'] = None": "uses `__builtins__`",
    "get_ipython().events.register('post_run_cell', f)": "uses `get_ipython`",
    "%timeit f()": "IPython magic",
    "!cat ../gradebook.db": "IPython magic",
    "import sys\nsys.settrace(f)": "imports `sys`",
    "torch.sys.settrace(f)": "uses `torch.sys`",
    "frame = (i for i in []).gi_frame": "gi_frame",
    "g = err.__traceback__": "special attribute `__traceback__`",
    "class Fake:\n    def __eq__(self, other):\n        return True": "special method `__eq__`",
    "class T(torch.Tensor):\n    pass": "subclasses `torch.Tensor`",
    "class M(nn.Module, metaclass=Meta):\n    pass": "sets `metaclass=`",
    "T = type('T', (torch.Tensor,), {})": "uses `type`",
    "class A:\n    def h(self):\n        self.allclose = print\n\n\nA.h(torch)": "holds the module `torch`",
    "def h(self):\n    self.forward = print": "only a method may set attributes",
    "Linear = nn.Linear": "holds the class `nn.Linear`",
    "layers = [torch.Tensor]": "holds the class `torch.Tensor`",
    "functional = torch.nn.functional": "holds the module `torch.nn.functional`",
    "open('/tmp/grades.csv', 'w')": "uses `open`",
    "eval('1')": "uses `eval`",
    "exec(code)": "uses `exec`",
    "print(In[-1])": "uses `In`",
    "print(_i3)": "uses `_i3`",
    "'{0.__globals__}'.format(f)": "format",
    "torch.nn.modules.module.register_module_forward_hook(h)": "register_module_forward_hook",
    "torch._C._set_grad_enabled(False)": "private attribute",
    "torch.set_default_dtype(torch.float64)": "set_default_dtype",
    "class A:\n    def h(self):\n        self = torch\n        self.allclose = print": "rebinds `self`",
    "from torch import *": "import *",
    "torch.load('x.pt')": "torch.load",
    "np.random.seed.__globals__": "special attribute",
}


def answer_cells():
    for path in sorted((ROOT / "solutions").glob("*/*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["metadata"].get("nbgrader", {}).get("solution"):
                yield path.stem, cell["metadata"]["nbgrader"]["grade_id"], "".join(cell["source"])


@pytest.mark.parametrize("source", ALLOWED)
def test_ordinary_code_passes(source):
    assert review(source) == []


@pytest.mark.parametrize(("source", "named"), REFUSED.items())
def test_tampering_is_refused_with_its_line_named(source, named):
    violations = review(source)
    assert violations, f"not refused: {source!r}"
    assert any(named in v.what for v in violations), [str(v) for v in violations]


def test_every_solution_and_correct_or_wrong_variant_passes_the_review():
    refused = [f"{nb}/{cell}: {review(src)}" for nb, cell, src in answer_cells() if review(src)]
    solutions = {(nb, cell): src for nb, cell, src in answer_cells()}
    for variant in all_variants():
        source = edited_source(solutions[(variant.notebook, variant.cell)], variant.edits)
        if review(source):
            refused.append(f"{variant.notebook}/{variant.name}: {review(source)}")
    assert not refused, "\n".join(refused)
