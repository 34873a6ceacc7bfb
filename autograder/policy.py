"""What student code may do: a static review of every cell a student wrote, before it runs.

The grader runs a student's cells and the tests in one Python process, so code that rebinds what a
test calls (``torch.allclose = ...``), hooks the interpreter (``sys.settrace``, IPython's input
transformers), reads the history of executed cells (``In``) or walks frames into the checks
(``gen.gi_frame.f_back.f_globals``) could fake a score or read a hidden test. A cell that does any of
this is not run; the grade row says which line did what.

The rules describe the code of the exercises, not a list of known attacks: imports only of the
numerical libraries; attributes set only on ``self``; no dunder attributes, frames, dynamic attribute
access or evaluation of strings; no subclass of tensors and no special methods that change how a value
compares. Correct solutions never need more. And no use of the library objects the notebook's checks
compare against (``scaled_dot_product_attention`` where attention is the exercise), found by the object
a name resolves to, or by its name on any library module: aliases and helpers are caught alike.

The review is the first line and the source of clear messages; it does not decide scores. The judge,
outside the student's process, does (``autograder.judge``): code that found a way past these rules still
faces checks computed from the judge's own weights and inputs.
"""

import ast
import importlib
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass

from IPython.core.inputtransformer2 import TransformerManager

ALLOWED_IMPORTS = frozenset(
    {
        "abc", "collections", "copy", "dataclasses", "einops", "enum", "functools", "itertools",
        "math", "matplotlib", "numbers", "numpy", "random", "re", "statistics", "time", "torch",
        "tqdm", "typing", "warnings",
    }
)  # fmt: skip
FORBIDDEN_MODULE_PARTS = frozenset(
    {"cpp_extension", "hub", "library", "overrides", "multiprocessing", "distributed", "package",
     "ctypeslib", "f2py", "distutils", "testing"}
)  # fmt: skip
FORBIDDEN_NAMES = frozenset(
    {
        "eval", "exec", "compile", "__import__", "globals", "locals", "vars", "getattr", "setattr",
        "delattr", "open", "input", "breakpoint", "exit", "quit", "help", "memoryview", "object",
        "get_ipython", "In", "Out", "format", "type",
    }
)  # fmt: skip
# Attributes that reach frames, code, the interpreter, files or processes, or change global state.
FORBIDDEN_ATTRIBUTES = frozenset(
    {
        "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame",
        "ag_code", "ag_await", "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace",
        "tb_frame", "tb_next", "co_code", "co_consts", "func_globals", "func_code", "mro",
        "format", "format_map", "os", "sys", "subprocess", "builtins", "gc", "ctypes", "importlib",
        "inspect", "pickle", "shutil", "socket", "signal", "threading", "multiprocessing", "pathlib",
        "io", "tempfile", "marshal", "runpy", "atexit", "weakref", "traceback", "cpp_extension",
        "hub", "library", "overrides", "load", "save", "load_library", "ctypeslib", "tofile",
        "fromfile", "settrace", "setprofile", "environ", "system", "popen", "set_default_dtype",
        "set_default_device", "set_default_tensor_type",
    }
)  # fmt: skip
FORBIDDEN_BASES = frozenset({"Tensor", "Parameter", "ndarray", "type", "generic"})
ALLOWED_SPECIAL_METHODS = frozenset({"__init__", "__repr__", "__str__"})
# What the given cells of the notebooks import, so that student cells may use it without importing.
GIVEN_NAMES = {
    "torch": ("torch",),
    "nn": ("torch", "nn"),
    "F": ("torch", "nn", "functional"),
    "np": ("numpy",),
    "math": ("math",),
    "einops": ("einops",),
    "plt": ("matplotlib", "pyplot"),
    "rearrange": ("einops", "rearrange"),
    "repeat": ("einops", "repeat"),
    "Rearrange": ("einops", "layers", "torch", "Rearrange"),
    "Reduce": ("einops", "layers", "torch", "Reduce"),
}
FORBIDDEN_REFERENCE = "which this notebook's checks compare against: the exercise is to build it yourself"
HEAP_TYPE, IMMUTABLE_TYPE = 1 << 9, 1 << 8  # CPython's Py_TPFLAGS_HEAPTYPE, Py_TPFLAGS_IMMUTABLETYPE
HISTORY_NAME = re.compile(r"^(__+|_+(i+|ih|oh|dh|i?\d+))$")  # IPython's __, _i, _ii, _i3, _3, _ih ...


