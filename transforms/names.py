"""The names a pair's outputs take: its id (a visible file name), the output folders of its
input folders in the tree layout (one-to-one, escaped only where a store or URL needs it), and
the clashes of outputs that would merge two labels. Plain Python, so that the index, tests and
tools can name outputs without Beam.

Imports: storage's location names and records; no Beam, no torch.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Final

from transforms import storage
from transforms.records import IMAGE_FORMATS, Pair, bounded

# An id's longest form in bytes (file names are limited in bytes: 255 on most filesystems).
_MAX_ID_BYTES: Final = 200


def safe_id(raw: str) -> str:
    """An id that is a plain, visible file name inside the output folder.

    Ids that look like paths are refused rather than rewritten: quietly turning ``../../x`` into
    ``x`` could collide with another pair. Letters and digits of any script are kept (``café``,
    ``北京``, NFC-normalized); other characters become ``_``. A name that would start with '.'
    is refused: it would be hidden, and ``.tmp-*`` names are the stale-temporary sweep's.
    """
    if "/" in raw or "\\" in raw:
        raise ValueError(f"id {bounded(raw)!r} could write outside the output folder (no '/' or '\\')")
    cleaned = re.sub(r"[^\w.+-]+", "_", unicodedata.normalize("NFC", raw.strip())).strip("_")
    if not cleaned:
        raise ValueError(f"id {bounded(raw)!r} has no usable characters (letters, digits, '.', '_', '+', '-')")
    if cleaned.startswith("."):
        raise ValueError(
            f"id {bounded(raw)!r} would be a hidden file name ({bounded(cleaned)!r}): start it with a letter or digit"
        )
    # File names are limited in bytes (255 on most filesystems), not characters.
    return cleaned.encode()[:_MAX_ID_BYTES].decode("utf-8", "ignore")


def tree_folder(content: str, root: str) -> tuple[str, str]:
    """``--output_layout tree``: (the content's folder below ``root``, as an id prefix ``a/b/``;
    that folder as the input names it, the pair's label ``a/b``); ("", "") for a content at the
    root or outside it. Each folder name is kept as it is unless it must change
    (:func:`output_folder_name`)."""
    relative = storage.relative_path(content, root)
    if relative is None or "/" not in relative:
        return "", ""
    folders = relative.split("/")[:-1]
    return "".join(f"{output_folder_name(name)}/" for name in folders), "/".join(folders)


# Characters a folder name cannot keep in the output: control characters; '\\' (a separator on
# Windows); ':' ('::' chains filesystems in fsspec URLs), '#' and '?' (URL syntax); '%', the
# escape itself, so that escaping stays one-to-one; lone surrogates (bytes that were not UTF-8).
_UNSAFE_IN_FOLDER: Final = re.compile(r"[\x00-\x1f\x7f\\:#?%\ud800-\udfff]")
# The longest folder name kept whole: filesystems limit a name to 255 bytes (object stores allow
# longer ones, which are shortened).
_MAX_FOLDER_BYTES: Final = 255


def _escaped(match: re.Match[str]) -> str:
    """``%XX`` for each UTF-8 byte of the character (a byte that was not UTF-8, as Python decodes
    file names, is that byte); ``%uXXXX`` for any other lone surrogate (from a JSON manifest).
    After '%' comes 'u' or a hex digit, so that no two names escape alike."""
    character = match.group()
    if "\ud800" <= character <= "\udfff" and not "\udc80" <= character <= "\udcff":
        return f"%u{ord(character):04X}"
    return "".join(f"%{byte:02X}" for byte in character.encode("utf-8", "surrogateescape"))


def output_folder_name(name: str) -> str:
    """The output folder for input folder ``name``: the same name (spaces, any script, case and
    inner dots kept, so that a label reads as it did), except where it must change. Then the
    change is one-to-one: characters no store or URL takes (``_UNSAFE_IN_FOLDER``) and a leading
    '.' (hidden; ``.``/``..`` would leave the folder) are escaped as ``%XX`` of their UTF-8 bytes,
    and a name still over 255 bytes keeps its first 200 bytes and a digest of the whole (a
    collision of such a name with another is a failure of their rows: ``folder_clashes``).
    """
    escaped = _UNSAFE_IN_FOLDER.sub(_escaped, name)
    if escaped.startswith("."):
        escaped = "%2E" + escaped[1:]
    if len(escaped.encode()) > _MAX_FOLDER_BYTES:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        escaped = f"{escaped.encode()[:200].decode('utf-8', 'ignore')}~{digest}"
    return escaped


def derive_id(pair: Pair) -> str:
    """Readable default id: ``<content stem>__<style stem>[+<style stem>...]``."""
    return safe_id(f"{storage.stem(pair.content)}__{'+'.join(storage.stem(s) for s in pair.styles)}")


def folder_clashes(pairs: list[Pair]) -> dict[str, str]:
    """Pair id -> why its outputs cannot be written without merging labels: its output folder
    (at any depth) would also be another input folder's (names shortened to the same digest
    prefix), or one of its output files would take the name of an output folder."""
    inputs_of: dict[str, set[str]] = {}  # output folder, at every depth -> the input folders it is
    for pair in pairs:
        if pair.label:
            outputs, inputs = pair.folder.rstrip("/").split("/"), pair.label.split("/")
            for depth in range(1, len(outputs) + 1):
                inputs_of.setdefault("/".join(outputs[:depth]), set()).add("/".join(inputs[:depth]))
    found = {}
    for pair in pairs:
        outputs = pair.folder.rstrip("/").split("/") if pair.label else []
        merged = next(
            (
                inputs_of[p]
                for p in ("/".join(outputs[:d]) for d in range(1, len(outputs) + 1))
                if len(inputs_of[p]) > 1
            ),
            None,
        )
        if merged:
            first, second = sorted(merged)[:2]
            found[pair.id] = (
                f"input folders {bounded(first)!r} and {bounded(second)!r} would be one output folder: their labels "
                "would merge; rename one"
            )
            continue
        for name in (f"{pair.id}.{extension}" for extension in (*IMAGE_FORMATS.values(), "json")):
            if name in inputs_of:
                found[pair.id] = (
                    f"its output {bounded(name)!r} would take the name of the output folder of input folder "
                    f"{bounded(sorted(inputs_of[name])[0])!r}; rename one"
                )
                break
    return found
