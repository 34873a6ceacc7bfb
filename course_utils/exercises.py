"""Every graded exercise of the course, declared once.

An exercise is numbered ``NN.k`` (notebook NN, its k-th exercise), names what the student writes and the
checks that judge it, and lists the library objects those checks compare against (which no student cell
of its notebook may use: the grader's review refuses them by the object they resolve to). Its points and
cases (visible and hidden) are in its notebook's graded cells, which call these checks; its reference and
known mistakes are in the check module of its notebook, ``course_utils/checks/nbNN_<notebook>.py``. The
README's table, the grader's review and the tests' lists are derived from this table and the notebooks.
"""

import importlib
from dataclasses import dataclass

SDPA = "torch.nn.functional.scaled_dot_product_attention"
TORCH_ATTENTION = (SDPA, "torch.nn.MultiheadAttention", "torch.nn.functional.multi_head_attention_forward")
TORCH_ENCODER = ("torch.nn.TransformerEncoderLayer", "torch.nn.TransformerEncoder", *TORCH_ATTENTION)
TORCH_DECODER = (
    "torch.nn.TransformerDecoderLayer",
    "torch.nn.TransformerDecoder",
    "torch.nn.Transformer",
    *TORCH_ENCODER,
)


@dataclass(frozen=True)
class Notebook:
    """A notebook of the course: its assignment id, title and what else it holds (for the README)."""

    id: str
    title: str
    also: str


@dataclass(frozen=True)
class Exercise:
    """One graded exercise: ``kind`` is ``module`` (a class the checks build) or ``function``;
    ``title`` is how the README's table says what the student writes."""

    id: str
    notebook: str
    name: str
    checks: tuple[str, ...]
    kind: str = "module"
    forbidden: tuple[str, ...] = ()
    title: str = ""
    arguments: tuple[str, ...] = ()  # of the student's class or function, each varied by some graded case
    varied_inside: tuple[str, ...] = ()  # those the checks vary themselves (in a list of cases, say)

    @property
    def described(self) -> str:
        return self.title or f"`{self.name}`"


NOTEBOOKS = (
    Notebook(
        "00_attention_before_transformers",
        "Attention before Transformers",
        "an RNN encoder-decoder on reversing digit strings, accuracy against length with and without "
        "attention, the alignment matrix",
    ),
    Notebook(
        "01_positional_encoding",
        "Positional encoding",
        "the lecture's d=4, n=100 table, a heatmap, attention without positions is permutation-equivariant",
    ),
    Notebook(
        "02_patch_embedding",
        "Patch embedding",
        "a real image cut into patches, equality with a strided `nn.Conv2d`",
    ),
    Notebook(
        "03_class_token_and_positions",
        "Class token and positions",
        "the lecture's full `PatchEmbedding`, position similarity maps",
    ),
    Notebook(
        "04_multi_head_attention",
        "Multi-head attention",
        "equality with `scaled_dot_product_attention` and `nn.MultiheadAttention`, attention maps",
    ),
    Notebook(
        "05_residual_and_layernorm",
        "Residual and LayerNorm",
        "the in-place trap, gradient norms with and without residuals, pre-norm vs post-norm",
    ),
    Notebook("06_feed_forward", "Feed-forward block", "ReLU vs GELU, parameter count"),
    Notebook(
        "07_transformer_encoder",
        "Transformer encoder",
        "the encoder block drawn, equality with `nn.TransformerEncoderLayer(norm_first=True)`, "
        "ViT-Base/Large/Huge sizes",
    ),
    Notebook(
        "08_vision_transformer",
        "Vision Transformer",
        "the ViT pipeline drawn, training on digits with the class-token head (97.5 %), the reference's and "
        "the Colab's initialisation measured, class-token attention, rollout, position similarity with its "
        "grid correlation, a confusion matrix, CIFAR-10 when present, and a CNN, the ViT and a hybrid "
        "trained on 50 to 1,437 images (the inductive-bias experiment)",
    ),
    Notebook(
        "09_masked_attention_and_decoder",
        "Masked attention and the decoder",
        "equality with `nn.TransformerDecoderLayer(norm_first=True)`, an encoder-decoder trained to exact "
        "match, cross-attention beside the RNN alignment",
    ),
    Notebook(
        "10_fast_attention",
        "Fast attention",
        "why attention is memory-hungry, einsum vs `scaled_dot_product_attention` as the sequence grows, "
        "fused `qkv`, `torch.compile`",
    ),
    Notebook(
        "11_swin_transformer",
        "Swin Transformer",
        "windows drawn on the token grid, the relative position index, the shifted windows' regions "
        "and masks, what a token sees after a regular and a shifted block, equality with timm's "
        "`SwinTransformerBlock` where timm is installed, Swin-T's four stages from your parts (28,288,354 "
        "parameters, as timm's), window against global attention as the image grows",
    ),
    Notebook(
        "12_masked_autoencoder",
        "Masked autoencoders (MAE)",
        "pre-training on scikit-learn's digits, reconstructions from 4 of 16 patches, fine-tuning with "
        "10/20/50 labels per class against the same model from scratch",
    ),
)

