"""``prepare movielens|taobao``: BST rows checked against a plain-Python recomputation of histories."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from terarec.cli import main
from terarec.data_pipeline.loader import BatchLoader, LoaderSpec
from terarec.data_pipeline.manifest import DatasetManifest
from terarec.data_pipeline.schema import DatasetError, DatasetSchema
from terarec.data_pipeline.sequence_sources import prepare_movielens, prepare_taobao
from terarec.data_pipeline.sequences import SequenceOptions, history_index, time_gap_bucket


def test_history_index_takes_the_last_eligible_events_of_the_same_user() -> None:
    user = np.array([1, 1, 1, 1, 2, 2, 2])
    offsets, gather = history_index(user, 2, np.array([1, 0, 1, 1, 0, 1, 1], bool))
    histories = [gather[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    assert histories == [[], [0], [0], [0, 2], [], [], [5]]
    offsets, gather = history_index(user, 2)
    assert [gather[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == [
        [],
        [0],
        [0, 1],
        [1, 2],
        [],
        [4],
        [4, 5],
    ]


def test_time_gap_buckets() -> None:
    assert time_gap_bucket(np.array([0, 59, 60, 3600, 86400, 10**12, 10**25], dtype=np.float64)).tolist() == [
        1,
        1,
        2,
        6,
        11,
        34,
        63,
    ]


def _rows(directory: Path) -> list[dict]:
    return pq.read_table(directory / "train").to_pylist() + pq.read_table(directory / "eval").to_pylist()


def test_movielens_rows_labels_split_and_histories(movielens_dir: Path, tmp_path: Path) -> None:
    schema = prepare_movielens(str(movielens_dir), str(tmp_path), SequenceOptions(max_history=5, eval_fraction=0.2))
    assert sum(schema.split_rows.values()) == 100_000 and abs(schema.split_rows["eval"] / 100_000 - 0.2) < 0.01
    assert schema.extra["positives"]["train"] + schema.extra["positives"]["eval"] == 55_375  # ratings >= 4
    cutoff = schema.extra["eval_cutoff_unix"]
    assert (
        max(pq.read_table(tmp_path / "train")["timestamp"].to_numpy())
        < cutoff
        <= min(pq.read_table(tmp_path / "eval")["timestamp"].to_numpy())
    )
    assert [s.name for s in schema.sequence] == ["hist_item", "hist_category", "hist_time_gap"]
    # recompute user 1's histories from u.data: the 5 most recent earlier ratings >= 4
    raw = sorted(
        (int(t), int(i), int(r))
        for u, i, r, t in (line.split("\t") for line in (movielens_dir / "u.data").read_text().splitlines())
        if u == "1"
    )
    rows = sorted(
        (r for r in _rows(tmp_path) if r["user"] == 1), key=lambda r: r["timestamp"]
    )  # user ids re-indexed: 1 -> 1
    assert len(rows) == len(raw) == 272
    item_ids = {}  # raw item -> re-indexed item, from the rows themselves
    for row, (_, item, _) in zip(rows, raw):
        item_ids.setdefault(item, row["item"])
    for k in (0, 1, 50, 271):
        liked_before = [item_ids[i] for t, i, r in raw[:k] if r >= 4][-5:]
        if len({t for t, _, _ in raw[: k + 1]}) == k + 1:  # order is ambiguous inside one second
            assert rows[k]["hist_item"] == liked_before
        assert rows[k]["label"] == int(raw[k][2] >= 4) and rows[k]["time_gap"] == 0
        assert len(rows[k]["hist_time_gap"]) == len(rows[k]["hist_item"]) == len(rows[k]["hist_category"])


def test_taobao_rows_labels_and_histories(taobao_csv: Path, tmp_path: Path) -> None:
    schema = prepare_taobao(str(taobao_csv), str(tmp_path), SequenceOptions(max_history=3))
    assert sum(schema.split_rows.values()) == 84_475
    assert sum(schema.extra["positives"].values()) == 1750 + 4497 + 2356  # buy + cart + fav
    events = defaultdict(list)
    for line in taobao_csv.read_text().splitlines():
        u, i, c, b, t = line.split(",")
        events[int(u)].append((int(t), int(i), b))
    rows = [r for r in _rows(tmp_path) if r["user"] == 1]  # the smallest raw user id is re-indexed to 1
    raw = sorted(events[min(events)])
    assert len(rows) == len(raw)
    by_time = sorted(rows, key=lambda r: r["timestamp"])
    gaps = [r["hist_time_gap"] for r in by_time]
    assert all(len(g) == min(k, 3) for k, g in enumerate(gaps)) and gaps[0] == []
    assert [r["label"] for r in by_time] == [int(b != "pv") for _, _, b in raw]


def test_taobao_input_must_be_grouped_by_user(tmp_path: Path) -> None:
    bad = tmp_path / "ub.csv"
    bad.write_text("1,10,5,pv,1511544070\n2,11,5,pv,1511544071\n1,12,5,buy,1511544072\n")
    prepare_taobao(
        str(bad), str(tmp_path / "ok"), SequenceOptions(eval_fraction=0.0, progress=False)
    )  # small: one block, sorted inside
    lines = [f"{u},{u * 10},5,pv,{1511544070 + k}" for k, u in enumerate([1] * 3 + [2] * 3)]
    big = tmp_path / "big.csv"
    big.write_text("\n".join(lines * 200_000 + ["1,10,5,pv,1511544070"]) + "\n")  # user 1 again after user 2
    with pytest.raises(DatasetError, match="grouped by user"):
        prepare_taobao(str(big), str(tmp_path / "out"), SequenceOptions(eval_fraction=0.0))


def test_taobao_unknown_behavior_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "ub.csv"
    bad.write_text("1,10,5,pv,1511544070\n1,11,5,click,1511544071\n")
    assert main(["prepare", "taobao", "--input", str(bad), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown behavior 'click'" in err[0]
    assert main(["prepare", "movielens", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")]) == 2


def test_loader_yields_capped_jagged_histories(movielens_dir: Path, tmp_path: Path) -> None:
    schema = prepare_movielens(str(movielens_dir), str(tmp_path), SequenceOptions(max_history=20))
    sizes = {f.name: f.cardinality for f in schema.sparse}
    spec = LoaderSpec(str(tmp_path), "eval", batch_size=512, table_sizes=sizes, shuffle_buffer=0, max_history=7)
    batch = next(iter(BatchLoader(spec, DatasetSchema.load(tmp_path))))
    kjt = batch.sparse_features
    assert kjt.keys()[-3:] == ["hist_item", "hist_category", "hist_time_gap"]
    lengths = kjt["hist_item"].lengths()
    assert int(lengths.max()) == 7 and torch_equal(lengths, kjt["hist_time_gap"].lengths())
    expected = pq.read_table(tmp_path / "eval").slice(0, 512)["hist_item"].to_pylist()
    first = kjt["hist_item"].values()[: int(lengths[0])].tolist()
    assert first == expected[0][-7:]  # the most recent 7


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_movielens_valid_is_the_time_window_just_before_eval(movielens_dir: Path, tmp_path: Path) -> None:
    """The cutoffs are hour boundaries, so the shares are about 0.1 and 0.2 (within 1% of 100,000 events);
    rows and histories are those of the two-way split, only re-assigned from train to valid."""
    three = prepare_movielens(
        str(movielens_dir), str(tmp_path / "three"), SequenceOptions(max_history=5, valid_fraction=0.1)
    )
    two = prepare_movielens(str(movielens_dir), str(tmp_path / "two"), SequenceOptions(max_history=5))
    rows = three.split_rows
    assert list(rows) == ["train", "valid", "eval"] and sum(rows.values()) == 100_000
    assert abs(rows["valid"] / 100_000 - 0.1) < 0.01 and rows["eval"] == two.split_rows["eval"]
    times = {s: pq.read_table(tmp_path / "three" / s)["timestamp"].to_numpy() for s in rows}
    valid_cut, eval_cut = three.extra["valid_cutoff_unix"], three.extra["eval_cutoff_unix"]
    assert times["train"].max() < valid_cut <= times["valid"].min() <= times["valid"].max() < eval_cut
    assert eval_cut == two.extra["eval_cutoff_unix"] <= times["eval"].min()
    key = ["user", "timestamp", "item"]
    before_eval = pa.concat_tables([pq.read_table(tmp_path / "three" / s) for s in ("train", "valid")])
    assert before_eval.sort_by([(k, "ascending") for k in key]).equals(
        pq.read_table(tmp_path / "two" / "train").sort_by([(k, "ascending") for k in key])
    )
    assert sum(three.extra["positives"].values()) == 55_375
    assert DatasetManifest.load(tmp_path / "three").options["--valid-fraction"] == 0.1
    assert "--valid-fraction" not in DatasetManifest.load(tmp_path / "two").options  # identity unchanged


def test_taobao_cli_valid_fraction(taobao_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    split = ["--eval-fraction", "0.2", "--valid-fraction", "0.3", "--max-history", "3"]
    assert main(["prepare", "taobao", "--input", str(taobao_csv), "--output", str(out), *split]) == 0
    schema = DatasetSchema.load(out)
    assert sum(schema.split_rows.values()) == 84_475 and schema.split_rows["valid"] > 0
    times = {s: pq.read_table(out / s)["timestamp"].to_numpy() for s in schema.split_rows}
    assert times["train"].max() < times["valid"].min() and times["valid"].max() < times["eval"].min()


@pytest.mark.parametrize("valid, eval_", [(-0.1, 0.2), (0.8, 0.2), (0.5, 0.5)])
def test_sequence_valid_fraction_is_checked(valid: float, eval_: float) -> None:
    with pytest.raises(DatasetError, match=r"--valid-fraction must be in \[0, 1 - eval fraction\)"):
        SequenceOptions(eval_fraction=eval_, valid_fraction=valid)
