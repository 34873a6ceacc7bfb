"""The probe: the part of a check that runs beside the student's code, and only runs it.

It answers the judge's requests (:mod:`course_utils.judge`), given as data: build a class with these
arguments, load these weights into it, call it (or a function) on these inputs, take the backward
pass in a direction drawn from a seed, train it for a few steps. It answers with plain data: the
outputs, the gradients, which inputs and weights the call changed, the module's structure. It
compares nothing and decides nothing; whatever the student's code does to it, the judge computes the
expected values from its own copies of the weights and inputs.
"""

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from course_utils.feedback import precise_math
from course_utils.wire import DTYPES, WireError, cotangent, decode, encode, pack, unpack

MESSAGE_LIMIT = 2_000
CONFIG_TYPES = (bool, int, float, str, type(None))


class StudentError(Exception):
    """The student's code raised; ``stage`` says where (build, call, backward, train)."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(stage)
        self.stage, self.error = stage, error

    def as_data(self) -> dict:
        try:
            message = str(self.error)
        except Exception:  # noqa: BLE001 - a student's exception may fail to print
            message = "<the message could not be printed>"
        return {"stage": self.stage, "type": type(self.error).__name__, "message": message[:MESSAGE_LIMIT]}


class Sublayer(nn.Module):
    """A sublayer the judge hands to a wrapper (``ResidualAdd(fn)``): a Linear, scaled by a keyword
    argument, as attention takes ``mask=``."""

    def __init__(self, emb_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(emb_size, emb_size)

    def forward(self, x: Tensor, scale: float = 1.0) -> Tensor:
        return scale * self.linear(x)


GIVEN = {"sublayer": Sublayer, "identity": nn.Identity}


def describe(module: nn.Module) -> dict:
    """The module tree as data: each distinct module once, with its class, its nearest library class,
    its simple attributes, its children (by index, so shared modules show), parameters and buffers."""
    nodes: list[dict] = []
    index: dict[int, int] = {}
    parameters: dict[int, list] = {}

    def visit(m: nn.Module) -> int:
        if id(m) in index:
            return index[id(m)]
        index[id(m)] = len(nodes)
        node: dict = {"class": type(m).__name__, "base": library_class(type(m)), "config": config_of(m)}
        nodes.append(node)
        params = []
        for name, p in vars(m).get("_parameters", {}).items():
            if p is None:
                continue
            first = parameters.setdefault(id(p), [index[id(m)], name])
            shared = first != [index[id(m)], name]
            entry = [name, list(p.shape), str(p.dtype).removeprefix("torch."), bool(p.requires_grad)]
            params.append(entry + ([first] if shared else []))
        node["params"] = params
        skipped = vars(m).get("_non_persistent_buffers_set", set())
        node["buffers"] = [
            [name, list(b.shape), str(b.dtype).removeprefix("torch."), name not in skipped]
            for name, b in vars(m).get("_buffers", {}).items()
            if b is not None
        ]
        node["children"] = [
            [name, visit(child)] for name, child in vars(m).get("_modules", {}).items() if child is not None
        ]
        return index[id(m)]

    visit(module)
    return {"nodes": nodes, "training": module.training}


def library_class(cls: type) -> str:
    """The first class of ``cls``'s MRO that PyTorch or einops defines: what the module is built on."""
    for base in cls.__mro__:
        if base.__module__.startswith(("torch.nn.", "einops.")):
            return f"{base.__module__}.{base.__qualname__}"
    return ""


def config_of(module: nn.Module) -> dict:
    """The module's simple public attributes (sizes, eps, patterns), at most 64 of them."""
    config = {}
    for name, value in vars(module).items():
        if name.startswith("_") or name == "training" or len(config) >= 64:
            continue
        if isinstance(value, CONFIG_TYPES) and not (isinstance(value, str) and len(value) > 200):
            config[name] = value
        elif isinstance(value, tuple | list) and len(value) <= 16 and all(type(v) is int for v in value):
            config[name] = list(value)
        elif isinstance(value, torch.dtype):
            config[name] = str(value).removeprefix("torch.")
        elif (
            isinstance(value, dict)
            and len(value) <= 16
            and all(isinstance(k, str) and type(v) is int for k, v in value.items())
        ):
            config[name] = dict(value)
    return config


