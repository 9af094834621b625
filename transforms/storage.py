"""All storage access, through fsspec: local paths, gs:// (gcsfs), s3://, memory://, ...

Credentials and endpoints are fsspec's business: users configure them the fsspec way (for example
``FSSPEC_GS_TOKEN=anon`` or an fsspec config file), never through this module.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem


def has_protocol(location: str) -> bool:
    """True for ``gs://b/x`` and ``file:///x``; False for plain local paths."""
    return "://" in location


def join(base: str, *parts: str) -> str:
    """``base`` folder URL joined with relative parts, keeping its protocol."""
    if has_protocol(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def parent(location: str) -> str:
    """The folder holding ``location``."""
    return posixpath.dirname(location) if has_protocol(location) else os.path.dirname(os.path.abspath(location))


def resolve(location: str, base_folder: str) -> str:
    """``location`` as written in a manifest: relative paths are taken against ``base_folder``."""
    if has_protocol(location) or os.path.isabs(location):
        return location
    return join(base_folder, location)


def stem(location: str) -> str:
    """File name without folders or extension: ``gs://b/a/cat.jpg`` -> ``cat``."""
    return posixpath.splitext(posixpath.basename(location.rstrip("/")))[0]


def read_bytes(location: str) -> bytes:
    """The whole object at ``location``; ``FileNotFoundError`` names it when it is missing."""
    fs, path = url_to_fs(location)
    try:
        return fs.cat_file(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{location}: no such file") from exc


def exists(location: str) -> bool:
    """Whether ``location`` exists now (listing caches are dropped first, so reruns see writes)."""
    fs, path = url_to_fs(location)
    fs.invalidate_cache(path)
    return fs.exists(path)


def signature(location: str) -> str:
    """A token that changes when the file or object at ``location`` is replaced.

    One metadata request, no read of the data: an object store's generation or ETag where it has
    one (a new upload gets a new value), else size plus modification time (local files, memory).
    A content hash would be exact but would read every input at every skip check, which on a
    bucket of thousands of images costs more than the check saves.

    Raises:
        FileNotFoundError: naming ``location``.
    """
    fs, path = url_to_fs(location)
    fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{location}: no such file") from exc
    size = info.get("size")
    for key in ("generation", "ETag", "etag", "md5Hash"):
        if info.get(key):
            return f"{key}={info[key]};size={size}"
    modified = next((info[k] for k in ("mtime", "LastModified", "updated", "created") if info.get(k)), None)
    return f"size={size};modified={modified}"


def remove(location: str) -> None:
    """Delete the file or object at ``location``."""
    fs, path = url_to_fs(location)
    fs.rm_file(path)
    fs.invalidate_cache(path)


def glob(pattern: str) -> list[str]:
    """Sorted full URLs of the files matching ``pattern``."""
    fs, path = url_to_fs(pattern)
    fs.invalidate_cache()
    # detail=True brings each match's type with the listing: no request per file.
    matches = sorted(name for name, info in fs.glob(path, detail=True).items() if info.get("type") == "file")
    return [fs.unstrip_protocol(m) if has_protocol(pattern) else m for m in matches]


def write_atomic(location: str, data: bytes) -> None:
    """Write ``data`` so that ``location`` never holds a partial object.

    Object stores (GCS, S3, memory) publish an object only when its upload completes, so one
    upload is atomic. A local file is written beside its target and renamed into place.
    """
    fs, path = url_to_fs(location)
    if isinstance(fs, LocalFileSystem):
        with _renamed_into_place(path) as temporary, open(temporary, "wb") as out:
            out.write(data)
    else:
        fs.pipe_file(path, data)
        fs.invalidate_cache(path)


def local_copy(location: str, cache_folder: str | None = None) -> str:
    """A local file path with the contents of ``location`` (downloaded once per process folder).

    Local paths are returned unchanged; remote ones land in ``cache_folder`` (default: the temp
    folder) under a name derived from the URL, written atomically so concurrent workers agree.
    """
    if not has_protocol(location) or location.startswith("file://"):
        return url_to_fs(location)[1]
    folder = cache_folder or os.path.join(tempfile.gettempdir(), "style-transfer-cache")
    digest = hashlib.sha256(location.encode()).hexdigest()[:16]
    target = os.path.join(folder, f"{digest}-{posixpath.basename(location)}")
    if not os.path.exists(target):
        fs, path = url_to_fs(location)
        with _renamed_into_place(target) as temporary:
            fs.get_file(path, temporary)  # streamed: weight files are hundreds of MB
    return target


@contextmanager
def _renamed_into_place(target: str) -> Iterator[str]:
    """A temporary path beside local ``target``, renamed onto it if the block succeeds.

    A rename within one folder is atomic, so readers see the old file or the whole new one;
    on failure the temporary file is removed and ``target`` is untouched.
    """
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".tmp-{secrets.token_hex(8)}-{os.path.basename(target)}")
    # Created with 0o666 like any new file, so the user's umask decides who may read it
    # (mkstemp's 0o600 would hide outputs from the rest of the team).
    os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
