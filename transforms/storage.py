"""All storage access, through fsspec: local paths, gs:// (gcsfs), s3://, memory://, ...

Credentials and endpoints are fsspec's business: users configure them the fsspec way (for example
``FSSPEC_GS_TOKEN=anon`` or an fsspec config file), never through this module.

Imports: fsspec, and no other module does; locations and local_disk (their names re-exported); no Beam,
no torch.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import posixpath
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any, BinaryIO, Final

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import get_filesystem_class

# Files under the output on local disk, reached without following links (local_disk.py).
from transforms import local_disk
from transforms.local_disk import TEMPORARY_PREFIX as TEMPORARY_PREFIX
from transforms.local_disk import InputRefusedError as InputRefusedError
from transforms.local_disk import LinkInOutputError as LinkInOutputError

# The names of locations, and the check of which ones the job may read (locations.py).
from transforms.locations import DEFAULT_SCHEMES as DEFAULT_SCHEMES
from transforms.locations import UnsafeLocationError as UnsafeLocationError
from transforms.locations import check_location as check_location
from transforms.locations import has_protocol as has_protocol
from transforms.locations import join as join
from transforms.locations import parent as parent
from transforms.locations import resolve as resolve
from transforms.locations import schemes as schemes
from transforms.locations import stem as stem

# Extras of this package that bring a scheme's fsspec filesystem.
_EXTRAS: Final = {"s3": "s3", "s3a": "s3", "az": "azure", "abfs": "azure", "abfss": "azure"}


def check_filesystem(location: str) -> None:
    """Every scheme of ``location`` has an fsspec filesystem installed.

    Raises:
        ValueError: naming the location, what is missing and how to install it.
    """
    for scheme in schemes(location):
        try:
            get_filesystem_class(scheme)
        except ImportError as exc:
            cure = f"pip install 'beam-style-transfer[{_EXTRAS[scheme]}]'" if scheme in _EXTRAS else "install it"
            raise ValueError(f"{location}: {scheme}:// needs a package that is not installed ({exc}); {cure}") from exc
        except ValueError as exc:
            raise ValueError(f"{location}: unknown scheme {scheme}:// ({exc})") from exc


def read_bytes(location: str, max_bytes: int, inside: str | None = None) -> bytes:
    """The whole object at ``location``, which must be a regular file or object of at most
    ``max_bytes`` (every read has a cap: whoever can write a file the job reads cannot make it
    read without bound).

    A FIFO, a device such as /dev/zero, or a folder is refused without reading from it (a FIFO
    is opened non-blocking, so a missing writer cannot hang the job); the size is checked before
    the read and again on what was read. With ``inside`` (the output folder, for the job's own
    outputs), no link between it and the file is followed, the file's own name included.

    Raises:
        FileNotFoundError: naming ``location``.
        InputRefusedError: not a regular file, or over ``max_bytes``.
        LinkInOutputError: ``inside`` is given and a link is on the way.
    """
    fs, path = url_to_fs(location)
    try:
        if isinstance(fs, LocalFileSystem):
            return local_disk.read_regular(location, path, max_bytes, inside, _root_of(inside))
        info = fs.info(path)
        if info.get("type") != "file":
            raise InputRefusedError(f"{location}: not a regular file (a {info.get('type')})")
        local_disk.check_size(location, info.get("size") or 0, max_bytes)
        data = fs.cat_file(path, start=0, end=max_bytes + 1)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{location}: no such file") from exc
    local_disk.check_size(location, len(data), max_bytes)
    return data


def read_lines(location: str, max_bytes: int, max_line_bytes: int, inside: str | None = None) -> Iterator[bytes]:
    """The lines of the object at ``location`` (as ``read_bytes`` checks it), one at a time, each
    without its line end: memory is bounded by a line, not by the file (an index shard of a
    gigabyte of blank lines). A line over ``max_line_bytes``, or more than ``max_bytes`` in all,
    is refused.

    Raises:
        what ``read_bytes`` raises; InputRefusedError for a line over its cap.
    """
    fs, path = url_to_fs(location)
    try:
        if isinstance(fs, LocalFileSystem):
            file: BinaryIO = local_disk.open_regular(location, path, max_bytes, inside, _root_of(inside))
        else:
            info = fs.info(path)
            if info.get("type") != "file":
                raise InputRefusedError(f"{location}: not a regular file (a {info.get('type')})")
            local_disk.check_size(location, info.get("size") or 0, max_bytes)
            file = fs.open(path, "rb")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{location}: no such file") from exc
    read, pending = 0, b""
    with file:
        # Chunks, split here: fsspec's remote files take no size for readline().
        while chunk := file.read(_LINE_CHUNK_BYTES):
            read += len(chunk)
            local_disk.check_size(location, read, max_bytes)
            buffer, start = pending + chunk, 0
            while (end := buffer.find(b"\n", start)) >= 0:  # one line at a time, no list of them
                yield _within(location, buffer[start:end].rstrip(b"\r"), max_line_bytes)
                start = end + 1
            pending = _within(location, buffer[start:], max_line_bytes)
    if pending:
        yield pending.rstrip(b"\r")


# What read_lines reads at a time.
_LINE_CHUNK_BYTES: Final = 1 << 16


def _within(location: str, line: bytes, max_line_bytes: int) -> bytes:
    if len(line) > max_line_bytes:
        raise InputRefusedError(f"{location}: a line of over {max_line_bytes} bytes")
    return line


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def remove(location: str, inside: str | None = None) -> None:
    """Delete the file or object at ``location`` (a link itself, never what it points at).

    ``inside``: the output folder ``location`` lies in; on local disk no link between the two
    is followed (:func:`write_atomic`).
    """
    fs, path = url_to_fs(location)
    if isinstance(fs, LocalFileSystem):
        with local_disk.folder_inside(location, path, inside, _root_of(inside), create=False) as folder:
            os.unlink(os.path.basename(path), dir_fd=folder)
        return
    fs.rm_file(path)
    fs.invalidate_cache(path)


def remove_if_regular(location: str, inside: str) -> bool:
    """Delete ``location`` if it is a regular file (never a link or a folder), reached from
    ``inside`` without following links; whether it was there and went."""
    fs, path = url_to_fs(location)
    if not isinstance(fs, LocalFileSystem):
        fs.invalidate_cache(path)
        if not fs.isfile(path):
            return False
        fs.rm_file(path)
        fs.invalidate_cache(path)
        return True
    try:
        with local_disk.folder_inside(location, path, inside, _root_of(inside), create=False) as folder:
            name = os.path.basename(path)
            if not stat.S_ISREG(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
                return False
            os.unlink(name, dir_fd=folder)
            return True
    except (FileNotFoundError, NotADirectoryError, local_disk.LinkInOutputError):
        return False


def create_exclusive(location: str, data: bytes, inside: str | None = None) -> bool:
    """Create ``location`` with ``data`` unless it exists; True if this call created it.

    Atomic on every store: a local file is written aside and hard-linked into place (a link
    fails if the name exists), an object is uploaded with a does-not-exist precondition (GCS's
    ``ifGenerationMatch=0``, S3's ``If-None-Match``, through fsspec's ``mode="create"``).
    ``inside``: as for :func:`write_atomic`.
    """
    fs, path = url_to_fs(location)
    if isinstance(fs, LocalFileSystem):
        try:
            return _link_new(location, path, data, inside)
        except FileNotFoundError:
            # The folder went between being opened and written in (the end-of-run sweep of
            # empty claim folders): made again, once.
            return _link_new(location, path, data, inside)
    fs.invalidate_cache(path)
    if fs.exists(path):
        # Cheap, and what decides on stores or emulators that ignore the precondition (the GCS
        # emulator our tests use does); the precondition below decides a race on real GCS / S3.
        return False
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    finally:
        fs.invalidate_cache(path)
    return True


def _link_new(location: str, path: str, data: bytes, inside: str | None) -> bool:
    """create_exclusive on local disk: written aside, then hard-linked to its name."""
    name = os.path.basename(path)
    with local_disk.folder_inside(location, path, inside, _root_of(inside), create=True) as folder:
        temporary = local_disk.temporary_name(name)
        try:  # the temporary goes however this ends, a full disk included
            local_disk.write_new(temporary, data, folder)
            os.link(temporary, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
            return True
        except FileExistsError:
            return False
        finally:
            with suppress(FileNotFoundError):
                os.unlink(temporary, dir_fd=folder)


def remove_stale_temporaries(folder: str, older_than_seconds: float, recursive: bool = False) -> list[str]:
    """Remove ``.tmp-*`` files left in local ``folder`` (and its subfolders, with ``recursive``;
    symbolic links are not followed) by writes that were killed; their names.

    Only files older than ``older_than_seconds`` go: a younger one may be another run's write in
    progress. Object stores need no sweep (an upload that is cut off publishes nothing).
    """
    fs, path = url_to_fs(folder)
    if not isinstance(fs, LocalFileSystem) or not os.path.isdir(path):
        return []
    removed = []
    cutoff = time.time() - older_than_seconds
    for root, folders, files in os.walk(path):
        for name in files:
            entry = os.path.join(root, name)
            if name.startswith(TEMPORARY_PREFIX) and os.path.isfile(entry) and not os.path.islink(entry):
                if os.lstat(entry).st_mtime < cutoff:
                    os.unlink(entry)
                    removed.append(entry)
        if not recursive:
            folders.clear()
    return removed


def find(folder: str) -> list[str]:
    """Every file below ``folder`` (none if it does not exist), as full URLs, sorted. On local
    disk only regular files, and no link is followed: what a link points at is not the folder's."""
    return [location for location, _ in listing(folder)]


