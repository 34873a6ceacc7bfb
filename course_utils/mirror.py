"""The judge's copy of a student's module: the same tree of modules and parameters, its own weights.

The probe describes the student's module (:func:`course_utils.probe.describe`); :func:`build_mirror`
rebuilds that tree in the judge out of PyTorch's own layers where the student built on them
(``nn.Linear``, ``nn.LayerNorm``, ``nn.Conv2d``, ``nn.Embedding``) and of :class:`Node` containers
elsewhere, sharing what the student shares, and :func:`draw_weights` gives every parameter a value
the judge chose. The mirror runs none of the student's code: its containers have no forward. The
checks read the weights and the layers off it to compute what the student's module should give.
"""

import math
from typing import Any

import torch
from torch import nn

LAYERS = {
    "torch.nn.modules.linear.Linear": lambda c, p: nn.Linear(
        c["in_features"], c["out_features"], bias="bias" in p
    ),
    "torch.nn.modules.normalization.LayerNorm": lambda c, p: nn.LayerNorm(
        tuple(c["normalized_shape"]), eps=c["eps"], elementwise_affine=bool(p), bias="bias" in p
    ),
    "torch.nn.modules.conv.Conv2d": lambda c, p: nn.Conv2d(
        c["in_channels"],
        c["out_channels"],
        tuple(c["kernel_size"]),
        stride=tuple(c["stride"]),
        padding=c["padding"] if isinstance(c["padding"], str) else tuple(c["padding"]),
        dilation=tuple(c["dilation"]),
        groups=c["groups"],
        bias="bias" in p,
        padding_mode=c["padding_mode"],
    ),
    "torch.nn.modules.sparse.Embedding": lambda c, p: nn.Embedding(
        c["num_embeddings"], c["embedding_dim"], padding_idx=c.get("padding_idx")
    ),
}
RESERVED = set(dir(nn.Module)) | {"student_class", "library_class"}


class Node(nn.Module):
    """A module of the student's that the judge does not rebuild: its children, parameters and simple
    attributes (``num_heads``...), and its class's name. Calling it is an error: it has no code."""

    def forward(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"the judge's copy of {self.student_class} has no forward")


def build_mirror(structure: dict) -> nn.Module:
    """The module tree of ``structure`` (from the probe), parameters and buffers zero-filled."""
    nodes = structure["nodes"]
    built: dict[int, nn.Module] = {}
    params: dict[tuple[int, str], nn.Parameter] = {}

    def make(i: int) -> nn.Module:
        if i in built:
            return built[i]
        node = nodes[i]
        own = {p[0]: p for p in node["params"]}
        module = _layer(node, own) or Node()
        built[i] = module
        module.student_class = str(node["class"])
        module.library_class = str(node["base"])
        for key, value in node["config"].items():
            if key not in RESERVED and not key.startswith("_") and not hasattr(module, key):
                setattr(module, key, tuple(value) if isinstance(value, list) else value)
        for name, shape, dtype, requires_grad, *shared in node["params"]:
            if shared:
                owner, owner_name = shared[0]
                make(owner)
                parameter = params[(owner, owner_name)]
            else:
                data = torch.zeros(shape, dtype=getattr(torch, dtype))
                parameter = nn.Parameter(data, requires_grad=requires_grad and data.is_floating_point())
            params[(i, name)] = parameter
            if not hasattr(module, name) or name in module._parameters:
                module.register_parameter(name, parameter)
        for name, shape, dtype, persistent in node["buffers"]:
            if not hasattr(module, name) or name in module._buffers:
                module.register_buffer(name, torch.zeros(shape, dtype=getattr(torch, dtype)), persistent)
        for name, child in node["children"]:
            module.add_module(name, make(child))
        module.train(bool(structure.get("training", False)))
        return module

    return make(0)


def _layer(node: dict, own: dict) -> nn.Module | None:
    """PyTorch's own layer for a node built on one, when its parameters are what that layer holds."""
    factory = LAYERS.get(node["base"])
    if factory is None:
        return None
    try:
        layer = factory(node["config"], own)
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None
    ours = {name: list(p.shape) for name, p in layer.named_parameters(recurse=False)}
    return layer if ours == {name: shape for name, shape, *_ in own.values()} else None


def parameter_count(structure: dict) -> int:
    """The number of distinct parameter values in the described module."""
    return sum(math.prod(p[1]) for node in structure["nodes"] for p in node["params"] if len(p) == 4)


def draw_weights(mirror: nn.Module, seed: int) -> None:
    """Give every parameter of ``mirror`` a value of the judge's choosing, drawn from ``seed``.

    Linear and convolution weights and biases as PyTorch draws them (uniform in ±1/sqrt(fan_in)),
    LayerNorm scales around 1 and shifts around 0 (each norm its own, so that a shared, swapped or
    missing one shows), embeddings and every other parameter standard normal.
    """
    owners = {id(p): (m, name) for m in mirror.modules() for name, p in m.named_parameters(recurse=False)}
    with torch.no_grad():
        for i, parameter in enumerate(mirror.parameters()):
            module, own_name = owners[id(parameter)]
            generator = torch.Generator().manual_seed(seed * 1_000_003 + i)
            normal = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            if isinstance(module, nn.LayerNorm):
                value = 1 + 0.5 * normal if own_name == "weight" else 0.5 * normal
            elif isinstance(module, nn.Linear | nn.Conv2d):
                fan_in = math.prod(module.weight.shape[1:])
                uniform = torch.rand(parameter.shape, generator=generator, dtype=torch.float64)
                value = (2 * uniform - 1) / math.sqrt(fan_in)
            else:
                value = normal
            parameter.copy_(value.to(parameter.dtype))


def state_of(mirror: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    """(names, values) of the mirror's parameters, as the student's module names them."""
    named = list(mirror.named_parameters())
    return [n for n, _ in named], [p.detach() for _, p in named]
