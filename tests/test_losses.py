import pytest
import torch

from transforms.nst.color import keep_colors, rgb_to_ycbcr, ycbcr_to_rgb
from transforms.nst.losses import content_loss, gram_matrix, style_loss, tv_loss


def test_gram_matrix_by_hand() -> None:
    # C=2 channels over H·W=2 positions: F = [[1, 2], [3, 4]], F Fᵀ = [[5, 11], [11, 25]], / (C·H·W=4)
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4
    torch.testing.assert_close(gram_matrix(features), expected)


def test_gram_matrix_same_for_channels_last() -> None:
    features = torch.randn(2, 5, 4, 3, generator=torch.Generator().manual_seed(0))
    nhwc = features.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(gram_matrix(nhwc), gram_matrix(features))


def test_content_loss_by_hand_and_zero_at_target() -> None:
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert content_loss(target, target).item() == 0.0
    shifted = target + torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]])
    assert content_loss(shifted, target).item() == pytest.approx((1 + 1 + 4 + 0) / 4)


def test_style_loss_by_hand() -> None:
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # Gram = [[1.25, 2.75], [2.75, 6.25]]
    target = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    # differences 0.25, 0.75, -0.25, 0.25 -> mean of squares
    expected = (0.0625 + 0.5625 + 0.0625 + 0.0625) / 4
    assert style_loss(features, target).item() == pytest.approx(expected)
    assert style_loss(features, gram_matrix(features)[0]).item() == 0.0


def test_tv_loss_zero_for_constant_and_by_hand() -> None:
    assert tv_loss(torch.full((1, 3, 5, 7), 0.3)).item() == 0.0
    # One channel, 2x2: vertical diffs (2, 2), horizontal diffs (1, 1)
    image = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    assert tv_loss(image).item() == pytest.approx(4.0 + 1.0)


def test_ycbcr_round_trip_and_keep_colors_chroma() -> None:
    generator = torch.Generator().manual_seed(3)
    rgb = torch.rand(1, 3, 8, 8, generator=generator)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-5, rtol=0)
    other = torch.rand(1, 3, 8, 8, generator=generator)
    mixed = rgb_to_ycbcr(keep_colors(other, rgb))
    torch.testing.assert_close(mixed[:, 1:], rgb_to_ycbcr(rgb)[:, 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[:, :1], rgb_to_ycbcr(other)[:, :1], atol=1e-5, rtol=0)
