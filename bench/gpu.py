"""SE-CBIR's thesis backbone on an accelerator: ``secbir-b4`` at 380 px, AMP on CUDA (issue 18).

Measures, in one run on one GPU (``bench/gpu.sh`` runs it within 8 minutes):

* query latency: one 600x450 image through the query pipeline (resize, saliency = forward +
  backward of the 3-channel model, 4-channel forward), batch 1, AMP, median of ``--repeats``
  (target < 60 ms); FP32 beside it, and how close AMP's features are to FP32's (cosine);
* index build: every image of the synthetic library (10015 by default, rendered first on the
  CPUs, not timed against the target) decoded, resized and encoded in batches with AMP
  (target: 10k images < 3 min), and the raw batched model passes' throughput in the same run;
* one training epoch of the thesis profile (3-channel stage, batch 32, SGD + ramp) on the same
  library split 80/20 by lesion, once with AMP and once in FP32: seconds, finite loss, and the
  validation metrics side by side (after one epoch from scratch both are near chance; "within
  noise" means the AMP run is not systematically worse, judged from the printed figures).

No B4 ImageNet weights exist offline, so the B4 model starts from random weights unless the
checkpoint cache provides them: speed is what it measures, not accuracy.

    python bench/gpu.py [--library 10015] [--dir /tmp/lesionsearch-gpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from retrieval.classes import CODES  # noqa: E402
from retrieval.ml.checkpoints import STAGE_3CH  # noqa: E402
from retrieval.ml.configs import get_config  # noqa: E402
from retrieval.ml.data import Item, load_resized  # noqa: E402
from bench.query_pipeline import raw_passes  # noqa: E402
from retrieval.ml.features import SECBIREncoder, normalise, resize_rgb  # noqa: E402
from retrieval.ml.network import build_model, widen_to_saliency  # noqa: E402
from retrieval.ml.profiles import get_profile  # noqa: E402
from retrieval.ml.train import train_stage  # noqa: E402
from retrieval.synthetic import read_rows, select_rows, write_library  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
METADATA = REPO / "retrieval" / "data" / "HAM10000_metadata.csv"
CONFIG = "secbir-b4"
QUERY_TARGET_S, INDEX_TARGET_S, INDEX_TARGET_IMAGES = 0.060, 180.0, 10_000


def synchronised(fn):
    def run():
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out
    return run


def amp(device: torch.device):
    """Autocast to FP16 on CUDA; a no-op elsewhere (``--device cpu`` only smoke-tests this script)."""
    return torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")


def median_seconds(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def library(folder: Path, size: int, workers: int) -> list[dict[str, str]]:
    rows = select_rows(read_rows(METADATA), size if size < 10015 else None, seed=0)
    started = time.perf_counter()
    write_library(rows, folder, seed=0, workers=workers)
    print(f"library: {len(rows)} synthetic images rendered in {time.perf_counter() - started:.0f} s "
          f"({workers} CPU workers; not part of any target)", flush=True)
    return rows


def image_path(folder: Path, row: dict[str, str]) -> Path:
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        path = folder / part / f"{row['image_id']}.jpg"
        if path.exists():
            return path
    raise FileNotFoundError(row["image_id"])


class Resized(Dataset):
    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return load_resized(str(self.paths[index]), self.size)


def bench_query(encoder: SECBIREncoder, image, repeats: int) -> dict:
    size = encoder.config.input_size

    def query():
        return encoder.encode(resize_rgb(image, size)[None])

    def query_amp():
        with amp(encoder.device):
            return encoder.encode(resize_rgb(image, size)[None])

    fp32_s, amp_s = median_seconds(synchronised(query), repeats), median_seconds(synchronised(query_amp), repeats)
    cosine = float((query().features * query_amp().features).sum())
    return {"query_fp32_s": fp32_s, "query_amp_s": amp_s, "query_amp_fp32_feature_cosine": cosine}


def bench_index(encoder: SECBIREncoder, paths: list[Path], batch: int, workers: int) -> dict:
    size = encoder.config.input_size
    loader = DataLoader(Resized(paths, size), batch_size=batch, num_workers=workers, pin_memory=encoder.device.type == "cuda",
                        collate_fn=lambda images: np.stack(images), persistent_workers=False)
    started, count = time.perf_counter(), 0
    for images in loader:
        with amp(encoder.device):
            encoded = encoder.encode(images)
        count += len(encoded.features)
    synchronised(lambda: None)()
    seconds = time.perf_counter() - started

    # The raw model passes on one batch already on the device, timed in the same run.
    x = normalise(np.stack([load_resized(str(p), size) for p in paths[:batch]]), encoder.config).to(encoder.device)
    forward_backward, forward4 = raw_passes(encoder, x)

    def raw():
        with amp(encoder.device):
            forward_backward()
            forward4()

    raw_s = median_seconds(synchronised(raw), 10, warmup=3)
    return {"index_images": count, "index_seconds": seconds, "index_images_per_s": count / seconds,
            "raw_batched_images_per_s": batch / raw_s, "index_fraction_of_raw": (count / seconds) / (batch / raw_s)}


def split_by_lesion(rows: list[dict[str, str]], folder: Path) -> tuple[list[Item], list[Item]]:
    train, val = [], []
    for row in rows:
        item = Item(str(image_path(folder, row)), CODES.index(row["dx"]), row["image_id"])
        (val if zlib.crc32(row["lesion_id"].encode()) % 5 == 0 else train).append(item)
    return train, val


def bench_epoch(rows, folder: Path, out: Path, workers: int, mixed: bool, device: str) -> dict:
    train, val = split_by_lesion(rows, folder)
    options = get_profile("thesis").options(STAGE_3CH, epochs=1, device=device, num_workers=workers,
                                            progress=False, amp=mixed)
    result = train_stage(STAGE_3CH, get_config(CONFIG), train, val, out / ("amp" if mixed else "fp32"),
                         options=options)
    epoch = result.history[-1]
    return {"train_images": len(train), "val_images": len(val), **{k: v for k, v in epoch.items() if k != "epoch"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", type=int, default=10015, help="synthetic library size (10015 = all of HAM10000)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lesionsearch-gpu"))
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--batch", type=int, default=64, help="index build batch size")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu only smoke-tests the script (no AMP; the figures mean nothing there)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA device (torch.cuda.is_available() is False)")
    torch.backends.cudnn.benchmark = True
    results: dict = {"gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "none (cpu smoke run)", "torch": torch.__version__,
                     "date": time.strftime("%Y-%m-%d"), "config": CONFIG}
    print(f"{results['gpu']}, torch {results['torch']}, {CONFIG} at {get_config(CONFIG).input_size} px", flush=True)

    rows = library(args.dir / "library", args.library, args.workers)
    paths = [image_path(args.dir / "library", row) for row in rows]
    model3 = build_model(get_config(CONFIG))
    results["weights"] = model3.weights_source
    encoder = SECBIREncoder(model3, widen_to_saliency(model3), device=args.device)
    from PIL import Image
    with Image.open(paths[0]) as image:
        results.update(bench_query(encoder, image.convert("RGB"), args.repeats))
    print(f"query latency: AMP {results['query_amp_s'] * 1000:.1f} ms (target < {QUERY_TARGET_S * 1000:.0f} ms), "
          f"FP32 {results['query_fp32_s'] * 1000:.1f} ms, AMP/FP32 feature cosine "
          f"{results['query_amp_fp32_feature_cosine']:.4f}", flush=True)

    results.update(bench_index(encoder, paths, args.batch, args.workers))
    per_10k = results["index_seconds"] * INDEX_TARGET_IMAGES / results["index_images"]
    results["index_seconds_per_10k"] = per_10k
    print(f"index build: {results['index_images']} images in {results['index_seconds']:.1f} s = "
          f"{results['index_images_per_s']:.0f} img/s ({per_10k:.0f} s per 10k, target < {INDEX_TARGET_S:.0f} s); "
          f"{results['index_fraction_of_raw']:.0%} of the raw batched passes "
          f"({results['raw_batched_images_per_s']:.0f} img/s)", flush=True)
    del encoder, model3
    if args.device == "cuda":
        torch.cuda.empty_cache()

    if not args.skip_train:
        for mixed in (True, False):
            name = "amp" if mixed else "fp32"
            epoch = bench_epoch(rows, args.dir / "library", args.dir / "train", args.workers, mixed, args.device)
            results[f"epoch_{name}"] = epoch
            finite = math.isfinite(epoch["loss"])
            print(f"thesis epoch ({name}): {epoch['train_seconds']:.0f} s train + {epoch['val_seconds']:.0f} s val on "
                  f"{epoch['train_images']}+{epoch['val_images']} images, loss {epoch['loss']:.4f} "
                  f"({'finite' if finite else 'NOT FINITE'}), "
                  + ", ".join(f"{k} {v:.3f}" for k, v in epoch.items()
                              if isinstance(v, float) and k not in {"loss", "lr", "train_seconds", "val_seconds"}),
                  flush=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