def listing(folder: str, with_modified: bool = False) -> list[tuple[str, float]]:
    """(location, bytes) of every file below ``folder`` as :func:`find` lists them; with
    ``with_modified``, (location, modification time in seconds since the epoch) instead.
    One listing of the store (no request per file)."""
    fs, path = url_to_fs(folder)
    if isinstance(fs, LocalFileSystem):
        if os.path.islink(path) or not os.path.isdir(path):
            return []
        found = []
        for root, _, files in os.walk(path):  # os.walk does not follow links to folders
            for name in files:
                entry = os.path.join(root, name)
                with suppress(FileNotFoundError):  # removed meanwhile
                    status = os.lstat(entry)
                    if stat.S_ISREG(status.st_mode):
                        found.append((entry, status.st_mtime if with_modified else status.st_size))
        return sorted(found)
    fs.invalidate_cache()
    try:
        details = fs.find(path, detail=True)
    except FileNotFoundError:
        return []
    listed = []
    for name, info in sorted(details.items()):
        location = fs.unstrip_protocol(name) if has_protocol(folder) else name
        listed.append((location, _modified(info) if with_modified else float(info.get("size") or 0)))
    return listed


def _modified(info: dict[str, Any]) -> float:
    """An object's modification time from its listing entry (the stores name it differently); 0
    when the store gives none."""
    for key in ("mtime", "LastModified", "updated", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, str):
            with suppress(ValueError):
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return 0.0