@dataclass(frozen=True)
class Violation:
    """One rule a cell breaks: the line (1-based, in the cell) and what it does."""

    line: int
    what: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what}"


def is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and len(name) > 4


def root_name(node: ast.expr) -> str | None:
    """``self`` for ``self.a.b[0].c``; None when the chain starts with a call or a literal."""
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def dotted(node: ast.expr) -> str:
    """Source text of an expression, for messages."""
    try:
        return ast.unparse(node)
    except Exception:  # noqa: BLE001 - only used to word a message
        return "<expression>"


def imported_names(tree: ast.AST) -> dict[str, tuple[str, ...]]:
    """The names the notebooks' given cells import, and those this cell imports, as import paths."""
    names = dict(GIVEN_NAMES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                path = alias.name.split(".")
                names[alias.asname or path[0]] = tuple(path if alias.asname else path[:1])
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = (*node.module.split("."), alias.name)
    return names


def resolve(node: ast.expr, names: dict[str, tuple[str, ...]]) -> object | None:
    """The object a dotted name of the allowed libraries stands for (``nn.Linear``); None if unknown.

    Only modules the policy allows are imported, and only attributes are read: no student code runs.
    """
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in names:
        return None
    path = [*names[node.id], *reversed(parts)]
    if path[0] not in ALLOWED_IMPORTS:
        return None
    try:
        value = importlib.import_module(path[0])
        for i, part in enumerate(path[1:], 1):
            try:
                value = getattr(value, part)
            except AttributeError:
                value = importlib.import_module(".".join(path[: i + 1]))
    except Exception:  # noqa: BLE001 - an unknown name is not judged here; running it will tell
        return None
    return value


def mutable_kind(value: object) -> str | None:
    """ "module" or "class" for objects whose attributes can be changed; None for everything else."""
    if isinstance(value, types.ModuleType):
        return "module"
    if isinstance(value, type) and value.__flags__ & HEAP_TYPE and not value.__flags__ & IMMUTABLE_TYPE:
        return "class"
    return None


def allowed_reference(node: ast.expr) -> bool:
    """Whether a module or class sits where it is used, not kept: called, subclassed, in
    ``isinstance``, an ``except`` clause or an annotation."""
    child, parent = node, node.parent
    if isinstance(parent, ast.Tuple):
        child, parent = parent, parent.parent
    if isinstance(parent, ast.Call):
        checks_type = isinstance(parent.func, ast.Name) and parent.func.id in ("isinstance", "issubclass")
        return child is parent.func or (checks_type and child in parent.args)
    if isinstance(parent, ast.ClassDef | ast.ExceptHandler):
        return child in getattr(parent, "bases", []) or child is getattr(parent, "type", None)
    while parent is not None:
        if child in (getattr(parent, "annotation", None), getattr(parent, "returns", None)):
            return True
        child, parent = parent, getattr(parent, "parent", None)
    return False


class Reviewer(ast.NodeVisitor):
    """Collects the violations of one cell's syntax tree."""

    def __init__(self, names: dict[str, tuple[str, ...]], forbidden: Mapping[str, object]) -> None:
        self.violations: list[Violation] = []
        self.names = names  # what the imported names stand for: ("torch", "nn") for nn
        self.scopes: list[str] = []  # "class", "method" (first argument self) or "function"
        self.forbidden = {id(obj): path for path, obj in forbidden.items()}
        self.forbidden_names = {path.rpartition(".")[2]: path for path in forbidden}

    def check_forbidden(self, node: ast.Name | ast.Attribute) -> None:
        """Flag a library object the checks compare against, reached by any name or path."""
        path = self.forbidden.get(id(resolve(node, self.names)))
        named = isinstance(node, ast.Attribute) and node.attr in self.forbidden_names
        if path is None and named and resolve(node.value, self.names) is not None:
            path = self.forbidden_names[node.attr]  # the name, on any library module or class
        if path is not None:
            self.flag(node, f"uses `{dotted(node)}` ({path}), {FORBIDDEN_REFERENCE}")

    def flag(self, node: ast.AST, what: str) -> None:
        self.violations.append(Violation(getattr(node, "lineno", 0), what))

    def check_module(self, node: ast.AST, module: str) -> None:
        parts = module.split(".")
        if parts[0] not in ALLOWED_IMPORTS:
            self.flag(node, f"imports `{module}`, which student cells may not use")
        elif any(p.startswith("_") or p in FORBIDDEN_MODULE_PARTS for p in parts[1:]):
            self.flag(node, f"imports `{module}`")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.flag(node, "uses a relative import")
            return
        self.check_module(node, node.module or "")
        for alias in node.names:
            if alias.name == "*":
                self.flag(node, f"uses `from {node.module} import *`")
            elif alias.name.startswith("_") or alias.name in FORBIDDEN_ATTRIBUTES | FORBIDDEN_NAMES:
                self.flag(node, f"imports `{alias.name}` from `{node.module}`")
            elif alias.name in self.forbidden_names:
                path = self.forbidden_names[alias.name]
                self.flag(node, f"imports `{alias.name}` ({path}), {FORBIDDEN_REFERENCE}")

    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name == "__name__" and isinstance(node.ctx, ast.Load):
            pass  # if __name__ == "__main__":
        elif name in FORBIDDEN_NAMES or is_dunder(name) or HISTORY_NAME.match(name):
            self.flag(node, f"uses `{name}`")
        elif name == "self" and isinstance(node.ctx, ast.Store | ast.Del):
            self.flag(node, "rebinds `self`")
        self.check_reference(node)
        if isinstance(node.ctx, ast.Load) and not isinstance(getattr(node, "parent", None), ast.Attribute):
            self.check_forbidden(node)

    def check_reference(self, node: ast.Name | ast.Attribute) -> None:
        """Modules and Python classes of the libraries may be called, subclassed and tested with
        ``isinstance``, never held as values: a value can reach a ``self`` and be changed there."""
        if not isinstance(node.ctx, ast.Load) or isinstance(getattr(node, "parent", None), ast.Attribute):
            return
        kind = mutable_kind(resolve(node, self.names))
        if kind and not allowed_reference(node):
            self.flag(
                node, f"holds the {kind} `{dotted(node)}` as a value (call it, subclass it or isinstance)"
            )

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name, root = node.attr, root_name(node.value)
        if is_dunder(name) and name != "__init__":
            self.flag(node, f"uses the special attribute `{name}`")
        elif name in FORBIDDEN_ATTRIBUTES or name.startswith("register_module_"):
            self.flag(node, f"uses `{dotted(node)}`")
        elif name.startswith("_") and not is_dunder(name) and root != "self":
            self.flag(node, f"uses the private attribute `{dotted(node)}`")
        if isinstance(node.ctx, ast.Store | ast.Del) and (root != "self" or self.scopes[-1:] != ["method"]):
            self.flag(node, f"assigns to `{dotted(node)}`: only a method may set attributes, of `self`")
        self.check_reference(node)
        if isinstance(node.ctx, ast.Load) and not isinstance(getattr(node, "parent", None), ast.Attribute):
            self.check_forbidden(node)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            last = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
            if last is None:
                self.flag(node, f"class `{node.name}` derives from an expression, `{dotted(base)}`")
            elif last in FORBIDDEN_BASES:
                self.flag(node, f"class `{node.name}` subclasses `{dotted(base)}`")
        for keyword in node.keywords:
            self.flag(node, f"class `{node.name}` sets `{keyword.arg}=`")
        self.within("class", node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if is_dunder(node.name) and node.name not in ALLOWED_SPECIAL_METHODS:
            self.flag(node, f"defines the special method `{node.name}`")
        first = node.args.posonlyargs + node.args.args
        method = self.scopes[-1:] == ["class"] and first and first[0].arg == "self"
        self.within("method" if method else "function", node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.within("function", node)

    def within(self, scope: str, node: ast.AST) -> None:
        self.scopes.append(scope)
        self.generic_visit(node)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815 - ast.NodeVisitor's naming


def review(source: str, forbidden: Mapping[str, object] | None = None) -> list[Violation]:
    """The rules ``source`` (one notebook cell, IPython syntax) breaks; empty when it may run.

    ``forbidden`` maps dotted paths to the library objects the notebook's checks compare against
    (:func:`course_utils.exercises.forbidden_in`). Magics and shell escapes (``%timeit``, ``!ls``) are
    refused: they run code the review cannot see. A cell that is not valid Python is not refused here;
    running it shows the SyntaxError.
    """
    try:
        tree = ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ValueError):
        return []
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            child.parent = parent
    reviewer = Reviewer(imported_names(tree), forbidden or {})
    reviewer.visit(tree)
    violations = reviewer.violations
    if "get_ipython" not in source:  # IPython turned a magic or a shell escape into a call
        magic = "uses an IPython magic or a shell command (`%...`, `!...`)"
        violations = [Violation(v.line, magic) if "get_ipython" in v.what else v for v in violations]
    return list(dict.fromkeys(violations))
