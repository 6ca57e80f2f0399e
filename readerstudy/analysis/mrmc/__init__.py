"""Multi-reader multi-case (MRMC) analysis: plain NumPy/SciPy, no Django.

- ``data``: the ratings (``Rating``), the CSV reader and the design check (``Study``);
- ``fom``: figures of merit per treatment and reader, jackknife and DeLong covariance;
- ``analysis``: Obuchowski-Rockette with Hillis's degrees of freedom, and the DBM view;
- ``power``: readers x cases for a planned study from pilot variance components;
- ``formats``: iMRMC and MRMCaov/RJafroc long-format files (write and read back);
- ``report``: the Markdown text and figures.
"""
from readerstudy.analysis.mrmc.analysis import analyse
from readerstudy.analysis.mrmc.data import DesignRefused, Rating, RatingsInvalid, Study, parse_ratings

__all__ = ["DesignRefused", "Rating", "RatingsInvalid", "Study", "analyse", "parse_ratings"]
