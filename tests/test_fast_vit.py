"""FastViT: the lecture's function, timm's state dicts, torch.compile; its check and its benchmark."""

import pytest
import torch
from torch import nn

from benchmarks import vit_throughput
from course_utils import reference
from course_utils.checks.nb10_fast_attention import check_chunked_attention
from course_utils.fast_vit import Attention, Block, FastViT, peak_memory, time_per_call
from course_utils.timm_compat import from_timm_state_dict, to_timm_state_dict

TINY = dict(img_size=32, patch_size=4, emb_size=64, depth=2, num_heads=4, n_classes=10)
# Two implementations of the same function agree to rounding: |a - b| <= atol + rtol·|b|, with
# atol = rtol = 1e-5 in float32 (here logits differ by ~4e-7, tokens of size ~6 by ~2e-6) and
# 1e-10 in float64.
FLOAT32 = dict(atol=1e-5, rtol=1e-5)
FLOAT64 = dict(atol=1e-10, rtol=1e-10)


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random, LayerNorm scales and biases included, so that no swap hides."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * 0.1)
        for norm in module.modules():
            if isinstance(norm, nn.LayerNorm):
                norm.weight.add_(1.0)  # scales around 1
    return module.eval()


def images(batch: int = 3, size: int = 32, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(
        batch, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    ).to(dtype)


def test_fastvit_shapes_and_timm_names():
    model = FastViT(**TINY).eval()
    x = images()
    assert model(x).shape == (3, 10)
    assert model.forward_features(x).shape == (3, 8 * 8 + 1, 64)
    assert model.cls_token.shape == (1, 1, 64) and model.pos_embed.shape == (1, 65, 64)
    names = set(model.state_dict())
    for name in ("patch_embed.proj.weight", "blocks.1.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "norm.bias"):
        assert name in names
    assert model.blocks[0].attn.qkv.out_features == 3 * 64


@pytest.mark.parametrize(
    "config",
    [
        dict(patch_size=16, emb_size=768, depth=12, num_heads=12, img_size=224, n_classes=1000),
        dict(patch_size=14, emb_size=1280, depth=32, num_heads=16, img_size=224, n_classes=1000),
        dict(**TINY),
    ],
    ids=["vit-b16", "vit-h14", "tiny"],
)
def test_parameter_count_equals_the_course_formula(config):
    with torch.device("meta"):
        model = FastViT(**config)
    count = sum(p.numel() for p in model.parameters())
    expected = reference.vit_parameter_count(
        config["patch_size"],
        config["emb_size"],
        config["depth"],
        config["num_heads"],
        4 * config["emb_size"],
        img_size=config["img_size"],
        n_classes=config["n_classes"],
    )
    assert count == expected
    if config["emb_size"] == 768:
        assert count == 86_567_656  # ViT-B/16, as in notebook 07


def lecture_to_fast(lecture: nn.Module) -> dict[str, torch.Tensor]:
    """The lecture's einsum ViT (PatchEmbedding, TransformerEncoder, ClassificationHead) mapped by hand."""
    embedding, encoder, head = lecture
    out = {
        "patch_embed.proj.weight": embedding.projection[0].weight,
        "patch_embed.proj.bias": embedding.projection[0].bias,
        "cls_token": embedding.cls_token,
        "pos_embed": embedding.positions.positions[None],
        "norm.weight": head[1].weight,
        "norm.bias": head[1].bias,
        "head.weight": head[2].weight,
        "head.bias": head[2].bias,
    }
    for i, (attention_part, mlp_part) in enumerate(encoder):
        norm1, mha, _ = attention_part.fn
        norm2, mlp, _ = mlp_part.fn
        block = f"blocks.{i}"
        out |= {
            f"{block}.norm1.weight": norm1.weight,
            f"{block}.norm1.bias": norm1.bias,
            # timm's (qkv h d) layout: all the queries, then the keys, then the values
            f"{block}.attn.qkv.weight": torch.cat([mha.queries.weight, mha.keys.weight, mha.values.weight]),
            f"{block}.attn.qkv.bias": torch.cat([mha.queries.bias, mha.keys.bias, mha.values.bias]),
            f"{block}.attn.proj.weight": mha.projection.weight,
            f"{block}.attn.proj.bias": mha.projection.bias,
            f"{block}.norm2.weight": norm2.weight,
            f"{block}.norm2.bias": norm2.bias,
            f"{block}.mlp.fc1.weight": mlp[0].weight,
            f"{block}.mlp.fc1.bias": mlp[0].bias,
            f"{block}.mlp.fc2.weight": mlp[3].weight,
            f"{block}.mlp.fc2.bias": mlp[3].bias,
        }
    return out


@pytest.mark.parametrize(
    "dtype, tol", [(torch.float32, FLOAT32), (torch.float64, FLOAT64)], ids=["float32", "float64"]
)
def test_fastvit_equals_the_lecture_einsum_vit(dtype, tol):
    """Same weights, same logits: FastViT(pool="mean") with nn.LayerNorm's eps (1e-5) is the
    benchmark's einsum model (its ClassificationHead, notebook 08's mean-pooling variant, averages every
    token, the class token included)."""
    torch.manual_seed(0)
    lecture = randomize(vit_throughput.EinsumViT(**TINY)).to(dtype)
    fast = FastViT(**TINY, pool="mean", norm_eps=1e-5).to(dtype).eval()
    fast.load_state_dict(lecture_to_fast(lecture))
    x = images(dtype=dtype)
    with torch.no_grad():
        expected = lecture(x)
        torch.testing.assert_close(fast(x), expected, **tol)
        embedded = lecture[1](lecture[0](x))
        torch.testing.assert_close(fast.forward_features(x), embedded, **tol)
    other_eps = FastViT(**TINY, pool="mean").to(dtype).eval()  # timm's eps 1e-6 differs, a little
    other_eps.load_state_dict(fast.state_dict())
    with torch.no_grad():
        assert not torch.equal(other_eps(x), expected)


def test_fastvit_block_is_torch_encoder_layer():
    torch.manual_seed(0)
    block = randomize(Block(48, 6, norm_eps=1e-6))
    layer = reference.torch_encoder_layer(
        (block.norm1, block.norm2),
        reference.AttentionWeights(
            *(
                (w, b)
                for w, b in zip(block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3), strict=True)
            ),
            (block.attn.proj.weight, block.attn.proj.bias),
        ),
        (block.mlp.fc1, block.mlp.fc2),
        num_heads=6,
    ).eval()
    x = torch.randn(2, 9, 48)
    with torch.no_grad():
        torch.testing.assert_close(block(x), layer(x), **FLOAT32)


def test_fastvit_attention_is_sdpa_on_its_qkv_with_masks_and_dropout():
    """Attention reads qkv in the (qkv h d) layout; is_causal is the tril mask; dropout in training only."""
    attn = randomize(Attention(32, 4, dropout=0.5))
    weights = reference.AttentionWeights(
        *zip(attn.qkv.weight.chunk(3), attn.qkv.bias.chunk(3), strict=True),
        (attn.proj.weight, attn.proj.bias),
    )
    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(2))
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    with torch.no_grad():
        torch.testing.assert_close(attn(x), reference.sdpa_attention(x, weights, 4), **FLOAT32)
        torch.testing.assert_close(
            attn(x, causal), reference.sdpa_attention(x, weights, 4, causal), **FLOAT32
        )
        torch.testing.assert_close(attn(x, is_causal=True), attn(x, causal), **FLOAT32)
        assert torch.equal(attn(x), attn(x))  # eval mode: no dropout
        attn.train()
        assert not torch.allclose(attn(x), attn.eval()(x))


