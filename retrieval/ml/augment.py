"""Training augmentation of the thesis (section 3.3), built on albumentations as the thesis was.

Inputs are NumPy ``uint8`` ``H x W x 3`` RGB images and, for the 4-channel model, ``float32``
``H x W`` saliency maps in [0, 1]. Every pipeline resizes to a square ``size x size`` (the model
configs resize, they do not crop) with area interpolation.

Randomness comes only from the ``np.random.Generator`` passed to each call: equal-seeded
generators give identical outputs. The pipelines are drawn from the caller's generator through
``set_random_state`` rather than albumentations' ``seed=``/``set_random_seed``, because the latter
give every transform its *own* generator with the *same* seed, so that e.g. the horizontal and the
vertical flip would always fire together. A pipeline object is not thread-safe (one per
DataLoader worker process is fine).
"""
from __future__ import annotations

import os
import random
from collections.abc import Callable

# albumentations asks PyPI for a newer version on import; training must not touch the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

ImageAugmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]
PairedAugmentation = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]

SALIENCY_KEY = "saliency"
RESIZE_INTERPOLATION = cv2.INTER_AREA  # downscaling 600x450 photographs: area avoids aliasing
# Lesions have no canonical orientation; reflecting skin into the corners avoids black wedges
# that a network could learn to look for.
BORDER = cv2.BORDER_REFLECT_101
_SEED_BOUND = 2**63

# 3-channel model: probability and intensity interval of each augmentation.
FLIP_P = 0.5
AFFINE_P = 0.75
ROTATE_LIMIT = 180.0  # degrees; any angle
SHIFT_LIMIT = 0.1  # fraction of the side
SCALE_RANGE = (0.9, 1.1)
BLUR_P = 0.3
BLUR_KERNEL = (3, 7)
MEDIAN_KERNEL = (3, 5)
NOISE_P = 0.3
NOISE_STD = (0.01, 0.05)  # fraction of 255
DISTORTION_P = 0.3
OPTICAL_DISTORT_LIMIT = 0.1
GRID_DISTORT_LIMIT = 0.2
ELASTIC_SIGMA_FRACTION = 0.03  # smoothing of the displacement field, fraction of the side
MIN_ELASTIC_SIGMA = 1.0  # albumentations' lower bound, reached below size 34
ELASTIC_ALPHA_SCALE = 0.16  # alpha = scale * size * sigma: mean displacement ~1% of the side
BRIGHTNESS_CONTRAST_P = 0.5
BRIGHTNESS_LIMIT = 0.2
CONTRAST_LIMIT = 0.2
COLOUR_P = 0.5
CLAHE_CLIP = (1.0, 4.0)
HUE_SHIFT = 10
SAT_SHIFT = 20
VAL_SHIFT = 20
CROP_P = 0.5  # half the samples keep the full field of view, as at inference
CROP_KEEP = 0.9  # "randomly cropping 10%": keep 90% of the side, then resize back
DROPOUT_P = 0.5
DROPOUT_HOLES = (1, 8)
DROPOUT_HOLE_SIZE = (0.02, 0.08)  # fraction of the side

# 4-channel model: rotations (any angle) and flips only.
PAIRED_ROTATE_P = 0.75


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 H x W x 3 image, got {image.dtype} {image.shape}")


def _check_saliency(image: np.ndarray, saliency: np.ndarray) -> None:
    if saliency.dtype != np.float32 or saliency.shape != image.shape[:2]:
        raise ValueError(f"expected a float32 {image.shape[:2]} saliency map, got {saliency.dtype} {saliency.shape}")


def _run(pipeline: A.Compose, rng: np.random.Generator, **data: np.ndarray) -> dict[str, np.ndarray]:
    pipeline.set_random_state(rng, random.Random(int(rng.integers(_SEED_BOUND))))
    return pipeline(**data)


def _resize(size: int) -> A.Resize:
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return A.Resize(size, size, interpolation=RESIZE_INTERPOLATION)


