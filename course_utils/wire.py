"""How the judge and the probe talk: plain data in frames, never pickle.

A frame is an 8-byte big-endian length, then a body laid out as safetensors lays out a file: an
8-byte header length, a JSON header ``{"meta": ..., "tensors": [{"dtype", "shape", "offsets"}]}``
and the tensors' raw bytes. ``meta`` is JSON in which tensors, tuples, dicts and dtypes are tagged
(``{"$t": 0}`` is the first tensor); :func:`pack` and :func:`unpack` convert Python values.
:func:`decode` checks every field and raises :class:`WireError` on anything it did not expect.
"""

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
LENGTH = struct.Struct(">Q")
MAX_DEPTH = 24  # nesting of a packed value
MAX_ITEMS = 100_000  # JSON values in one header


class WireError(ValueError):
    """A frame or a value that does not follow the format; the message says what is wrong."""


def tensor_bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def encode(meta: Any, tensors: list[torch.Tensor]) -> bytes:
    """One frame holding ``meta`` (JSON) and ``tensors``."""
    entries, chunks, offset = [], [], 0
    for t in tensors:
        if t.dtype not in NAMES:
            raise WireError(f"tensors of dtype {t.dtype} cannot be sent")
        data = tensor_bytes(t)
        entries.append(
            {"dtype": NAMES[t.dtype], "shape": list(t.shape), "offsets": [offset, offset + len(data)]}
        )
        chunks.append(data)
        offset += len(data)
    header = json.dumps({"meta": meta, "tensors": entries}, separators=(",", ":")).encode()
    body = LENGTH.pack(len(header)) + header + b"".join(chunks)
    return LENGTH.pack(len(body)) + body


def decode(frame: bytes) -> tuple[Any, list[torch.Tensor]]:
    """(meta, tensors) of a frame written by :func:`encode`; :class:`WireError` if it is not one."""
    if len(frame) < 2 * LENGTH.size:
        raise WireError("the frame is shorter than its length fields")
    (size,) = LENGTH.unpack_from(frame)
    if size != len(frame) - LENGTH.size:
        raise WireError(f"the frame says {size} bytes but holds {len(frame) - LENGTH.size}")
    body = memoryview(frame)[LENGTH.size :]
    (header_size,) = LENGTH.unpack_from(body)
    if header_size > len(body) - LENGTH.size:
        raise WireError("the header is longer than the frame")
    try:
        header = json.loads(bytes(body[LENGTH.size : LENGTH.size + header_size]))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise WireError(f"the header is not JSON ({err})") from err
    if not isinstance(header, dict) or set(header) != {"meta", "tensors"}:
        raise WireError("the header is not {meta, tensors}")
    if not isinstance(header["tensors"], list):
        raise WireError("the header's tensors are not a list")
    _count(header["meta"])
    data = body[LENGTH.size + header_size :]
    tensors, expected = [], 0
    for entry in header["tensors"]:
        tensors.append(_tensor(entry, data, expected))
        expected = entry["offsets"][1]
    if expected != len(data):
        raise WireError(f"{len(data) - expected} bytes after the last tensor")
    return header["meta"], tensors


def _tensor(entry: Any, data: memoryview, start: int) -> torch.Tensor:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "offsets"}:
        raise WireError("a tensor entry is not {dtype, shape, offsets}")
    dtype, shape, offsets = DTYPES.get(entry["dtype"]), entry["shape"], entry["offsets"]
    if dtype is None:
        raise WireError(f"unknown dtype {entry['dtype']!r}")
    if not (isinstance(shape, list) and len(shape) <= 16 and all(_natural(n) for n in shape)):
        raise WireError(f"bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_natural(n) for n in offsets)):
        raise WireError(f"bad offsets {offsets!r}")
    size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if offsets[0] != start or offsets[1] - offsets[0] != size or offsets[1] > len(data):
        raise WireError(f"offsets {offsets} do not hold a {entry['dtype']} tensor of shape {shape}")
    if size == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data[offsets[0] : offsets[1]]), dtype=dtype).reshape(shape)


