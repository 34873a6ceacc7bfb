"""The judge's side of a check: the student's code seen only through the probe's answers.

A check asks for the student's class or function as a :class:`Subject`, builds it (:meth:`Subject.build`
gives an :class:`Instance` whose weights the judge drew and keeps a copy of, :attr:`Instance.mirror`),
calls it on inputs it made itself and receives plain data back (:class:`Result`). Everything the check
compares against is computed from the judge's own copies, so nothing the student's code does to its
weights, its inputs or the process it runs in can change what counts as right.

Where the probe runs is the transport's business: in a notebook, beside the judge in the same kernel
(:class:`LocalTransport`, still through the wire format, so that no tensor is shared); under the
grader, in the sandbox, while the judge runs in the grader's own process (``autograder.channel``).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from course_utils.device import check_devices
from course_utils.feedback import call_text, fail, failure
from course_utils.mirror import build_mirror, draw_weights, state_of
from course_utils.probe import Probe
from course_utils.wire import Opaque, decode, dtype_name, encode, pack, unpack

NOT_FILLED = (
    "the blank is not filled in yet. Replace `raise NotImplementedError()` with your code and run the "
    "cell again."
)


class ProbeLost(BaseException):
    """The probe stopped answering (``timed_out``) or died. Not an ``Exception``: no check may catch it."""

    def __init__(self, timed_out: bool, detail: str) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


class Tampering(BaseException):
    """The channel carried something that is not the answer the judge asked for."""


@dataclass(frozen=True)
class Remote:
    """A name in the student's notebook, as the grader's judge refers to it (the object stays there)."""

    name: str


class Transport(Protocol):
    """Carries one request to the probe and its answer back, as frames."""

    devices: list[str]

    def request(self, meta: dict, tensors: list[Tensor]) -> tuple[dict, list[Tensor]]: ...

    def cause(self) -> BaseException | None: ...


class LocalTransport:
    """The probe in this process, for self-checks in a notebook: same requests, same wire format."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.probe = Probe(namespace)
        self.devices = [d.type for d in check_devices()]

    def request(self, meta: dict, tensors: list[Tensor]) -> tuple[dict, list[Tensor]]:
        self.probe.last_error = None
        return decode(self.probe.answer(encode(meta, tensors)))

    def cause(self) -> BaseException | None:
        return self.probe.last_error


_session: ContextVar[Transport | None] = ContextVar("judge_session", default=None)


@contextmanager
def session(transport: Transport) -> Iterator[None]:
    """Within it, :class:`Remote` names are the student's objects behind ``transport``."""
    token = _session.set(transport)
    try:
        yield
    finally:
        _session.reset(token)


def name_of(target: Any, default: str) -> str:
    """The name a target has in the student's notebook."""
    if isinstance(target, Remote):
        return target.name
    return getattr(target, "__name__", default)


def subject(target: Any, name: str) -> "Subject":
    """The student's ``target`` (their class or function, or a :class:`Remote` name) as the judge sees it."""
    if isinstance(target, Remote):
        transport = _session.get()
        if transport is None:
            raise RuntimeError(f"{target.name} is a Remote name, but no grading session is open")
        return Subject(transport, target.name, remote=True)
    return Subject(LocalTransport({name: target}), name, remote=False)


@dataclass
class Result:
    """What one call of the student's code gave, as data the judge owns.

    ``changed_inputs`` names the tensor arguments the call changed in place (``argument 1``, ```mask```);
    ``input_grads`` follow the tensor arguments that required grad, in order.
    """

    output: Any
    requires_grad: bool = False
    changed_inputs: list[str] = field(default_factory=list)
    changed_params: list[str] = field(default_factory=list)
    input_grads: list[Tensor | None] | None = None
    param_grads: dict[str, Tensor | None] | None = None
    no_graph: bool = False
    trace: list[tuple[str, int, list[str]]] = field(default_factory=list)
    too_many: tuple[int, ...] | None = None


