"""minewatch: find artisanal gold mines in Sentinel-2 imagery on open infrastructure.

Stages (one module each): ``imagery`` → ``chips`` → ``models`` / ``train`` → ``detect`` →
``postprocess`` → ``impacts`` → ``webmap``; ``cli`` is the thin command-line edge.
Nothing heavy is imported here so that ``import minewatch`` stays fast.
"""

__version__ = "0.1.0"

from minewatch.errors import MinewatchError

__all__ = ["MinewatchError", "__version__"]
