import math
import re

import pytest
import torch
from PIL import Image

from tests.helpers import engine_config, synthetic_image
from transforms.nst import (
    ImageTooSmallError,
    NonFiniteLossError,
    StyleConfig,
    StyleTransfer,
    stylize,
)
from transforms.nst.color import rgb_to_ycbcr
from transforms.nst.images import fit_longest_side, image_to_tensor
from transforms.nst.losses import gram_matrix
from transforms.nst.objective import Objective


@pytest.mark.parametrize("model", ["vgg16", "vgg19"])
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_total_loss_falls_by_half(weights_file, model: str, optimizer: str) -> None:
    result = stylize(
        synthetic_image(1),
        [synthetic_image(2)],
        engine_config(weights_file, model=model, optimizer=optimizer, iterations=30),
    )
    assert result.final.total < 0.5 * result.history[0].total
    assert result.image.size == (64, 48)


def test_records_every_iteration_through_callback_and_result(weights_file) -> None:
    seen = []
    cfg = engine_config(weights_file, iterations=5, tv_weight=2.0)
    result = stylize(synthetic_image(1), [synthetic_image(2)], cfg, callback=seen.append)
    assert seen == result.history
    # Every evaluated iterate, then the written image: the history ends with the final record.
    assert [r.iteration for r in result.history] == [0, 1, 2, 3, 4, 5]
    assert result.final is result.history[-1] and result.final.iteration == 5
    for record in result.history:
        assert record.total == pytest.approx(record.content + record.style + record.tv, rel=1e-5)
        assert record.style == pytest.approx(sum(record.style_layers.values()), rel=1e-5)
        assert list(record.style_layers) == list(cfg.style_layers)
        assert record.tv > 0
    # Timestamps run forward (a monotonic clock), and the pair's total comes last.
    stamps = [r.seconds for r in result.history] + [result.seconds]
    assert stamps == sorted(stamps)
    # starting from the content image, the content term starts at exactly zero
    assert result.history[0].content == 0.0


def test_same_seed_gives_bit_identical_output(weights_file) -> None:
    cfg = engine_config(weights_file, init="random", seed=7, iterations=4)
    first = stylize(synthetic_image(1), [synthetic_image(2)], cfg)
    second = stylize(synthetic_image(1), [synthetic_image(2)], cfg)
    other = stylize(synthetic_image(1), [synthetic_image(2)], cfg.replace(seed=8))
    assert first.image.tobytes() == second.image.tobytes()
    assert [r.total for r in first.history] == [r.total for r in second.history]
    assert first.image.tobytes() != other.image.tobytes()


def test_several_styles_blend_to_weighted_targets(engine_fp32) -> None:
    engine = engine_fp32
    a, b = synthetic_image(2), synthetic_image(3, 40, 64)
    blended = engine.encode_styles([a, b], [3.0, 1.0])
    alone_a = engine.encode_styles([a])
    alone_b = engine.encode_styles([b])
    for layer in engine.config.style_layers:
        torch.testing.assert_close(blended.grams[layer], 0.75 * alone_a.grams[layer] + 0.25 * alone_b.grams[layer])
    with pytest.raises(ValueError, match="2 style weights for 1 style images"):
        engine.encode_styles([a], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"style weights must be finite, >= 0 and not all zero: \[0.0, 0.0\]"):
        engine.encode_styles([a, b], [0.0, 0.0])


def test_style_scale_resizes_style_images(weights_file) -> None:
    engine = StyleTransfer(engine_config(weights_file, style_scale=0.5))
    targets = engine.encode_styles([synthetic_image(2)])
    assert targets.size == 32 and max(targets.first_image.size) == 32
    direct = engine.network(image_to_tensor(fit_longest_side(synthetic_image(2), 32)))
    torch.testing.assert_close(targets.grams["relu3_1"], gram_matrix(direct["relu3_1"]))
    result = engine.stylize(synthetic_image(1), targets)
    assert result.image.size == (64, 48)
    with pytest.raises(ValueError, match="encoded at 32 px but the config needs 64 px"):
        engine.stylize(synthetic_image(1), targets, engine.config.replace(style_scale=1.0))


def test_original_colors_keep_content_chroma(weights_file) -> None:
    content = synthetic_image(1)
    cfg = engine_config(weights_file, color_control="luminance", iterations=10)
    result = stylize(content, [synthetic_image(5)], cfg)
    plain = stylize(content, [synthetic_image(5)], cfg.replace(color_control="none"))
    content_chroma = rgb_to_ycbcr(image_to_tensor(content))[:, 1:]
    kept = rgb_to_ycbcr(image_to_tensor(result.image))[:, 1:]
    changed = rgb_to_ycbcr(image_to_tensor(plain.image))[:, 1:]
    # Where no channel had to be clipped to [0, 1], chroma is the content's up to 8-bit rounding.
    pixels = image_to_tensor(result.image)
    unclipped = ((pixels > 0) & (pixels < 1)).all(dim=1, keepdim=True).expand_as(kept)
    assert unclipped.float().mean() > 0.5
    kept_error = (kept - content_chroma).abs()[unclipped]
    assert kept_error.max() < 2.5 / 255
    assert (changed - content_chroma).abs()[unclipped].mean() > 4 * kept_error.mean()


