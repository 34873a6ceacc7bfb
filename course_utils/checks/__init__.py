"""One self-check per exercise. Each raises AssertionError with a message a student can act on."""

from course_utils.checks.nb00_attention_before_transformers import check_additive_attention
from course_utils.checks.nb01_positional_encoding import check_position_encoding
from course_utils.checks.nb02_patch_embedding import check_patch_embedding
from course_utils.checks.nb03_class_token_and_positions import (
    check_learned_positions,
    check_prepend_cls_token,
    check_sinusoidal_positions,
)
from course_utils.checks.nb04_multi_head_attention import (
    check_attention_shapes,
    check_multi_head_attention,
    check_single_head_attention,
)
from course_utils.checks.nb05_residual_and_layernorm import check_layer_norm, check_residual_add
from course_utils.checks.nb06_feed_forward import check_feed_forward
from course_utils.checks.nb07_transformer_encoder import (
    check_encoder,
    check_encoder_block,
    check_parameter_count,
)
from course_utils.checks.nb08_vision_transformer import (
    check_classification_head,
    check_overfits,
    check_vit,
    check_vit_patch_embedding,
)
from course_utils.checks.nb09_masked_attention_and_decoder import (
    check_causal_mask,
    check_causality,
    check_cross_attention,
    check_decoder_block,
    check_padding_mask,
    check_shift_right,
)
from course_utils.checks.nb10_fast_attention import check_chunked_attention
from course_utils.checks.nb11_swin_transformer import (
    check_patch_merging,
    check_shifted_window_mask,
    check_swin_block,
    check_window_attention,
    check_window_partition,
)
from course_utils.checks.nb12_masked_autoencoder import (
    check_mae_decoder,
    check_mae_encoder,
    check_mae_loss,
    check_random_masking,
)
from course_utils.checks.questions import check_answer

__all__ = [
    "check_classification_head",
    "check_overfits",
    "check_vit",
    "check_vit_patch_embedding",
    "check_causal_mask",
    "check_causality",
    "check_chunked_attention",
    "check_cross_attention",
    "check_decoder_block",
    "check_padding_mask",
    "check_shift_right",
    "check_additive_attention",
    "check_encoder",
    "check_encoder_block",
    "check_feed_forward",
    "check_layer_norm",
    "check_learned_positions",
    "check_multi_head_attention",
    "check_parameter_count",
    "check_patch_embedding",
    "check_position_encoding",
    "check_prepend_cls_token",
    "check_residual_add",
    "check_sinusoidal_positions",
    "check_patch_merging",
    "check_shifted_window_mask",
    "check_swin_block",
    "check_window_attention",
    "check_window_partition",
    "check_attention_shapes",
    "check_single_head_attention",
    "check_answer",
    "check_random_masking",
    "check_mae_encoder",
    "check_mae_decoder",
    "check_mae_loss",
]