def remove_empty_folders(folder: str, mirrored_in: str | None = None) -> int:
    """Remove the empty folders below local ``folder``, and ``folder`` itself if it ends empty;
    how many went. With ``mirrored_in`` (a local folder), only those whose path below ``folder``
    is a folder below it too: the folders a job made to mirror its own, never another's. Links
    are neither followed nor removed; object stores have no folders."""
    fs, path = url_to_fs(folder)
    if not isinstance(fs, LocalFileSystem) or os.path.islink(path) or not os.path.isdir(path):
        return 0
    mirror = url_to_fs(mirrored_in)[1] if mirrored_in is not None else None
    removed = 0
    for root, _, _ in os.walk(path, topdown=False):
        relative = os.path.relpath(root, path)
        if mirror is not None and relative != "." and not os.path.isdir(os.path.join(mirror, relative)):
            continue  # not a folder the job made: a user's, left alone
        try:
            os.rmdir(root)  # refused unless empty: a folder another run just wrote into stays
            removed += 1
        except OSError:
            pass
    return removed


def glob(pattern: str) -> list[str]:
    """Sorted full URLs of the files matching ``pattern``."""
    fs, path = url_to_fs(pattern)
    fs.invalidate_cache()
    # detail=True brings each match's type with the listing: no request per file.
    matches = sorted(name for name, info in fs.glob(path, detail=True).items() if info.get("type") == "file")
    return [fs.unstrip_protocol(m) if has_protocol(pattern) else m for m in matches]


