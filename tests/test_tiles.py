"""Tiles for images larger than the device holds: exact cover, seamless blend, the tiled engine."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import engine_config, synthetic_image
from transforms.nst import ImageTooSmallError, StyleTransfer
from transforms.nst.records import PairFinished, ReadyQueue, StyleRequest
from transforms.nst.tiles import blend, blend_weights, tile_boxes


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"), [(100, 70, 40, 8), (64, 48, 64, 16), (257, 129, 64, 16), (40, 300, 41, 40)]
)
def test_tiles_cover_the_image_exactly_and_overlap_enough(width, height, tile, overlap) -> None:
    boxes = tile_boxes(width, height, tile, overlap)
    covered = torch.zeros(height, width, dtype=torch.int32)
    for left, top, right, bottom in boxes:
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert right - left == min(tile, width) and bottom - top == min(tile, height)  # every tile full size
        covered[top:bottom, left:right] += 1
    assert covered.min() >= 1  # no pixel left out
    lefts = sorted({box[0] for box in boxes})
    rights = sorted({box[2] for box in boxes})
    for right, next_left in zip(rights[:-1], lefts[1:], strict=True):
        assert right - next_left >= overlap  # neighbours overlap by at least the overlap


def test_overlaps_blend_a_constant_image_to_the_same_constant() -> None:
    width, height, overlap = 100, 70, 12
    boxes = tile_boxes(width, height, 40, overlap)
    start = torch.zeros(3, height, width)
    tiles = [(box, torch.full((3, box[3] - box[1], box[2] - box[0]), 0.6)) for box in boxes]
    assert torch.allclose(blend(start, tiles, overlap), torch.full((3, height, width), 0.6))


def test_weights_ramp_across_overlaps_and_not_at_the_image_edge() -> None:
    weights = blend_weights((30, 0, 70, 40), 100, 40, overlap=9)
    assert weights[0, 0] == pytest.approx(0.1) and weights[0, -1] == pytest.approx(0.1)  # interior sides
    assert weights[0, 20] == 1.0 and weights[-1, 20] == 1.0  # top and bottom are the image's edge
    assert torch.all(torch.diff(weights[10, :10]) > 0)  # rising across the overlap


def test_one_tile_as_large_as_the_image_is_the_untiled_result(weights_file) -> None:
    cfg = engine_config(weights_file, image_size=64, iterations=4, scales=((32, 3),))
    engine = StyleTransfer(cfg)
    content, style = synthetic_image(1, 96, 72), synthetic_image(3, 96, 72)
    targets, coarse = engine.encode_styles([style]), (engine.encode_styles([style], size=32),)
    whole = engine.stylize(content, targets, coarse_styles=coarse)
    one = engine.stylize(content, targets, cfg, coarse_styles=coarse, tiling=(64, 8))
    assert one.tiles == 1 and one.image.tobytes() == whole.image.tobytes()
    assert [r.total for r in one.history] == pytest.approx([r.total for r in whole.history], rel=1e-6)
    assert one.coarse[0].image.tobytes() == whole.coarse[0].image.tobytes()


def test_a_tiled_run_optimizes_every_tile_and_blends_them(weights_file) -> None:
    cfg = engine_config(weights_file, image_size=80, iterations=5)
    engine = StyleTransfer(cfg)
    content, style = synthetic_image(1, 80, 60), synthetic_image(3, 80, 60)
    records = []
    tiled = engine.stylize(content, engine.encode_styles([style]), cfg, callback=records.append, tiling=(48, 16))
    assert tiled.tiles == 4 and tiled.image.size == (80, 60)
    assert len(records) == 4 * 6  # each tile's iterations 0-4 and its written image
    assert [r.iteration for r in tiled.history] == list(range(6)) and tiled.history[-1] == tiled.final
    assert tiled.final.total < tiled.history[0].total
    with pytest.raises(ValueError, match="overlap must be >= 0 and smaller than the tile"):
        engine.stylize(content, engine.encode_styles([style]), cfg, tiling=(48, 48))


def test_a_tiled_pair_returns_its_own_error_from_the_handler(weights_file) -> None:
    # The handler runs a tiled pair as it runs a batch: a problem of the pair itself (here a tile
    # narrower than the network can see) comes back as its result, it is not raised.
    from transforms.handler import EngineHandler
    from transforms.limits import Limits

    cfg = engine_config(weights_file, image_size=64, iterations=2)
    handler = EngineHandler(cfg, Limits())
    engine = handler.load()
    request = StyleRequest(
        synthetic_image(1, 64, 20),
        engine.encode_styles([synthetic_image(3)]),
        cfg,
        content_name="wide.png",
        tiling=(12, 2),
    )
    queue = ReadyQueue([("wide", request)])
    events = list(handler.run(engine, queue, 1, lambda pair_id, record: None))
    ((pair_id, outcome),) = [(e.key, e.outcome) for e in events if isinstance(e, PairFinished)]
    assert pair_id == "wide" and not queue.taken
    assert isinstance(outcome, ImageTooSmallError)
    assert "wide.png (tile 1 at 0,0)" in str(outcome) and "needs at least 16 px" in str(outcome)