def _natural(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 40


def _count(meta: Any) -> None:
    """Refuse headers nested or sized beyond what the course's values need."""
    stack, items = [(meta, 0)], 0
    while stack:
        value, depth = stack.pop()
        items += 1
        if depth > MAX_DEPTH or items > MAX_ITEMS:
            raise WireError("the header is nested too deeply or holds too many values")
        if isinstance(value, dict):
            stack += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]


@dataclass(frozen=True)
class Given:
    """A sublayer the probe builds from its own code (``"sublayer"``, ``"identity"``) to hand to the
    student's class: ``ResidualAdd(fn=Given("sublayer", {"emb_size": 8}))``."""

    kind: str
    kwargs: dict = field(default_factory=dict)


class Opaque:
    """A value that cannot cross the wire, seen from the other side: its type name only."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name}>"


def pack(value: Any, tensors: list[torch.Tensor], depth: int = 0) -> Any:
    """``value`` as JSON, its tensors appended to ``tensors``. Tensors keep their dtype, and tell
    whether they require grad and where they lived; anything unknown becomes its type's name."""
    if depth > MAX_DEPTH:
        return {"$object": "a value nested too deeply"}
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value) if abs(int(value)) < 1 << 62 else float(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, torch.Tensor):
        if value.dtype not in NAMES or value.layout != torch.strided or value.is_meta:
            return {
                "$object": f"Tensor of dtype {value.dtype}" + (" on the meta device" if value.is_meta else "")
            }
        tensors.append(value.detach())
        tag = {"$t": len(tensors) - 1, "rg": bool(value.requires_grad), "dev": value.device.type}
        return tag | ({"param": True} if isinstance(value, torch.nn.Parameter) else {})
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf" or value.dtype.itemsize > 8:
            return {"$object": f"ndarray of dtype {value.dtype}"}
        tensors.append(torch.from_numpy(np.ascontiguousarray(value)))
        return {"$t": len(tensors) - 1, "np": True}
    if isinstance(value, Given):
        return {"$given": value.kind, "kwargs": pack(value.kwargs, tensors, depth + 1)}
    if isinstance(value, torch.dtype):
        return {"$dtype": NAMES.get(value, str(value))}
    if isinstance(value, torch.Size):
        return {"$tuple": [int(n) for n in value]}
    if isinstance(value, tuple | list):
        items = [pack(v, tensors, depth + 1) for v in value[:10_000]]
        return {"$tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"$dict": {k: pack(v, tensors, depth + 1) for k, v in list(value.items())[:1000]}}
    return {"$object": type(value).__name__}


def unpack(meta: Any, tensors: list[torch.Tensor]) -> Any:
    """The value :func:`pack` sent; tensors come back as fresh tensors, unknown values as :class:`Opaque`.

    Tags that :func:`pack` does not write (``$given`` and the like) are left to the caller as dicts.
    """
    if isinstance(meta, list):
        return [unpack(v, tensors) for v in meta]
    if not isinstance(meta, dict):
        return meta
    if "$t" in meta:
        index = meta["$t"]
        if not _natural(index) or index >= len(tensors):
            raise WireError(f"no tensor {index!r}")
        t = tensors[index]
        return t.numpy() if meta.get("np") and t.dtype != torch.bfloat16 else t
    if "$tuple" in meta:
        return tuple(unpack(v, tensors) for v in _list(meta["$tuple"]))
    if "$dict" in meta and isinstance(meta["$dict"], dict):
        return {str(k): unpack(v, tensors) for k, v in meta["$dict"].items()}
    if "$dtype" in meta:
        if meta["$dtype"] not in DTYPES:
            raise WireError(f"unknown dtype {meta['$dtype']!r}")
        return DTYPES[meta["$dtype"]]
    if "$object" in meta:
        return Opaque(str(meta["$object"]))
    return meta


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise WireError("a tuple is not a list")
    return value


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else NAMES[dtype]


def cotangent(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """The direction a backward pass is taken in: both sides draw the same one from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float64).to(dtype)
