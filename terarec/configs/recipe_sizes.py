"""Which recipe ``terarec compare`` runs for a model name: one table, by the dataset's size.

A model name (``dlrm``, ``dcnv2``, ``wukong``, ``bst``) maps to a recipe by the size class of the dataset,
read from the number of TRAIN rows in its manifest (``schema.json`` ``rows.train``):

| size class | train rows            | what the recipes are for                                         |
|---|---|---|
| ``small``  | < 200,000             | the Criteo 10k sample and toy data: the ``*_criteo10k`` recipes   |
| ``1m``     | 200,000 - 99,999,999  | ~1M-row data (``terarec synth --rows 1000000``): ``*_1m``          |
| ``1tb``    | >= 100,000,000        | Criteo 1TB (4.2e9 rows): the MLPerf DLRMv2 settings, ``*_criteo1tb``|

Within a size class the Criteo-style recipes (DLRM, DCNv2, Wukong) share the budget keys compare checks
(batch size, epochs), so a set of them is always comparable. BST does not: it keeps its dataset recipe
(``bst_movielens``) at every size, tied to the sequence dataset's features, not to its size, with its own
budget; compare's budget check names the difference when BST joins another model (set the keys for all
with overrides). A name that is not in the table is
taken as a recipe name or YAML and used as given (an explicit recipe always wins), and ``--recipe-size``
overrides the class read from the data.
"""

from __future__ import annotations

from terarec.configs.loader import ConfigError

SIZE_CLASSES = ("small", "1m", "1tb")
# the smallest number of train rows of each class but the first (small: anything below 200k)
SIZE_THRESHOLDS = {"1m": 200_000, "1tb": 100_000_000}
RECIPES_BY_SIZE: dict[str, dict[str, str]] = {
    "dlrm": {"small": "dlrm_criteo10k", "1m": "dlrm_1m", "1tb": "dlrm_criteo1tb"},
    "dcnv2": {"small": "dcnv2_criteo10k", "1m": "dcnv2_1m", "1tb": "dcnv2_mlperf"},
    "wukong": {"small": "wukong_criteo10k", "1m": "wukong_1m", "1tb": "wukong_criteo1tb"},
    "bst": {"small": "bst_movielens", "1m": "bst_movielens", "1tb": "bst_movielens"},
}


def size_class(train_rows: int) -> str:
    """The size class of a dataset with ``train_rows`` training rows (see the module doc's table)."""
    if train_rows >= SIZE_THRESHOLDS["1tb"]:
        return "1tb"
    return "1m" if train_rows >= SIZE_THRESHOLDS["1m"] else "small"


def pick_recipe(name: str, train_rows: int, forced_size: str | None = None) -> tuple[str, str]:
    """(recipe, why) for a model ``name`` on data with ``train_rows`` train rows; ``forced_size`` (one of
    ``SIZE_CLASSES``) replaces the class read from the rows. A name outside the table is its own recipe."""
    if forced_size is not None and forced_size not in SIZE_CLASSES:
        raise ConfigError(f"--recipe-size {forced_size}: one of {', '.join(SIZE_CLASSES)}")
    if name not in RECIPES_BY_SIZE:
        return name, "given"
    size = forced_size or size_class(train_rows)
    why = f"--recipe-size {size}" if forced_size else f"size {size}: {train_rows:,} train rows"
    return RECIPES_BY_SIZE[name][size], why
