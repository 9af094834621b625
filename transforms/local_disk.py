"""Files under the job's output on local disk, reached one folder at a time without following
links (``openat`` with ``O_NOFOLLOW``): what storage.py does on local disk when it writes, reads
back or removes the job's own files, so that a link put anywhere inside the output never carries
a read or a write elsewhere (docs/reliability.md). Plain ``os`` calls, no fsspec.

Imports: locations only (for the names in messages); no Beam, no torch, no fsspec.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO, Final

from transforms import locations

TEMPORARY_PREFIX: Final = ".tmp-"


class InputRefusedError(OSError):
    """An input that is not a regular file or object, or is larger than the job reads."""


def read_regular(location: str, path: str, max_bytes: int, inside: str | None, root: str | None) -> bytes:
    """The regular file at local ``path``, at most ``max_bytes``; with ``inside`` (and its local
    ``root``), reached without following a link, its own name included (storage.read_bytes)."""
    with open_regular(location, path, max_bytes, inside, root) as file:
        data = file.read(max_bytes + 1)
    check_size(location, len(data), max_bytes)
    return data


def open_regular(location: str, path: str, max_bytes: int, inside: str | None, root: str | None) -> BinaryIO:
    """The regular file at local ``path``, opened for reading, if it is at most ``max_bytes`` now;
    with ``inside`` (and its local ``root``), reached without following a link, its own name
    included. (Its reader checks what it reads against ``max_bytes`` again: a file may grow.)"""
    if inside is None:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    else:
        with folder_inside(location, path, inside, root, create=False) as folder:
            try:
                descriptor = os.open(os.path.basename(path), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=folder)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise LinkInOutputError(
                    exc.errno, f"{location} is a link: the job reads its outputs only as it wrote them"
                ) from None
    try:
        status = os.fstat(descriptor)  # of what was opened: no swap between a check and the read
        if not stat.S_ISREG(status.st_mode):
            kind = (
                "folder"
                if stat.S_ISDIR(status.st_mode)
                else "FIFO"
                if stat.S_ISFIFO(status.st_mode)
                else "device or socket"
            )
            raise InputRefusedError(f"{location}: not a regular file (a {kind})")
        check_size(location, status.st_size, max_bytes)
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


def check_size(location: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise InputRefusedError(f"{location}: {size} bytes is over the limit of {max_bytes} bytes")


class LinkInOutputError(OSError):
    """A folder inside the output is a link (or a file): the job never writes through it."""


def temporary_name(name: str) -> str:
    """A file name beside ``name`` for writing it aside (``.tmp-`` names are the stale sweep's)."""
    return f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}-{name}"


def write_new(name: str, data: bytes, folder: int) -> None:
    """A new file ``name`` in the open ``folder`` holding ``data``. Created with 0o666 like any
    new file, so the user's umask decides who may read it (mkstemp's 0o600 would hide outputs
    from the rest of the team)."""
    descriptor = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o666, dir_fd=folder)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)


@contextmanager
def folder_inside(location: str, path: str, inside: str | None, root: str | None, create: bool) -> Iterator[int]:
    """An open descriptor of local ``path``'s folder, reached from ``inside`` (whose local path
    is ``root``) one folder at a time without following links (made where missing with
    ``create``); without ``inside``, the folder as the path names it."""
    target_folder = os.path.dirname(os.path.abspath(path))
    if inside is None:
        if create:
            os.makedirs(target_folder, exist_ok=True)
        descriptor = os.open(target_folder, os.O_RDONLY | os.O_DIRECTORY)
    else:
        if root is None:
            raise ValueError(f"{inside}: the output folder's local path is needed to reach {location}")
        relative = os.path.relpath(target_folder, root)
        if relative == os.curdir:
            parts: list[str] = []
        elif relative.split(os.sep)[0] == os.pardir:
            raise LinkInOutputError(f"{location}: not inside {inside}")
        else:
            parts = relative.split(os.sep)
        if create:
            os.makedirs(root, exist_ok=True)
        descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        for index, part in enumerate(parts):
            try:
                child = open_subfolder(descriptor, part, create, locations.join(inside, *parts[: index + 1]))
            finally:
                os.close(descriptor)
            descriptor = child
    try:
        yield descriptor
    finally:
        os.close(descriptor)


def open_subfolder(parent: int, name: str, create: bool, shown: str) -> int:
    """``name`` in the open folder ``parent``, opened without following a link (made first
    where missing, with ``create``); ``shown``: its location, for the error."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        try:
            return os.open(name, flags, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            with suppress(FileExistsError):  # another writer made it meanwhile
                os.mkdir(name, dir_fd=parent)
            return os.open(name, flags, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        kind = "a link" if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode) else "a file"
        raise LinkInOutputError(
            exc.errno, f"{shown} is {kind}, not a folder: the job writes inside its output only through real folders"
        ) from None


@contextmanager
def renamed_into_place(target: str) -> Iterator[str]:
    """A temporary path beside local ``target``, renamed onto it if the block succeeds.

    A rename within one folder is atomic, so readers see the old file or the whole new one;
    on failure the temporary file is removed and ``target`` is untouched.
    """
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, temporary_name(os.path.basename(target)))
    # Created with 0o666 like any new file, so the user's umask decides who may read it
    # (mkstemp's 0o600 would hide outputs from the rest of the team).
    os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
