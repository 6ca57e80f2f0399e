"""Index build throughput with every method's descriptors, against the raw SE-CBIR model passes.

Issue 18's target: an index build that computes every method's descriptors keeps >= 80 % of the
throughput of the raw batched SE-CBIR passes (3-channel forward + backward to the input, and the
4-channel forward) measured in the same run, on the same images. The build's side is what a
chunk of ``retrieval.services.index`` does besides the database: read the library JPEGs from
disk (``loaders.load_rgb``), ``DescriptorEncoder.encode`` with every descriptor (SE-CBIR, the
3-channel features, style, lesion masks, the contrastive and triplet embeddings), the saliency
maps to uint8 and their overlays rendered to PNG, and the chunk saved with ``np.savez``.

Beside it, the raw passes of every network the build runs (the SE-CBIR passes, one forward pass of
each embedding network, the masks of already resized images): what a build costs beyond its
networks. Each descriptor's share is its marginal cost: the time of the build with it minus the time
without it, timed in the same interleaved rounds (so load on the machine moves every figure
alike). Models start from ImageNet weights (the speed does not depend on training); the
segmenter is the classical one unless ``--learned-masks`` (an untrained SmallUNet, the learned
segmenter's cost).

    .venv/bin/python bench/index_build.py [--config secbir-lite0-fast] [--images 64] [--batch 16]
                                          [--repeats 5] [--threads 2] [--learned-masks]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lesionsearch.settings")

import django  # noqa: E402

django.setup()  # retrieval.loaders (the build's image reader) sits beside the ORM

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.query_pipeline import median_times  # noqa: E402 - interleaved rounds
from retrieval import loaders  # noqa: E402
from retrieval import methods as m  # noqa: E402
from retrieval.classes import CODES  # noqa: E402
from retrieval.ml.configs import get_config  # noqa: E402
from retrieval.ml.descriptors import DescriptorEncoder  # noqa: E402
from retrieval.ml.embedding import EmbeddingNet  # noqa: E402
from retrieval.ml.features import SECBIREncoder, normalise, resize_rgb, with_saliency  # noqa: E402
from retrieval.ml.measures import StyleExtractor, StyleProjection  # noqa: E402
from retrieval.ml.network import build_model, widen_to_saliency  # noqa: E402
from retrieval.ml.overlay import render_overlay, to_uint8  # noqa: E402
from retrieval.ml.saliency import frozen  # noqa: E402
from retrieval.ml.segmentation import Segmenter, SmallUNet  # noqa: E402

TARGET = 0.80
EXTRAS = (m.CNN3, m.STYLE, m.MASK, m.CONTRASTIVE, m.TRIPLET)  # beside SE-CBIR, in the build's order
STYLE_COMPONENTS = 64  # the projection's size barely moves the cost; a small sample fits it


def library_files(folder: Path, count: int) -> list[Path]:
    """``count`` synthetic library JPEGs (600x450, as the demo's), written once to ``folder``."""
    from retrieval import synthetic

    paths = []
    for index in range(count):
        dx = CODES[index % len(CODES)]
        lesion = synthetic.make_lesion(dx, f"BENCH_{index}", seed=index)
        image, _ = synthetic.render(lesion, synthetic.make_shot(lesion, f"IMG_{index}", seed=index))
        path = folder / f"IMG_{index}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def encoder_for(config_name: str, learned_masks: bool, sample: list[np.ndarray]) -> DescriptorEncoder:
    config = get_config(config_name)
    model3 = build_model(config)
    secbir = SECBIREncoder(model3, widen_to_saliency(model3))
    style = StyleExtractor(secbir.model3)
    x = normalise(np.stack([resize_rgb_array(image, config.input_size) for image in sample]), config)
    projection = StyleProjection.fit(style.extract(x), components=min(STYLE_COMPONENTS, len(sample) - 1))
    segmenter = Segmenter("learned (untrained)", SmallUNet().eval()) if learned_masks else Segmenter.classical()
    embeddings = {name: EmbeddingNet(config, backbone_from=model3) for name in (m.CONTRASTIVE, m.TRIPLET)}
    return DescriptorEncoder(secbir, style_extractor=style, style_projection=projection, segmenter=segmenter,
                             embeddings=embeddings)


def resize_rgb_array(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return resize_rgb(Image.fromarray(image), size)


def build_chunks(encoder: DescriptorEncoder, paths: list[Path], batch: int, needs: set[str]):
    """What a build's chunks do besides the database, over ``paths`` in batches of ``batch``."""
    def run() -> None:
        labels = np.arange(len(paths)) % len(CODES)
        for start in range(0, len(paths), batch):
            images = [loaders.load_rgb(str(p)) for p in paths[start:start + batch]]
            encoded = encoder.encode(images, labels[start:start + batch], needs=needs)
            saliency = to_uint8(encoded.secbir.saliency)
            for heat in saliency:
                render_overlay(heat, (600, 450))
            np.savez(io.BytesIO(), saliency=saliency, **encoded.descriptors)

    return run


def raw_passes(encoder: DescriptorEncoder, paths: list[Path], batch: int):
    """The raw batched SE-CBIR passes over the same images, already decoded and resized."""
    secbir = encoder.encoder
    size = secbir.config.input_size
    inputs = [normalise(np.stack([resize_rgb_array(loaders.load_rgb(str(p)), size) for p in paths[s:s + batch]]),
                        secbir.config) for s in range(0, len(paths), batch)]

    def run() -> None:
        for x in inputs:
            with frozen(secbir.model3):
                inp = x.detach().requires_grad_(True)
                logits = secbir.model3(inp)
                (grad,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), inp)
            saliency = grad.abs().amax(dim=1)
            with torch.no_grad():
                secbir.model4.pooled(with_saliency(x, saliency / saliency.amax()))

    return run


def raw_every_model(encoder: DescriptorEncoder, paths: list[Path], batch: int):
    """The raw passes of every network a full build runs: the SE-CBIR passes, one forward pass of
    each embedding network, and the lesion masks of the already resized images."""
    from retrieval.ml.descriptors import SEGMENTATION_INPUT

    secbir_passes = raw_passes(encoder, paths, batch)
    config = encoder.encoder.config
    images = [[loaders.load_rgb(str(p)) for p in paths[s:s + batch]] for s in range(0, len(paths), batch)]
    inputs = [normalise(np.stack([resize_rgb_array(image, config.input_size) for image in group]), config)
              for group in images]
    mask_inputs = [np.stack([resize_rgb_array(image, SEGMENTATION_INPUT) for image in group]) for group in images]

    def run() -> None:
        secbir_passes()
        with torch.no_grad():
            for x in inputs:
                for net in encoder.embeddings.values():
                    net.pooled(x)
        for group in mask_inputs:
            encoder.segmenter.masks(group)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="secbir-lite0-fast", help="model config (the demo's by default)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--learned-masks", action="store_true", help="an untrained SmallUNet, not the classical masks")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        paths = library_files(Path(tmp), args.images)
        encoder = encoder_for(args.config, args.learned_masks, [loaders.load_rgb(str(p)) for p in paths[:24]])
        every = {m.SECBIR, *EXTRAS}
        fns = {"raw": raw_passes(encoder, paths, args.batch),
               "raw every model": raw_every_model(encoder, paths, args.batch),
               "all": build_chunks(encoder, paths, args.batch, every),
               **{f"without {name}": build_chunks(encoder, paths, args.batch, every - {name}) for name in EXTRAS}}
        times = median_times(fns, args.repeats, warmup=1)
    total = times["all"]
    shares = {name: (total - times[f"without {name}"]) / total for name in EXTRAS}
    results = {
        "config": args.config, "images": args.images, "batch": args.batch, "threads": args.threads,
        "masks": "learned (untrained SmallUNet)" if args.learned_masks else "classical",
        "raw_images_per_s": args.images / times["raw"], "build_images_per_s": args.images / total,
        "fraction_of_raw": times["raw"] / total, "shares": shares,
        "raw_every_model_images_per_s": args.images / times["raw every model"],
        "fraction_of_raw_every_model": times["raw every model"] / total,
        "rest_share": 1 - sum(shares.values()),
    }
    print(f"{args.config} @ {get_config(args.config).input_size} px, {args.images} images in batches of "
          f"{args.batch}, {args.threads} threads, {results['masks']} masks")
    print(f"raw batched SE-CBIR passes: {results['raw_images_per_s']:.1f} img/s")
    print(f"index build, every descriptor: {results['build_images_per_s']:.1f} img/s = "
          f"{results['fraction_of_raw']:.0%} of raw (target >= {TARGET:.0%}): "
          f"{'met' if results['fraction_of_raw'] >= TARGET else 'NOT met'}")
    print(f"raw passes of every network the build runs (SE-CBIR, both embeddings, the masks): "
          f"{results['raw_every_model_images_per_s']:.1f} img/s; the build keeps "
          f"{results['fraction_of_raw_every_model']:.0%} of that")
    print("share of the build's time: " + ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
          + f"; SE-CBIR, image reading, overlays and saving {results['rest_share']:.0%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
