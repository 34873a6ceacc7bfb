"""State-dict adapters between ``course_utils.fast_vit.FastViT`` and timm's ``VisionTransformer``.

FastViT names its parameters like timm (timm 1.0.x), so most keys map to themselves. What differs:

* **the final LayerNorm.** timm normalises every token (``norm``) before class-token pooling, and
  after mean pooling it uses ``fc_norm`` instead (``global_pool='avg'``; ``norm`` is then an
  ``Identity``). FastViT always pools first and keeps its LayerNorm in ``norm``: timm's
  ``fc_norm.*`` becomes ``norm.*``. Build the FastViT of an ``'avg'`` model with
  ``pool="mean_patches"`` (timm averages the patch tokens, not the class token).
* **layers without bias.** Some timm models are built with ``qkv_bias=False`` (or
  ``proj_bias=False``); FastViT's layers always have a bias, which is set to zero: the same
  function.
* **wrappers' prefixes.** ``torch.compile`` saves ``_orig_mod.``-prefixed keys, DistributedDataParallel
  ``module.``; both are removed.
* **positions without the class token's** (``no_embed_class=True``: ``pos_embed`` of ``(1, N, e)``).
  timm adds them to the patches only; FastViT adds ``(1, N + 1, e)`` after the class token, so a
  zero row is put in front.
* **what FastViT does not have** (register tokens, layer scale, q/k norms, gated attention, a
  pre-norm after the embedding, attention pooling, a patch-embedding norm) raises a
  ``ValueError`` naming the keys, instead of a silent mismatch.

timm's ``Identity`` modules (``norm_pre``, ``attn.q_norm``, ``ls1``, ``drop_path1``, ...) hold no
parameters and need no mapping. The tensors are not copied.
"""

import math
import re

import torch
from torch import Tensor

PREFIXES = ("_orig_mod.", "module.")

# timm keys with no FastViT counterpart: (pattern, what it is)
UNSUPPORTED = [
    (r"^reg_token$", "register tokens (reg_tokens > 0)"),
    (r"^dist_token$", "a distillation token (DeiT)"),
    (r"^blocks\.\d+\.ls[12]\.", "layer scale (init_values)"),
    (r"^blocks\.\d+\.attn\.[qk]_norm\.", "q/k normalisation (qk_norm=True)"),
    (r"^blocks\.\d+\.attn\.norm\.", "a norm inside attention (scale_attn_norm=True)"),
    (r"^blocks\.\d+\.attn\.gate\.", "gated attention (gated=True)"),
    (r"^blocks\.\d+\.mlp\.norm\.", "a norm inside the MLP (scale_mlp_norm=True)"),
    (r"^norm_pre\.", "a LayerNorm before the blocks (pre_norm=True, as in CLIP)"),
    (r"^attn_pool\.", "attention pooling (global_pool='map')"),
    (r"^patch_embed\.norm\.", "a norm in the patch embedding"),
    (r"^head_dist\.", "a distillation head (DeiT)"),
]


def _strip_prefixes(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def from_timm_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A timm ``VisionTransformer`` state dict -> one that ``FastViT.load_state_dict`` takes.

    Raises ``ValueError`` for parts of a timm model that FastViT does not implement.
    """
    state_dict = _strip_prefixes(state_dict)
    unsupported = sorted(
        f"{key} ({what})" for key in state_dict for pattern, what in UNSUPPORTED if re.search(pattern, key)
    )
    if unsupported:
        raise ValueError("FastViT has no counterpart for: " + ", ".join(unsupported))
    if "fc_norm.weight" in state_dict and "norm.weight" in state_dict:
        raise ValueError("both norm and fc_norm are present: FastViT has one final LayerNorm")
    out = {}
    for key, value in state_dict.items():
        if key.startswith("fc_norm."):
            key = "norm." + key[len("fc_norm.") :]
        out[key] = value
    if "cls_token" not in out:
        raise ValueError("no cls_token: FastViT needs a class token (class_token=True)")
    positions = out.get("pos_embed")
    if positions is None:
        raise ValueError("no pos_embed: FastViT needs learned position embeddings (pos_embed='learn')")
    if math.isqrt(positions.shape[1]) ** 2 == positions.shape[1]:
        # no_embed_class=True: positions for the N patches only (N = g², and N + 1 is never a
        # square). The class token then gets no position: a zero row in front is the same.
        out["pos_embed"] = torch.cat([positions.new_zeros(1, 1, positions.shape[2]), positions], dim=1)
    for key in [k for k in out if k.endswith(".weight")]:
        bias = key[: -len("weight")] + "bias"
        if bias not in out:  # qkv_bias=False, proj_bias=False, ...: a zero bias is the same
            out[bias] = out[key].new_zeros(out[key].shape[0])
    return out


def to_timm_state_dict(state_dict: dict[str, Tensor], global_pool: str = "token") -> dict[str, Tensor]:
    """A ``FastViT`` state dict -> one for timm's ``VisionTransformer`` (``qkv_bias=True``).

    ``global_pool`` is the timm model's: ``'token'`` (FastViT ``pool="cls"``) keeps the final
    LayerNorm in ``norm``; ``'avg'`` (FastViT ``pool="mean_patches"``) moves it to ``fc_norm``.
    """
    if global_pool not in ("token", "avg"):
        raise ValueError(f"global_pool must be 'token' or 'avg', not {global_pool!r}")
    out = {}
    for key, value in _strip_prefixes(state_dict).items():
        if global_pool == "avg" and key.startswith("norm."):
            key = "fc_norm." + key[len("norm.") :]
        out[key] = value
    return out
