"""What both samplers share: input checks, batches, noise, progress, and the row loop.

A sampler subclasses `LevelSampler` with its compiled program: `_initial_state` for a
batch, and `_run_row`, which advances the state by the positions of one row. Python calls
the program once per row, so that a progress bar can follow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np

from hvq_utils.config import LEVELS
from hvq_utils.prior import PixelCNNPrior
from hvq_utils.sampling.backend import float32_twin, full_precision, sync_weights, to_device
from hvq_utils.sampling.controls import DEFAULT_BATCH_SIZE, Controls, check_controls, gumbel_noise


def _codes_array(name: str, value, side: int, num_codes: int) -> np.ndarray:
    """int32 (N, side, side) codes in [0, num_codes), or a one-line ValueError."""
    array = np.asarray(value)
    if array.ndim != 3 or array.shape[1:] != (side, side):
        raise ValueError(
            f"{name} has shape {array.shape}; pass int32 codes of shape (N, {side}, {side})"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} has dtype {array.dtype}; pass int32 codes")
    if array.size and (array.min() < 0 or array.max() >= num_codes):
        raise ValueError(
            f"{name} holds codes in [{array.min()}, {array.max()}] but the codebook has "
            f"{num_codes}; pass codes in [0, {num_codes - 1}]"
        )
    return array.astype("int32")


class LevelSampler:
    """Samples one level's codes with one prior; subclasses supply the compiled program."""

    def __init__(self, prior: PixelCNNPrior):
        if not isinstance(prior, PixelCNNPrior):
            raise TypeError(
                f"prior is a {type(prior).__name__}; pass a PixelCNNPrior (hvq_utils.prior.build_prior)"
            )
        self.prior = prior
        self.level = prior.level
        if prior.level not in LEVELS:
            raise ValueError(f"prior.level={prior.level!r} is unknown; use one of {', '.join(LEVELS)}")
        self.level_index = LEVELS.index(prior.level)  # part of every image's noise seed
        self.grid_size = prior.grid_size
        self.num_codes = prior.num_codes
        # {upper level: {"num_codes": K, "grid_size": g}}, top first.
        self.upper = prior.get_config()["conditioning"]
        self.twin = float32_twin(prior)  # the prior, or a float32 copy of it

    # --- hooks for subclasses ---
    def _weights(self):
        """What the program reads of the prior (device tensors), from the twin's weights."""
        raise NotImplementedError

    def _initial_state(self, weights, cond: dict[str, np.ndarray], batch: int) -> tuple[dict, dict]:
        """(state, data) before the first row: the program's state {"codes", "logp", ...}
        and what it reads besides the noise and kept codes (e.g. conditioning)."""
        raise NotImplementedError

    def _run_row(self, weights, state, data, row: int, columns: int, controls, flags) -> dict:
        """The state after row `row`'s first `columns` positions."""
        raise NotImplementedError

    # --- checks ---
    def _check_inputs(self, n, cond, keep) -> tuple[int, dict, np.ndarray, np.ndarray]:
        """(n, {upper: int32 (N, h, w)}, kept codes int32 (N, H, W), mask bool (N, H, W));
        without keep, nothing is kept."""
        cond = dict(cond or {})
        missing = [name for name in self.upper if name not in cond]
        if missing:
            raise ValueError(
                f"the {self.level} prior is conditioned on {', '.join(self.upper)}; pass "
                f"cond={{level: int32 (N, h, w)}} with {', '.join(missing)} too"
            )
        arrays = {
            name: _codes_array(f"cond[{name!r}]", cond[name], spec["grid_size"], spec["num_codes"])
            for name, spec in self.upper.items()
        }
        kept = mask = None
        g = self.grid_size
        if keep is not None:
            if not (isinstance(keep, tuple | list) and len(keep) == 2):
                raise ValueError(
                    "keep must be a pair (codes int32 (N, H, W), mask bool (N, H, W)); "
                    f"got {type(keep).__name__}"
                )
            mask = np.asarray(keep[1])
            if mask.dtype != bool or mask.shape[1:] != (g, g) or mask.ndim != 3:
                raise ValueError(
                    f"keep mask has dtype {mask.dtype} and shape {mask.shape}; pass bool "
                    f"(N, {g}, {g}), True where a code is kept"
                )
            kept = np.asarray(keep[0])
            if kept.shape != mask.shape:
                raise ValueError(f"kept codes have shape {kept.shape}; give the mask's {mask.shape}")
            kept = np.where(mask, kept, 0)
            kept = _codes_array("kept codes", kept, g, self.num_codes)
        sizes = {len(a) for a in arrays.values()} | ({len(mask)} if mask is not None else set())
        if n is None:
            if len(sizes) != 1:
                raise ValueError(
                    f"cond and keep hold {sorted(sizes) or 'no'} samples; pass n (the number "
                    "of samples) or arrays of one length"
                )
            n = sizes.pop()
        if not (isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 1):
            raise ValueError(f"n={n!r} must be a whole number >= 1")
        if sizes - {n}:
            raise ValueError(
                f"n={n} but cond and keep hold {sorted(sizes)} samples; give arrays of {n}"
            )
        if mask is None:
            mask = np.zeros((n, g, g), bool)
            kept = np.zeros((n, g, g), "int32")
        return int(n), arrays, kept, mask

    # --- the loop ---
    @staticmethod
    def _padded(array: np.ndarray, batch: int) -> np.ndarray:
        """array (b, ...) with zero rows appended up to (batch, ...): the last batch is
        padded so that one compiled program serves every batch."""
        pad = np.zeros((batch - len(array), *array.shape[1:]), dtype=array.dtype)
        return np.concatenate([array, pad]) if len(pad) else array

    def _bits_by_full_pass(self, codes: np.ndarray, cond: dict[str, np.ndarray]) -> np.ndarray:
        """float32 (B,) bits per code of known codes, by one full forward pass."""
        logits = keras.ops.convert_to_numpy(
            self.twin({"codes": codes, **cond}, training=False)
        ).astype("float64")  # (B, H, W, K)
        top = logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
        picked = np.take_along_axis(logits, codes[..., None], axis=-1)[..., 0]
        return ((log_z - picked).mean(axis=(1, 2)) / math.log(2.0)).astype("float32")

    def _sample_batch(
        self, weights, scalars, flags, images: range, batch: int, cond, kept, mask, seed: int,
        positions: int, bar,
    ) -> dict:
        """The program's state after the first `positions` of one batch of `images` (padded
        to `batch`), run row by row."""
        g, k = self.grid_size, self.num_codes
        data = to_device({
            "noise": gumbel_noise(seed, self.level_index, images, (g, g, k), batch),  # (B, H, W, K)
            "keep": self._padded(mask, batch),  # (B, H, W)
            "kept": self._padded(kept, batch),
        })
        state, extra = self._initial_state(
            weights, {name: self._padded(a, batch) for name, a in cond.items()}, batch
        )
        data.update(extra)
        for row in range(math.ceil(positions / g)):
            columns = min(g, positions - row * g)
            state = self._run_row(weights, state, data, row, columns, scalars, flags)
            keras.ops.convert_to_numpy(state["logp"])  # wait for the row: an honest ETA
            bar.update(1)
        return state

    def _sample(
        self, n, cond, keep, controls: Controls, progress: bool, positions: int | None = None,
        with_logits: bool = False,
    ):
        """(codes, bits, logits or None) for `sample`; with_logits also returns each
        position's logits (every batch then runs, even one whose codes are all kept)."""
        n, cond, kept, mask = self._check_inputs(n, cond, keep)
        g, k = self.grid_size, self.num_codes
        positions = g * g if positions is None else positions
        codes = np.zeros((n, g, g), dtype="int32")
        bits = np.zeros((n,), dtype="float32")
        logits = np.zeros((n, g, g, k), dtype="float32") if with_logits else None
        batch = min(controls.batch_size, n)
        parts = [slice(start, min(start + batch, n)) for start in range(0, n, batch)]
        kept_only = [bool(mask[part].all()) and not with_logits for part in parts]
        from tqdm.auto import tqdm

        bar = tqdm(
            total=kept_only.count(False) * math.ceil(positions / g), desc=f"{self.level} codes",
            unit="row", disable=not progress,
        )
        sync_weights(self.twin, self.prior)
        flags = {"filtered": controls.filtered, "with_logits": with_logits}
        with full_precision(), bar:
            weights = self._weights()
            scalars = to_device(controls.arrays(k))
            for part, skip in zip(parts, kept_only, strict=True):
                part_cond = {name: a[part] for name, a in cond.items()}
                if skip:  # every code kept: nothing to sample
                    codes[part] = kept[part]
                    bits[part] = self._bits_by_full_pass(kept[part], part_cond)
                    continue
                images = range(controls.first_index + part.start, controls.first_index + part.stop)
                state = self._sample_batch(
                    weights, scalars, flags, images, batch, part_cond, kept[part], mask[part],
                    controls.seed, positions, bar,
                )
                real = len(images)
                codes[part] = keras.ops.convert_to_numpy(state["codes"])[:real]
                logp = keras.ops.convert_to_numpy(state["logp"])[:real]
                bits[part] = -logp / (positions * math.log(2.0))
                if with_logits:
                    logits[part] = keras.ops.convert_to_numpy(state["logits"])[:real]
        return codes, bits, logits

    def sample(
        self,
        n: int | None = None,
        cond: Mapping[str, np.ndarray] | None = None,
        keep: tuple[np.ndarray, np.ndarray] | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = True,
        first_index: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples n grids of this level's codes, row by row in raster order.

        cond: {upper level: int32 (N, h, w)} for each level the prior is conditioned on.
        keep: (codes int32 (N, H, W), mask bool (N, H, W)): where mask is True the code is
        copied, not sampled, and later positions are conditioned on it; a batch whose
        every code is kept is not sampled at all. n may be left out when cond or keep
        give it. temperature > 0; top_k (int >= 1) and top_p (in (0, 1]) cut each
        position's choice to its most likely codes (None: no cut). Sample b's noise comes
        from (seed, level, first_index + b), so codes do not depend on batch_size or the
        backend, and a run made in parts (first_index = samples already made) gives the
        codes of a run in one go.

        Returns (codes int32 (N, H, W), bits float32 (N,)): bits is each sample's negative
        log-likelihood under the prior, in bits per code, from the untempered logits.
        """
        controls = check_controls(temperature, top_k, top_p, seed, batch_size, first_index)
        codes, bits, _ = self._sample(n, cond, keep, controls, progress)
        return codes, bits
