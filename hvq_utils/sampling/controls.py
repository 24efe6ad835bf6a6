"""What a sampler may choose at a position, and how: checked controls, Gumbel noise, one pick.

Both samplers pick a code with `choose`, from logits and noise that depend only on (seed,
level, image, position), so the same seed gives the same codes whatever the sampler,
backend or batch size.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from keras import ops

DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class Controls:
    """Checked sampling controls (see `check_controls`)."""

    temperature: float = 1.0
    top_k: int | None = None  # None: no cut
    top_p: float | None = None  # None (or 1): no cut
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    first_index: int = 0  # global index of the first image: its noise seed

    @property
    def filtered(self) -> bool:
        """Whether a position's codes are cut to the most likely ones (a sort per position)."""
        return self.top_k is not None or self.top_p is not None

    def arrays(self, num_codes: int) -> dict[str, np.ndarray]:
        """The runtime values a compiled program reads: scalars, so changing them never
        recompiles. An absent cut becomes one that keeps every code."""
        return {
            "temperature": np.float32(self.temperature),
            "top_k": np.int32(num_codes if self.top_k is None else min(self.top_k, num_codes)),
            "top_p": np.float32(2.0 if self.top_p is None else self.top_p),
        }


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_controls(
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    first_index: int = 0,
) -> Controls:
    """The controls as a `Controls`, or a one-line ValueError saying what to pass instead."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature={temperature!r} must be a number > 0, e.g. 1.0")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"temperature={temperature!r} must be finite and > 0, e.g. 1.0 "
            "(for the most likely codes use top_k=1)"
        )
    if top_k is not None and not (_is_int(top_k) and top_k >= 1):
        raise ValueError(f"top_k={top_k!r} must be a whole number >= 1, or None for no cut")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real):
            raise ValueError(f"top_p={top_p!r} must be a number in (0, 1], or None for no cut")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p={top_p!r} must lie in (0, 1], e.g. 0.9, or be None for no cut")
    if not (_is_int(seed) and seed >= 0):
        raise ValueError(f"seed={seed!r} must be a whole number >= 0, e.g. 0")
    if not (_is_int(batch_size) and batch_size >= 1):
        raise ValueError(f"batch_size={batch_size!r} must be a whole number >= 1, e.g. 16")
    if not (_is_int(first_index) and first_index >= 0):
        raise ValueError(
            f"first_index={first_index!r} must be a whole number >= 0: the global index of "
            "the first sample (0 unless resuming a run in parts)"
        )
    return Controls(
        temperature=float(temperature),
        top_k=None if top_k is None else int(top_k),
        top_p=None if top_p is None or top_p == 1 else float(top_p),
        seed=int(seed),
        batch_size=int(batch_size),
        first_index=int(first_index),
    )


def gumbel_noise(
    seed: int, level_index: int, images: range, shape: tuple[int, int, int], batch: int
) -> np.ndarray:
    """float32 (batch, H, W, K) Gumbel noise, image b drawn from
    np.random.default_rng([seed, level_index, images[b]]): the same for an image whatever
    batch it falls in. Rows past len(images) (a padded last batch) are zero."""
    noise = np.zeros((batch, *shape), dtype="float32")
    for b, image in enumerate(images):
        rng = np.random.default_rng([seed, level_index, image])
        noise[b] = rng.gumbel(size=shape).astype("float32")
    return noise


def choose(logits, noise, keep, kept, controls: dict, filtered: bool):
    """One position's codes and their log-likelihood, for a batch.

    logits float32 (B, K) (untempered); noise float32 (B, K) Gumbel; keep bool (B,): copy
    kept int32 (B,) instead of sampling; controls: `Controls.arrays()` values. Returns
    (codes int32 (B,), log p(codes) float32 (B,) from the untempered logits).

    Gumbel-max sampling: argmax(logits / temperature + noise) over the allowed codes.
    filtered (static): cut to the most likely min(top_k, n_p) codes of the tempered
    distribution, n_p the fewest whose mass reaches top_p. top_k=1 gives the argmax.
    """
    scaled = logits / controls["temperature"]  # (B, K)
    if filtered:
        ranked = -ops.sort(-scaled, axis=-1)  # (B, K), most likely first
        probs = ops.softmax(ranked, axis=-1)
        before = ops.cumsum(probs, axis=-1) - probs  # mass strictly before each rank
        n_p = ops.sum(ops.cast(before < controls["top_p"], "int32"), axis=-1)  # (B,), >= 1
        n = ops.minimum(n_p, controls["top_k"])
        threshold = ops.take_along_axis(ranked, (n - 1)[:, None], axis=-1)  # (B, 1)
        scaled = ops.where(scaled >= threshold, scaled, float("-inf"))
    picked = ops.cast(ops.argmax(scaled + noise, axis=-1), "int32")  # (B,)
    codes = ops.where(keep, kept, picked)
    log_probs = ops.log_softmax(logits, axis=-1)
    return codes, ops.take_along_axis(log_probs, codes[:, None], axis=-1)[:, 0]
