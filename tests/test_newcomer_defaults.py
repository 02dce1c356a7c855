"""A newcomer's defaults (issue 17): levels follow the items' own metadata, account-free sources."""

from __future__ import annotations

import pytest

from minewatch.imagery.sources import declared_level


@pytest.mark.parametrize(
    ("item", "level"),
    [
        ({"id": "x", "properties": {"processing:level": "L1C"}}, "L1C"),
        ({"id": "x", "properties": {"s2:product_type": "S2MSI2A"}}, "L2A"),
        ({"id": "x", "properties": {}, "assets": {"SCL": {}, "B04": {}}}, "L2A"),  # only L2A products carry an SCL
        ({"id": "x", "collection": "sentinel-2-c1-l2a", "properties": {}}, "L2A"),
        ({"id": "S2B_MSIL1C_20240105T140049_N0510_R067_T21LYG", "properties": {}}, "L1C"),
        ({"id": "S2A_21LYG_20240101_0_L2A", "properties": {}}, "L2A"),
        ({"id": "scene-1", "properties": {}, "assets": {"B04": {}}}, None),
        ({"id": "MYL2ASCENE", "properties": {}}, None),  # a token inside a word is not a level
    ],
)
def test_declared_level_reads_the_items_own_metadata(item: dict, level: str | None) -> None:
    assert declared_level(item) == level
