"""Locations as the job names them (local paths and fsspec URLs: ``gs://b/x``, ``file:///x``),
and which of them it may read: the names of storage without its access. Pure string and
network-address work, no fsspec; storage.py re-exports every name, so callers know one module.

Imports: the standard library only; no Beam, no torch, no fsspec.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import socket
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

# Where inputs named in a manifest may come from unless the operator says otherwise: local files
# and the object stores (fsspec's names for GCS, S3 and Azure) and the in-process memory store.
# http(s) is off: a worker that fetches any URL a manifest names can be made to read its cloud
# metadata server or other internal services (server-side request forgery).
DEFAULT_SCHEMES: Final = ("file", "local", "gs", "gcs", "s3", "s3a", "az", "abfs", "abfss", "memory")


# Where the job writes: local folders and the object stores, one filesystem each (a chain such as
# ``simplecache::`` caches reads and cannot hold the job's atomic writes; http(s) has no writes).
OUTPUT_SCHEMES: Final = ("file", "local", "gs", "gcs", "s3", "s3a", "az", "abfs", "abfss", "memory")


class UnsafeLocationError(ValueError):
    """A location whose scheme or host the job will not read from; the message names the cure."""


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


def schemes(location: str) -> list[str]:
    """Every protocol ``location`` goes through: ``simplecache::http://h/x`` -> simplecache, http."""
    segments = location.split("::")
    found = []
    for index, segment in enumerate(segments):
        if "://" in segment:
            found.append(segment.split("://", 1)[0].lower())
        elif index < len(segments) - 1:
            found.append(segment.lower())  # a filesystem named alone in a chain: "simplecache::..."
        else:
            found.append("file")  # a plain path
    return found


def check_location(location: str, allowed: Iterable[str]) -> None:
    """Refuse a location whose schemes are not all ``allowed``, or an http(s) URL to a non-public host.

    Even where http(s) is allowed, a host that resolves to a loopback, link-local (the cloud
    metadata servers), private or otherwise non-public address is refused. The check resolves the
    name once; a DNS server that answers differently at fetch time (rebinding) is not caught here,
    which is one more reason http(s) is off by default.

    Raises:
        UnsafeLocationError: naming the location, the reason and the ``--allowed_schemes`` flag.
    """
    allowed = tuple(allowed)
    for scheme in schemes(location):
        if scheme not in allowed:
            raise UnsafeLocationError(
                f"{location}: scheme {scheme!r} is not allowed (allowed: {', '.join(allowed)}; see --allowed_schemes)"
            )
        if scheme in ("http", "https"):
            _check_public_host(location, location[location.lower().rindex(f"{scheme}://") :])


def check_output_location(location: str) -> None:
    """Refuse an output the job cannot write to as it writes (atomically, without following links):
    anything but one filesystem of OUTPUT_SCHEMES. Nothing is contacted.

    Raises:
        UnsafeLocationError: naming the location and what the job writes to.
    """
    found = schemes(location)
    if len(found) != 1 or found[0] not in OUTPUT_SCHEMES:
        raise UnsafeLocationError(
            f"{location}: the job writes only to a local folder or an object store "
            f"({', '.join(OUTPUT_SCHEMES)}), one filesystem, not {'::'.join(found)}"
        )


def _check_public_host(location: str, url: str) -> None:
    host = urlsplit(url).hostname
    if not host:
        raise UnsafeLocationError(f"{location}: no host in the URL")
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addresses = {ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except (OSError, UnicodeError) as exc:
            raise UnsafeLocationError(f"{location}: host {host} cannot be resolved ({exc})") from exc
    for address in addresses:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        kind = (
            "loopback"
            if address.is_loopback
            else "link-local"
            if address.is_link_local
            else "private"
            if address.is_private
            else "non-public"
            if not address.is_global or address.is_multicast
            else None
        )
        if kind:
            raise UnsafeLocationError(
                f"{location}: host {host} is a {kind} address ({address}); http(s) inputs must be "
                "on public hosts (see --allowed_schemes)"
            )
