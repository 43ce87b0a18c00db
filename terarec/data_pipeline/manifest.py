"""``manifest.json``: what a prepared dataset was built from and exactly which files it is.

Every producer (``prepare criteo|movielens|taobao``, ``synth``) claims its output directory with
a manifest marked unfinished *before* it writes anything, and rewrites it as complete *last*, after
schema.json. The manifest records:

- ``inputs``: path, size, mtime and a blake2b hash of the first and last MiB of each raw file;
- ``options``: every setting that changes the output (keyed by its CLI flag);
- ``parts``: every parquet part (path relative to the dataset, rows, bytes, crc32 of the file).

A re-run with the same inputs and options resumes (or does nothing); a different one stops with one
line naming the first difference, unless ``--overwrite``, which builds beside the old dataset and
swaps the new one in only when complete. An unfinished build (a crash, a fail-mode stop) is no
dataset yet: a re-run of the same kind continues it even with changed inputs or options (saying
so), and reuses only outputs made from identical ones (criteo's per-file markers), so fixing the
one bad input file of many and re-running redoes just that file. Loading checks the listed parts (present, no extra
``part-*`` file, sizes, footer row counts: about 1 ms for a 1M-row dataset); the crc32 of every
byte is checked by ``verify(full=True)`` only (45 ms for 1M Criteo rows = 63 MB from the page cache,
but minutes per rank at Criteo-1TB scale, so not on every load).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from terarec.data_pipeline.schema import DatasetError, DatasetSchema

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
SAMPLE_BYTES = 1 << 20  # an input is identified by size, mtime and a hash of its first and last MiB
READ_CHUNK = 16 << 20
_WARNED: set[str] = set()  # datasets without a manifest already warned about in this process


@dataclass(frozen=True)
class InputFile:
    """A raw input file as it was when the dataset was prepared."""

    path: str  # absolute
    size: int
    mtime_ns: int
    sample_hash: str  # blake2b of the first and last SAMPLE_BYTES (the whole file when smaller)

    @classmethod
    def of(cls, path: str | Path) -> InputFile:
        file = Path(path)
        if not file.is_file():
            raise DatasetError(f"input file '{path}' does not exist")
        stat = file.stat()
        digest = hashlib.blake2b(digest_size=16)
        with open(file, "rb") as fh:
            digest.update(fh.read(SAMPLE_BYTES))
            if stat.st_size > SAMPLE_BYTES:
                fh.seek(max(stat.st_size - SAMPLE_BYTES, SAMPLE_BYTES))
                digest.update(fh.read())
        return cls(str(file.resolve()), stat.st_size, stat.st_mtime_ns, digest.hexdigest())


@dataclass(frozen=True)
class PartFile:
    """One parquet part of the dataset."""

    path: str  # relative to the dataset directory, e.g. "train/part-00000.parquet"
    rows: int
    bytes: int
    crc32: str  # 8 hex digits, over the whole file

    @classmethod
    def of(cls, file: Path, root: Path, rows: int) -> PartFile:
        return cls(file.relative_to(root).as_posix(), rows, file.stat().st_size, file_crc32(file))


def footer_metadata(path: str | Path) -> pq.FileMetaData:
    """A parquet part's footer; an unreadable one is a one-line error naming the file."""
    try:
        return pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"{path} is damaged: cannot read its parquet footer ({err})") from None