class Subject:
    """The student's class or function, reached through a transport."""

    def __init__(self, transport: Transport, name: str, remote: bool) -> None:
        self.transport, self.name, self.remote = transport, name, remote

    def devices(self) -> list[torch.device]:
        """Where the checks run the student's code: the CPU, and CUDA where the probe has it."""
        return [d for d in check_devices() if d.type in self.transport.devices]

    def ask(self, label: str, meta: dict, tensors: list[Tensor] | None = None) -> tuple[dict, list[Tensor]]:
        """One request; an error of the student's code becomes the check's failure, naming ``label``."""
        reply, out = self.transport.request(meta, tensors or [])
        error = reply.get("error")
        if error:
            kind = str(error.get("type"))
            if kind == "NotImplementedError":
                message = f"{label} raised NotImplementedError: {NOT_FILLED}"
                raise failure(message, "blank not filled in", "blank")
            stage = "in the backward pass" if error.get("stage") == "backward" else ""
            text = f"{label} raised {kind}" + (f" {stage}" if stage else "")
            message = error.get("message")
            found = failure(f"{text}: {message}" if message else text, f"raised {kind}", "error")
            raise found from self.transport.cause()
        return reply, out

    def build(
        self,
        seed: int = 0,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        train: bool = False,
        weights: bool = True,
        meta: bool = False,
        label: str | None = None,
        **kwargs: Any,
    ) -> "Instance":
        """``name(**kwargs)`` built beside the student's code, moved to ``device`` and ``dtype``, in
        eval mode unless ``train``; with ``weights``, loaded with the judge's (drawn from ``seed``).

        ``meta`` builds it on the meta device: only its structure, no memory.
        """
        label = label or call_text(self.name, **kwargs)
        tensors: list[Tensor] = []
        request = {
            "op": "build",
            "target": self.name,
            "kwargs": pack(kwargs, tensors),
            "seed": seed,
            "device": torch.device(device).type,
            "dtype": dtype_name(dtype),
            "train": train,
            "meta": meta,
        }
        reply, _ = self.ask(label, request, tensors)
        if "not_module" in reply:
            fail(f"{label} gave a {reply['not_module']}, not an nn.Module.")
        instance = Instance(self, reply["handle"], reply["structure"], label, torch.device(device), meta)
        if weights and not meta:
            draw_weights(instance.mirror, seed)
            instance.load()
        return instance

    def value(self, label: str) -> Any:
        """The value the student's name holds (an answer to a question), as data the judge owns."""
        reply, out = self.ask(label, {"op": "value", "target": self.name})
        return unpack(reply["value"], out)

    def call(
        self,
        *args: Any,
        label: str,
        device: torch.device | str = "cpu",
        grad: int | None = None,
        watch: dict | None = None,
        **kwargs: Any,
    ) -> Result:
        """Call the student's function with the judge's arguments on ``device``; a :class:`Result`.

        Changes the call makes to its inputs are in :attr:`Result.changed_inputs`, for the check to judge.
        """
        where = {"target": self.name, "device": torch.device(device).type}
        return _call(self, where, args, kwargs, label, grad=grad, watch=watch)


