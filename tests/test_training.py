"""Unit tests of course_utils.training and course_utils.datasets: schedule, loop, checkpoints, data."""

import hashlib
import io
import math
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from course_utils.datasets import (
    CIFAR10_CLASSES,
    CIFAR10_FOLDER,
    ImageSet,
    cifar10_available,
    load_cifar10,
    load_digits_images,
    random_crop_flip,
)
from course_utils.training import (
    History,
    evaluate,
    load_checkpoint,
    parameter_groups,
    save_checkpoint,
    to_float,
    train,
    warmup_cosine,
)

# ----------------------------------------------------------------------------------------------
# warmup_cosine
# ----------------------------------------------------------------------------------------------


def test_warmup_rises_linearly_to_one():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(4, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)


def test_cosine_decays_from_one_to_zero_after_the_warmup():
    total, warmup = 100, 10
    assert warmup_cosine(warmup, total, warmup) == pytest.approx(1.0)
    assert warmup_cosine(55, total, warmup) == pytest.approx(0.5)  # half-way through the decay
    assert warmup_cosine(total, total, warmup) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(total + 5, total, warmup) == pytest.approx(0.0, abs=1e-12)
    decay = [warmup_cosine(s, total, warmup) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert all(0 < warmup_cosine(s, total, warmup) <= 1 for s in range(total))


def test_no_warmup_starts_at_full_rate():
    assert warmup_cosine(0, 50, 0) == pytest.approx(1.0)
    assert warmup_cosine(25, 50, 0) == pytest.approx(0.5)
    assert warmup_cosine(10, 50, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 50)))


# ----------------------------------------------------------------------------------------------
# train, evaluate, checkpoints
# ----------------------------------------------------------------------------------------------


def toy_data(n: int = 96, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Two easy classes of 1×4×4 images: bright top half or bright bottom half, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = 0.3 * torch.rand(n, 1, 4, 4, generator=generator)
    images[labels == 0, :, :2] += 0.7
    images[labels == 1, :, 2:] += 0.7
    half = n * 3 // 4
    classes = ("top", "bottom")
    return ImageSet(images[:half], labels[:half], classes), ImageSet(images[half:], labels[half:], classes)


def toy_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.Dropout(0.1), nn.GELU(), nn.Linear(16, 2))


def quick(model, train_set, test_set, **kwargs) -> History:
    options = dict(epochs=3, batch_size=16, lr=1e-2, device="cpu", live=False, progress=False)
    return train(model, train_set, test_set, **{**options, **kwargs})


def test_train_learns_an_easy_task_and_records_each_epoch():
    train_set, test_set = toy_data()
    history = quick(toy_model(), train_set, test_set, epochs=8)
    assert history.epoch == list(range(1, 9))
    for values in (history.train_loss, history.test_loss, history.test_accuracy, history.seconds, history.lr):
        assert len(values) == 8
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_accuracy[-1] == 1.0
    assert history.lr[-1] == pytest.approx(0.0, abs=1e-12)  # the cosine ends at zero
    assert "test loss" in history.line()


def test_same_seed_gives_the_same_run_and_another_seed_another():
    train_set, test_set = toy_data()
    first = quick(toy_model(), train_set, test_set, seed=3)
    second = quick(toy_model(), train_set, test_set, seed=3)
    other = quick(toy_model(), train_set, test_set, seed=4)
    assert first.train_loss == second.train_loss
    assert first.test_loss == second.test_loss
    assert first.train_loss != other.train_loss


def test_train_accepts_uint8_images_and_an_augmentation():
    train_set, test_set = toy_data()
    as_bytes = ImageSet((train_set.images * 255).to(torch.uint8), train_set.labels, train_set.classes)
    seen = []

    def augment(batch):
        seen.append(batch.dtype)
        return random_crop_flip(batch, padding=1)

    history = quick(toy_model(), as_bytes, test_set, augment=augment, epochs=1)
    assert seen and set(seen) == {torch.uint8}
    assert np.isfinite(history.train_loss[-1])