def strong_rgb_augmentation(size: int) -> ImageAugmentation:
    """The 3-channel classifier's strong augmentation: ``(image, rng) -> uint8 size x size x 3``.

    Resizing comes first (the thesis resized after augmenting) so that blur kernels, elastic
    smoothing and hole sizes mean the same for any input resolution; then geometry (any-angle
    rotation, flips, shift/scale), blur or noise, one distortion (optical, grid, elastic),
    brightness/contrast, CLAHE or hue/saturation/value, a random 90% crop resized back to
    ``size``, and coarse dropout. Intervals and probabilities are the module constants.
    """
    sigma = max(ELASTIC_SIGMA_FRACTION * size, MIN_ELASTIC_SIGMA)
    pipeline = A.Compose([
        _resize(size),
        A.Affine(rotate=(-ROTATE_LIMIT, ROTATE_LIMIT), translate_percent=(-SHIFT_LIMIT, SHIFT_LIMIT),
                 scale=SCALE_RANGE, border_mode=BORDER, p=AFFINE_P),
        A.HorizontalFlip(p=FLIP_P),
        A.VerticalFlip(p=FLIP_P),
        A.OneOf([
            A.MotionBlur(blur_limit=BLUR_KERNEL),
            A.MedianBlur(blur_limit=MEDIAN_KERNEL),
            A.GaussianBlur(blur_limit=BLUR_KERNEL),
        ], p=BLUR_P),
        A.GaussNoise(std_range=NOISE_STD, p=NOISE_P),
        A.OneOf([
            A.OpticalDistortion(distort_limit=OPTICAL_DISTORT_LIMIT, border_mode=BORDER),
            A.GridDistortion(distort_limit=GRID_DISTORT_LIMIT, border_mode=BORDER),
            A.ElasticTransform(alpha=ELASTIC_ALPHA_SCALE * size * sigma, sigma=sigma, border_mode=BORDER),
        ], p=DISTORTION_P),
        A.RandomBrightnessContrast(brightness_limit=BRIGHTNESS_LIMIT, contrast_limit=CONTRAST_LIMIT,
                                   p=BRIGHTNESS_CONTRAST_P),
        A.OneOf([
            A.CLAHE(clip_limit=CLAHE_CLIP),
            A.HueSaturationValue(hue_shift_limit=HUE_SHIFT, sat_shift_limit=SAT_SHIFT, val_shift_limit=VAL_SHIFT),
        ], p=COLOUR_P),
        A.RandomSizedCrop(min_max_height=(round(CROP_KEEP * size),) * 2, size=(size, size),
                          interpolation=cv2.INTER_LINEAR, p=CROP_P),
        A.CoarseDropout(num_holes_range=DROPOUT_HOLES, hole_height_range=DROPOUT_HOLE_SIZE,
                        hole_width_range=DROPOUT_HOLE_SIZE, fill=0, p=DROPOUT_P),
    ])

    def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_image(image)
        return _run(pipeline, rng, image=image)["image"]

    return augment


def paired_geometric_augmentation(size: int) -> PairedAugmentation:
    """The 4-channel model's augmentation: ``(image, saliency, rng) -> (image, saliency)``.

    Resize to ``size``, a rotation by any angle in [-180, 180] degrees (reflected borders), and
    independent horizontal and vertical flips, applied identically to both arrays (the saliency
    map is a second image target, so it is interpolated linearly, not nearest-neighbour).
    """
    pipeline = A.Compose([
        _resize(size),
        A.Rotate(limit=ROTATE_LIMIT, border_mode=BORDER, p=PAIRED_ROTATE_P),
        A.HorizontalFlip(p=FLIP_P),
        A.VerticalFlip(p=FLIP_P),
    ], additional_targets={SALIENCY_KEY: "image"})

    def augment(image: np.ndarray, saliency: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        _check_image(image)
        _check_saliency(image, saliency)
        out = _run(pipeline, rng, image=image, **{SALIENCY_KEY: saliency})
        return out["image"], out[SALIENCY_KEY]

    return augment


def resize_only(size: int) -> Callable[..., np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Validation/inference preprocessing: ``(image, saliency=None)`` resized to ``size x size``.

    Returns the image, or ``(image, saliency)`` when a saliency map is given; same interpolation
    as the training pipelines.
    """
    pipeline = A.Compose([_resize(size)], additional_targets={SALIENCY_KEY: "image"})

    def resize(image: np.ndarray, saliency: np.ndarray | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        _check_image(image)
        if saliency is None:
            return pipeline(image=image)["image"]
        _check_saliency(image, saliency)
        out = pipeline(image=image, **{SALIENCY_KEY: saliency})
        return out["image"], out[SALIENCY_KEY]

    return resize
