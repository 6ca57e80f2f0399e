"""The format of the out-of-distribution record an index stores (``IndexVersion.calibration``):
written by :mod:`retrieval.services.ood`, read by :mod:`retrieval.selectors` (so neither imports
the other for it)."""
from __future__ import annotations

#: The record's version; a record without it (or below) is a legacy one.
VERSION = 2
#: The method of indexes calibrated before the candidates existed: the best cosine similarity
#: against the 1st percentile of validation images' best similarities.
LEGACY = "legacy_best_cosine"
