"""Safe, stable names for the library: model folders, file names, relative paths and collisions.

Pure logic (layer L1): no filesystem access, only strings in and strings out. DESIGN.md section 3.3
states the rules; this module makes them exact.

Model folder names, :func:`clean_slug`
    Unicode NFKD, combining marks dropped (``Café`` -> ``cafe``), lowercased; every run of
    characters outside ``[a-z0-9._-]`` becomes one ``_``; leading and trailing ``.``, ``_`` and
    ``-`` are stripped; at most :data:`MAX_NAME` characters (cut, then trailing ``._-`` stripped
    again).
    Version punctuation survives: ``Qwen3.5 27B`` -> ``qwen3.5_27b``.

File names, :func:`clean_filename`
    The same treatment with ``[A-Za-z0-9._-]`` and the case kept, so a clean published name such as
    ``sd_xl_base_1.0.safetensors`` comes back unchanged. The extension is the last ``.suffix`` when
    it is 1-16 ASCII letters or digits; it is lowercased and never cut. It is looked for after
    unwanted characters have been replaced and trailing ``._-`` stripped, so a trailing quote or
    space (``"model.ckpt" `` from a Content-Disposition header) does not hide it. ``/`` and ``\\``
    are ordinary unwanted characters, so a result never contains a path separator. When the name is
    too long, the stem is cut and the extension kept.

Both cleaners
    A Windows device name (``con prn aux nul com1..com9 lpt1..lpt9``), compared case-insensitively
    on the part before the first dot, gets ``_`` appended to that part: ``con`` -> ``con_``,
    ``nul.x`` -> ``nul_.x``. That ``_`` is the only way a result can end in ``_``. Both functions
    are idempotent (``f(f(x)) == f(x)``) and raise :class:`~reconciler.errors.NamingError`, quoting
    the input, when no letter or digit is left to build a name from.

Relative paths from outside, :func:`check_relpath`
    A file inside a Hub repository, a translation target or a ``folder`` override is checked, never
    repaired: it must be relative, use ``/`` only, have no empty, ``.``, ``..`` or dots-only
    component, no control character, no Windows device name and no component over 255 UTF-8 bytes.

Collisions, :func:`dedupe`
    macOS and Windows fold case, so names collide when equal after ``str.casefold``. In a group of
    colliding names the smallest key keeps its name; each other key gets ``_`` plus the first hex
    digits of the SHA-256 of its key, before the extension. A hash of the key, not a counter: a
    counter depends on how many colliding models sort before a model, so adding or removing one
    model would rename others (and break every workflow that refers to them by file name); a key
    hash depends on nothing but the model itself.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from pathlib import PurePosixPath

from reconciler.errors import NamingError

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_EXTENSION",
    "MAX_NAME",
    "check_relpath",
    "clean_filename",
    "clean_slug",
    "dedupe",
]

#: Longest folder or file name the cleaners and :func:`dedupe` produce, in characters.
MAX_NAME = 128
#: Longest path component :func:`check_relpath` accepts, in UTF-8 bytes (common filesystem limit).
MAX_COMPONENT_BYTES = 255
#: Longest extension (without the dot) that counts as an extension.
MAX_EXTENSION = 16

_EDGE = "._-"
_SLUG_UNWANTED = re.compile(r"[^a-z0-9._-]+")
_FILE_UNWANTED = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSION = re.compile(rf"[A-Za-z0-9]{{1,{MAX_EXTENSION}}}")
_DRIVE = re.compile(r"[A-Za-z]:")
_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{digit}" for digit in range(1, 10)]
    + [f"lpt{digit}" for digit in range(1, 10)]
)
_HEX_FIRST = 6
_HEX_STEP = 2
_SHOWN = 80


def clean_slug(name: str) -> str:
    """Return the model folder name for the official model name ``name``.

    ``My LoRA (v2)`` -> ``my_lora_v2``; ``SDXL Base 1.0`` -> ``sdxl_base_1.0``; ``con`` -> ``con_``.
    Raises :class:`NamingError` when no letter or digit is left.
    """
    text = _fold(name).lower()
    slug = _SLUG_UNWANTED.sub("_", text).strip(_EDGE)
    if not slug:
        raise NamingError(
            f"cannot make a folder name from {_show(name)}: no letter or digit is left after "
            f"removing characters outside [a-z0-9._-] (give the model a name with letters or "
            f"digits)"
        )
    return _finish(slug, "", find_extension=False)


def clean_filename(name: str) -> str:
    """Return a safe single file name for ``name`` (from a manifest, URL, header or user file).

    Case is kept and the extension lowercased: ``my lora v2.SafeTensors`` ->
    ``my_lora_v2.safetensors``; clean names such as ``sd_xl_base_1.0.safetensors`` are unchanged.
    Raises :class:`NamingError` when nothing usable is left before the extension.
    """
    text = _FILE_UNWANTED.sub("_", _fold(name)).rstrip(_EDGE)
    stem, extension = _split_extension(text)
    stem = stem.strip(_EDGE)
    if not stem:
        where = f"before the extension .{extension.lower()}" if extension else "in it"
        raise NamingError(
            f"cannot make a file name from {_show(name)}: no letter or digit is left {where} after "
            f"removing characters outside [A-Za-z0-9._-] (name the file with letters or digits)"
        )
    return _finish(stem, extension.lower(), find_extension=True)


def check_relpath(path: str) -> PurePosixPath:
    """Return ``path`` as a :class:`PurePosixPath` if it is a safe relative path, else raise.

    Accepts ``text_encoder/model.safetensors``. Rejects, with a :class:`NamingError` naming the
    path and the reason: empty or absolute paths (``/x``, ``\\x``, ``C:\\x``, ``C:x``),
    backslashes, empty components (``a//b``, a trailing ``/``), ``.``, ``..`` and other
    dots-or-spaces-only components, control characters (NUL included), components starting with a
    drive (``a/C:x``), Windows device names (``con``, ``nul.txt``, ``COM1``) and components longer
    than 255 bytes in UTF-8. The result always prints back as exactly ``path``.
    """

    def bad(reason: str) -> NamingError:
        return NamingError(f"unsafe relative path {_show(path)}: {reason}")

    if not path:
        raise bad("it is empty (give a path such as 'folder/model.safetensors')")
    for char in path:
        category = unicodedata.category(char)
        if char == "\0":
            raise bad("it contains a NUL character")
        if category == "Cc":
            raise bad(f"it contains the control character {char!r}")
        if category == "Cs":
            raise bad(f"it contains {char!r}, which is not valid Unicode")
    if path.startswith(("/", "\\")) or _DRIVE.match(path):
        raise bad("it is absolute (give a path relative to its folder, without a leading / or C:)")
    if "\\" in path:
        raise bad("it contains a backslash (use '/' between folders)")
    for part in path.split("/"):
        if not part:
            raise bad("it has an empty component (a doubled or trailing '/')")
        if part in (".", ".."):
            raise bad(f"it has a {part!r} component (name the folders explicitly)")
        if not part.strip(". "):
            raise bad(f"its component {part!r} is only dots and spaces, which Windows trims away")
        if _DRIVE.match(part):
            raise bad(f"its component {part!r} starts with a drive letter")
        if _is_reserved(part.partition(".")[0]):
            raise bad(f"its component {part!r} is a Windows device name (CON, NUL, COM1...)")
        size = len(part.encode("utf-8"))
        if size > MAX_COMPONENT_BYTES:
            raise bad(
                f"its component {_show(part)} is {size} bytes long in UTF-8 "
                f"(at most {MAX_COMPONENT_BYTES})"
            )
    return PurePosixPath(path)


def dedupe(named: Mapping[str, str], *, keep_extension: bool = True) -> dict[str, str]:
    """Resolve name collisions deterministically; return ``{key: final name}`` sorted by key.

    ``named`` maps a stable key (a model id, a source path) to the name it wants. Names collide when
    equal after ``str.casefold`` (macOS and Windows fold case). In each colliding group the smallest
    key keeps its name; every other key gets ``_<hex>`` before the extension (or at the end when
    ``keep_extension`` is false, as for folder slugs such as ``sdxl_base_1.0``), where ``<hex>`` is
    the first 6 hex digits of ``sha256(key)``, lengthened two digits at a time while the result
    still equals another final name. The stem is cut (and trailing ``._-`` stripped) to keep the
    result within :data:`MAX_NAME`.

    The suffix comes from the key, not from a counter, so adding a model never renames another
    suffixed model (only the name's owner can change: a new key that sorts first takes the plain
    name). The result does not depend on the mapping's order, and names that are already unique
    come back unchanged. Names must be 1 to :data:`MAX_NAME` characters long, else
    :class:`NamingError`.
    """
    for key, name in named.items():
        if not name or len(name) > MAX_NAME:
            raise NamingError(
                f"cannot place {_show(key)} under the name {_show(name)}: a name must be 1 to "
                f"{MAX_NAME} characters long (clean it with clean_slug or clean_filename first)"
            )
    keys = sorted(named)
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(named[key].casefold(), []).append(key)
    final: dict[str, str] = {}
    taken: set[str] = set()
    others: list[str] = []
    for folded, members in groups.items():
        final[members[0]] = named[members[0]]
        taken.add(folded)
        others.extend(members[1:])
    for key in sorted(others):
        name = _suffixed(named[key], key, taken, keep_extension=keep_extension)
        final[key] = name
        taken.add(name.casefold())
    return {key: final[key] for key in keys}


def _fold(text: str) -> str:
    """NFKD, then drop combining marks: ``Café`` -> ``Cafe``, ``ﬁ`` -> ``fi``, ``²`` -> ``2``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.category(char).startswith("M"))