GARBAGE = {
    "None": lambda x: None,
    "the input": lambda x: x,
    "zeros of another shape": lambda x: torch.zeros(1),
    "a string": lambda x: "tensor",
    "a tuple": lambda x: (x, x),
    "float64": lambda x: x.double(),
    "NaN": lambda x: x * float("nan"),
    "random": lambda x: torch.randn_like(x),
    "an exception": lambda x: 1 / 0,
}


@pytest.mark.parametrize("mask", [None, "causal", "padding"])
@pytest.mark.parametrize("kind", GARBAGE)
def test_chunked_attention_check_fails_cleanly_on_garbage(kind, mask):
    """Whatever comes back, the notebook's check answers with an AssertionError, never a crash of its own."""

    def garbage(q, k, v, chunk_size, mask=None):
        return GARBAGE[kind](q)

    with pytest.raises(AssertionError):
        check_chunked_attention(garbage, mask=mask)


@pytest.mark.parametrize("pool", ["cls", "mean", "mean_patches"])
def test_pooling(pool):
    model = randomize(FastViT(**TINY, pool=pool))
    x = images()
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = {"cls": tokens[:, 0], "mean": tokens.mean(1), "mean_patches": tokens[:, 1:].mean(1)}[pool]
        torch.testing.assert_close(model(x), model.head(model.norm(pooled)))
    with pytest.raises(ValueError, match="pool must be"):
        FastViT(**TINY, pool="max")


