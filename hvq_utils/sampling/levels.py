"""The three levels in turn: top, then middle given top, then bottom given both."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from hvq_utils.config import LEVELS, upper_levels
from hvq_utils.prior import PixelCNNPrior
from hvq_utils.sampling.cached import CachedSampler
from hvq_utils.sampling.controls import DEFAULT_BATCH_SIZE, check_controls

# The samplers of the last priors used (one per level), so that a later call reuses their
# compiled programs. Kept by id: a sampler holds its prior, so the prior stays alive (and
# its id unique) while it is listed here.
_SAMPLERS: OrderedDict[int, CachedSampler] = OrderedDict()
_KEPT_SAMPLERS = len(LEVELS)


def cached_sampler(prior: PixelCNNPrior) -> CachedSampler:
    """The `CachedSampler` of `prior`, made on first use and kept for the last three priors."""
    key = id(prior)
    if key not in _SAMPLERS:
        _SAMPLERS[key] = CachedSampler(prior)
        while len(_SAMPLERS) > _KEPT_SAMPLERS:
            _SAMPLERS.popitem(last=False)
    _SAMPLERS.move_to_end(key)
    return _SAMPLERS[key]


def sample_levels(
    priors: Mapping[str, PixelCNNPrior],
    n: int,
    *,
    keep: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    first_index: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Samples n images' codes, level after level, with the cached sampler.

    priors: {"top": prior, "middle": prior, "bottom": prior}. keep: {level: (codes int32
    (n, g, g), mask bool (n, g, g))} for the levels where some codes are kept (a level
    whose mask is all True is copied, not sampled: e.g. keep an image's top codes and
    resample the rest). The controls apply to every level; first_index is the global
    index of the first sample, for a run made in parts (see `CachedSampler.sample`).

    Returns ({level: int32 (n, g, g)}, {level: float32 (n,) bits per code}).
    """
    check_controls(temperature, top_k, top_p, seed, batch_size, first_index)
    missing = [level for level in LEVELS if level not in priors]
    if missing:
        raise ValueError(
            f"priors lack the {', '.join(missing)} level(s); pass {{level: prior}} for all of "
            f"{', '.join(LEVELS)}"
        )
    keep = dict(keep or {})
    unknown = sorted(set(keep) - set(LEVELS))
    if unknown:
        raise ValueError(f"keep has unknown level {unknown[0]!r}; use {', '.join(LEVELS)}")
    codes: dict[str, np.ndarray] = {}
    bits: dict[str, np.ndarray] = {}
    for level in LEVELS:
        prior = priors[level]
        if prior.level != level:
            raise ValueError(f"priors[{level!r}] is the {prior.level} prior; pass the {level} prior")
        cond = {upper: codes[upper] for upper in upper_levels(level)}
        codes[level], bits[level] = cached_sampler(prior).sample(
            n, cond=cond, keep=keep.get(level), temperature=temperature, top_k=top_k,
            top_p=top_p, seed=seed, batch_size=batch_size, progress=progress,
            first_index=first_index,
        )
    return codes, bits