class ScoreWatch(TorchFunctionMode):
    """Remembers the first floating tensor created with more than ``rows`` rows of ``n_k`` columns
    (and ``rows`` != ``head_dim``, which would be a transposed key): a score matrix not cut in blocks."""

    def __init__(self, rows: int, n_k: int, head_dim: int) -> None:
        super().__init__()
        self.rows, self.n_k, self.head_dim = rows, n_k, head_dim
        self.too_many: list[int] | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.too_many is None:
            for t in out if isinstance(out, tuple | list) else (out,):
                if (
                    isinstance(t, Tensor)
                    and t.is_floating_point()
                    and t.ndim >= 2
                    and t.shape[-1] == self.n_k
                    and self.rows < t.shape[-2] != self.head_dim
                ):
                    self.too_many = list(t.shape)
                    break
        return out


class Probe:
    """Answers the judge's requests against the objects of ``namespace`` (a notebook's globals).

    Objects it built are kept by handle between requests, until ``forget``.
    """

    def __init__(self, namespace: Mapping[str, Any]) -> None:
        self.namespace = namespace
        self.objects: dict[int, nn.Module] = {}
        self.last_error: BaseException | None = None  # the student's exception, for a local traceback

    def answer(self, frame: bytes) -> bytes:
        """The answer frame to one request frame."""
        request_id = None
        try:
            meta, tensors = decode(frame)
            if not isinstance(meta, dict) or not isinstance(meta.get("op"), str):
                raise WireError("a request is {op, id, ...}")
            request_id = meta.get("id")
            handler = getattr(self, f"op_{meta['op']}", None)
            if handler is None:
                raise WireError(f"unknown request {meta['op']!r}")
            reply, out = handler(meta, tensors)
        except StudentError as err:
            self.last_error = err.error
            reply, out = {"error": err.as_data()}, []
        except (WireError, KeyError, TypeError, ValueError, IndexError) as err:
            reply, out = {"error": {"stage": "request", "type": "ProbeError", "message": str(err)[:500]}}, []
        return encode({"id": request_id, **reply}, out)

    # ------------------------------------------------------------------------------ requests
    def op_hello(self, meta: dict, tensors: list) -> tuple[dict, list]:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        return {"devices": devices, "torch": torch.__version__}, []

    def op_value(self, meta: dict, tensors: list) -> tuple[dict, list]:
        """A value of the student's notebook (an answer to a question), as data."""
        out: list[Tensor] = []
        return {"value": pack(self.target(meta["target"]), out)}, out

    def op_forget(self, meta: dict, tensors: list) -> tuple[dict, list]:
        self.objects.clear()
        return {}, []

    def op_build(self, meta: dict, tensors: list) -> tuple[dict, list]:
        target = self.target(meta["target"])
        kwargs = self.arguments(meta.get("kwargs", {"$dict": {}}), tensors, "cpu")
        device = "meta" if meta.get("meta") else None
        with torch.random.fork_rng(devices=[]), torch.device(device) if device else nullcontext():
            torch.manual_seed(int(meta.get("seed", 0)))
            module = self.student("build", target, **kwargs)
        if not isinstance(module, nn.Module):
            return {"not_module": type(module).__name__}, []
        if not device:
            self.student("build", module.to, **self.placement(meta))
        self.student("build", module.train, bool(meta.get("train", False)))
        handle = len(self.objects) + 1
        self.objects[handle] = module
        return {"handle": handle, "structure": describe(module)}, []

    def op_load(self, meta: dict, tensors: list) -> tuple[dict, list]:
        """Copy the judge's tensors into the module's parameters and buffers, by name."""
        module = self.objects[meta["handle"]]
        names = meta["names"]
        if not isinstance(names, list) or len(names) != len(tensors):
            raise WireError("load needs one name per tensor")
        own = dict(module.named_parameters()) | dict(module.named_buffers())
        problems = []
        with torch.no_grad():
            for name, value in zip(names, tensors, strict=True):
                target = own.get(name)
                if target is None or tuple(target.shape) != tuple(value.shape):
                    found = "missing" if target is None else f"of shape {tuple(target.shape)}"
                    problems.append(f"`{name}` is {found}, expected shape {tuple(value.shape)}")
                    continue
                target.copy_(value.to(target.dtype))
        return {"problems": problems}, []

    def op_to(self, meta: dict, tensors: list) -> tuple[dict, list]:
        module = self.objects[meta["handle"]]
        self.student("build", module.to, **self.placement(meta))
        return {"structure": describe(module)}, []

    def op_values(self, meta: dict, tensors: list) -> tuple[dict, list]:
        """The current values of the named parameters and buffers (all of them by default)."""
        module = self.objects[meta["handle"]]
        own = dict(module.named_parameters()) | dict(module.named_buffers())
        names = [n for n in meta.get("names") or own if n in own]
        return {"names": names}, [own[n].detach() for n in names]

    def op_call(self, meta: dict, tensors: list) -> tuple[dict, list]:
        fn, module = self.callable(meta)
        device = str(meta.get("device") or "cpu")
        args = self.arguments(meta.get("args", []), tensors, device)
        kwargs = self.arguments(meta.get("kwargs", {"$dict": {}}), tensors, device)
        inputs = [t for t in _tensors((args, kwargs)) if t.is_floating_point() or t.dtype == torch.bool]
        before = [t.detach().clone() for t in _tensors((args, kwargs))]
        params = dict(module.named_parameters()) if module is not None else {}
        params_before = {n: p.detach().clone() for n, p in params.items()}
        mode = meta.get("mode")
        if module is not None and mode in ("train", "eval"):
            module.train(mode == "train")
        trace: list = []
        watch = ScoreWatch(**meta["watch"]) if meta.get("watch") else None
        with ExitStack() as stack:
            stack.enter_context(torch.random.fork_rng(devices=[]))
            stack.enter_context(precise_math())
            torch.manual_seed(int(meta.get("seed", 0)))
            if meta.get("no_grad"):
                stack.enter_context(torch.no_grad())
            if meta.get("trace") and module is not None:
                stack.enter_context(self.tracing(module, trace))
            if watch is not None:
                stack.enter_context(watch)
            output = self.student("call", fn, *args, **kwargs)
        out: list[Tensor] = []
        reply = {"output": pack(output, out), "trace": trace}
        reply["changed_inputs"] = [
            i
            for i, (t, b) in enumerate(zip(_tensors((args, kwargs)), before, strict=True))
            if not _same(t, b)
        ]
        reply["changed_params"] = [n for n, p in params.items() if not _same(p, params_before[n])]
        if watch is not None:
            reply["too_many"] = watch.too_many
        if meta.get("grad") is not None:
            reply["grad"] = self.backward(output, inputs, params, int(meta["grad"]), out)
        return reply, out

    def op_train(self, meta: dict, tensors: list) -> tuple[dict, list]:
        """``steps`` of Adam on cross-entropy, from the judge's weights; the losses and final logits."""
        module = self.objects[meta["handle"]]
        device = str(meta.get("device") or "cpu")
        images, labels = (t.to(device) for t in tensors)
        parameters = [p for p in module.parameters() if p.requires_grad]
        if not parameters:
            return {"losses": [], "no_parameters": True}, []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model: more threads cost more than they give
        losses = []
        out: list[Tensor] = []
        try:
            with torch.random.fork_rng(devices=[]), precise_math():
                torch.manual_seed(int(meta.get("seed", 0)))
                module.train()
                optimizer = torch.optim.Adam(parameters, lr=float(meta["lr"]))
                for _ in range(int(meta["steps"])):
                    logits = self.student("train", module, images)
                    if not isinstance(logits, Tensor) or tuple(logits.shape) != (
                        len(labels),
                        meta["classes"],
                    ):
                        return {"losses": losses, "bad_output": pack(logits, out)}, out
                    loss = nn.functional.cross_entropy(logits.float(), labels)
                    losses.append(float(loss))
                    if not torch.isfinite(loss):
                        break
                    optimizer.zero_grad()
                    self.student("backward", loss.backward)
                    optimizer.step()
                module.eval()
                with torch.no_grad():
                    logits = self.student("train", module, images)
        finally:
            torch.set_num_threads(threads)
        return {"losses": losses, "logits": pack(logits, out)}, out

    # ------------------------------------------------------------------------------ helpers
    def target(self, name: Any) -> Any:
        if not isinstance(name, str) or name not in self.namespace:
            raise StudentError("build", NameError(f"name {name!r} is not defined"))
        return self.namespace[name]

    def callable(self, meta: dict) -> tuple[Callable, nn.Module | None]:
        if meta.get("handle") is None:
            fn = self.target(meta["target"])
            return fn, fn if isinstance(fn, nn.Module) else None
        module = self.objects[meta["handle"]]
        if meta.get("path"):
            try:
                module = module.get_submodule(meta["path"])
            except AttributeError as err:
                raise StudentError("call", err) from err
        return module, module

    def arguments(self, packed: Any, tensors: list[Tensor], device: str) -> Any:
        """Unpack the judge's arguments: fresh tensors on ``device``, with requires_grad and
        Parameters as asked, and the sublayers the judge names (``{"$given": ...}``)."""
        if isinstance(packed, list):
            return [self.arguments(v, tensors, device) for v in packed]
        if not isinstance(packed, dict):
            return packed
        if "$given" in packed:
            kind = GIVEN[packed["$given"]]
            return kind(**self.arguments(packed.get("kwargs", {"$dict": {}}), tensors, device))
        if "$t" in packed:
            t = unpack(packed, tensors)
            if isinstance(t, np.ndarray):
                return t.copy()
            t = t.to(device).clone()
            if packed.get("param"):
                return nn.Parameter(t, requires_grad=bool(packed.get("rg", True)))
            return t.requires_grad_(bool(packed.get("rg")) and t.is_floating_point())
        if "$tuple" in packed:
            return tuple(self.arguments(v, tensors, device) for v in packed["$tuple"])
        if "$dict" in packed:
            return {k: self.arguments(v, tensors, device) for k, v in packed["$dict"].items()}
        return unpack(packed, tensors)

    def placement(self, meta: dict) -> dict:
        placement = {}
        if meta.get("device"):
            placement["device"] = meta["device"]
        if meta.get("dtype"):
            placement["dtype"] = DTYPES[meta["dtype"]]
        return placement

    def student(self, stage: str, fn: Callable, /, *args: Any, **kwargs: Any) -> Any:
        """Run the student's code; any exception it raises becomes a :class:`StudentError`."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - everything the student's code raises is reported
            raise StudentError(stage, err) from err

    def backward(self, output: Any, inputs: list[Tensor], params: dict, seed: int, out: list[Tensor]) -> dict:
        """Gradients of sum(output · direction) w.r.t. the inputs that require grad and the parameters."""
        leaves = [t for t in _tensors(output) if t.is_floating_point()]
        wanted = [t for t in inputs if t.requires_grad]
        trainable = {n: p for n, p in params.items() if p.requires_grad}
        if not any(t.requires_grad for t in leaves):
            return {"no_graph": True}
        loss = sum(
            (t * cotangent(t.shape, t.dtype, seed + i).to(t.device)).sum()
            for i, t in enumerate(leaves)
            if t.requires_grad
        )
        grads = self.student(
            "backward", torch.autograd.grad, loss, [*wanted, *trainable.values()], allow_unused=True
        )
        return {
            "inputs": pack(list(grads[: len(wanted)]), out),
            "params": pack(dict(zip(trainable, grads[len(wanted) :], strict=True)), out),
        }

    @contextmanager
    def tracing(self, module: nn.Module, trace: list) -> Iterator[None]:
        """Record which submodules forward calls, in order, and what they are given."""
        paths = {id(m): path for path, m in module.named_modules()}

        def record(m: nn.Module, args: tuple, kwargs: dict) -> None:
            if len(trace) < 10_000:
                trace.append(
                    [paths.get(id(m), "?"), len(args), sorted(k for k in kwargs if isinstance(k, str))]
                )

        hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in module.modules()]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()


def _tensors(value: Any) -> Iterator[Tensor]:
    """The tensors in a nested value, in order."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def _same(now: Tensor, before: Tensor) -> bool:
    """Whether a tensor still holds what it held (NaN where it was NaN counts as the same)."""
    if now.shape != before.shape or now.dtype != before.dtype:
        return False
    with torch.no_grad():
        equal = now.detach() == before
        if now.is_floating_point():
            equal |= now.detach().isnan() & before.isnan()
        return bool(equal.all())