def _split_extension(name: str) -> tuple[str, str]:
    """Split ``name`` into stem and extension (without the dot, case kept); ``""`` when none."""
    stem, dot, tail = name.rpartition(".")
    if dot and _EXTENSION.fullmatch(tail):
        return stem, tail
    return name, ""


def _is_reserved(head: str) -> bool:
    """Whether ``head`` (a name's part before its first dot) is a Windows device name.

    Windows ignores trailing spaces there and also reserves ``COM¹`` and the like, hence the NFKC
    and the strip; cleaned names contain neither, so for them this is a plain lowercase lookup.
    """
    return unicodedata.normalize("NFKC", head).rstrip(" ").lower() in _RESERVED


def _avoid_reserved(name: str) -> str:
    head, dot, rest = name.partition(".")
    return f"{head}_{dot}{rest}" if _is_reserved(head) else name


def _finish(stem: str, extension: str, *, find_extension: bool) -> str:
    """Fit ``stem`` (stripped, not empty) plus ``extension`` in MAX_NAME, then avoid device names.

    When a name without an extension is cut, its new last ``.suffix`` may look like an extension;
    with ``find_extension`` it is then treated as one (lowercased), exactly as cleaning the result
    again would, which keeps :func:`clean_filename` idempotent. Appending ``_`` to a device name
    can push a name of exactly MAX_NAME characters over the limit; the loop then cuts one more.
    """
    limit = MAX_NAME
    while True:
        base, suffix = stem, extension
        room = limit - (len(suffix) + 1 if suffix else 0)
        if len(base) > room:
            base = base[:room].rstrip(_EDGE)
            if find_extension and not suffix:
                head, tail = _split_extension(base)
                if tail:
                    base, suffix = head.rstrip(_EDGE), tail.lower()
        base = _avoid_reserved(base)
        name = f"{base}.{suffix}" if suffix else base
        if len(name) <= MAX_NAME:
            return name
        limit -= 1


def _suffixed(name: str, key: str, taken: set[str], *, keep_extension: bool) -> str:
    """``name`` with ``_<hex of key>`` added, the shortest hex whose result is not in ``taken``."""
    stem, extension = _split_extension(name) if keep_extension else (name, "")
    if not stem:  # ``.gitignore``: the whole name is the stem
        stem, extension = name, ""
    tail = f".{extension}" if extension else ""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    for size in range(_HEX_FIRST, len(digest) + 1, _HEX_STEP):
        mark = f"_{digest[:size]}"
        room = MAX_NAME - len(mark) - len(tail)
        base = stem if len(stem) <= room else (stem[:room].rstrip(_EDGE) or stem[:room])
        candidate = f"{base}{mark}{tail}"
        if candidate.casefold() not in taken:
            return candidate
    raise NamingError(
        f"cannot give {_show(key)} a unique name near {_show(name)}: every hash-suffixed variant "
        f"is already taken (rename one of the colliding models)"
    )


def _show(text: str) -> str:
    """``repr(text)``, shortened for messages."""
    shown = repr(text)
    return shown if len(shown) <= _SHOWN else f"{shown[: _SHOWN - 4]}...{shown[-1]}"
