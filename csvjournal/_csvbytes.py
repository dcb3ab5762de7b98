"""A CSV file's bytes as text: its encoding, its byte-order mark, and where undecodable
bytes are (the line and column a person finds them at)."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from csvjournal._csvlocate import locate_offset
from csvjournal._csvtext import CsvText
from csvjournal.errors import CsvFormatError, SettingsError

__all__ = ["BOM_OF", "check_encoding", "decode", "single_byte", "writing_encoding"]

_BOMS = (  # UTF-32 LE's before UTF-16 LE's, which begins it
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Codecs that write a BOM each time they encode (each record, here): the same without it.
# Read without a BOM, "utf-16" and "utf-32" are little-endian in Python.
_NO_BOM = {"utf-8-sig": "utf-8", "utf-16": "utf-16-le", "utf-32": "utf-32-le"}
BOM_OF = {name: bom for bom, name in _BOMS}
_SURROGATE = re.compile("[\ud800-\udfff]")
_CHUNK = 1 << 22  # bytes decoded at a time


# Text codecs no CSV file is written in: Python's escapes (a line break becomes the two
# characters \n, so the whole CSV one line), host-name encodings (no CSV text fits) and
# "undefined" (which encodes nothing).
_NOT_FOR_FILES = frozenset(
    {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"}
)


def check_encoding(encoding: object) -> str:
    """``encoding`` if a CSV file can be read and written in it.

    Raises:
        TypeError: not a name (text).
        SettingsError: an unknown name, a codec that is no text encoding (``rot13``,
            ``base64``), or one no file is written in (``unicode_escape``, ``idna``).
    """
    if not isinstance(encoding, str):
        raise TypeError(f"encoding must be the name of an encoding, not {encoding!r}")
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise SettingsError(f"unknown encoding {encoding!r}") from None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_FOR_FILES:
        raise SettingsError(f"{encoding!r} is not an encoding a CSV file can be written in")
    return encoding


def _family(encoding: str) -> str:
    """``utf-16`` for every UTF-16 codec name, and so on; other names as codecs knows them."""
    name = codecs.lookup(encoding).name
    return name.removesuffix("-sig").removesuffix("-le").removesuffix("-be")


def decode(
    path: Path, data: bytes, encoding: str | None, *, usual: str | None = None
) -> tuple[CsvText, str, bool]:
    """The text of ``data``, the encoding to write it back in, and whether it had a BOM.

    A BOM is honoured unless ``encoding`` names another encoding (a cp1252 file may begin
    with the bytes of one); a codec that would write a BOM before every record is replaced
    by the same without. ``usual`` is the encoding the file was last written in (a journal's
    CSV, edited by hand since): used when ``encoding`` is None and the bytes do not show
    that a program re-saved the file in another (see :func:`_resaved`).

    Raises:
        CsvFormatError: bytes that are not in the encoding (the line and column named).
    """
    # (the longest BOM the bytes start with: UTF-32 LE's begins with UTF-16 LE's)
    bom, name = next(((bom, name) for bom, name in _BOMS if data.startswith(bom)), (b"", ""))
    if bom and (encoding is None or _bom_fits(name, encoding)):
        return _decode_as(path, memoryview(data)[len(bom) :], name), name, True
    if encoding is not None and (found := _wide_bom(data, name, encoding)) is not None:
        raise CsvFormatError(  # its NULs read as text: a field count would be blamed
            f"{path}: line 1, column 1: the file starts with {found.upper()}'s byte-order"
            f" mark and holds NUL bytes, read as {encoding}: it is {found.upper()} (give no"
            " encoding)"
        )
    if encoding is None and usual is not None:
        encoding = _resaved(data, usual)
    if (encoding is None or _narrow(encoding)) and (guess := _utf16_without_bom(data)):
        # read as UTF-8, its NUL bytes are text: the header names a column "I\x00D\x00"
        read_as = "" if encoding is None else f", read as {encoding}"
        raise CsvFormatError(
            f"{path}: line 1, column 1: the file looks like {guess.upper()} without a"
            f" byte-order mark{read_as}; name its encoding (encoding={guess!r}, or"
            f" --encoding {guess} on the command line)"
        )
    _lookup(path, encoding or "utf-8")
    name = writing_encoding(encoding or "utf-8")
    return _decode_as(path, memoryview(data), name), name, False


def _resaved(data: bytes, usual: str) -> str | None:
    """The encoding to read ``data`` (no BOM) in: ``usual``, unless the bytes show a
    re-save in UTF-8 (what LibreOffice, Google Sheets and Excel's "CSV UTF-8" write). A
    single-byte encoding reads any bytes, so UTF-8 read as cp1252 would be taken in as
    ``MÃ¼ller``; text other than ASCII that is valid UTF-8 is almost never cp1252. Read
    as UTF-16, bytes without the NULs of ASCII text in it are another encoding too.
    None: UTF-8 (or, with NULs, the UTF-16 hint of :func:`decode`)."""
    family = _family(usual)
    if family == "utf-8":
        return usual
    if family in ("utf-16", "utf-32"):
        return usual if b"\x00" in data[:256] else None
    if data.isascii() or not single_byte(usual):  # GBK text may be valid UTF-8 too
        return usual
    return None if _is_utf8(memoryview(data)) else usual


def _is_utf8(data: memoryview) -> bool:
    """Whether ``data`` is UTF-8, decoded a chunk at a time (whole, text with one emoji in
    it would take 4 bytes a character)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        for start in range(0, len(data), _CHUNK):
            decoder.decode(data[start : start + _CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def single_byte(encoding: str) -> bool:
    """Whether ``encoding`` writes each character as one byte (cp1252, latin-1, koi8-r):
    it reads any bytes, so only the text can tell it was another encoding."""
    return all(len(char.encode(encoding, "ignore")) <= 1 for char in "é€Жאあ中가")


def _utf16_without_bom(data: bytes) -> str | None:
    """``utf-16-le`` or ``utf-16-be`` when the file's first bytes read as ASCII text in
    it (every other byte NUL, the same side each time), else None."""
    head = data[:256]
    if len(head) < 4 or b"\x00" not in head:
        return None
    head = head[: len(head) // 2 * 2]
    even, odd = head[0::2], head[1::2]
    if not odd.strip(b"\x00") and b"\x00" not in even:
        return "utf-16-le"
    if not even.strip(b"\x00") and b"\x00" not in odd:
        return "utf-16-be"
    return None


def writing_encoding(encoding: str) -> str:
    """The codec to write a file without a BOM in ``encoding`` with, record by record:
    ``encoding`` itself, but ``utf-16`` would put a BOM before every record."""
    return _NO_BOM.get(codecs.lookup(encoding).name, encoding)


def _wide_bom(data: bytes, bom_encoding: str, encoding: str) -> str | None:
    """``bom_encoding`` when it is UTF-16's or UTF-32's, the BOM ``data`` starts with, text
    of it (NUL bytes) following, and ``encoding`` another family (else None)."""
    if not bom_encoding or _family(bom_encoding) not in ("utf-16", "utf-32"):
        return None
    if b"\x00" in data[4:256] and _family(encoding) != _family(bom_encoding):
        return bom_encoding
    return None


def _narrow(encoding: str) -> bool:
    """Whether ``encoding`` reads ASCII as one byte a character (UTF-8, cp1252, ...): a
    UTF-16 file's NULs would be text in it."""
    try:
        return codecs.lookup(encoding).name == "utf-8" or single_byte(encoding)
    except LookupError:
        return False


def _bom_fits(bom_encoding: str, encoding: str) -> bool:
    """Whether a file said to be in ``encoding`` may start with the BOM of ``bom_encoding``
    (``utf-16`` takes either byte order, ``utf-16-le`` only its own)."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return False
    return name in (bom_encoding, _family(bom_encoding)) or (
        name == "utf-8-sig" and bom_encoding == "utf-8"
    )


def _lookup(path: Path, encoding: str) -> str:
    try:
        return codecs.lookup(check_encoding(encoding)).name
    except SettingsError as exc:
        raise CsvFormatError(f"{path}: {exc}") from None


def _decode_as(path: Path, data: memoryview, encoding: str) -> CsvText:
    try:
        text = CsvText.decode(data, encoding)  # a view: a BOM cut off copies no bytes
        if any(not piece.isascii() and _SURROGATE.search(piece) for piece in text.pieces):
            # utf-7 can decode to one: no encoding writes it back
            whole = text.whole()
            lone = _SURROGATE.search(whole)
            assert lone is not None
            line, column = locate_offset(whole, lone.start())
            raise CsvFormatError(
                f"{path}: line {line}, column {column}: {encoding} decodes the bytes here to"
                f" a lone surrogate ({lone.group()!r}), which no CSV can hold; name the"
                " file's encoding (encoding=, or --encoding on the command line)"
            )
        return text
    except UnicodeDecodeError:
        _locate_undecodable(path, data, encoding)
        raise
    except UnicodeError as exc:  # a codec's own failure, not one of the bytes
        raise CsvFormatError(f"{path}: cannot be read as {encoding}: {exc}") from None
    except LookupError:
        raise CsvFormatError(f"{path}: unknown encoding {encoding!r}") from None


def _locate_undecodable(path: Path, data: memoryview, encoding: str) -> None:
    """Raise the error naming the line and column of the first bytes of ``data`` that are
    not ``encoding`` (decoded whole, as the slow path may)."""
    try:
        str(data, encoding)
    except UnicodeDecodeError as exc:
        # Counted in the decoded text, as the csv reader counts lines: CRLF, LF or a lone CR
        # (a CR-only file is one line to a count of LF bytes, and so is UTF-16).
        before = str(data[: exc.start], encoding, "replace")
        line, column = locate_offset(before, len(before))
        raise CsvFormatError(
            f"{path}: line {line}, column {column}: bytes that are not {encoding}"
            f" ({bytes(data[exc.start : exc.end])!r}); name the file's encoding (encoding=, or"
            " --encoding on the command line)"
        ) from None
