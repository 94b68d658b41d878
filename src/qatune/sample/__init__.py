"""The sample dataset shipped with qatune (space exploration: Apollo, Voyager, Hubble).

`qatune train` with no data file trains on TRAIN and evaluates on DEV before and after.
See README.md in this folder for what it holds.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

TRAIN = Path(str(files(__name__) / "train.json"))
DEV = Path(str(files(__name__) / "dev.json"))