def test_train_without_test_data_and_with_label_smoothing():
    train_set, _ = toy_data()
    history = quick(toy_model(), train_set, None, label_smoothing=0.1, warmup_steps=2)
    assert history.test_loss == [] and len(history.train_loss) == 3
    assert "test" not in history.line()


def test_train_prints_one_line_per_epoch_outside_a_notebook(capsys):
    train_set, test_set = toy_data()
    quick(toy_model(), train_set, test_set, epochs=2, live=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "accuracy" in lines[0]


def test_evaluate_gives_loss_and_accuracy():
    images = torch.eye(3).reshape(3, 1, 1, 3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 3, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(10 * torch.eye(3))
    loss, accuracy = evaluate(model, (images, torch.tensor([0, 1, 0])))
    assert accuracy == pytest.approx(2 / 3)
    expected = nn.functional.cross_entropy(10 * torch.eye(3), torch.tensor([0, 1, 0])).item()
    assert loss == pytest.approx(expected)


def test_weight_decay_spares_biases_norms_tokens_and_positions():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
            self.positions = nn.Parameter(torch.zeros(5, 4))
            self.linear = nn.Linear(4, 4)
            self.norm = nn.LayerNorm(4)

    decay, plain = parameter_groups(Tiny(), 0.1)
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [(4, 4)]
    assert len(plain["params"]) == 5


def test_checkpoint_round_trip(tmp_path: Path):
    train_set, test_set = toy_data()
    model = toy_model()
    path = tmp_path / "run" / "checkpoint.pt"
    history = quick(model, train_set, test_set, checkpoint=path)
    assert path.is_file() and not Path(str(path) + ".tmp").exists()

    fresh = toy_model(seed=1)
    optimizer = torch.optim.AdamW(parameter_groups(fresh, 0.05))
    epoch, loaded = load_checkpoint(path, fresh, optimizer)
    assert epoch == 3 and loaded == history
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert optimizer.state_dict()["state"], "the optimizer's moments were restored"

    save_checkpoint(tmp_path / "again.pt", fresh, optimizer, epoch=epoch, history=loaded)
    assert load_checkpoint(tmp_path / "again.pt", toy_model(seed=2))[1] == history


def test_resume_goes_on_from_the_checkpoint(tmp_path: Path):
    train_set, test_set = toy_data()
    path = tmp_path / "checkpoint.pt"
    quick(toy_model(), train_set, test_set, epochs=4, checkpoint=path)  # saved after epoch 4
    history = quick(toy_model(seed=5), train_set, test_set, epochs=6, checkpoint=path, resume=True)
    assert history.epoch == [1, 2, 3, 4, 5, 6]


def test_to_float_scales_bytes_only():
    assert torch.equal(to_float(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([0.0, 1.0]))
    assert torch.equal(to_float(torch.tensor([0.5])), torch.tensor([0.5]))


# ----------------------------------------------------------------------------------------------
# datasets: digits, augmentation, CIFAR-10 from a fake archive
# ----------------------------------------------------------------------------------------------


def test_digits_are_split_stratified_and_reproducibly():
    train_set, test_set = load_digits_images(size=8)
    assert train_set.images.shape == (1437, 1, 8, 8) and test_set.images.shape == (360, 1, 8, 8)
    assert train_set.images.dtype == torch.float32 and train_set.labels.dtype == torch.int64
    assert train_set.images.min() >= 0 and train_set.images.max() <= 1
    counts = torch.bincount(test_set.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # about 36 of each digit
    again, _ = load_digits_images(size=8)
    assert torch.equal(again.labels, train_set.labels)
    other, _ = load_digits_images(size=8, seed=1)
    assert not torch.equal(other.labels, train_set.labels)
    assert len(train_set) == 1437 and "1437 images" in repr(train_set)


def test_digits_can_be_upsampled():
    train_set, _ = load_digits_images(size=16)
    assert train_set.images.shape[1:] == (1, 16, 16)
    assert train_set.images.min() >= 0 and train_set.images.max() <= 1


def test_random_crop_flip_moves_and_flips_whole_images():
    images = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5) + 1
    same = random_crop_flip(images, padding=0, flip=False)
    assert torch.equal(same, images)
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(images.repeat(50, 1, 1, 1), padding=2, generator=generator)
    assert out.shape == (100, 3, 5, 5)
    for original, moved in zip(images.repeat(50, 1, 1, 1), out, strict=True):
        candidates = []
        padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
        for dy in range(5):
            for dx in range(5):
                crop = padded[:, dy : dy + 5, dx : dx + 5]
                candidates += [crop, crop.flip(-1)]
        assert any(torch.equal(moved, c) for c in candidates)
    flipped = random_crop_flip(images.repeat(50, 1, 1, 1), padding=0, generator=generator)
    n_flipped = sum(
        torch.equal(f, o.flip(-1)) for f, o in zip(flipped, images.repeat(50, 1, 1, 1), strict=True)
    )
    assert 25 <= n_flipped <= 75
    as_bytes = random_crop_flip(images.to(torch.uint8), padding=1)
    assert as_bytes.dtype == torch.uint8


def _batch(n: int, offset: int) -> bytes:
    data = (np.arange(n * 3072) + offset).astype(np.uint8).reshape(n, 3072)
    return pickle.dumps(
        {b"batch_label": b"fake", b"labels": [(i + offset) % 10 for i in range(n)], b"data": data}
    )


def fake_cifar10(root: Path, n: int = 4, archive: bool = True) -> Path:
    """A miniature CIFAR-10 with the official layout: pickled batches in cifar-10-batches-py/."""
    files = {f"data_batch_{i}": _batch(n, i) for i in range(1, 6)}
    files["test_batch"] = _batch(n, 7)
    files["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
    root.mkdir(parents=True, exist_ok=True)
    if not archive:
        (root / CIFAR10_FOLDER).mkdir()
        for name, content in files.items():
            (root / CIFAR10_FOLDER / name).write_bytes(content)
        return root / CIFAR10_FOLDER
    path = root / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"{CIFAR10_FOLDER}/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def test_cifar10_loads_from_a_verified_archive(tmp_path: Path):
    archive = fake_cifar10(tmp_path)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    assert cifar10_available(tmp_path)
    train_set, test_set = load_cifar10(tmp_path, md5=md5)
    assert train_set.images.shape == (20, 3, 32, 32) and test_set.images.shape == (4, 3, 32, 32)
    assert train_set.images.dtype == torch.uint8 and train_set.labels.dtype == torch.int64
    assert train_set.classes == CIFAR10_CLASSES
    assert train_set.labels[:4].tolist() == [1, 2, 3, 4]  # data_batch_1 first
    first = (np.arange(3072) + 1).astype(np.uint8).reshape(3, 32, 32)  # row-major, channels first
    assert torch.equal(train_set.images[0], torch.from_numpy(first))
    assert not list(tmp_path.glob(f"{CIFAR10_FOLDER}*")), "nothing is extracted"


def test_cifar10_refuses_an_archive_with_the_wrong_checksum(tmp_path: Path):
    fake_cifar10(tmp_path)
    with pytest.raises(ValueError, match="MD5 .* expected c58f30108f718f92721af3b95e74349a"):
        load_cifar10(tmp_path)  # the real checksum: the fake archive does not have it


def test_cifar10_reads_the_extracted_folder(tmp_path: Path):
    fake_cifar10(tmp_path, archive=False)
    assert cifar10_available(tmp_path)
    train_set, test_set = load_cifar10(tmp_path)
    assert len(train_set) == 20 and len(test_set) == 4


def test_cifar10_missing_says_how_to_get_it_and_does_not_download(tmp_path: Path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr("urllib.request.urlretrieve", no_network)
    assert not cifar10_available(tmp_path)
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_cifar10(tmp_path)


def test_cifar10_download_checks_the_file_and_keeps_no_bad_copy(tmp_path: Path, monkeypatch):
    source = fake_cifar10(tmp_path / "server")
    md5 = hashlib.md5(source.read_bytes()).hexdigest()

    def fake_download(url, filename, reporthook=None):
        Path(filename).write_bytes(source.read_bytes())

    monkeypatch.setattr("urllib.request.urlretrieve", fake_download)
    with pytest.raises(ValueError, match="MD5"):
        load_cifar10(tmp_path / "bad", download=True)
    assert not list((tmp_path / "bad").iterdir()), "a download with the wrong checksum is deleted"
    train_set, _ = load_cifar10(tmp_path / "good", download=True, md5=md5)
    assert len(train_set) == 20 and (tmp_path / "good" / "cifar-10-python.tar.gz").is_file()


# ----------------------------------------------------------------------------------------------
# inspect_vit: attention capture, rollout, position similarity, confusion matrix, pictures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vit() -> nn.Module:
    from tests.test_course_utils import solution_namespace

    ViT = solution_namespace("08_vision_transformer")["ViT"]
    torch.manual_seed(0)
    return ViT(in_channels=1, patch_size=2, emb_size=16, img_size=8, depth=2, n_classes=3, num_heads=2).eval()


def test_capture_attention_recomputes_each_layers_maps(tiny_vit):
    from course_utils.inspect_vit import attention_modules, capture_attention
    from course_utils.reference import attention_maps

    images = torch.rand(3, 1, 8, 8)
    attention = capture_attention(tiny_vit, images)
    assert attention.shape == (2, 3, 2, 17, 17)  # layers, images, heads, tokens, tokens
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 3, 2, 17))
    first_block = tiny_vit[1][0]
    tokens = tiny_vit[0](images)
    expected = attention_maps(attention_modules(tiny_vit)[0], first_block[0].fn[0](tokens))
    torch.testing.assert_close(attention[0], expected)
    assert not tiny_vit.training and not any(m._forward_pre_hooks for m in attention_modules(tiny_vit))


def test_attention_rollout_follows_the_residual_path():
    from course_utils.inspect_vit import attention_rollout

    n = 5
    to_self = torch.eye(n).expand(3, 2, 4, n, n)  # 3 layers, 2 images, 4 heads: each token keeps itself
    assert torch.equal(attention_rollout(to_self, token=0), torch.zeros(2, n - 1))
    torch.testing.assert_close(attention_rollout(to_self, token=None), torch.full((2, n - 1), 1 / n))
    uniform = torch.full((1, 1, 1, n, n), 1 / n)  # one layer: (uniform + I) / 2
    expected = (torch.full((n, n), 1 / n) + torch.eye(n)) / 2
    torch.testing.assert_close(attention_rollout(uniform, token=2)[0], expected[2, 1:])
    two = torch.softmax(torch.randn(2, 1, 3, n, n), -1)
    layers = [(a.mean(1) + torch.eye(n)) / 2 for a in two]  # rows of (mean + I) already sum to 2
    torch.testing.assert_close(attention_rollout(two, token=0), (layers[1] @ layers[0])[:, 0, 1:])


def test_position_similarity_and_confusion_matrix(tiny_vit):
    from course_utils.inspect_vit import confusion_matrix, position_similarity

    similarity = position_similarity(tiny_vit)
    assert similarity.shape == (16, 16)
    torch.testing.assert_close(similarity.diagonal(), torch.ones(16))
    matrix = confusion_matrix(torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2]), 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_inspection_pictures_draw(tiny_vit):
    import matplotlib
    import matplotlib.pyplot as plt

    from course_utils import inspect_vit as iv

    matplotlib.use("Agg")
    grey, colour = torch.rand(4, 1, 8, 8), (255 * torch.rand(4, 3, 8, 8)).to(torch.uint8)
    attention = iv.capture_attention(tiny_vit, grey)
    labels = torch.tensor([0, 1, 2, 0])
    predictions = iv.predicted_labels(tiny_vit, grey)
    figures = [
        iv.plot_class_token_attention(grey, attention, labels=list("abcd")),
        iv.plot_class_token_attention(colour, attention),
        iv.plot_rollout(grey, iv.attention_rollout(attention)),
        iv.plot_position_similarity(iv.position_similarity(tiny_vit)),
        iv.plot_confusion_matrix(iv.confusion_matrix(labels, predictions, 3), ("x", "y", "z")),
        iv.plot_misclassified(grey, labels, (labels + 1) % 3, ("x", "y", "z")),
    ]
    assert all(f.axes for f in figures)
    plt.close("all")
