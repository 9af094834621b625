"""A hostile-input corpus, made at test time: manifest rows, images and whole manifests that try
to break the job. Each case says how the job must end for it, so one test can hold them all.

- ``ROW`` cases are manifest rows: each must end in its own failure record (``expect`` names the
  stage and a phrase of the message), never stop the other rows, never write outside the output.
- ``IMAGE`` cases are content images (files or special files): each pair fails at ``read``.
- ``MANIFEST`` cases are whole manifests: each must stop the job with exit 2 before anything runs.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import synthetic_image


@dataclass(frozen=True)
class Case:
    name: str
    expect: tuple[str, str]  # (failure stage or "exit 2", phrase of the message, lower case)


def png_header(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` whose pixel data stops after a few bytes.

    Pillow opens it (the size is in the header) but cannot load it: the size check must come
    before any decoding, and a file under the size limit fails only as truncated.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _valid_png(folder: Path, name: str, seed: int) -> str:
    path = folder / name
    synthetic_image(seed).save(path)
    return str(path)


# --- images: content files that must fail their pair at "read" -------------------------------

IMAGE_MAKERS: dict[str, tuple[Callable[[Path], str], str]] = {}


def _image(name: str, phrase: str) -> Callable[[Callable[[Path], str]], Callable[[Path], str]]:
    def register(make: Callable[[Path], str]) -> Callable[[Path], str]:
        IMAGE_MAKERS[name] = (make, phrase)
        return make

    return register


@_image("empty file", "empty file")
def _empty(folder: Path) -> str:
    (folder / "empty.png").write_bytes(b"")
    return str(folder / "empty.png")


@_image("truncated png", "not a readable image")
def _truncated(folder: Path) -> str:
    data = (folder / "ok.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[:100])
    return str(folder / "truncated.png")


@_image("text named .png", "not a readable image")
def _text(folder: Path) -> str:
    (folder / "text.png").write_text("hello, I am not an image\n")
    return str(folder / "text.png")


@_image("random bytes", "not a readable image")
def _random(folder: Path) -> str:
    (folder / "random.jpg").write_bytes(os.urandom(4096))
    return str(folder / "random.jpg")


@_image("svg", "not a readable image")
def _svg(folder: Path) -> str:
    (folder / "vector.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    return str(folder / "vector.svg")


@_image("pixel bomb header", "over the limit")
def _bomb(folder: Path) -> str:
    (folder / "bomb.png").write_bytes(png_header(20000, 20000))  # 400 M pixels
    return str(folder / "bomb.png")


@_image("1000x1 sliver", "needs at least 16 px on each side")
def _sliver(folder: Path) -> str:
    synthetic_image(5, 1000, 1).save(folder / "sliver.png")
    return str(folder / "sliver.png")


@_image("directory", "not a regular file")
def _directory(folder: Path) -> str:
    (folder / "adir.png").mkdir()
    return str(folder / "adir.png")


@_image("fifo", "not a regular file")
def _fifo(folder: Path) -> str:
    os.mkfifo(folder / "pipe.png")
    return str(folder / "pipe.png")


@_image("character device", "not a regular file")
def _dev_zero(folder: Path) -> str:
    return "/dev/zero"


@_image("over the size cap", "over the limit")
def _big(folder: Path) -> str:
    (folder / "big.png").write_bytes((folder / "ok.png").read_bytes() + b"\0" * (3 * 2**20))
    return str(folder / "big.png")


@_image("missing", "no such file")
def _missing(folder: Path) -> str:
    return str(folder / "nowhere.png")


@_image("symlink to /etc/passwd", "not a readable image")
def _symlink(folder: Path) -> str:
    os.symlink("/etc/passwd", folder / "passwd.png")
    return str(folder / "passwd.png")


# --- manifest rows: each must fail alone ---------------------------------------------------

ROW_CASES: list[tuple[str, str, str]] = [
    # (name, CSV row text using {ok} for a valid image and {style} for a valid style, phrase)
    ("no content", ",{style},,", "no content image"),
    ("no style", "{ok},,,", "no style image"),
    ("1 MB extra field", "{ok},{style},,," + "x" * 2**20, "more fields"),
    ("1 MB path", "x" * 2**20 + ",{style},,", "field of"),
    ("NUL in path", "{ok}\0.png,{style},,", "nul"),
    ("style weight nan", "{ok},{style},nan,", "style_weight"),
    ("style weight inf", "{ok},{style},inf,", "style_weight"),
    ("negative style weight", "{ok},{style},-1,", "style_weight"),
    ("image size too big", "{ok},{style},,100000", "max_image_size"),
    ("5,000-digit image size", "{ok},{style},," + "9" * 5000, "image_size must be int"),
    ("http url", "http://127.0.0.1:9/x.png,{style},,", "scheme"),
    ("metadata server", "{ok},http://169.254.169.254/computeMetadata/v1/,,", "scheme"),
    ("chained url", "simplecache::http://127.0.0.1:9/x.png,{style},,", "scheme"),
    ("ftp url", "ftp://example.com/x.png,{style},,", "scheme"),
]
ROW_COLUMNS = "content,style,style_weight,image_size"


def write_row_manifest(folder: Path) -> tuple[Path, dict[int, tuple[str, str]], list[str]]:
    """A CSV manifest of every row case plus two valid rows, and a non-UTF-8 row.

    Returns the manifest, {line number: (case name, phrase)} for the rows that must fail, and the
    ids of the valid rows that must succeed.
    """
    ok = _valid_png(folder, "ok.png", 1)
    style = _valid_png(folder, "style.png", 2)
    lines = [ROW_COLUMNS]
    failing: dict[int, tuple[str, str]] = {}
    for name, text, phrase in ROW_CASES:
        lines.append(text.format(ok=ok, style=style))
        failing[len(lines)] = (name, phrase)
    lines.append(f"{ok},{style},,")
    lines.append(f"{style},{ok},,")
    data = "\n".join(lines).encode() + b"\n"
    # One undecodable byte in a path: that row fails naming its line; the rest is read.
    data += f"{ok[:-4]}\udcff.png,{style},,\n".encode("utf-8", "surrogateescape")
    failing[len(lines) + 1] = ("non-UTF-8 byte", "utf-8")
    manifest = folder / "rows.csv"
    manifest.write_bytes(data)
    return manifest, failing, ["ok__style", "style__ok"]


def write_jsonl_row_manifest(folder: Path) -> tuple[Path, dict[int, tuple[str, str]], list[str]]:
    """A JSON Lines manifest of rows that once stopped the job or cleaned into unsafe names
    (issue 21), plus valid rows whose ids must be as shown.

    Returns the manifest, {line number: (case name, phrase)} for the rows that must fail, and the
    ids of the rows that must succeed.
    """
    import json

    ok = _valid_png(folder, "ok.png", 1)
    style = _valid_png(folder, "style.png", 2)
    dot_file = _valid_png(folder, "._ok.png", 3)  # what macOS leaves beside copied files
    accented = _valid_png(folder, "café.png", 4)
    long_path = folder / ("d" * 2800) / "x.png"
    lines: list[str] = []
    failing: dict[int, tuple[str, str]] = {}

    def row(text: str, name: str | None = None, phrase: str = "") -> None:
        lines.append(text)
        if name:
            failing[len(lines)] = (name, phrase)

    row(
        '{{"content": "{}", "style": "{}", "seed": {}}}'.format(ok, style, "9" * 5000),
        "5,000-digit integer",
        "not usable json",
    )
    row("[" * 100_000, "100,000 nested [", "nested too deeply")
    row(
        '{{"content": "{}", "style": "{}", "init": {}}}'.format(ok, style, '{"a": ' * 50_000 + "1" + "}" * 50_000),
        "nested object",
        "nested too deeply",
    )
    row(json.dumps({"id": "_.tmp-evil", "content": ok, "style": style}), "id cleaning into .tmp-", "hidden file name")
    row(
        json.dumps({"id": "<.hidden", "content": ok, "style": style}), "id cleaning into a dot-file", "hidden file name"
    )
    row(json.dumps({"content": dot_file, "style": style}), "dot-file content, no id", "give the row an id")
    row(
        json.dumps({"id": "long", "content": str(long_path), "style": style}),
        "2,800-character path",
        "file name too long",
    )
    row(json.dumps({"content": accented, "style": style}))
    row(json.dumps({"id": "北京", "content": ok, "style": style}))
    manifest = folder / "rows.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, failing, ["café__style", "北京"]


def write_image_manifest(folder: Path) -> tuple[Path, dict[str, str]]:
    """A JSONL manifest with one pair per hostile content image: {pair id: phrase}."""
    import json

    _valid_png(folder, "ok.png", 1)
    style = _valid_png(folder, "style.png", 2)
    expected: dict[str, str] = {}
    rows = []
    for index, (name, (make, phrase)) in enumerate(IMAGE_MAKERS.items()):
        pair_id = f"image-{index:02d}"
        rows.append(json.dumps({"id": pair_id, "content": make(folder), "style": style}))
        expected[pair_id] = f"{name}: {phrase}"
    manifest = folder / "images.jsonl"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest, expected


# --- whole manifests: each must stop the job (exit 2) before anything runs -------------------


def write_bad_manifests(folder: Path) -> dict[str, tuple[Path, str]]:
    """{case name: (manifest location, phrase of the error)}."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, file_name: str, data: bytes | None, phrase: str) -> None:
        path = folder / file_name
        if data is None:
            path.mkdir()
        else:
            path.write_bytes(data)
        cases[name] = (path, phrase)

    case("empty csv", "empty.csv", b"", "no rows")
    case("header only", "header.csv", b"content,style\n", "no rows")
    case("blank jsonl", "blank.jsonl", b"\n\n  \n", "no rows")
    case("directory", "folder.csv", None, "not a regular file")
    case("unknown extension", "pairs.txt", b"content,style\na.png,b.png\n", "format")
    case("binary garbage", "garbage.csv", os.urandom(2048).replace(b"\n", b"").replace(b"\r", b"") + b"\x00", "no rows")
    os.mkfifo(folder / "fifo.csv")
    cases["fifo"] = (folder / "fifo.csv", "not a regular file")
    return cases
