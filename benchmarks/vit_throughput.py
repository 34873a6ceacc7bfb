"""Training throughput of three ViTs of the same size: the lecture's einsum model, FastViT, timm's.

    python benchmarks/vit_throughput.py                              # CPU: cifar, batch 16
    python benchmarks/vit_throughput.py --modes eager                # CPU, no compilation: under a minute
    python benchmarks/vit_throughput.py --config vit_b16 --device cuda   # GPU: batch 128, bf16 autocast

For each model, eager and ``torch.compile``d: training images per second (forward, backward and
an AdamW step on random images), the first step's time (for a compiled model, mostly
compilation), and the peak memory of one step. On CUDA the step runs under bf16 autocast and the
memory is ``torch.cuda.max_memory_allocated``; on the CPU it runs in float32 and the memory is
what the PyTorch operators allocate at the peak (``torch.profiler``), which does not see the
buffers a compiled CPU kernel allocates for itself: read it for the eager rows.

The models:

* ``einsum``: the lecture's code, executed from the course's solution notebooks (the
  ``PatchEmbedding`` of notebook 03, ``MultiHeadAttention``/``TransformerEncoder`` of notebook
  07: three q/k/v Linears, ``torch.einsum`` scores, ``rearrange``) and the lecture's
  ``ClassificationHead`` (mean of the tokens, LayerNorm, Linear);
* ``fast``: ``course_utils.fast_vit.FastViT`` with ``pool="mean"``, the same function;
* ``timm``: timm's ``VisionTransformer`` with ``global_pool="avg"``, when timm can be imported.

The ratios are against the einsum model, eager, measured in the same run.
"""

import argparse
import ast
import gc
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops.layers.torch import Reduce
from IPython.core.inputtransformer2 import TransformerManager
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from course_utils.fast_vit import FastViT, peak_memory, synchronize  # noqa: E402

CONFIGS = {
    # name: model sizes, and the default batch on a GPU and on the CPU
    "vit_b16": dict(img_size=224, patch_size=16, emb_size=768, depth=12, num_heads=12, n_classes=1000),
    "cifar": dict(img_size=32, patch_size=4, emb_size=384, depth=7, num_heads=8, n_classes=10),
    "tiny": dict(img_size=16, patch_size=4, emb_size=32, depth=1, num_heads=2, n_classes=10),
}
BATCH = {"vit_b16": {"cuda": 128, "cpu": 4}, "cifar": {"cuda": 512, "cpu": 16}, "tiny": {"cuda": 8, "cpu": 4}}
MODELS = ("einsum", "fast", "timm")
MODES = ("eager", "compile")
# The lecture's code, from the solution notebooks: the cells that define these names are run.
LECTURE = {
    "03_class_token_and_positions": ("PatchEmbedding",),
    "07_transformer_encoder": ("TransformerEncoder",),
}


def _notebook_definitions(name: str) -> list[ast.stmt]:
    """The imports, functions and classes of a solution notebook's code cells, in order."""
    nb = json.loads((ROOT / "solutions" / name / f"{name}.ipynb").read_text())
    kept: list[ast.stmt] = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        tree = ast.parse(TransformerManager().transform_cell(source))  # IPython syntax: %pip
        kept += [
            s
            for s in tree.body
            if isinstance(s, ast.Import | ast.ImportFrom | ast.ClassDef | ast.FunctionDef)
        ]
    return kept


def lecture_namespace() -> dict:
    """The lecture's modules, defined by the solution notebooks' own code (not copied here)."""
    namespace: dict = {}
    for name, wanted in LECTURE.items():
        for statement in _notebook_definitions(name):
            code = compile(ast.Module(body=[statement], type_ignores=[]), f"solutions/{name}", "exec")
            try:
                exec(code, namespace)
            except ImportError:  # e.g. matplotlib, for the notebook's plots: not needed here
                if not isinstance(statement, ast.Import | ast.ImportFrom):
                    raise
        missing = [w for w in wanted if w not in namespace]
        if missing:
            raise RuntimeError(f"solutions/{name} does not define {missing}")
    return namespace


class ClassificationHead(nn.Sequential):
    """Notebook 08's mean-pooling head (the variant; its default pools the class token): the mean of
    the tokens, LayerNorm, Linear. The benchmark times it, as timm's `global_pool="avg"`."""

    def __init__(self, emb_size: int = 768, n_classes: int = 1000) -> None:
        super().__init__(
            Reduce("b n e -> b e", reduction="mean"),
            nn.LayerNorm(emb_size),
            nn.Linear(emb_size, n_classes),
        )


