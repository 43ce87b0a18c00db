"""Raw input files of ``prepare`` (plain or gzip text): opened for streaming, checked before anything is
written, their lines counted; a damaged one is one line naming it."""

from __future__ import annotations

import gzip
import zlib

import pyarrow as pa

from terarec.data_pipeline.schema import DatasetError

COUNT_CHUNK_BYTES = 16 << 20


def open_raw(path: str) -> tuple[pa.NativeFile, pa.NativeFile]:
    """(stream to parse, raw file): the raw file's position is the progress in on-disk bytes."""
    raw = pa.OSFile(path)
    return (pa.CompressedInputStream(raw, "gzip") if path.endswith(".gz") else raw), raw


def count_lines(path: str) -> int:
    """Lines of a (possibly gzipped) text file as the CSV reader of ``prepare`` ends them (``\\n``,
    ``\\r\\n`` or a lone ``\\r``; a last line without an end counts), empty lines included: the
    numbering of ``prepare criteo``'s rows and rejects. Counted in 16 MB chunks."""
    opener = gzip.open if path.endswith(".gz") else open
    lines, last = 0, b""
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(COUNT_CHUNK_BYTES):
                lines += chunk.count(b"\n")
                if b"\r" in chunk:  # rare: a search, not three counts, for the usual file
                    lines += chunk.count(b"\r") - chunk.count(b"\r\n")
                if last == b"\r" and chunk[:1] == b"\n":  # a CRLF split between chunks: one line end
                    lines -= 1
                last = chunk[-1:]
    except (OSError, EOFError, zlib.error) as err:
        raise unreadable(path, err) from None
    return lines + (last not in (b"", b"\n", b"\r"))


def unreadable(path: str, err: BaseException) -> DatasetError:
    """The one-line error for an input that cannot be read to its end."""
    what = "a truncated or damaged gzip file" if path.endswith(".gz") else "unreadable"
    return DatasetError(f"{path}: {what} ({err})")


def check_readable(path: str) -> None:
    """Empty files and ``.gz`` files that are not gzip fail here, before anything is written."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    if not head:
        raise DatasetError(f"input file '{path}' is empty")
    if path.endswith(".gz") and head != b"\x1f\x8b":
        raise DatasetError(f"{path} is not gzip-compressed (plain text named .gz?)")
