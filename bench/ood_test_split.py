"""How often the out-of-distribution warning fires on the test split, which nothing calibrated on.

The test split is neither in the index nor among the held-out images of the calibration, and the
models never trained on it: its images stand for new patients' dermoscopic images. Each is run
through the query path's own functions (encode as a query, search the index, the index's chosen
score and threshold: ``retrieval.services.ood.query_ood``), without storing queries. Prints the
share warned overall and per class.

    LESIONSEARCH_VAR_DIR=var/demo-ood .venv/bin/python bench/ood_test_split.py [--index ID]
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lesionsearch.settings")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402

from retrieval import loaders, runtime  # noqa: E402
from retrieval.classes import TEST  # noqa: E402
from retrieval.ml.descriptors import resize_rgb_array  # noqa: E402
from retrieval.models import Case, IndexVersion  # noqa: E402
from retrieval.services.ood import ood_depth, query_ood  # noqa: E402
from retrieval.services.queries import index_for_queries  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=int, help="IndexVersion id (default: the active index)")
    args = parser.parse_args()
    index = IndexVersion.objects.get(id=args.index) if args.index else index_for_queries()
    encoder = runtime.encoder_for(index.model_version)
    loaded = runtime.loaded_index(index)
    cases = list(Case.objects.filter(collection=index.collection, split=TEST).order_by("id"))
    size, depth = encoder.config.input_size, max(ood_depth(index), 1)
    warned, total, scores = Counter(), Counter(), []
    for start in range(0, len(cases), 16):
        chunk = cases[start:start + 16]
        encoded = encoder.encode(np.stack([resize_rgb_array(loaders.load_rgb(c.image.path), size) for c in chunk]))
        _, similar = loaded.search(encoded.features, depth)
        for case, sims, logits, features in zip(chunk, similar, encoded.logits, encoded.features):
            result = query_ood(index, similarities=sims, logits=logits, features=features)
            scores.append(result["score"])
            total[case.dx] += 1
            warned[case.dx] += bool(result["warned"])
    n, w = sum(total.values()), sum(warned.values())
    print(f"{index}: method {index.calibration.get('method')}, threshold {index.calibration.get('threshold'):.6g}")
    print(f"test split: {w} of {n} images warned ({w / n:.1%}); score median {np.median(scores):.4f}, "
          f"range {np.min(scores):.4f}-{np.max(scores):.4f}")
    print("per class: " + ", ".join(f"{dx} {warned[dx]}/{total[dx]}" for dx in sorted(total)))


if __name__ == "__main__":
    main()