def test_fastvit_compiles_into_one_graph():
    """Graph capture and AOT autograd without a C compiler: fullgraph=True fails on any graph break.
    (Inductor's code generation takes tens of seconds on a 2-core CPU: the benchmark's
    ``--modes compile`` and notebook 10 run it.)"""
    torch._dynamo.reset()
    model = FastViT(**TINY)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = images()
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, model(x), **FLOAT32)
    assert model.blocks[0].attn.qkv.weight.grad is not None


# --- the state-dict adapters, without timm ---------------------------------------------------


def test_adapters_round_trip_and_wrappers():
    state = FastViT(**TINY).state_dict()
    assert to_timm_state_dict(state).keys() == state.keys()
    assert from_timm_state_dict(to_timm_state_dict(state)).keys() == state.keys()
    avg = to_timm_state_dict(state, global_pool="avg")
    assert "fc_norm.weight" in avg and "norm.weight" not in avg
    back = from_timm_state_dict(avg)
    assert back.keys() == state.keys() and back["norm.weight"] is state["norm.weight"]
    compiled = {f"_orig_mod.{k}": v for k, v in state.items()}
    ddp = {f"module.{k}": v for k, v in state.items()}
    assert from_timm_state_dict(compiled).keys() == from_timm_state_dict(ddp).keys() == state.keys()
    with pytest.raises(ValueError, match="global_pool"):
        to_timm_state_dict(state, global_pool="map")


def test_adapters_fill_missing_biases_and_class_token_positions():
    model = randomize(FastViT(**TINY))
    state = dict(model.state_dict())
    del state["blocks.0.attn.qkv.bias"], state["blocks.1.attn.qkv.bias"]
    state["pos_embed"] = state["pos_embed"][:, 1:]  # timm's no_embed_class=True
    loaded = FastViT(**TINY).eval()
    loaded.load_state_dict(from_timm_state_dict(state))
    assert not loaded.blocks[0].attn.qkv.bias.any() and not loaded.pos_embed[:, 0].any()
    with torch.no_grad():  # the same as adding positions to the patches only, and no qkv bias
        model.blocks[0].attn.qkv.bias.zero_()
        model.blocks[1].attn.qkv.bias.zero_()
        model.pos_embed[:, 0] = 0
        torch.testing.assert_close(loaded(images()), model(images()))


@pytest.mark.parametrize(
    "key, named",
    [
        ("reg_token", "register tokens"),
        ("blocks.0.ls1.gamma", "layer scale"),
        ("blocks.1.attn.q_norm.weight", "q/k normalisation"),
        ("norm_pre.weight", "pre_norm"),
        ("attn_pool.latent", "attention pooling"),
    ],
)
def test_adapters_refuse_what_fastvit_lacks(key, named):
    state = dict(FastViT(**TINY).state_dict())
    state[key] = torch.zeros(1)
    with pytest.raises(ValueError, match=named):
        from_timm_state_dict(state)