def _expected_start(
    init: str, content: Image.Image, style: Image.Image, init_image: Image.Image, seed: int
) -> torch.Tensor:
    """What each init mode documents as the starting image, in [0, 1] pixels at the content's size."""
    size = content.size
    if init == "content":
        return image_to_tensor(content)
    if init == "random":  # Gatys et al.'s white noise: uniform, seeded by config.seed
        return torch.rand((1, 3, size[1], size[0]), generator=torch.Generator().manual_seed(seed))
    stretched = (style if init == "style" else init_image).resize(size, Image.Resampling.LANCZOS)
    return image_to_tensor(stretched)


@pytest.mark.parametrize("init", ["content", "random", "style", "image"])
def test_init_modes_start_from_the_documented_image(weights_file, init: str) -> None:
    # Iteration 0's record is the starting image's loss: it must be the loss of exactly the
    # image the mode documents, scored by the same objective.
    engine = StyleTransfer(engine_config(weights_file, iterations=1, seed=7))
    style, content, init_image = synthetic_image(2, 64, 64), synthetic_image(1), synthetic_image(9, 80, 40)
    targets = engine.encode_styles([style])
    cfg = engine.config.replace(init="gs://bucket/start.png" if init == "image" else init)
    result = engine.stylize(content, targets, cfg, init_image=init_image if init == "image" else None)
    resized = fit_longest_side(content, cfg.image_size)
    objective = Objective(engine.network, image_to_tensor(resized), [targets.grams], [cfg])
    losses = {
        (mode, seed): objective(_expected_start(mode, resized, targets.first_image, init_image, seed)).tolist()[0][:4]
        for mode, seed in (("content", 7), ("random", 7), ("random", 8), ("style", 7), ("image", 7))
    }
    first = result.history[0]
    assert [first.total, first.content, first.style, first.tv] == pytest.approx(losses[init, 7], rel=1e-5)
    assert all(other[0] != pytest.approx(first.total, rel=1e-3) for key, other in losses.items() if key != (init, 7))
    assert (first.content == 0.0) == (init == "content")
    if init == "image":
        with pytest.raises(
            ValueError, match=re.escape("init 'gs://bucket/start.png' names an image, but no init_image was given")
        ):
            engine.stylize(content, targets, cfg)


def test_too_small_image_is_refused(engine_fp32) -> None:
    engine = engine_fp32
    targets = engine.encode_styles([synthetic_image(2)])
    with pytest.raises(
        ImageTooSmallError, match=r"content image is 64x10 px after resizing; vgg19 up to relu5_1 needs at least 16 px"
    ):
        engine.stylize(synthetic_image(1, 320, 50), targets)
    with pytest.raises(ImageTooSmallError, match="style image 1 is 12x9 px"):
        engine.encode_styles([synthetic_image(2)], size=12)


def test_non_finite_loss_is_reported(weights_file, tmp_path) -> None:
    state = torch.load(weights_file("vgg19"), weights_only=True)
    state["features.0.bias"] = torch.full_like(state["features.0.bias"], math.nan)
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    with pytest.raises(NonFiniteLossError, match="loss is nan: no image seen in 8 iterations had a finite loss"):
        stylize(synthetic_image(1), [synthetic_image(2)], engine_config(weights_file, weights=str(path)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "vgg11"}, "unknown model 'vgg11'"),
        ({"optimizer": "sgd"}, "unknown optimizer 'sgd': choose one of lbfgs, adam"),
        ({"content_layers": ("relu9_9",)}, "unknown layer 'relu9_9' for vgg19"),
        ({"style_layer_weights": (1.0, 2.0)}, "style_layer_weights has 2 values for 5 style layers"),
        ({"iterations": 0}, "iterations must be a positive integer"),
        ({"style_weight": -1.0}, "style_weight must be a finite number >= 0, got -1.0"),
        ({"content_weight": math.nan}, "content_weight must be a finite number >= 0, got nan"),
        ({"weights": "/models/vgg19.pth"}, "'/models/vgg19.pth': a weights file needs its family declared"),
        ({"weights": "caffe", "weights_family": "torchvision"}, "'caffe' are of the 'caffe' family, not 'torchvision'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_bad_config_values(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StyleConfig(**changes)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_gpu_is_a_clear_error(weights_file) -> None:
    with pytest.raises(ValueError, match="device 'cuda' was requested but no CUDA GPU is available"):
        StyleTransfer(engine_config(weights_file, device="cuda"))


def test_engine_rejects_config_of_another_network(engine_fp32) -> None:
    engine = engine_fp32
    targets = engine.encode_styles([synthetic_image(2)])
    with pytest.raises(ValueError, match="made for another network"):
        engine.stylize(synthetic_image(1), targets, engine.config.replace(pooling="avg"))


def test_random_weights_warn_and_run() -> None:
    with pytest.warns(UserWarning, match="VGG weights are random"):
        engine = StyleTransfer(StyleConfig(weights="random", image_size=32, iterations=1, device="cpu"))
    result = engine.stylize(Image.new("RGB", (32, 32), "red"), engine.encode_styles([synthetic_image(2)]))
    assert result.image.size == (32, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runs_and_agrees_with_cpu(weights_file) -> None:
    cpu = stylize(synthetic_image(1), [synthetic_image(2)], engine_config(weights_file, iterations=10))
    gpu = stylize(synthetic_image(1), [synthetic_image(2)], engine_config(weights_file, iterations=10, device="cuda"))
    assert gpu.device.startswith("cuda")
    assert gpu.final.total < 0.5 * gpu.history[0].total
    # cuDNN uses TF32 for float32 convolutions by default: close to, not equal to, the CPU result
    assert gpu.history[0].total == pytest.approx(cpu.history[0].total, rel=1e-2)
