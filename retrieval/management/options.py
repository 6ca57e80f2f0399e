"""Command-line options that more than one management command takes, defined once."""
from __future__ import annotations


def add_saliency_options(parser, *, saliency: str, ig_steps: str, ig_baseline: str) -> None:
    """--saliency vanilla|integrated, --ig-steps N and --ig-baseline black|grey, with each
    command's own help (what the option means for it, and its default)."""
    from retrieval.ml.saliency import BASELINES, SALIENCY_METHODS

    parser.add_argument("--saliency", choices=list(SALIENCY_METHODS), help=saliency)
    parser.add_argument("--ig-steps", type=int, help=ig_steps)
    parser.add_argument("--ig-baseline", choices=list(BASELINES), help=ig_baseline)
