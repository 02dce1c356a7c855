"""Impacts of mining on places: mined area per zone (territories, protected areas, admin units) and
distance from airstrips to mining. Pure geometry/table functions; files are read and written by the
CLI edge through :mod:`minewatch.postprocess.io`."""
