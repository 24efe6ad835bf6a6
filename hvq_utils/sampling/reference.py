"""The reference sampler: the prior's full forward pass for every position.

What the seed did (16^2 + 32^2 + 64^2 full passes per batch), compiled: one program runs a
row's positions in a loop. Slow by design; it is what the cached sampler is tested and
benchmarked against.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from keras import ops

from hvq_utils.prior import PixelCNNPrior
from hvq_utils.sampling.backend import compile_program, dynamic_slice, to_device
from hvq_utils.sampling.controls import DEFAULT_BATCH_SIZE, check_controls, choose
from hvq_utils.sampling.driver import LevelSampler


class ReferenceSampler(LevelSampler):
    """Samples like `CachedSampler`, by a full forward pass of the prior per position."""

    def __init__(self, prior: PixelCNNPrior):
        super().__init__(prior)
        self._programs = {}

    def _weights(self):
        return to_device({
            "trainable": [ops.convert_to_numpy(v) for v in self.twin.trainable_variables],
            "non_trainable": [ops.convert_to_numpy(v) for v in self.twin.non_trainable_variables],
        })

    def _initial_state(self, weights, cond, batch):
        g = self.grid_size
        state = {"codes": np.zeros((batch, g, g), "int32"), "logp": np.zeros((batch,), "float32")}
        return to_device(state), {"cond": to_device(cond)}

    def _run_row(self, weights, state, data, row, columns, controls, flags):
        filtered = flags["filtered"]
        if filtered not in self._programs:
            self._programs[filtered] = compile_program(self._row_program(filtered))
        row, columns = (ops.convert_to_tensor(v, "int32") for v in (row, columns))
        return self._programs[filtered](weights, state, data, row, columns, controls)

    def _row_program(self, filtered: bool):
        twin, k = self.twin, self.num_codes

        def run(weights, state, data, row, columns, controls):
            batch = state["codes"].shape[0]

            def position(j, carry):
                codes, logp = carry
                logits, _ = twin.stateless_call(
                    weights["trainable"], weights["non_trainable"], {"codes": codes, **data["cond"]},
                    training=False,
                )  # (B, H, W, K): every position, of which one is used
                here = dynamic_slice(logits, [0, row, j, 0], [batch, 1, 1, k])[:, 0, 0]
                noise = dynamic_slice(data["noise"], [0, row, j, 0], [batch, 1, 1, k])[:, 0, 0]
                keep = dynamic_slice(data["keep"], [0, row, j], [batch, 1, 1])[:, 0, 0]
                kept = dynamic_slice(data["kept"], [0, row, j], [batch, 1, 1])[:, 0, 0]
                code, log_p = choose(here, noise, keep, kept, controls, filtered)
                return ops.slice_update(codes, [0, row, j], code[:, None, None]), logp + log_p

            codes, logp = ops.fori_loop(0, columns, position, (state["codes"], state["logp"]))
            return {"codes": codes, "logp": logp}

        return run

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
        positions: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`CachedSampler.sample`, plus positions: sample only the first `positions` in
        raster order (the rest stay 0; bits average over those sampled), for timing."""
        controls = check_controls(temperature, top_k, top_p, seed, batch_size, first_index)
        g = self.grid_size
        if positions is not None and not (isinstance(positions, int) and 1 <= positions <= g * g):
            raise ValueError(f"positions={positions!r} must be a whole number in [1, {g * g}], or None")
        codes, bits, _ = self._sample(n, cond, keep, controls, progress, positions=positions)
        return codes, bits


def reference_sample(
    prior: PixelCNNPrior,
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
    positions: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`ReferenceSampler(prior).sample(...)`: (codes int32 (N, H, W), bits float32 (N,))."""
    return ReferenceSampler(prior).sample(
        n, cond, keep, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        batch_size=batch_size, progress=progress, first_index=first_index, positions=positions,
    )