def file_crc32(path: Path) -> str:
    """crc32 of a whole file (zlib's, ~4 GB/s from the page cache): detects damage, not tampering."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


@dataclass
class DatasetManifest:
    kind: str  # criteo | synth | movielens | taobao
    inputs: list[InputFile]
    options: dict[str, Any]  # CLI flag -> value, for every setting that changes the output
    parts: list[PartFile] = field(default_factory=list)
    complete: bool = False
    version: int = MANIFEST_VERSION

    def fingerprint(self) -> str:
        """A stable identity of the dataset's content: kind, options, inputs (name, size, sample
        hash) and parts (path, rows, bytes, crc32). Input paths and mtimes are left out, so the
        same data prepared elsewhere, or a copied dataset, keeps its fingerprint."""
        content = {
            "version": self.version,
            "kind": self.kind,
            "options": self.options,
            "inputs": [[Path(i.path).name, i.size, i.sample_hash] for i in self.inputs],
            "parts": [[p.path, p.rows, p.bytes, p.crc32] for p in sorted(self.parts, key=lambda p: p.path)],
        }
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()

    def rows(self) -> dict[str, int]:
        """Split -> rows, summed over the parts."""
        out: dict[str, int] = {}
        for part in self.parts:
            split = part.path.split("/")[0]
            out[split] = out.get(split, 0) + part.rows
        return out

    def save(self, directory: str | Path) -> None:
        record = {"fingerprint": self.fingerprint() if self.complete else None, **asdict(self)}
        path = Path(directory) / MANIFEST_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, directory: str | Path) -> DatasetManifest | None:
        """The directory's manifest, or None when it has none (a dataset prepared before manifests)."""
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            manifest = cls(
                kind=raw["kind"],
                inputs=[InputFile(**i) for i in raw["inputs"]],
                options=dict(raw["options"]),
                parts=[PartFile(**p) for p in raw["parts"]],
                complete=bool(raw["complete"]),
                version=int(raw["version"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"{path}: not a terarec manifest ({err})") from None
        if manifest.complete and raw.get("fingerprint") != manifest.fingerprint():
            raise DatasetError(f"{path} was edited or damaged: its fingerprint does not match its content")
        return manifest

    def first_difference(self, other: DatasetManifest) -> str | None:
        """The first way ``other`` (a new request) differs from this manifest's inputs and options."""
        if self.version != other.version:
            return f"manifest version was {self.version}, now {other.version}"
        before, now = [i.path for i in self.inputs], [i.path for i in other.inputs]
        if before != now:
            return f"inputs were {' '.join(before) or 'none'}, now {' '.join(now) or 'none'}"
        for old, new in zip(self.inputs, other.inputs):
            if old.size != new.size:
                return f"input {new.path} changed: {old.size} bytes when prepared, now {new.size}"
            if old.sample_hash != new.sample_hash:
                return f"input {new.path} changed: its content differs from when it was prepared"
            if old.mtime_ns != new.mtime_ns:
                return f"input {new.path} changed: it was modified after the dataset was prepared"
        for key in [*other.options, *(k for k in self.options if k not in other.options)]:
            if self.options.get(key) != other.options.get(key):
                return f"{key} was {_show(self.options.get(key))}, now {_show(other.options.get(key))}"
        return None

    def verify(self, directory: str | Path, full: bool = False) -> None:
        """Raise a one-line DatasetError naming the first missing, extra or damaged part: present,
        no unlisted ``part-*`` file, sizes, parquet footer row counts; ``full``: crc32 of every byte."""
        root = Path(directory)
        if not self.complete:
            raise DatasetError(
                f"{root}: the build did not finish ({MANIFEST_FILE} marks it unfinished); "
                "re-run the same prepare/synth command to finish it"
            )
        listed = {p.path for p in self.parts}
        for extra in sorted(p for p in root.glob("*/part-*.parquet") if p.relative_to(root).as_posix() not in listed):
            raise DatasetError(f"{extra} is not part of the dataset ({MANIFEST_FILE} does not list it): remove it")
        for part in self.parts:
            _check_part(root / part.path, part, full)


def _check_part(file: Path, part: PartFile, full: bool) -> None:
    if not file.is_file():
        raise DatasetError(f"{file} is missing: the dataset lists it ({part.rows} rows); re-run the prepare command")
    size = file.stat().st_size
    if size != part.bytes:
        raise DatasetError(f"{file} is damaged or was replaced: {size} bytes, the manifest says {part.bytes}")
    rows = footer_metadata(file).num_rows
    if rows != part.rows:
        raise DatasetError(f"{file} is damaged or was replaced: {rows} rows, the manifest says {part.rows}")
    if full and (crc := file_crc32(file)) != part.crc32:
        raise DatasetError(f"{file} is damaged: crc32 {crc}, the manifest says {part.crc32}")


def _show(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "none"
    return str(value)


def check_dataset(directory: str | Path, schema: DatasetSchema) -> None:
    """Before a dataset is read: its parts are the ones its manifest lists, and schema.json agrees.
    A dataset prepared before manifests loads with a one-time warning."""
    manifest = DatasetManifest.load(directory)
    if manifest is None:
        key = str(Path(directory).resolve())
        if key not in _WARNED:
            _WARNED.add(key)
            print(
                f"terarec: warning: {directory} has no {MANIFEST_FILE} (prepared before manifests): its parquet "
                "parts are not checked; re-prepare it (with --overwrite) to enable the checks",
                file=sys.stderr,
            )
        return
    manifest.verify(directory)
    expected = {split: rows for split, rows in schema.split_rows.items() if rows}
    if manifest.rows() != expected:
        raise DatasetError(
            f"{Path(directory) / 'schema.json'} says rows {expected}, but the parts listed in "
            f"{MANIFEST_FILE} hold {manifest.rows()}; re-prepare the dataset"
        )


def dataset_fingerprint(directory: str | Path) -> str | None:
    """The fingerprint of a complete dataset (None for one prepared before manifests), for run
    directories, sweeps and comparisons to record which data they used."""
    manifest = DatasetManifest.load(directory)
    if manifest is not None and not manifest.complete:
        raise DatasetError(f"{directory}: the build did not finish; re-run the same prepare/synth command")
    return manifest.fingerprint() if manifest is not None else None


# -- claiming an output directory -------------------------------------------------------------


@dataclass
class Build:
    """A dataset being written: into ``target`` itself, or beside it (``--overwrite``)."""

    target: Path  # the directory the user named
    directory: Path  # where this build writes
    request: DatasetManifest  # inputs and options of this build (no parts yet)
    up_to_date: bool = False  # ``target`` is complete, intact and built from the same request

    def clear_parts(self) -> None:
        """Remove the parts an unfinished earlier attempt left (for producers that start over)."""
        for stale in [*self.directory.glob("*/part-*.parquet"), *self.directory.glob("*/part-*.parquet.tmp")]:
            stale.unlink()

    def commit(self, parts: list[PartFile]) -> DatasetManifest:
        """Write the complete manifest (the last file of a dataset) and, with ``--overwrite``,
        swap the new dataset in for the old one."""
        manifest = replace(self.request, parts=sorted(parts, key=lambda p: p.path), complete=True)
        manifest.save(self.directory)
        if self.directory != self.target:
            _swap_in(self.directory, self.target)
        return manifest


@contextmanager
def start_build(target: str | Path, request: DatasetManifest, overwrite: bool = False) -> Iterator[Build]:
    """Claim ``target`` for ``request``; see the module docstring for the rules. A failed
    ``--overwrite`` build is removed and leaves the old dataset as it was."""
    out = Path(target)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file, not a dataset directory")
    if not overwrite:
        yield _claim_in_place(out, request)
        return
    out = out.resolve()  # a name to put the new dataset beside, even for "." or a symlink
    build = Build(out, out.with_name(f"{out.name}.tmp-{os.getpid()}"), request)
    if build.directory.exists():  # left by a killed run whose pid this process now has
        shutil.rmtree(build.directory)
    build.directory.mkdir(parents=True)
    request.save(build.directory)
    try:
        yield build
    except BaseException:
        shutil.rmtree(build.directory, ignore_errors=True)
        raise
    if build.directory.exists():  # the producer returned without committing
        shutil.rmtree(build.directory, ignore_errors=True)


def _claim_in_place(out: Path, request: DatasetManifest) -> Build:
    previous = DatasetManifest.load(out)
    if previous is None:
        if out.exists() and any(out.iterdir()):
            raise DatasetError(
                f"{out} is not empty and has no {MANIFEST_FILE}: it may hold another dataset; "
                "use --overwrite to replace it, or choose an empty directory"
            )
    elif previous.kind != request.kind:
        raise DatasetError(f"{out} holds a {previous.kind} dataset, not {request.kind}; use --overwrite to replace it")
    else:
        difference = previous.first_difference(request)
        if previous.complete and difference:
            raise DatasetError(f"{out} was prepared differently: {difference}; use --overwrite to rebuild it")
        if previous.complete and _intact(out):
            return Build(out, out, request, up_to_date=True)
        if difference:  # an unfinished build is no dataset yet: continue it with the new settings
            print(f"prepare: {out} holds an unfinished build ({difference}); continuing with the new settings")
    out.mkdir(parents=True, exist_ok=True)
    request.save(out)  # unfinished from here on: nothing may load it until commit()
    return Build(out, out, request)


def _intact(directory: Path) -> bool:
    """Loadable as it is: schema.json present, parts as listed, row counts agreeing."""
    try:
        DatasetSchema.load(directory)
    except DatasetError as err:
        print(f"prepare: rebuilding {directory}, as {err}")
        return False
    return True


def _swap_in(new: Path, target: Path) -> None:
    """Rename the old dataset away, the new one in, then delete the old one."""
    old = target.with_name(f"{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    if old.exists():
        shutil.rmtree(old)
