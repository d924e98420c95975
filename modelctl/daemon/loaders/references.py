"""Which model names point into the daemon's filesystem, and which names are reserved.

A name may reach a file or directory on the daemon's machine in many spellings: a path
(absolute, relative, ``~``), a ``file:`` URL, open_clip's ``local-dir:`` (also behind
``open_clip/``), or ``hf-hub:`` followed by a path. Each is a privilege of the Unix
socket (the daemon's own user); over TCP every one of them gets the same answer before
anything on disk is looked at, so the answer says nothing about what exists there.
"""

from __future__ import annotations

from modelctl.errors import InvalidArgument
from modelctl.registry import ALIASES, REGISTRY

# Prefixes that hand the rest of a name to the filesystem (compared case-insensitively).
_FILE_SCHEMES = ("file:", "local-dir:")
_WRAPPERS = ("open_clip/", "hf-hub:")


def names_filesystem(text: str) -> bool:
    """Whether ``text`` (a model name, or a source in its properties) names a path."""
    rest = text.strip()
    while True:
        lowered = rest.lower()
        if lowered.startswith(_FILE_SCHEMES):
            return True
        wrapper = next((w for w in _WRAPPERS if lowered.startswith(w)), None)
        if wrapper is None:
            break
        rest = rest[len(wrapper):].lstrip()
    # Hub ids never start with these, nor hold a ".." component; "." and ".." are paths.
    return (rest.startswith(("/", ".", "~", "\\"))
            or ".." in rest.replace("\\", "/").split("/"))


def local_path_of(text: str) -> str:
    """The path ``text`` names, without its scheme (``file://``, ``local-dir:``)."""
    rest = text.strip()
    for prefix in ("open_clip/", "file://", "file:", "local-dir:", "hf-hub:"):
        if rest.lower().startswith(prefix):
            rest = rest[len(prefix):]
    return rest


def check_filesystem_reference(text: str, *, local_paths: bool,
                               always_path: bool = False) -> None:
    """400 when ``text`` names a path and paths are not allowed here (TCP), or when it is
    relative (the daemon's working directory is not the client's); else nothing.
    ``always_path``: ``text`` is a path whatever its spelling (``properties.localpath``)."""
    if not always_path and not names_filesystem(text):
        return
    if not local_paths:
        # The same words whatever the path: whether it exists must not show over TCP.
        raise InvalidArgument(
            f"{text[:200]!r} refused: it names a file or directory, and weights from the "
            "daemon's filesystem may be named only over the Unix socket (the same user), "
            "not over TCP; over TCP, name a registry model or a hub model")
    if not local_path_of(text).startswith(("/", "~")):
        raise InvalidArgument(
            f"{text[:200]!r} is a relative path, which the daemon would resolve against its "
            "own working directory, not yours: give an absolute path (the modelctl CLI "
            "makes paths absolute)")


def check_printable(name: str, what: str = "model name") -> None:
    """400 for a name holding control or format characters: names are shown in every
    terminal that runs ``modelctl ls``, and no model needs an escape sequence in its."""
    if name.isascii() and name.isprintable():
        return
    import unicodedata

    bad = next((c for c in name if not c.isprintable() and c != " "
                or unicodedata.category(c)[0] == "C"), None)
    if bad is not None:
        raise InvalidArgument(f"{what} holds the control or format character "
                              f"U+{ord(bad):04X}; names must be printable text")


def check_not_reserved(name: str) -> None:
    """400 when a custom model (one given properties) would take a registry name: a
    client must never be able to make ``all-MiniLM-L6-v2`` mean another model."""
    if name in REGISTRY or name in ALIASES:
        raise InvalidArgument(
            f"{name!r} is the name of a registry model, and registry names are reserved "
            "for registry models: give the custom model a name of its own")
