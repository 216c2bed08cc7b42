"""File access shared by the data readers: one error type, gzip by content.

Every reader fails with :class:`DataError` whose message names the file and
what is wrong with it (missing, unreadable, truncated, bad magic number, wrong
shape), so the command line can print it as one line.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

# The first two bytes of every gzip stream (RFC 1952, section 2.3.1).
GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A data file is missing, unreadable or not in the expected format."""


def find_file(data_dir, names) -> Path:
    """Return the first of ``names`` that exists in ``data_dir``.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Directory to look in.
    names : sequence of str
        Candidate file names, most preferred first (e.g. ``"x"``, ``"x.gz"``).

    Raises
    ------
    DataError
        If ``data_dir`` is not a directory or none of the names exists; the
        message names the first candidate.
    """
    directory = Path(data_dir)
    if not directory.is_dir():
        raise DataError(f"data directory {str(directory)!r} does not exist or is not a directory")
    for name in names:
        path = directory / name
        if path.is_file():
            return path
    alternatives = " or ".join(repr(n) for n in names[1:])
    also = f" (nor {alternatives})" if alternatives else ""
    raise DataError(f"missing data file {str(directory / names[0])!r}{also}")


def read_bytes(path) -> bytes:
    """All bytes of ``path``, gunzipped if the content starts with the gzip magic.

    The format is sniffed from the content, not the suffix, so a raw file
    named ``.gz`` (or a gzipped one without the suffix) still reads.

    Raises
    ------
    DataError
        If the file is missing or unreadable, or its gzip stream is corrupt or
        truncated; the message names the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing data file {str(path)!r}") from None
    except OSError as error:
        raise DataError(f"cannot read data file {str(path)!r}: {error.strerror or error}") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        # EOFError: stream ends early; BadGzipFile (an OSError): bad header or
        # CRC; zlib.error: corrupt deflate data.
        raise DataError(f"data file {str(path)!r} is a corrupt or truncated gzip file ({error})") from None