class Instance:
    """A student's module built beside their code, and the judge's copy of it (``mirror``)."""

    def __init__(
        self, subject: Subject, handle: int, structure: dict, label: str, device: torch.device, meta: bool
    ) -> None:
        self.subject, self.handle, self.structure, self.label = subject, handle, structure, label
        self.device = device
        self.mirror: nn.Module = build_mirror(structure) if not meta else nn.Module()

    def load(self) -> None:
        """Load the mirror's parameters into the student's module."""
        names, values = state_of(self.mirror)
        reply, _ = self.subject.ask(self.label, {"op": "load", "handle": self.handle, "names": names}, values)
        if reply["problems"]:
            fail(f"{self.label}: its weights could not be set: {'; '.join(reply['problems'][:3])}.")

    def values(self, *names: str) -> dict[str, Tensor]:
        """The current values of the student's parameters and buffers (all, or those named)."""
        reply, out = self.subject.ask(
            self.label, {"op": "values", "handle": self.handle, "names": list(names)}
        )
        return dict(zip(reply["names"], out, strict=True))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Instance":
        """Move the student's module (``module.to``); the mirror takes the same dtype."""
        request = {"op": "to", "handle": self.handle, "dtype": dtype_name(dtype)}
        if device is not None:
            request["device"] = torch.device(device).type
            self.device = torch.device(device)
        reply, _ = self.subject.ask(f"{self.label}.to({device}, {dtype})", request)
        self.structure = reply["structure"]
        if dtype is not None:
            self.mirror.to(dtype)
        return self

    def __call__(self, *args: Any, label: str | None = None, **kwargs: Any) -> Any:
        return self.call(*args, label=label, **kwargs).output

    def call(
        self,
        *args: Any,
        label: str | None = None,
        path: str = "",
        grad: int | None = None,
        trace: bool = False,
        mode: str | None = None,
        no_grad: bool = False,
        seed: int = 0,
        allow_changes: bool = False,
        **kwargs: Any,
    ) -> Result:
        """The student's module (or its submodule at ``path``) called on the judge's arguments.

        ``grad`` is the seed of the direction of a backward pass: the gradients of the inputs that
        require grad and of every trainable parameter come back. ``trace`` records which submodules
        forward calls, in order; ``mode`` is ``"train"`` or ``"eval"``. A call that changes the module's
        weights fails; one that changes an input in place fails too, unless ``allow_changes`` (the check
        then reads :attr:`Result.changed_inputs` and says more).
        """
        where = {"handle": self.handle, "path": path, "mode": mode, "no_grad": no_grad, "seed": seed}
        where["device"] = self.device.type
        label = label or f"{self.label}(...)"
        result = _call(self.subject, where, args, kwargs, label, grad=grad, trace=trace)
        if result.changed_params:
            raise failure(
                f"{label} changed the module's own weights while it ran "
                f"({', '.join(result.changed_params[:3])}): "
                "forward must leave the parameters as they are.",
                "forward changed its own weights",
                "diagnosed",
                finding=True,
            )
        if result.changed_inputs and not allow_changes:
            fail(f"{label} changed its {result.changed_inputs[0]} in place: build a new tensor instead.")
        return result

    def train_steps(self, images: Tensor, labels: Tensor, steps: int, lr: float, classes: int, label: str):
        """``steps`` of Adam on the cross-entropy of ``images``: (losses, final logits or None, reply)."""
        request = {"op": "train", "handle": self.handle, "steps": steps, "lr": lr, "classes": classes}
        request["device"] = self.device.type
        reply, out = self.subject.ask(label, request, [images, labels])
        logits = unpack(reply["logits"], out) if "logits" in reply else None
        return reply["losses"], logits, reply


def _call(subject: Subject, where: dict, args: tuple, kwargs: dict, label: str, **options) -> Result:
    tensors: list[Tensor] = []
    request = {
        "op": "call",
        **where,
        "args": pack(list(args), tensors),
        "kwargs": pack(kwargs, tensors),
        "grad": options.get("grad"),
        "trace": options.get("trace", False),
        "watch": options.get("watch"),
    }
    reply, out = subject.ask(label, request, tensors)
    result = Result(unpack(reply["output"], out), requires_grad=_requires_grad(reply["output"]))
    names = _tensor_names(args, kwargs)
    result.changed_inputs = [
        names[i] for i in reply["changed_inputs"] if isinstance(i, int) and i < len(names)
    ]
    result.changed_params = list(reply["changed_params"])
    result.trace = [(str(p), int(n), list(k)) for p, n, k in reply.get("trace", [])]
    result.too_many = tuple(reply["too_many"]) if reply.get("too_many") else None
    grads = reply.get("grad")
    if grads is not None:
        result.no_graph = bool(grads.get("no_graph"))
        if not result.no_graph:
            result.input_grads = list(unpack(grads["inputs"], out))
            result.param_grads = dict(unpack(grads["params"], out))
    return result


def _tensor_names(args: tuple, kwargs: dict) -> list[str]:
    """How each tensor argument of a call is named in a message, in the order the probe counts them."""
    names = []

    def walk(value: Any, name: str) -> None:
        if isinstance(value, Tensor):
            names.append(name)
        elif isinstance(value, tuple | list):
            for i, v in enumerate(value):
                walk(v, f"{name}[{i}]")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{name}[{k!r}]")

    for i, arg in enumerate(args):
        walk(arg, f"argument {i + 1}")
    for key, value in kwargs.items():
        walk(value, f"`{key}`")
    return names


def _requires_grad(meta: Any) -> bool:
    if isinstance(meta, dict):
        if "$t" in meta:
            return bool(meta.get("rg"))
        return any(_requires_grad(v) for v in meta.values())
    if isinstance(meta, list):
        return any(_requires_grad(v) for v in meta)
    return False


def opaque_name(value: Any) -> str | None:
    """The type name of a value the probe could not send (an object of the student's), else None."""
    return value.type_name if isinstance(value, Opaque) else None
