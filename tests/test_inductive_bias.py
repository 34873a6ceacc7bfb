"""course_utils.inductive_bias: the models, the subsets, the grid measure and the learning curves of
notebook 08's experiment."""

import matplotlib
import matplotlib.pyplot as plt
import torch

from course_utils.datasets import ImageSet
from course_utils.inductive_bias import (
    ConvStem,
    SmallCNN,
    grid_correlation,
    init_tokens_like_vit,
    learning_curves,
    neighbour_similarity,
    plot_learning_curves,
    stratified_subset,
)


def grid_similarity(side: int) -> torch.Tensor:
    """Cosine-like similarities that fall with the distance on a side x side grid."""
    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    grid = torch.stack([rows.flatten(), columns.flatten()], 1).float()
    return torch.exp(-torch.cdist(grid, grid))


def test_grid_correlation_tells_a_grid_from_random_positions():
    assert grid_correlation(grid_similarity(4)) < -0.8
    table = torch.nn.functional.normalize(
        torch.randn(16, 512, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    assert abs(grid_correlation(table @ table.T)) < 0.2
    near, other = neighbour_similarity(grid_similarity(4))
    assert near > other


def test_stratified_subset_keeps_the_class_proportions():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    data = ImageSet(torch.arange(100.0).reshape(100, 1, 1, 1), labels, ("a", "b", "c"))
    subset = stratified_subset(data, 20, seed=1)
    assert torch.bincount(subset.labels).tolist() == [12, 6, 2]
    assert len(set(subset.images.flatten().tolist())) == 20
    assert stratified_subset(data, 500) is data


def test_models_shapes_and_reference_initialisation():
    x = torch.rand(3, 1, 8, 8)
    assert SmallCNN(1, 10)(x).shape == (3, 10)
    stem = ConvStem(1, 16, img_size=8)
    assert stem(x).shape == (3, 17, 16)
    init_tokens_like_vit(stem)
    assert not stem.cls_token.any() and 0.01 < stem.positions.std() < 0.03


def test_learning_curves_train_each_model_at_each_size():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 8, 8, generator=generator)
    labels = torch.arange(40) % 2
    images[labels == 1, :, :4] += 1  # class 1 is bright at the top: learnable
    data = ImageSet(images.clamp(0, 1), labels, ("0", "1"))
    curves = learning_curves(
        {"CNN": lambda: SmallCNN(1, 2, width=4)}, data, data, [10, 40], steps=3, report=False
    )
    assert curves.sizes == [10, 40] and len(curves.accuracy["CNN"]) == 2
    assert all(0 <= a <= 1 for a in curves.accuracy["CNN"]) and curves.parameters["CNN"] > 0
    assert "CNN" in curves.table()
    matplotlib.use("Agg")
    assert plot_learning_curves(curves).axes
    plt.close("all")
