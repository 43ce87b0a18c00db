"""``terarec prepare movielens|taobao``: public event logs -> BST sequence datasets.

Labels (also in the README):
- MovieLens: a rating event is positive when the rating is >= 4 ("liked"), else negative. The
  history is the movies the user liked before (``liked_history=False``: every movie rated before).
- Taobao UserBehavior: every event is a row; positive when the behaviour is ``cart``, ``fav`` or
  ``buy`` (more than a page view), negative for ``pv``. The history is the user's earlier events.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from terarec.data_pipeline.manifest import Build, DatasetManifest, InputFile, PartFile, start_build
from terarec.data_pipeline.schema import DatasetError, DatasetSchema, SequenceFeature, SparseFeature
from terarec.data_pipeline.sequences import (
    HISTORY_PARTS,
    HISTORY_PREFIX,
    TIME_GAP_BUCKETS,
    Events,
    SequenceDatasetWriter,
    SequenceOptions,
    TimeCutoff,
    reindex,
)

MOVIELENS_LABEL = "rating >= 4 (liked) = 1, else 0; history: the movies the user liked (rated >= 4) earlier"
TAOBAO_LABEL = "behavior in {cart, fav, buy} = 1, pv = 0; history: the user's earlier events"
DEFAULT_OPTIONS = SequenceOptions()  # 50-item histories, the last 20% of time to eval, no valid split
TAOBAO_BEHAVIORS = {"pv": 0, "cart": 1, "fav": 1, "buy": 1}
AGE_BUCKETS = np.array([18, 25, 35, 45, 50, 56])  # MovieLens-1M's age groups
# the full UserBehavior file's vocabularies (988k users, 4.16M items, 9.4k categories)
TAOBAO_VOCABULARY_SIZES = {"user": 987_995, "item": 4_162_025, "category": 9_440}


def _read_table(
    path: Path, names: list[str], delimiter: str, types: dict[str, pa.DataType], encoding: str = "utf8"
) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"{path} not found")
    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, encoding=encoding),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(types)),
        )
    except pa.ArrowInvalid as err:
        raise DatasetError(f"{path}: {err}") from None


def _movielens_events(folder: Path, liked_history: bool) -> tuple[Events, dict[str, int]]:
    ratings = _read_table(
        folder / "u.data",
        ["user", "item", "rating", "time"],
        "\t",
        {"user": pa.int64(), "item": pa.int64(), "rating": pa.int64(), "time": pa.int64()},
    )
    users = _read_table(
        folder / "u.user",
        ["user", "age", "gender", "occupation", "zip"],
        "|",
        {"user": pa.int64(), "age": pa.int64(), "gender": pa.string(), "occupation": pa.string(), "zip": pa.string()},
    )
    genre_names = [f"g{i}" for i in range(19)]
    items = _read_table(
        folder / "u.item",
        ["item", "title", "release", "video", "url", *genre_names],
        "|",
        {"item": pa.int64(), "release": pa.string(), **{g: pa.int8() for g in genre_names}},
        encoding="latin-1",
    )
    order = np.lexsort((ratings["time"].to_numpy(), ratings["user"].to_numpy()))
    r = {name: ratings[name].to_numpy()[order] for name in ("user", "item", "rating", "time")}
    # per item: the first listed genre is its category (0: none); the release year is a dense feature
    genres = np.stack([items[g].to_numpy(zero_copy_only=False) for g in genre_names], axis=1)
    item_genre = np.where(genres.any(axis=1), genres.argmax(axis=1) + 1, 0)
    releases = items["release"].to_pylist()  # "01-Jan-1995"; empty for a few titles
    item_year = np.array([float(d[-4:]) if d and d[-4:].isdigit() else np.nan for d in releases])
    item_pos = _lookup(items["item"].to_numpy(), r["item"], "u.item", "item")
    user_pos = _lookup(users["user"].to_numpy(), r["user"], "u.user", "user")
    context_raw = {
        "gender": users["gender"].to_numpy(zero_copy_only=False)[user_pos],
        "occupation": users["occupation"].to_numpy(zero_copy_only=False)[user_pos],
        "zip_prefix": np.array([z[:1] for z in users["zip"].to_numpy(zero_copy_only=False)], dtype=object)[user_pos],
    }
    ages = users["age"].to_numpy()[user_pos]
    vocab: dict[str, int] = {}
    context = {}
    for name, raw in {**context_raw, "age_group": np.searchsorted(AGE_BUCKETS, ages, side="right")}.items():
        context[name], vocab[name] = reindex(raw.astype(str) if raw.dtype == object else raw)
    user, vocab["user"] = reindex(r["user"])
    item, vocab["item"] = reindex(r["item"])
    vocab["category"] = len(genre_names) + 1  # the genres and "none"
    events = Events(
        user=user,
        item=item,
        category=item_genre[item_pos].astype(np.int64),
        time=r["time"],
        label=(r["rating"] >= 4).astype(np.int8),
        context=context,
        dense={"age": ages.astype(np.float32), "release_year": item_year[item_pos].astype(np.float32)},
        history_eligible=(r["rating"] >= 4) if liked_history else None,
    )
    return events, vocab


def _lookup(keys: np.ndarray, values: np.ndarray, file: str, what: str) -> np.ndarray:
    order = np.argsort(keys)
    pos = np.clip(np.searchsorted(keys, values, sorter=order), 0, len(keys) - 1)
    found = keys[order[pos]] == values
    if not found.all():
        raise DatasetError(f"{file} has no {what} {values[~found][0]} (used by u.data)")
    return order[pos]


def _existing(build: Build, output: str) -> DatasetSchema | None:
    """The finished dataset when ``output`` already holds this very build; else clear leftovers."""
    if build.up_to_date:
        print(f"prepare: {output} is already prepared from these inputs and options; nothing to do")
        return DatasetSchema.load(output)
    build.clear_parts()  # not resumable: an unfinished attempt starts over
    return None


def prepare_movielens(
    folder: str, output: str, options: SequenceOptions = DEFAULT_OPTIONS, liked_history: bool = True
) -> DatasetSchema:
    """MovieLens-100K folder (``u.data``, ``u.item``, ``u.user``) -> sequence dataset in ``output``.

    Read whole (MovieLens fits in memory up to ML-25M); ``options.progress`` is accepted for symmetry.
    """
    inputs = [InputFile.of(Path(folder) / name) for name in ("u.data", "u.item", "u.user")]
    manifest = DatasetManifest("movielens", inputs, {**options.manifest_options(), "liked history": liked_history})
    max_history, command = options.max_history, options.command
    with start_build(output, manifest, options.overwrite) as build:
        if (existing := _existing(build, output)) is not None:
            return existing
        events, vocab = _movielens_events(Path(folder), liked_history)
        cutoff = TimeCutoff()
        cutoff.add(events.time)
        eval_cut, valid_cut = cutoff.cutoffs(options)
        writer = SequenceDatasetWriter(build.directory, eval_cut, max_history, valid_cut)
        writer.write(events)
        schema = writer.finish(vocab, events.dense, events.context, f"MovieLens ({folder})", command, MOVIELENS_LABEL)
        build.commit(writer.parts)
    return schema


# -- Taobao: streamed twice (vocabularies + time cutoff, then rows), bounded by vocabulary size -----

_TAOBAO_TYPES = {
    "user": pa.int64(),
    "item": pa.int64(),
    "category": pa.int64(),
    "behavior": pa.string(),
    "time": pa.int64(),
}


def _taobao_blocks(path: Path) -> Iterator[pa.RecordBatch]:
    if not path.is_file():
        raise DatasetError(f"{path} not found")
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=list(_TAOBAO_TYPES), block_size=16 << 20),
            convert_options=pacsv.ConvertOptions(column_types=_TAOBAO_TYPES),
        )
        for batch in reader:
            if batch.num_rows:
                yield batch
    except pa.ArrowInvalid as err:
        raise DatasetError(f"{path}: {err}") from None


def _behavior_labels(column: pa.Array, path: Path) -> np.ndarray:
    names = np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)
    labels = np.array([TAOBAO_BEHAVIORS.get(name, -1) for name in names], np.int8)
    if (labels < 0).any():
        raise DatasetError(f"{path}: unknown behavior '{names[labels < 0][0]}' (expected pv, cart, fav or buy)")
    return labels


def prepare_taobao(csv: str, output: str, options: SequenceOptions = DEFAULT_OPTIONS) -> DatasetSchema:
    """Taobao UserBehavior CSV (grouped by user, as published) -> sequence dataset in ``output``."""
    manifest = DatasetManifest("taobao", [InputFile.of(csv)], options.manifest_options())
    with start_build(output, manifest, options.overwrite) as build:
        if (existing := _existing(build, output)) is not None:
            return existing
        schema, parts = _write_taobao(Path(csv), build.directory, options)
        build.commit(parts)
    return schema


def _write_taobao(path: Path, output: Path, options: SequenceOptions) -> tuple[DatasetSchema, list[PartFile]]:
    max_history, command, progress = options.max_history, options.command, options.progress
    cutoff, vocab = (
        TimeCutoff(),
        {"user": np.zeros(0, np.int64), "item": np.zeros(0, np.int64), "category": np.zeros(0, np.int64)},
    )
    for batch in _taobao_blocks(path):  # pass 1: vocabularies and the time histogram
        cutoff.add(batch.column("time").to_numpy())
        for name in vocab:
            vocab[name] = np.union1d(vocab[name], batch.column(name).to_numpy())
    eval_cut, valid_cut = cutoff.cutoffs(options)
    writer = SequenceDatasetWriter(output, eval_cut, max_history, valid_cut)
    finished = np.zeros(len(vocab["user"]) + 1, bool)
    carry: pa.Table | None = None
    with tqdm(total=int(cutoff.counts.sum()), unit="row", unit_scale=True, desc="taobao", disable=not progress) as bar:
        for batch in _taobao_blocks(path):  # pass 2: complete users -> rows
            bar.update(batch.num_rows)
            table = (
                pa.Table.from_batches([batch])
                if carry is None
                else pa.concat_tables([carry, pa.Table.from_batches([batch])])
            )
            users = table.column("user").to_numpy()
            last = users[-1]  # the block's last user may continue in the next block
            carry = table.filter(pa.array(users == last))
            _write_taobao_users(table.filter(pa.array(users != last)), vocab, finished, writer, path)
        if carry is not None:
            _write_taobao_users(carry, vocab, finished, writer, path)
    sizes = {name: len(values) + 1 for name, values in vocab.items()}
    schema = writer.finish(sizes, [], [], f"Taobao UserBehavior ({path})", command, TAOBAO_LABEL)
    return schema, writer.parts


def _write_taobao_users(
    table: pa.Table, vocab: dict[str, np.ndarray], finished: np.ndarray, writer: SequenceDatasetWriter, path: Path
) -> None:
    if table.num_rows == 0:
        return
    cols = {name: table.column(name).to_numpy() for name in ("user", "item", "category", "time")}
    ids = {name: np.searchsorted(vocab[name], cols[name]) + 1 for name in vocab}
    seen_before = finished[ids["user"]]
    if seen_before.any():
        raise DatasetError(
            f"{path}: user {cols['user'][seen_before][0]} appears in two separate places; the file must be "
            "grouped by user (sort it: sort -t, -k1,1n -s)"
        )
    finished[ids["user"]] = True
    order = np.lexsort((cols["time"], ids["user"]))
    labels = _behavior_labels(table.column("behavior"), path)
    writer.write(
        Events(
            user=ids["user"][order],
            item=ids["item"][order],
            category=ids["category"][order],
            time=cols["time"][order],
            label=labels[order],
            context={},
            dense={},
        )
    )


def taobao_reference_schema(max_history: int = 50) -> DatasetSchema:
    """The layout of the full Taobao UserBehavior dataset without its data (its vocabulary sizes,
    ``max_history``-item histories). ``terarec models`` sizes every sequence model on it."""
    sizes = {**TAOBAO_VOCABULARY_SIZES, "time_gap": TIME_GAP_BUCKETS}
    return DatasetSchema(
        dense=[],
        sparse=[SparseFeature(name, size) for name, size in sizes.items()],
        sequence=[SequenceFeature(HISTORY_PREFIX + part, part, max_history) for part in HISTORY_PARTS],
        source="Taobao UserBehavior (reference sizes, no data)",
    )
