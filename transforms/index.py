"""The dataset's index: one JSON line per image in ``OUTPUT/images/``, for data loaders.

    OUTPUT/index.json                   the pointer: which shards are the index now
    OUTPUT/index/<run_id>-SSSSS.jsonl   the shards it names, one line per image

Each run that ends rewrites the index whole (results.WriteIndex): every image on storage, the
pairs it wrote, the pairs it found done, and the pairs earlier or killed runs finished, each
once. A reader never sees a half-replaced index: the new shards are written first, then the
pointer is replaced in one atomic write, then the shards it no longer names are removed. Readers
go through the pointer (:func:`read_index`); after a run, ``index/*.jsonl`` read whole is the
same set of lines.

A line (:func:`line_from_log`): ``id``, ``image`` (below OUTPUT), ``label`` (the content's folder
below the input root as the input names it, ``--output_layout tree``; null in the flat layout),
``content``, ``styles``, ``size`` [width, height], ``final_loss`` and ``bytes``. An image that
no log describes (a run stopped between its two writes, for a pair no later run included) has
null ``content``, ``styles``, ``size`` and ``final_loss``.

Imports: storage, reading, logs (the value checks), outputs (a time stamp), records and Pillow; no Beam, no torch (:class:`StylizedImages` is a
map-style dataset by protocol: ``torch.utils.data.DataLoader`` takes it as it is).
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from PIL import Image

from transforms import logs, reading, storage
from transforms.outputs import utc_iso
from transforms.records import IMAGE_FORMATS, shown_escaped

POINTER: Final = "index.json"
FOLDER: Final = "index"
# The layout of index.json; readers refuse a newer one rather than misread it.
POINTER_FORMAT: Final = 1
# Lines per shard, about: 100,000 lines of ~300 bytes are a 30 MB file.
LINES_PER_SHARD: Final = 100_000
# The largest shard a reader takes (a shard of 100,000 lines is about 30 MB), and pointer (it
# names one shard per 100,000 images).
MAX_SHARD_BYTES: Final = 1 << 30
# A line of a shard: an image's path, its inputs and its label, each bounded (records.py), far
# below this. Shards are read a line at a time, so memory follows this, not the shard's cap.
MAX_LINE_BYTES: Final = 1 << 20
MAX_POINTER_BYTES: Final = 16 * 2**20
# The keys of every line, in the order lines are written.
LINE_KEYS: Final = ("id", "image", "label", "content", "styles", "size", "final_loss", "bytes")
# A shard no pointer names is another run's being written, or a killed run's; only killed runs'
# (older than this) are removed.
ORPHAN_SHARD_SECONDS: Final = 900.0
# Shards this job writes: ``<run_id>-SSSSS.jsonl``; earlier releases wrote every run's own
# ``<run_id>-SSSSS-of-NNNNN.jsonl``, which the first index of this release replaces. A run id
# the job makes is ``YYYYMMDDTHHMMSSZ-xxxxxx`` (pipeline/config.py): a file of another name in
# index/ is a user's (``train-00000-of-00001.jsonl``, ``mydata-00000.jsonl``) and is never removed.
_RUN_ID: Final = r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}"
_ORPHAN_SHARD_NAME: Final = re.compile(rf"{_RUN_ID}-[0-9]{{5}}\.jsonl")
_EARLIER_SHARD_NAME: Final = re.compile(rf"{_RUN_ID}-[0-9]{{5}}-of-[0-9]{{5}}\.jsonl")
_SHARD_PATH: Final = re.compile(rf"{FOLDER}/[^./][^/]*-[0-9]{{5}}\.jsonl")


def pointer_location(output: str) -> str:
    return storage.join(output, POINTER)


def shard_location(output: str, run_id: str, shard: int) -> str:
    return storage.join(output, FOLDER, f"{run_id}-{shard:05d}.jsonl")


def label_of(pair_id: str) -> str | None:
    """The label of an image no log describes: its output folder (``n01/x__s`` -> ``n01``)."""
    return pair_id.rsplit("/", 1)[0] if "/" in pair_id else None


def line_from_log(log: dict[str, Any]) -> dict[str, Any]:
    """A finished pair's index line, from its verified log (logs.read_log). Names that were not UTF-8
    (a file or folder name's bytes) are shown escaped: the index is UTF-8 JSON."""
    image = log["image"]
    label = log["label"] if "label" in log else label_of(log["id"])  # logs before labels: the output folder
    return {
        "id": log["id"],
        "image": image["path"],
        "label": shown_escaped(label) if isinstance(label, str) else label,
        "content": shown_escaped(log["inputs"]["content"]),
        "styles": [shown_escaped(style) for style in log["inputs"]["styles"]],
        "size": image["size"],
        "final_loss": log["final"]["total"],
        "bytes": image["bytes"],
    }


def unlogged_line(pair_id: str, image: str, size_bytes: int) -> dict[str, Any]:
    """The line of an image that no log describes: what its name and size tell."""
    return {
        "id": pair_id,
        "image": image,
        "label": label_of(pair_id),
        "content": None,
        "styles": None,
        "size": None,
        "final_loss": None,
        "bytes": size_bytes,
    }


def listed_images(output: str) -> Iterator[tuple[str, str, int]]:
    """(pair id, image path below OUTPUT, bytes) of every image file in ``OUTPUT/images``:
    regular files (no link followed) named as the job names its images; not temporaries."""
    folder = storage.join(output, "images")
    extensions = tuple(f".{extension}" for extension in IMAGE_FORMATS.values())
    for location, size in storage.listing(folder):
        relative = storage.relative_path(location, folder)
        if relative is None:
            continue
        name = posixpath.basename(relative)
        if name.startswith(storage.TEMPORARY_PREFIX) or not name.endswith(extensions):
            continue
        yield posixpath.splitext(relative)[0], f"images/{relative}", int(size)


def choose_lines(
    pair_id: str,
    listed: Sequence[tuple[str, int]],
    entries: Sequence[dict[str, Any]],
    previous: Sequence[dict[str, Any]],
    read_line: Callable[[str], dict[str, Any] | None],
) -> tuple[list[dict[str, Any]], list[str]]:
    """The index lines of one pair id, and its superseded images (to remove).

    ``listed``: its image files on storage (path below OUTPUT, bytes). ``entries``: its line
    from this run (written, or found done). ``previous``: its lines in the index being replaced.
    ``read_line``: its line made from its log, or None when it has no usable log.

    The line that describes one of the listed files is taken from this run, else from the
    previous index, else from the log (bytes must agree with the file's). Other files of the
    same id are superseded (another format) when this run vouched for the pair, and go; else
    each keeps a line of its own, since nothing says which is right.
    """
    sizes = dict(listed)
    if not sizes:
        return [], []

    def describes(line: dict[str, Any]) -> bool:
        image = line.get("image")
        return isinstance(image, str) and image in sizes and sizes[image] == line.get("bytes")

    chosen = next((line for line in entries if describes(line)), None)
    vouched = chosen is not None
    if chosen is None:
        chosen = next((line for line in previous if describes(line)), None)
    if chosen is None:
        line = read_line(pair_id)
        chosen = line if line is not None and describes(line) else None
    if chosen is None:
        return [unlogged_line(pair_id, image, size) for image, size in sorted(sizes.items())], []
    others = sorted(image for image in sizes if image != chosen["image"])
    if vouched:
        return [chosen], others
    return [chosen, *(unlogged_line(pair_id, image, sizes[image]) for image in others)], []


def shard_of(pair_id: str, shards: int) -> int:
    """The shard a pair's lines go to: a stable hash of its id."""
    return zlib.crc32(pair_id.encode("utf-8", "surrogateescape")) % shards


def encode_line(line: dict[str, Any]) -> str:
    """One line as a shard holds it (ids and paths with bytes that were not UTF-8 are escaped)."""
    return json.dumps(line, ensure_ascii=True)


def read_pointer(output: str) -> dict[str, Any] | None:
    """The index's pointer, or None when there is none (no run has finished, or an earlier
    release wrote the index as every run's shards).

    Raises:
        ValueError: a pointer that is not this job's, or of a newer layout.
    """
    try:
        pointer = reading.read_json(pointer_location(output), MAX_POINTER_BYTES, inside=output)
    except FileNotFoundError:
        return None
    shards = pointer.get("shards") if isinstance(pointer, dict) else None
    if not isinstance(shards, list) or not all(isinstance(s, str) and _SHARD_PATH.fullmatch(s) for s in shards):
        raise reading.DamagedError(
            f"{pointer_location(output)} is not an index pointer (no list of shards in {FOLDER}/)"
        )
    if not isinstance(pointer.get("format", 0), int) or pointer.get("format", 0) > POINTER_FORMAT:
        raise ValueError(
            f"{pointer_location(output)} has format {pointer['format']}: upgrade beam-style-transfer to read it"
        )
    return pointer


def write_pointer(output: str, run_id: str, shards: list[str], lines: int) -> dict[str, Any]:
    """Switch the index to ``shards`` (paths below OUTPUT) in one atomic write, then remove the
    shards the pointer named before and those of killed runs; the new pointer."""
    before = _safe_pointer(output)
    named = set(shards)
    pointer = {
        "format": POINTER_FORMAT,
        "run_id": run_id,
        "shards": sorted(named),
        "images": lines,
        "written_at": utc_iso(time.time()),
    }
    storage.write_atomic(pointer_location(output), (json.dumps(pointer, indent=2) + "\n").encode(), inside=output)
    # The shards the pointer named before that its own run wrote (its run id is their prefix).
    previous_run = f"{FOLDER}/{before.get('run_id')}-" if before else None
    replaced = (
        {shard for shard in before["shards"] if previous_run and shard.startswith(previous_run)} if before else set()
    )
    cutoff = time.time() - ORPHAN_SHARD_SECONDS
    for location, modified in storage.listing(storage.join(output, FOLDER), with_modified=True):
        name = posixpath.basename(location)
        if f"{FOLDER}/{name}" in named:
            continue  # the index now
        if (
            f"{FOLDER}/{name}" in replaced
            or _EARLIER_SHARD_NAME.fullmatch(name)
            or (_ORPHAN_SHARD_NAME.fullmatch(name) and modified < cutoff)
        ):
            storage.remove_if_regular(location, inside=output)
        # Anything else is a user's file, or another run's shard being written: left alone.
    return pointer


def _safe_pointer(output: str) -> dict[str, Any] | None:
    try:
        return read_pointer(output)
    except (OSError, ValueError):
        return None


def read_index(output: str) -> Iterator[dict[str, Any]]:
    """Every line of the index at ``output`` (a local folder or a bucket URL), as dicts: one per
    image in ``OUTPUT/images``. Through the pointer, so a run switching the index meanwhile
    is never half seen.

    Raises:
        FileNotFoundError: no index (no run has finished there).
    """
    pointer = read_pointer(output)
    if pointer is None:
        raise FileNotFoundError(f"{pointer_location(output)}: no index (has a run finished in {output}?)")
    yield from lines_of(output, pointer)


def lines_of(output: str, pointer: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The lines of the shards ``pointer`` names, each checked (:func:`line_problem`).

    Raises:
        DamagedError: a shard over its cap or a link, or a line that is not an index line,
            naming the shard and the line.
    """
    for shard in pointer["shards"]:
        location = storage.join(output, shard)
        lines = reading.read_lines(location, MAX_SHARD_BYTES, MAX_LINE_BYTES, inside=output)
        for number, raw in enumerate(lines, start=1):
            text = raw.decode("utf-8", "surrogateescape")
            if text.strip():
                where = f"{location} line {number}"
                line = reading.parse_json(text, where)
                problem = line_problem(line)
                if problem:
                    raise reading.DamagedError(f"{where}: {problem}")
                yield line


def line_problem(line: object) -> str | None:
    """Why a parsed line is not an index line as :func:`line_from_log` or :func:`unlogged_line`
    makes it, or None."""
    if not isinstance(line, dict) or set(line) != set(LINE_KEYS):
        return f"not an index line (the keys {', '.join(LINE_KEYS)})"
    texts = [line["content"], *(line["styles"] if isinstance(line["styles"], list) else [0])]
    if not (isinstance(line["id"], str) and isinstance(line["image"], str) and isinstance(line["label"], str | None)):
        return "id, image and label are not text"
    if line["content"] is not None and not all(isinstance(text, str) for text in texts):
        return "content and styles are not text"
    size, loss, size_bytes = line["size"], line["final_loss"], line["bytes"]
    if size is not None and not (
        isinstance(size, list) and len(size) == 2 and all(logs.is_int(side, 0) for side in size)
    ):
        return "size is not a width and a height"
    if not logs.is_loss(loss) or not logs.is_int(size_bytes, 0):
        return "final_loss or bytes is not a number"
    return None


class StylizedImages:
    """The stylized images of ``output`` as a ``torch.utils.data.Dataset``, in id order: item
    ``i`` is ``(image, target)`` as torchvision's ``ImageFolder`` gives it, ``target`` the index
    of the pair's label in ``classes``; ``rows[i]`` is its index line (content, styles, size,
    final loss). Images no log describes are left out (``skipped`` counts them).

    ``transform`` takes the PIL image (say, ``torchvision.transforms.ToTensor()``).
    """

    def __init__(self, output: str, transform: Callable[[Image.Image], Any] | None = None) -> None:
        every = sorted(read_index(output), key=lambda line: line["id"])
        self.output = output
        self.transform = transform
        self.rows = [line for line in every if line["content"] is not None]
        self.skipped = len(every) - len(self.rows)
        self.classes = sorted({line["label"] or "" for line in self.rows})
        self.class_to_idx = {label: index for index, label in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        row = self.rows[index]
        with Image.open(
            io.BytesIO(storage.read_bytes(storage.join(self.output, row["image"]), row["bytes"], inside=self.output))
        ) as opened:
            image = opened.convert("RGB")
        return (self.transform(image) if self.transform else image), self.class_to_idx[row["label"] or ""]