# --- timm itself, where it can be imported -------------------------------------------------------


def timm_vision_transformer():
    """timm's VisionTransformer class, or a skip: timm is not a dependency, and beside a CPU-only
    torch wheel its import of torchvision can fail with other errors than ImportError."""
    pytest.importorskip("timm")  # not installed: skip
    try:
        from timm.models.vision_transformer import VisionTransformer
    except Exception as err:  # installed but broken here
        pytest.skip(f"timm cannot be imported here: {type(err).__name__}: {err}")
    return VisionTransformer


TIMM_CASES = {
    "token": (dict(), dict(pool="cls"), "token"),
    "avg": (dict(global_pool="avg"), dict(pool="mean_patches"), "avg"),
    "no-qkv-bias": (dict(qkv_bias=False), dict(pool="cls"), None),
    "no-embed-class": (dict(no_embed_class=True), dict(pool="cls"), None),
}


@pytest.mark.parametrize("case", TIMM_CASES)
@pytest.mark.parametrize(
    "dtype, tol", [(torch.float32, FLOAT32), (torch.float64, FLOAT64)], ids=["float32", "float64"]
)
def test_timm_weights_give_the_same_logits(case, dtype, tol):
    """A tiny timm ViT (32 px, patch 4, dim 64, depth 2, 4 heads, 10 classes) loaded into FastViT
    gives its logits to 1e-5 + 1e-5·|logit| in float32 (1e-10 in float64); and back into timm."""
    VisionTransformer = timm_vision_transformer()
    timm_kwargs, fast_kwargs, global_pool = TIMM_CASES[case]
    config = dict(img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4, num_classes=10)
    torch.manual_seed(0)
    theirs = randomize(VisionTransformer(**config, **timm_kwargs)).to(dtype)
    ours = FastViT(**TINY, **fast_kwargs).to(dtype).eval()
    ours.load_state_dict(from_timm_state_dict(theirs.state_dict()))
    x = images(dtype=dtype)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, **tol)
    if global_pool is None:  # only from timm: FastViT has a qkv bias and positions for the class token
        return
    again = VisionTransformer(**config, **timm_kwargs).to(dtype).eval()
    again.load_state_dict(to_timm_state_dict(ours.state_dict(), global_pool=global_pool))
    with torch.no_grad():
        torch.testing.assert_close(again(x), expected, **tol)


# --- the benchmark and the measuring helpers -----------------------------------------------------


def test_benchmark_runs_on_a_tiny_config(capsys, tmp_path):
    out = tmp_path / "out.json"
    arguments = "--config tiny --steps 1 --warmup 0 --modes eager --models einsum fast --device cpu --json"
    results = vit_throughput.main([*arguments.split(), str(out)])
    assert [(r.model, r.mode) for r in results] == [("einsum", "eager"), ("fast", "eager")]
    assert all(r.images_per_s > 0 and r.peak_mib >= 0 for r in results), results
    printed = capsys.readouterr().out
    assert "× einsum" in printed and "1.00" in printed
    assert out.read_text().count('"model"') == 2


def test_lecture_models_come_from_the_solution_notebooks():
    namespace = vit_throughput.lecture_namespace()
    assert {"PatchEmbedding", "TransformerEncoder", "MultiHeadAttention"} <= namespace.keys()
    mha = namespace["MultiHeadAttention"](32, 4)
    assert {"queries", "keys", "values", "projection"} <= dict(mha.named_children()).keys()


def test_measuring_helpers():
    a = torch.randn(64, 64)
    assert 0 < time_per_call(lambda: a @ a, min_time=0.01) < 1
    # one (256, 256) float32 result: 256 KiB, freed when the lambda returns
    assert peak_memory(lambda: torch.ones(256, 256) + 1) >= 256 * 256 * 4
