"""Speed and memory of the SE-CBIR query pipeline and of library feature extraction (CPU).

Prints figures measured in this one run, as ratios against raw model passes timed in the
same run on the same machine:

* query pipeline (preprocess from a 600x450 image + saliency + 4-channel features), batch 1,
  against the sum of its raw model passes (3-channel forward + backward to the input, and
  4-channel forward), for Lite0 (target: <= 1.3x);
* library extraction throughput (batched encode) against raw batched passes (target: >= 80%);
* peak RSS of a B4 query in a fresh process (target: <= 1.5 GB).

    .venv/bin/python bench/query_pipeline.py [--repeats 15] [--threads 2] [--skip-b4]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from retrieval.ml.configs import get_config  # noqa: E402
from retrieval.ml.features import SECBIREncoder, normalise, resize_rgb, with_saliency  # noqa: E402
from retrieval.ml.network import build_model, widen_to_saliency  # noqa: E402
from retrieval.ml.saliency import frozen  # noqa: E402


def median_times(fns: dict, repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds.

    Interleaving makes the ratios robust to the machine's load changing during the run.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def sample_image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(450, 600, 3), dtype=np.uint8))


def encoder_for(name: str) -> SECBIREncoder:
    config = get_config(name)
    model3 = build_model(config)
    return SECBIREncoder(model3, widen_to_saliency(model3))


def raw_passes(encoder: SECBIREncoder, x: torch.Tensor) -> tuple:
    model3, model4 = encoder.model3, encoder.model4
    saliency = torch.rand(x.shape[0], x.shape[2], x.shape[3], device=x.device)

    def forward_backward():
        with frozen(model3):
            inp = x.detach().requires_grad_(True)
            logits = model3(inp)
            torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), inp)

    def forward4():
        with torch.no_grad():
            model4.pooled(with_saliency(x, saliency))

    return forward_backward, forward4


def bench_lite0(repeats: int) -> dict:
    encoder = encoder_for("secbir-lite0")
    config = encoder.config
    image = sample_image()
    x1 = normalise(resize_rgb(image, config.input_size), config)
    fb, f4 = raw_passes(encoder, x1)
    single = median_times({
        "fb": fb, "f4": f4,
        "query": lambda: encoder.encode(resize_rgb(image, config.input_size)[None]),
    }, repeats)
    t_fb, t_f4, t_query = single["fb"], single["f4"], single["query"]

    batch = 16
    images = np.stack([resize_rgb(sample_image(i), config.input_size) for i in range(batch)])
    fbb, f4b = raw_passes(encoder, normalise(images, config))
    batched = median_times({
        "fb": fbb, "f4": f4b,
        "encode": lambda: encoder.encode(images, labels=np.zeros(batch, dtype=np.int64)),
    }, max(3, repeats // 3))
    t_raw_batch, t_encode_batch = batched["fb"] + batched["f4"], batched["encode"]
    return {
        "lite0_query_s": t_query, "lite0_raw_forward_backward_s": t_fb, "lite0_raw_forward4_s": t_f4,
        "lite0_query_over_raw": t_query / (t_fb + t_f4),
        "lite0_library_images_per_s": batch / t_encode_batch, "lite0_raw_images_per_s": batch / t_raw_batch,
        "lite0_library_throughput_fraction": t_raw_batch / t_encode_batch,
    }


def b4_peak_rss_mb(threads: int) -> dict:
    """One B4 query in a fresh process (so that nothing else inflates its peak memory)."""
    code = (
        "import sys, time, torch; sys.path.insert(0, '.');"
        f"torch.set_num_threads({threads});"
        "from bench.query_pipeline import encoder_for, sample_image;"
        "from retrieval.ml.features import resize_rgb;"
        "e = encoder_for('secbir-b4'); img = resize_rgb(sample_image(), 380)[None];"
        "e.encode(img); t = time.perf_counter(); e.encode(img); dt = time.perf_counter() - t;"
        # VmHWM, not ru_maxrss: Linux carries the parent's ru_maxrss over fork + exec.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1];"
        "print(dt, int(hwm) / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, check=True)
    seconds, rss = out.stdout.split()[-2:]
    return {"b4_query_s": float(seconds), "b4_peak_rss_mb": float(rss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-b4", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, **bench_lite0(args.repeats)}
    if not args.skip_b4:
        results.update(b4_peak_rss_mb(args.threads))
    print(json.dumps(results, indent=2))
    print(f"Lite0 query pipeline: {results['lite0_query_s'] * 1000:.1f} ms = "
          f"{results['lite0_query_over_raw']:.2f}x its raw model passes (target <= 1.3x)")
    print(f"Library extraction: {results['lite0_library_images_per_s']:.1f} img/s = "
          f"{results['lite0_library_throughput_fraction']:.0%} of raw batched throughput (target >= 80%)")
    if "b4_peak_rss_mb" in results:
        print(f"B4 query: {results['b4_query_s']:.2f} s, peak RSS {results['b4_peak_rss_mb']:.0f} MB (target <= 1536 MB)")


if __name__ == "__main__":
    main()