class EinsumViT(nn.Sequential):
    """The lecture's ViT: PatchEmbedding, TransformerEncoder, ClassificationHead."""

    def __init__(
        self,
        in_channels: int = 3,
        patch_size: int = 16,
        emb_size: int = 768,
        img_size: int = 224,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: int = 4,
        n_classes: int = 1000,
    ) -> None:
        lecture = lecture_namespace()
        super().__init__(
            lecture["PatchEmbedding"](in_channels, patch_size, emb_size, img_size),
            lecture["TransformerEncoder"](
                depth, emb_size=emb_size, num_heads=num_heads, forward_expansion=mlp_ratio
            ),
            ClassificationHead(emb_size, n_classes),
        )


def timm_vit(img_size, patch_size, emb_size, depth, num_heads, n_classes, **_) -> nn.Module:
    """timm's VisionTransformer of the same size, mean-pooled like the others; ImportError without timm."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        num_classes=n_classes,
        global_pool="avg",
        embed_dim=emb_size,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
    )


def build(model: str, config: dict) -> nn.Module:
    if model == "einsum":
        return EinsumViT(**config)
    if model == "fast":
        return FastViT(**config, pool="mean")
    return timm_vit(**config)


@dataclass
class Result:
    model: str
    mode: str
    images_per_s: float | None = None
    step_ms: float | None = None
    first_step_s: float | None = None
    peak_mib: float | None = None
    note: str = ""


def measure(model_name: str, mode: str, config: dict, batch: int, steps: int, warmup: int, device) -> Result:
    """Train ``steps`` steps on random images after ``warmup`` steps; time and weigh them."""
    torch.manual_seed(0)
    model = build(model_name, config).to(device).train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    if mode == "compile":
        torch._dynamo.reset()
        model = torch.compile(model)
    images = torch.randn(batch, 3, config["img_size"], config["img_size"], device=device)
    labels = torch.randint(0, config["n_classes"], (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    step()  # compiles a compiled model, and creates AdamW's state
    synchronize(device)
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    elapsed = time.perf_counter() - start
    peak = peak_memory(step, device)
    note = f"{params / 1e6:.1f}M parameters"
    if mode == "compile" and device.type == "cpu":
        note += "; memory: operators outside compiled kernels only"
    return Result(model_name, mode, batch * steps / elapsed, 1e3 * elapsed / steps, first, peak / 2**20, note)


def run(config_name: str, batch: int, steps: int, warmup: int, device, models, modes) -> list[Result]:
    config = CONFIGS[config_name]
    results = []
    for model_name in models:
        for mode in modes:
            print(
                f"  {model_name}, {mode}{' (compiling first)' if mode == 'compile' else ''} ...", flush=True
            )
            try:
                results.append(measure(model_name, mode, config, batch, steps, warmup, device))
            except ImportError as err:
                results.append(Result(model_name, mode, note=f"not importable: {err}"))
            except Exception as err:  # e.g. no C compiler for torch.compile on the CPU
                message = str(err).strip().splitlines()[0][:100] if str(err).strip() else ""
                results.append(Result(model_name, mode, note=f"failed: {type(err).__name__}: {message}"))
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def table(results: list[Result]) -> str:
    """The results, with the ratio of images/s against the eager einsum model of the same run."""
    baseline = next(
        (r.images_per_s for r in results if (r.model, r.mode) == ("einsum", "eager") and r.images_per_s), None
    )
    lines = [
        f"{'model':<8}{'mode':<9}{'images/s':>10}{'× einsum':>10}{'step ms':>10}"
        f"{'1st step s':>12}{'peak MiB':>10}  note"
    ]
    for r in results:
        if r.images_per_s is None:
            lines.append(f"{r.model:<8}{r.mode:<9}{'-':>10}{'-':>10}{'-':>10}{'-':>12}{'-':>10}  {r.note}")
            continue
        ratio = f"{r.images_per_s / baseline:.2f}" if baseline else "-"
        lines.append(
            f"{r.model:<8}{r.mode:<9}{r.images_per_s:>10,.1f}{ratio:>10}{r.step_ms:>10,.1f}"
            f"{r.first_step_s:>12.2f}{r.peak_mib:>10,.1f}  {r.note}"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cifar")
    parser.add_argument("--batch", type=int, help="images per step (default: by config and device)")
    parser.add_argument("--steps", type=int, help="timed steps (default: 20 on a GPU, 3 on the CPU)")
    parser.add_argument("--warmup", type=int, help="steps before timing (default: 5 on a GPU, 1 on the CPU)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: its own choice)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Result]:
    args = parse(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or BATCH[args.config][device.type]
    steps = args.steps or (20 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    if gpu:
        torch.set_float32_matmul_precision("high")
    where = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{args.config} {CONFIGS[args.config]}\nbatch {batch}, {steps} timed steps after {warmup}, "
        f"{where}, {'bf16 autocast' if gpu else 'float32'}, torch {torch.__version__}",
        flush=True,
    )
    if "compile" in args.modes and not gpu:
        print("torch.compile on a CPU: each model's first step compiles, for a minute or more on a few cores")
    results = run(args.config, batch, steps, warmup, device, args.models, args.modes)
    print(table(results), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
