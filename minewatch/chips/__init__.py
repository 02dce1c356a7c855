"""Chip datasets: the one folder format every training and evaluation command reads."""

from minewatch.chips.dataset import ChipSet, load_chips, save_chips
from minewatch.chips.splits import geographic_mask, site_ids, split_by_site

__all__ = ["ChipSet", "load_chips", "save_chips", "site_ids", "split_by_site", "geographic_mask"]