def glob_root(pattern: str) -> str:
    """The folder every match of ``pattern`` lies below: its part before the first wildcard, up to
    the last '/' (``gs://b/train/**/*.JPEG`` -> ``gs://b/train``)."""
    wildcard = min((i for i in (pattern.find(c) for c in "*?[") if i >= 0), default=len(pattern))
    head = pattern[:wildcard]
    if "/" not in head:
        return "."
    return head[: head.rfind("/")] or "/"


def relative_path(location: str, folder: str) -> str | None:
    """``location``'s path below ``folder`` (``a/b/x.jpg``), or None when it is not below it.

    Both are normalized by their filesystem first, so ``memory://d`` and ``memory:///d/x`` agree,
    and ``..`` is resolved: ``root/../x`` is not below ``root``.
    """
    path, base = _path_of(location), _path_of(folder).rstrip("/")
    return path[len(base) + 1 :] if path.startswith(base + "/") else None


def is_within(location: str, folder: str) -> bool:
    """Whether ``location`` lies below ``folder`` (links resolved on local disk: a path into
    the output through a link is still in it)."""
    if not has_protocol(location) and not has_protocol(folder):
        location, folder = os.path.realpath(location), os.path.realpath(folder)
    return relative_path(location, folder) is not None


def _path_of(location: str) -> str:
    """``location``'s path as its filesystem names it, without making the filesystem (no
    credentials looked up): ``gs://b/x/../y`` -> ``b/y``, a relative local path made absolute."""
    protocol = location.split("://", 1)[0] if has_protocol(location) else "file"
    return posixpath.normpath(get_filesystem_class(protocol)._strip_protocol(location))


def write_atomic(location: str, data: bytes, inside: str | None = None) -> None:
    """Write ``data`` so that ``location`` never holds a partial object.

    Object stores (GCS, S3, memory) publish an object only when its upload completes, so one
    upload is atomic. A local file is written beside its target and renamed into place.

    ``inside``: the output folder ``location`` lies in. On local disk every folder between the
    two is opened without following links (and made where missing): a link there, put by
    anyone, never carries a write outside the output (LinkInOutputError). The output folder
    itself may be a link: that is the user's choice of where it lives. A link at the target's
    own name is replaced, not followed. Object stores have no links.

    Raises:
        LinkInOutputError: a folder on the way is a link (or a file).
        IsADirectoryError: a folder has the target's name.
    """
    fs, path = url_to_fs(location)
    if isinstance(fs, LocalFileSystem):
        name = os.path.basename(path)
        with local_disk.folder_inside(location, path, inside, _root_of(inside), create=True) as folder:
            temporary = local_disk.temporary_name(name)
            try:
                local_disk.write_new(temporary, data, folder)
                os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException as exc:
                with suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=folder)
                if isinstance(exc, IsADirectoryError):
                    raise IsADirectoryError(exc.errno, f"{location}: a folder has this name (move it away)") from None
                raise
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
        with local_disk.renamed_into_place(target) as temporary:
            fs.get_file(path, temporary)  # streamed: weight files are hundreds of MB
    return target


def is_folder(location: str) -> bool:
    """Whether a folder (a real one, or a link to one) holds ``location``'s name."""
    fs, path = url_to_fs(location)
    if isinstance(fs, LocalFileSystem):
        return os.path.isdir(path)
    fs.invalidate_cache(path)
    return bool(fs.isdir(path))


def is_file_or_link(location: str) -> bool:
    """Whether something other than a real folder (a file, a link) holds ``location``'s name."""
    fs, path = url_to_fs(location)
    if isinstance(fs, LocalFileSystem):
        try:
            return not stat.S_ISDIR(os.lstat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):  # nothing there, or the output itself is a file
            return False
    fs.invalidate_cache(path)
    return fs.isfile(path)


def _root_of(inside: str | None) -> str | None:
    """The local path of the output folder ``inside`` (a path or a ``file://`` URL)."""
    return None if inside is None else os.path.abspath(url_to_fs(inside)[1])
