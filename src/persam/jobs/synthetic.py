"""Deterministic synthetic photos and video frames: coloured ellipses on a texture.

Used by ``persam bench``, the video benchmark, the scripts under
``benchmarks/`` and the tests, so that every synthetic input is made here.
All makers are seeded (same arguments, same pixels) and return (H, W, 3)
uint8 RGB pixels with their ground truth (an (H, W) bool mask or uint8
label map).

Conventions: centres and half-axes are given as (x, y), in pixels for
:func:`ellipse_r2` and as fractions of the width and height elsewhere.
"""

from __future__ import annotations

import numpy as np

#: Object colours of the multi-object frames (ids 1, 2, ... cycle through them).
COLOURS = ((215, 60, 45), (40, 90, 210), (60, 190, 70), (230, 200, 40), (170, 60, 200))


def ellipse_r2(hw: tuple[int, int], center_xy: tuple[float, float], axes_xy: tuple[float, float]) -> np.ndarray:
    """(H, W) float64 ``((x - cx) / ax)**2 + ((y - cy) / ay)**2`` at pixel (x, y): <= 1 inside the ellipse.

    Args:
        hw: (H, W) of the image.
        center_xy: centre (cx, cy) in pixels.
        axes_xy: half-axes (ax, ay) in pixels.
    """
    y, x = np.mgrid[0 : hw[0], 0 : hw[1]]
    return ((x - center_xy[0]) / axes_xy[0]) ** 2 + ((y - center_xy[1]) / axes_xy[1]) ** 2


def tiled_texture(
    hw: tuple[int, int], rng: np.random.Generator, tile: int = 8, low: float = 60.0, high: float = 180.0
) -> np.ndarray:
    """(H, W, 3) uint8 background of ``tile`` x ``tile`` squares of uniform random colours in [low, high)."""
    h, w = hw
    tiles = (rng.random((h // tile + 1, w // tile + 1, 3)) * (high - low) + low).astype(np.uint8)
    return np.kron(tiles, np.ones((tile, tile, 1), dtype=np.uint8))[:h, :w].copy()


def tiled_photo(
    h: int = 180,
    w: int = 240,
    seed: int = 0,
    center: tuple[float, float] = (0.5, 0.45),
    colour: tuple[int, int, int] = (220, 30, 40),
) -> tuple[np.ndarray, np.ndarray]:
    """A small test photo: 8-pixel tiles and one flat-coloured ellipse.

    Args:
        h, w: size in pixels.
        seed: seed of the tile colours.
        center: (y, x) of the ellipse centre as fractions of height and width;
            its half-axes are 0.18 w and 0.22 h.
        colour: RGB of the ellipse.

    Returns:
        (H, W, 3) uint8 photo and the ellipse's (H, W) bool mask.
    """
    image = tiled_texture((h, w), np.random.default_rng(seed))
    mask = ellipse_r2((h, w), (center[1] * w, center[0] * h), (0.18 * w, 0.22 * h)) <= 1
    image[mask] = colour
    return image, mask


def synthetic_photo(
    long_side: int, seed: int, center: tuple[float, float] = (0.45, 0.5), axes: tuple[float, float] = (0.2, 0.26)
) -> tuple[np.ndarray, np.ndarray]:
    """A benchmark photo: smooth wavy background, a shaded coloured ellipse, sensor-like noise.

    Args:
        long_side: width N of the photo (at least 32); its height is ``round(0.75 N)``.
        seed: seed of the texture, the colours and the noise.
        center: (x, y) of the ellipse centre, as fractions of width and height.
        axes: (x, y) half-axes of the ellipse, as fractions of width and height.

    Returns:
        (H, W, 3) uint8 RGB photo and its (H, W) bool object mask.

    Raises:
        ValueError: ``long_side`` < 32.
    """
    if long_side < 32:
        raise ValueError(f"image size must be at least 32 pixels, got {long_side}")
    w, h = int(long_side), int(round(0.75 * long_side))
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = x / w, y / h
    background = np.empty((h, w, 3), dtype=np.float32)
    for c in range(3):
        wave = np.zeros((h, w), dtype=np.float32)
        for _ in range(3):
            fx, fy = rng.uniform(1.0, 9.0, size=2)
            wave += np.sin(2 * np.pi * (fx * u + fy * v) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
        background[..., c] = rng.uniform(90, 150) + 18.0 * wave
    r2 = ellipse_r2((h, w), (center[0] * w, center[1] * h), (axes[0] * w, axes[1] * h)).astype(np.float32)
    mask = r2 <= 1.0
    colour = np.array([215.0, 60.0, 45.0]) if seed % 2 == 0 else np.array([205.0, 70.0, 55.0])
    shade = (1.0 - 0.25 * r2)[..., None]  # a lit, rounded object
    photo = np.where(mask[..., None], colour * shade, background)
    photo += rng.normal(0.0, 6.0, size=photo.shape).astype(np.float32)
    return np.clip(photo + 0.5, 0, 255).astype(np.uint8), mask


def synthetic_clip_frame(
    long_side: int, n_objects: int, shift: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A video frame of (round(0.75 N), N) pixels: 16-pixel tiles and ``n_objects`` flat ellipses.

    Args:
        long_side: width N (at least 32).
        n_objects: ellipses, ids 1..n, spread along a diagonal (at least 1).
        shift: pixels every object is moved right (a later frame).
        seed: texture seed.

    Returns:
        (H, W, 3) uint8 RGB frame and its (H, W) uint8 label map.

    Raises:
        ValueError: ``long_side`` < 32 or ``n_objects`` < 1.
    """
    if long_side < 32 or n_objects < 1:
        raise ValueError("long_side must be at least 32 and n_objects at least 1")
    w, h = int(long_side), int(round(0.75 * long_side))
    frame = tiled_texture((h, w), np.random.default_rng(seed), tile=16, low=70, high=170)
    labels = np.zeros((h, w), dtype=np.uint8)
    for i in range(n_objects):
        cx = (i + 0.5) / n_objects * w + shift
        cy = (0.3 + 0.4 * i / max(n_objects - 1, 1)) * h
        inside = ellipse_r2((h, w), (cx, cy), (0.35 * w / n_objects, 0.15 * h)) <= 1.0
        frame[inside] = COLOURS[i % len(COLOURS)]
        labels[inside] = i + 1
    return frame, labels