EXERCISES = (
    Exercise(
        "00.1",
        "00_attention_before_transformers",
        "AdditiveAttention",
        ("check_additive_attention",),
        forbidden=(SDPA,),
        title="`AdditiveAttention` (Bahdanau)",
        arguments=("dec_size", "enc_size", "att_size"),
    ),
    Exercise(
        "01.1",
        "01_positional_encoding",
        "getPositionEncoding",
        ("check_position_encoding",),
        kind="function",
        title="`getPositionEncoding(seq_len, d, n)`",
        arguments=("seq_len", "d", "n"),
        varied_inside=("seq_len", "d", "n"),
    ),
    Exercise(
        "02.1",
        "02_patch_embedding",
        "PatchEmbedding",
        ("check_patch_embedding",),
        title="`PatchEmbedding` with `Rearrange` + `nn.Linear`",
        arguments=("in_channels", "patch_size", "emb_size", "img_size"),
    ),
    Exercise(
        "03.1",
        "03_class_token_and_positions",
        "prepend_cls_token",
        ("check_prepend_cls_token",),
        kind="function",
        title="`prepend_cls_token` with `repeat`",
    ),
    Exercise(
        "03.2",
        "03_class_token_and_positions",
        "LearnedPositions",
        ("check_learned_positions",),
        arguments=("num_positions", "emb_size"),
    ),
    Exercise(
        "03.3",
        "03_class_token_and_positions",
        "SinusoidalPositions",
        ("check_sinusoidal_positions",),
        title="`SinusoidalPositions` as a buffer",
        arguments=("num_positions", "emb_size"),
    ),
    Exercise(
        "04.1",
        "04_multi_head_attention",
        "attention",
        ("check_single_head_attention",),
        kind="function",
        forbidden=TORCH_ATTENTION,
        title="`attention(q, k, v, mask)` for one head",
        arguments=("mask",),
    ),
    Exercise(
        "04.2",
        "04_multi_head_attention",
        "attention_shapes",
        ("check_attention_shapes",),
        kind="function",
        title="`attention_shapes`: the shapes of every intermediate tensor",
        arguments=("b", "n", "emb_size", "num_heads"),
    ),
    Exercise(
        "04.3",
        "04_multi_head_attention",
        "MultiHeadAttention",
        ("check_multi_head_attention",),
        forbidden=TORCH_ATTENTION,
        title="`MultiHeadAttention.forward` with `einsum` and `rearrange`, masks",
        arguments=("emb_size", "num_heads", "dropout"),
    ),
    Exercise(
        "05.1",
        "05_residual_and_layernorm",
        "ResidualAdd",
        ("check_residual_add",),
        arguments=("fn",),
        varied_inside=("fn",),
    ),
    Exercise(
        "05.2",
        "05_residual_and_layernorm",
        "LayerNorm",
        ("check_layer_norm",),
        forbidden=("torch.nn.functional.layer_norm", "torch.nn.LayerNorm"),
        title="`LayerNorm` from its formula",
        arguments=("emb_size", "eps"),
    ),
    Exercise(
        "06.1",
        "06_feed_forward",
        "FeedForwardBlock",
        ("check_feed_forward",),
        arguments=("emb_size", "expansion", "drop_p"),
        varied_inside=("drop_p",),
    ),
    Exercise(
        "07.1",
        "07_transformer_encoder",
        "TransformerEncoderBlock",
        ("check_encoder_block",),
        forbidden=TORCH_ENCODER,
        arguments=("emb_size", "num_heads", "forward_expansion"),
    ),
    Exercise(
        "07.2",
        "07_transformer_encoder",
        "TransformerEncoder",
        ("check_encoder",),
        forbidden=TORCH_ENCODER,
        arguments=("depth", "emb_size", "num_heads"),
    ),
    Exercise(
        "07.3",
        "07_transformer_encoder",
        "vit_parameter_count",
        ("check_parameter_count",),
        kind="function",
        arguments=("patch_size", "emb_size", "depth", "mlp_size", "img_size", "in_channels", "n_classes"),
        varied_inside=("patch_size", "emb_size", "depth", "mlp_size", "img_size", "in_channels", "n_classes"),
    ),
    Exercise(
        "08.1",
        "08_vision_transformer",
        "ClassificationHead",
        ("check_classification_head",),
        title="`ClassificationHead` (the class token by default, mean pooling the variant)",
        arguments=("emb_size", "n_classes", "pool"),
        varied_inside=("pool",),
    ),
    Exercise(
        "08.2",
        "08_vision_transformer",
        "ViT",
        ("check_vit", "check_overfits"),
        forbidden=TORCH_ENCODER,
        arguments=("in_channels", "patch_size", "emb_size", "img_size", "depth", "n_classes", "num_heads"),
    ),
    Exercise(
        "09.1",
        "09_masked_attention_and_decoder",
        "causal_mask",
        ("check_causal_mask",),
        kind="function",
        arguments=("n",),
        varied_inside=("n",),
    ),
    Exercise(
        "09.2",
        "09_masked_attention_and_decoder",
        "padding_mask",
        ("check_padding_mask",),
        kind="function",
        arguments=("pad",),
    ),
    Exercise(
        "09.3",
        "09_masked_attention_and_decoder",
        "MultiHeadAttention",
        ("check_cross_attention",),
        forbidden=TORCH_ATTENTION,
        title="cross-attention in `MultiHeadAttention`",
        arguments=("emb_size", "num_heads"),
    ),
    Exercise(
        "09.4",
        "09_masked_attention_and_decoder",
        "TransformerDecoderBlock",
        ("check_decoder_block", "check_causality"),
        forbidden=TORCH_DECODER,
        arguments=("emb_size", "num_heads", "forward_expansion"),
    ),
    Exercise(
        "09.5",
        "09_masked_attention_and_decoder",
        "shift_right",
        ("check_shift_right",),
        kind="function",
        arguments=("bos",),
    ),
    Exercise(
        "10.1",
        "10_fast_attention",
        "chunked_attention",
        ("check_chunked_attention",),
        kind="function",
        forbidden=TORCH_ATTENTION,
        arguments=("chunk_size", "mask"),
    ),
    Exercise(
        "11.1",
        "11_swin_transformer",
        "window_partition",
        ("check_window_partition",),
        kind="function",
        title="`window_partition` / `window_reverse` with `rearrange`",
        arguments=("window_size",),
    ),
    Exercise(
        "11.2",
        "11_swin_transformer",
        "WindowAttention",
        ("check_window_attention",),
        forbidden=TORCH_ATTENTION,
        title="`WindowAttention` with a relative position bias and per-window masks",
        arguments=("dim", "window_size", "num_heads"),
    ),
    Exercise(
        "11.3",
        "11_swin_transformer",
        "shifted_window_mask",
        ("check_shifted_window_mask",),
        kind="function",
        title="`shifted_window_mask` (cyclic shift, region labels)",
        arguments=("height", "width", "window_size", "shift_size"),
    ),
    Exercise(
        "11.4",
        "11_swin_transformer",
        "PatchMerging",
        ("check_patch_merging",),
        title="`PatchMerging` (2×2 neighbours, LayerNorm, Linear 4c → 2c)",
        arguments=("dim",),
    ),
    Exercise(
        "11.5",
        "11_swin_transformer",
        "SwinBlock",
        ("check_swin_block",),
        forbidden=TORCH_ATTENTION,
        title="`SwinBlock`, regular then shifted windows",
        arguments=("dim", "num_heads", "window_size", "shift_size", "mlp_ratio"),
    ),
    Exercise(
        "12.1",
        "12_masked_autoencoder",
        "random_masking",
        ("check_random_masking",),
        kind="function",
        title="`random_masking(x, mask_ratio, noise)`: shuffle, keep, `ids_restore`, mask",
        arguments=("mask_ratio",),
    ),
    Exercise(
        "12.2",
        "12_masked_autoencoder",
        "MAEEncoder",
        ("check_mae_encoder",),
        forbidden=TORCH_ENCODER,
        title="`MAEEncoder` on the visible patches",
        arguments=("num_patches", "patch_dim", "emb_size", "depth", "num_heads", "mask_ratio"),
    ),
    Exercise(
        "12.3",
        "12_masked_autoencoder",
        "MAEDecoder",
        ("check_mae_decoder",),
        forbidden=TORCH_ENCODER,
        title="`MAEDecoder` with the shared mask token",
        arguments=(
            "num_patches",
            "patch_dim",
            "emb_size",
            "decoder_emb_size",
            "depth",
            "num_heads",
            "mask_ratio",
        ),
    ),
    Exercise(
        "12.4",
        "12_masked_autoencoder",
        "mae_loss",
        ("check_mae_loss",),
        kind="function",
        title="`mae_loss` on the masked patches, `norm_pix`",
        arguments=("norm_pix",),
    ),
)


def exercises_of(notebook: str) -> list[Exercise]:
    return [e for e in EXERCISES if e.notebook == notebook]


def resolve(path: str) -> object:
    """The object a dotted path of a library names (``torch.nn.LayerNorm``)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def forbidden_in(notebook: str) -> dict[str, object]:
    """The library objects the checks of ``notebook`` compare against, by dotted path."""
    paths = dict.fromkeys(p for e in exercises_of(notebook) for p in e.forbidden)
    return {path: resolve(path) for path in paths}
