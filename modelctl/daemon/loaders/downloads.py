"""Marqo's ``url`` property over http(s): a checkpoint or a model archive, fetched once.

Fetching a URL is something the daemon does *for* a client, on the daemon's network:
over TCP that would let anyone who can reach the port make the daemon request any
address it can reach (its cloud metadata service, an admin page on loopback). So a
URL is a privilege, like a local path: the Unix socket's (whoever can open it is the
machine's own user), and TCP clients' only where the daemon's operator says so
(``MODELCTL_ALLOW_URL_DOWNLOADS=1``). ``spec_for`` decides whether; this module
only fetches.

The file is kept under the cache directory, keyed by the URL: the second load of the
same URL reads the disk, and an offline daemon uses what an earlier load fetched.
A download writes to a temporary name and is renamed when whole, so a broken
connection never leaves a truncated checkpoint that a later load would trust.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from http.client import HTTPMessage
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

from modelctl.config import default_cache_dir
from modelctl.errors import InvalidArgument, WeightsNotFound

SCHEMES = ("http", "https")
TIMEOUT_S = 60.0  # per socket operation, not for the whole file
_CHUNK = 1 << 20


def is_download_url(text: object) -> bool:
    return isinstance(text, str) and urlsplit(text.strip()).scheme.lower() in SCHEMES


def check_download_url(url: str) -> str:
    """``url`` if it is a well-formed http(s) URL with a host, else a 400."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise InvalidArgument("properties.url must be an http(s) URL with a host, or file://")
    if parts.username or parts.password:
        raise InvalidArgument("properties.url: credentials in the URL are not accepted "
                              "(they would be written to the daemon's log and cache)")
    return url.strip()


def downloaded(url: str, *, offline: bool, cache_dir: Path | None = None) -> Path:
    """The local copy of ``url``: from the cache, else fetched now (blocking)."""
    target = _target(url, cache_dir or default_cache_dir())
    if target.is_file():
        return target
    if offline:
        raise WeightsNotFound(f"{url} has not been downloaded and the daemon is offline "
                              "(MODELCTL_OFFLINE / HF_HUB_OFFLINE)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    opener = urllib.request.build_opener(_SameSchemesRedirects())
    try:
        with opener.open(url, timeout=TIMEOUT_S) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, urllib.error.HTTPError):
            reason: object = f"HTTP {exc.code} {exc.reason}"
        else:
            reason = getattr(exc, "reason", None) or exc
        raise WeightsNotFound(f"could not download {url}: {reason}") from exc
    os.replace(partial, target)
    return target


def _target(url: str, cache_dir: Path) -> Path:
    digest = hashlib.sha256(url.encode()).hexdigest()[:24]
    # The URL's file name is kept: the archive loader goes by its suffix (.zip, .tar.gz).
    name = Path(unquote(urlsplit(url).path)).name or "download"
    return cache_dir / "downloads" / digest / name


class _SameSchemesRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (never to ftp: or file:)."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: HTTPMessage, newurl: str,
                         ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise urllib.error.HTTPError(newurl, code, f"redirect to {newurl} refused",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)
