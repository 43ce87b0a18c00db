"""Criteo column layout and the published cardinalities used by ``synth``, the recipes and
``terarec models`` (the reference schema)."""

from __future__ import annotations

from terarec.data_pipeline.schema import DatasetSchema, SparseFeature

NUM_DENSE = 13
NUM_SPARSE = 26
LABEL = "label"
DENSE_NAMES = [f"int_{i}" for i in range(NUM_DENSE)]
SPARSE_NAMES = [f"cat_{i}" for i in range(NUM_SPARSE)]

# Criteo 1TB Click Logs, per-feature vocabulary sizes after MLPerf DLRMv2's cap of 40M
# (`--max-ind-range=40000000`, torchrec examples/golden_training & MLPerf reference).
CRITEO_1TB_CARDINALITIES = [
    40000000,
    39060,
    17295,
    7424,
    20265,
    3,
    7122,
    1543,
    63,
    40000000,
    3067956,
    405282,
    10,
    2209,
    11938,
    155,
    4,
    976,
    14,
    40000000,
    40000000,
    40000000,
    590152,
    12973,
    108,
    36,
]
# Criteo Kaggle Display Advertising Challenge (train.txt), per-feature distinct values.
CRITEO_KAGGLE_CARDINALITIES = [
    1460,
    583,
    10131227,
    2202608,
    305,
    24,
    12517,
    633,
    3,
    93145,
    5683,
    8351593,
    3194,
    27,
    14992,
    5461306,
    10,
    5652,
    2173,
    4,
    7046547,
    18,
    15,
    286181,
    105,
    142572,
]
# MLPerf DLRMv2 (DCNv2) multi-hot bag sizes per sparse feature (synthetic multi-hot Criteo 1TB).
MLPERF_MULTI_HOT_SIZES = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]

PRESETS = {"criteo-1tb": CRITEO_1TB_CARDINALITIES, "criteo-kaggle": CRITEO_KAGGLE_CARDINALITIES}
CRITEO_1TB_DAYS = 24  # day_0 .. day_23: ``synth --format tsv``'s default number of day files

# The data commands' choices, here so that ``terarec --help`` needs no numpy/pyarrow import to list them.
SYNTH_LABEL_MODES = ("planted", "testbed")  # synth's planted logistic model, or the testbed teacher
MULTIHOT_PRESETS = ("mlperf",)  # prepare multihot's presets (their sizes: multihot.PRESETS)
MULTIHOT_DISTRIBUTIONS = ("uniform", "pareto")  # the reference's two draws of the synthetic ids


def criteo_1tb_reference_schema() -> DatasetSchema:
    """The Criteo 1TB layout without its data: 13 dense, 26 sparse features with MLPerf-capped
    cardinalities. ``terarec models`` sizes every bag model on it."""
    return DatasetSchema(
        dense=list(DENSE_NAMES),
        sparse=[SparseFeature(name, c) for name, c in zip(SPARSE_NAMES, CRITEO_1TB_CARDINALITIES)],
        source="Criteo 1TB Click Logs (reference sizes, no data)",
    )
