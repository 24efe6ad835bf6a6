"""The cached sampler (Ramachandran et al. 2017, "Fast Generation for Convolutional
Autoregressive Models"): every layer keeps what later positions read of its past and
computes only the new position.

For row i of an (H, W) grid, one compiled program (Python calls it once per row):

1. the vertical stack, once for the whole row: block b's `vertical_conv` at row i reads
   rows i + dy of its input (the code embedding for block 0, whose type "A" mask reads
   rows < i only; block b - 1's gated output for the others), kept as the last `up` rows
   (zero-padded at the sides) plus the row just computed. Its taps are stacked in
   `receptive_offsets` order and multiplied once (`MaskedConv2D.call_on_taps`); the
   conditioning (computed once per level over the whole grid, the upper codes being
   known) and `vertical_to_horizontal` are added for the whole row too;
2. the columns, a loop inside the program: per position, each block's `horizontal_conv`
   reads the current row's horizontal inputs to its left (kept in a row buffer), the
   causal channel attention a running sum (float32), the masked spatial attention a
   buffer of the last few rows of descriptors; the skip connections of all blocks and
   the head are applied to the one position, its code is picked (`choose`) and embedded
   into the row buffer. The head's causal attention modules (the seed architecture) keep
   running sums and descriptor rows like the blocks' attention.

Dropout is off; BatchNormalization (the seed architecture) is its inference-time
per-channel affine map, scale * x + shift from its moving statistics. Everything runs in
float32 from float32 copies of the weights, whatever the prior's dtype policy. The prior
is checked first: a layer or a causal structure this module does not know how to cache
is refused with a one-line error, not sampled wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from hvq_utils.prior import (
    CausalAttention,
    CodeEmbedding,
    Conditioning,
    GatedBlock,
    MaskedConv2D,
    PixelCNNPrior,
)
from hvq_utils.prior.layers import gated_activation
from hvq_utils.sampling.backend import compile_program, dynamic_slice, to_device
from hvq_utils.sampling.controls import DEFAULT_BATCH_SIZE, check_controls, choose
from hvq_utils.sampling.driver import LevelSampler

# Every layer type a prior may hold: anything else (a subclass included) is refused.
_KNOWN_LAYERS = (
    PixelCNNPrior, CodeEmbedding, Conditioning, GatedBlock, MaskedConv2D, CausalAttention,
    keras.layers.Dense, keras.layers.Dropout, keras.layers.Embedding, keras.layers.Conv2D,
    keras.layers.UpSampling2D, keras.layers.BatchNormalization,
    # Only inside the conditioning, which runs as the prior's own layers over the whole grid.
    keras.layers.Conv2DTranspose,
)


class UncacheableError(ValueError):
    """The prior holds a layer or a structure the cached sampler cannot compute by parts."""


def _refuse(where: str, what: str) -> None:
    raise UncacheableError(
        f"CachedSampler cannot cache {where}: {what}; use the layers of hvq_utils.prior "
        "as build_prior makes them (or sample with reference_sample)"
    )


def _check_dense(layer, where: str, activation: str) -> None:
    if type(layer) is not keras.layers.Dense:
        _refuse(where, f"a {type(layer).__name__} where a Dense layer is expected")
    if layer.activation is not keras.activations.get(activation):
        _refuse(where, f"activation {layer.activation.__name__}, expected {activation}")
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        _refuse(where, "a LoRA or quantized Dense layer")


def _check_norm(layer, where: str) -> bool:
    """Whether there is a norm (None: no); refuses one that is not a per-channel BatchNorm."""
    if layer is None:
        return False
    if type(layer) is not keras.layers.BatchNormalization:
        _refuse(where, f"a {type(layer).__name__} where a BatchNormalization is expected")
    if layer.axis not in (-1, 3):
        _refuse(where, f"BatchNormalization over axis {layer.axis}, not the channels")
    return True


def _check_attention(attention, where: str) -> tuple[tuple[int, int], ...]:
    """The spatial convolution's receptive offsets of a checked `CausalAttention`."""
    if type(attention) is not CausalAttention:
        _refuse(where, f"a {type(attention).__name__}")
    _check_dense(attention.squeeze, f"{where}/squeeze", "relu")
    _check_dense(attention.excite, f"{where}/excite", "linear")
    return _check_conv(
        attention.spatial, f"{where}/spatial", lambda dy, dx: dy < 0 or (dy == 0 and dx <= 0)
    )


def _check_conv(layer, where: str, allowed) -> tuple[tuple[int, int], ...]:
    """The layer's receptive offsets, each of which must satisfy allowed(dy, dx)."""
    if type(layer) is not MaskedConv2D:
        _refuse(where, f"a {type(layer).__name__} where a MaskedConv2D is expected")
    offsets = layer.receptive_offsets()
    bad = [o for o in offsets if not allowed(*o)]
    if bad or not offsets:
        _refuse(where, f"it reads offsets {bad or 'none'} that this sampler cannot keep")
    return offsets


@dataclass(frozen=True)
class _Block:
    """What one gated block reads, as static offsets, and where its caches sit."""

    vertical: MaskedConv2D
    vertical_offsets: tuple[tuple[int, int], ...]
    up: int  # past rows its vertical input keeps
    side: int  # zero columns on each side of those rows
    horizontal: MaskedConv2D
    horizontal_dx: tuple[int, ...]  # columns read of the current row (dy == 0)
    residual: bool  # h_out = h + residual(g), else residual(g)
    has_h_out: bool  # a later block reads h_out
    attention: int | None  # index among the attention modules (blocks', then the head's)
    spatial: MaskedConv2D | None
    spatial_offsets: tuple[tuple[int, int], ...] | None
    vertical_norm: bool  # a BatchNorm after the vertical gate
    horizontal_norm: bool  # a BatchNorm after the horizontal gate


@dataclass(frozen=True)
class _Head:
    """The head after the summed skips: hidden layer, optional BatchNorm, attention modules."""

    norm: bool
    attention: tuple[int, ...]  # the modules' indices among all attention modules
    spatial: tuple[MaskedConv2D, ...]
    spatial_offsets: tuple[tuple[tuple[int, int], ...], ...]


def _plan(prior: PixelCNNPrior) -> tuple[tuple[_Block, ...], _Head]:
    """The prior's blocks and head as the sampler computes them, after checking every layer."""
    if type(prior) is not PixelCNNPrior:
        _refuse(prior.name, f"a {type(prior).__name__}, not a PixelCNNPrior")
    for layer in prior._flatten_layers(include_self=False):
        if type(layer) not in _KNOWN_LAYERS:
            _refuse(f"{prior.name}/{layer.name}", f"unknown layer type {type(layer).__name__}")
    if type(prior.embedding) is not CodeEmbedding:
        _refuse("embedding", f"a {type(prior.embedding).__name__}")
    if prior.conditioning is not None and type(prior.conditioning) is not Conditioning:
        _refuse("conditioning", f"a {type(prior.conditioning).__name__}")
    _check_dense(prior.head_hidden, "head_hidden", "relu")
    _check_dense(prior.head_logits, "head_logits", "linear")
    blocks = []
    attention_index = 0
    last = len(prior.blocks) - 1
    for b, block in enumerate(prior.blocks):
        where = f"{prior.name}/{block.name}"
        if type(block) is not GatedBlock:
            _refuse(where, f"a {type(block).__name__}, not a GatedBlock")
        first = b == 0
        # Block 0 reads the codes themselves: rows above only, and columns to the left.
        vertical = _check_conv(
            block.vertical_conv, f"{where}/vertical_conv",
            lambda dy, dx, first=first: dy < 0 if first else dy <= 0,
        )
        horizontal = _check_conv(
            block.horizontal_conv, f"{where}/horizontal_conv",
            lambda dy, dx, first=first: dy == 0 and (dx < 0 if first else dx <= 0),
        )
        if first and block.has_residual:
            _refuse(where, "the first block adds its input, the current code, to its output")
        if block.return_horizontal != (b < last):
            _refuse(where, "only the last block may drop its horizontal output")
        if block.conditioned != (prior.conditioning is not None):
            _refuse(where, "its conditioning does not match the prior's")
        pointwise = ("vertical_to_horizontal", "condition_vertical", "condition_horizontal", "residual")
        for name in (*pointwise, "skip"):
            layer = getattr(block, name)
            if layer is not None:
                _check_dense(layer, f"{where}/{name}", "linear")
        spatial = spatial_offsets = index = None
        if block.attention is not None:
            spatial_offsets = _check_attention(block.attention, f"{where}/attention")
            spatial = block.attention.spatial
            index = attention_index
            attention_index += 1
        blocks.append(_Block(
            vertical=block.vertical_conv,
            vertical_offsets=vertical,
            up=max(-dy for dy, _ in vertical),
            side=max(abs(dx) for _, dx in vertical),
            horizontal=block.horizontal_conv,
            horizontal_dx=tuple(dx for _, dx in horizontal),
            residual=block.has_residual,
            has_h_out=b < last,
            attention=index,
            spatial=spatial,
            spatial_offsets=spatial_offsets,
            vertical_norm=_check_norm(block.vertical_norm, f"{where}/vertical_norm"),
            horizontal_norm=_check_norm(block.horizontal_norm, f"{where}/horizontal_norm"),
        ))
    head_norm = _check_norm(prior.head_norm, "head_norm")
    head_offsets = tuple(
        _check_attention(attention, f"{prior.name}/{attention.name}")
        for attention in prior.head_attentions
    )
    head = _Head(
        norm=head_norm,
        attention=tuple(range(attention_index, attention_index + len(head_offsets))),
        spatial=tuple(attention.spatial for attention in prior.head_attentions),
        spatial_offsets=head_offsets,
    )
    return tuple(blocks), head


def _numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float32")


def _affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale (C,), shift (C,)): a BatchNormalization in inference, x * scale + shift."""
    mean = _numpy(layer.moving_mean)
    scale = 1.0 / np.sqrt(_numpy(layer.moving_variance) + np.float32(layer.epsilon))
    if layer.scale:
        scale = scale * _numpy(layer.gamma)
    shift = -mean * scale
    if layer.center:
        shift = shift + _numpy(layer.beta)
    return scale.astype("float32"), shift.astype("float32")


def _attention_weights(attention) -> dict[str, np.ndarray]:
    """float32 weights of a `CausalAttention`, as the program reads them."""
    w = {}
    w["squeeze_kernel"], w["squeeze_bias"] = _dense(attention.squeeze)
    w["excite_kernel"], w["excite_bias"] = _dense(attention.excite)
    w["spatial_kernel"] = _numpy(attention.spatial.tap_kernel("float32"))
    w["spatial_bias"] = _numpy(attention.spatial.bias)
    return w


def _dense(layer) -> tuple[np.ndarray, np.ndarray]:
    """float32 (kernel (C_in, C_out), bias (C_out,)) of a Dense layer."""
    kernel = _numpy(layer.kernel)
    bias = _numpy(layer.bias) if layer.bias is not None else np.zeros(kernel.shape[1], "float32")
    return kernel, bias


class CachedSampler(LevelSampler):
    """Samples one level's codes with `prior`, computing each position once (see the module).

        sampler = CachedSampler(prior)
        codes, bits = sampler.sample(10, cond={"top": top})   # int32 (10, 32, 32), float32 (10,)

    Raises UncacheableError (a ValueError) for a prior whose layers it does not know. One
    program is compiled per batch size (and per use of top_k / top_p), on first use, and
    kept for later calls; the weights are read afresh at every call.
    """

    def __init__(self, prior: PixelCNNPrior):
        super().__init__(prior)
        self._blocks, self._head = _plan(prior)  # the prior is checked; its float32 twin computed
        if self.twin is not prior:
            self._blocks, self._head = _plan(self.twin)
        self._programs = {}
        blocks = self._blocks
        self._attention = sum(b.attention is not None for b in blocks) + len(self._head.attention)
        self._h_pad = max(-min(b.horizontal_dx) for b in blocks)
        spatial = [o for b in blocks if b.spatial_offsets for o in b.spatial_offsets]
        spatial += [o for offsets in self._head.spatial_offsets for o in offsets]
        self._spatial_up = max((-dy for dy, _ in spatial), default=0)
        self._spatial_side = max((abs(dx) for _, dx in spatial), default=0)

    # --- what the program reads ---
    def _weights(self):
        twin = self.twin
        out = {"blocks": []}
        codes = ops.arange(self.num_codes, dtype="int32")[None, None]  # (1, 1, K)
        out["table"] = _numpy(twin.embedding(codes))[0, 0]  # (K, C): each code's vector
        skip_kernels, skip_bias = [], 0.0
        cond_kernels, cond_biases = [], []
        for plan, block in zip(self._blocks, twin.blocks, strict=True):
            w = {
                "vertical_kernel": _numpy(plan.vertical.tap_kernel("float32")),
                "vertical_bias": _numpy(plan.vertical.bias),
                "horizontal_kernel": _numpy(plan.horizontal.tap_kernel("float32")),
                "horizontal_bias": _numpy(plan.horizontal.bias),
            }
            w["to_horizontal_kernel"], w["to_horizontal_bias"] = _dense(block.vertical_to_horizontal)
            if plan.has_h_out:
                w["residual_kernel"], w["residual_bias"] = _dense(block.residual)
            if plan.spatial is not None:
                w.update(_attention_weights(block.attention))
            if plan.vertical_norm:
                w["vertical_scale"], w["vertical_shift"] = _affine(block.vertical_norm)
            if plan.horizontal_norm:
                w["horizontal_scale"], w["horizontal_shift"] = _affine(block.horizontal_norm)
            if block.conditioned:
                for layer in (block.condition_vertical, block.condition_horizontal):
                    kernel, bias = _dense(layer)
                    cond_kernels.append(kernel)
                    cond_biases.append(bias)
            kernel, bias = _dense(block.skip)
            skip_kernels.append(kernel)
            skip_bias = skip_bias + bias
            out["blocks"].append(w)
        # The skips of all blocks in one matmul: concat_b(g_b) @ stack_b(W_b) = sum_b g_b @ W_b.
        out["skip_kernel"] = np.concatenate(skip_kernels, axis=0)  # (L * C, C)
        out["skip_bias"] = np.asarray(skip_bias, "float32")
        if cond_kernels:  # every block's two conditioning projections in one matmul per row
            out["cond_kernel"] = np.concatenate(cond_kernels, axis=1)  # (C_cond, L * 4C)
            out["cond_bias"] = np.concatenate(cond_biases)
        out["hidden_kernel"], out["hidden_bias"] = _dense(twin.head_hidden)
        if self._head.norm:
            out["head_scale"], out["head_shift"] = _affine(twin.head_norm)
        out["head_attention"] = [_attention_weights(a) for a in twin.head_attentions]
        out["logits_kernel"], out["logits_bias"] = _dense(twin.head_logits)
        return to_device(out)

    def _initial_state(self, weights, cond, batch):
        g, c = self.grid_size, self.twin.channels
        state = {
            "codes": np.zeros((batch, g, g), "int32"),
            "logp": np.zeros((batch,), "float32"),
            "vertical": [np.zeros((batch, b.up, g + 2 * b.side, c), "float32") for b in self._blocks],
            "sums": np.zeros((self._attention, batch, c), "float32"),
            "descriptors": np.zeros(
                (self._attention, batch, self._spatial_up + 1, g + 2 * self._spatial_side, 2),
                "float32",
            ),
        }
        data = {}
        if self.upper:  # the conditioning, once for the whole grid
            data["cond"] = ops.cast(self.twin.condition(to_device(cond)), "float32")  # (B, H, W, C)
        return to_device(state), data

    def _run_row(self, weights, state, data, row, columns, controls, flags):
        key = (flags["filtered"], flags["with_logits"])
        if key not in self._programs:
            self._programs[key] = compile_program(self._row_program(**flags))
        if flags["with_logits"] and "logits" not in state:
            b, g = state["codes"].shape[:2]
            state = {**state, "logits": ops.zeros((b, g, g, self.num_codes), "float32")}
        return self._programs[key](weights, state, data, ops.convert_to_tensor(row, "int32"), controls)

    # --- the program ---
    def _row_program(self, filtered: bool, with_logits: bool):
        blocks, head = self._blocks, self._head
        g, k = self.grid_size, self.num_codes
        depth = len(blocks)
        c = self.twin.channels
        pad, s_up, s_side = self._h_pad, self._spatial_up, self._spatial_side

        def vertical_stack(weights, state, data, row):
            """(per-block horizontal pre-activations from the row, (L, B, W, 2C); new caches)."""
            batch = state["codes"].shape[0]
            cond = None
            if "cond" in data:
                features = dynamic_slice(data["cond"], [0, row, 0, 0], [batch, 1, g, c])[:, 0]
                cond = ops.matmul(features, weights["cond_kernel"]) + weights["cond_bias"]  # (B, W, L*4C)
            caches, from_row, v = [], [], None
            for b, (plan, w) in enumerate(zip(blocks, weights["blocks"], strict=True)):
                past = state["vertical"][b]  # (B, up, W + 2 side, C): input rows i - up .. i - 1
                if b == 0:
                    rows, cache = past, past  # rows above only; this row's codes join at its end
                else:
                    current = ops.pad(v, ((0, 0), (plan.side, plan.side), (0, 0)))[:, None]
                    rows = ops.concatenate([past, current], axis=1)  # (B, up + 1, W + 2 side, C)
                    cache = rows[:, 1:]
                caches.append(cache)
                taps = ops.stack(
                    [
                        rows[:, plan.up + dy, plan.side + dx : plan.side + dx + g]
                        for dy, dx in plan.vertical_offsets
                    ],
                    axis=2,
                )  # (B, W, T, C)
                v_pre = plan.vertical.call_on_taps(taps, w["vertical_kernel"], w["vertical_bias"])
                if cond is not None:
                    v_pre = v_pre + cond[..., 4 * c * b : 4 * c * b + 2 * c]  # (B, W, 2C)
                to_h = ops.matmul(v_pre, w["to_horizontal_kernel"]) + w["to_horizontal_bias"]
                if cond is not None:
                    to_h = to_h + cond[..., 4 * c * b + 2 * c : 4 * c * (b + 1)]
                from_row.append(to_h)
                v = gated_activation(v_pre)  # (B, W, C)
                if plan.vertical_norm:
                    v = v * w["vertical_scale"] + w["vertical_shift"]
            return ops.stack(from_row), caches

        def position(weights, carry, data, row, j, controls, from_row):
            """One position: every block, the head and the pick; returns the new carry."""
            h_row, sums, descriptors, codes, logp, logits_row = carry
            batch = codes.shape[0]
            count = ops.cast(row * g + j + 1, "float32")
            h_window = dynamic_slice(h_row, [0, 0, j, 0], [depth, batch, pad + 1, c])  # columns j-pad..j
            pre_row = dynamic_slice(from_row, [0, 0, j, 0], [depth, batch, 1, 2 * c])[:, :, 0]  # (L, B, 2C)
            if self._attention:
                d_window = dynamic_slice(
                    descriptors, [0, 0, 0, j, 0],
                    [self._attention, batch, s_up + 1, 2 * s_side + 1, 2],
                )
            h, gates, h_inputs, new_sums, new_descriptors = None, [], [], [], []

            def attend(a, spatial, offsets, w, x):
                """Attention module a (a `CausalAttention`) at this position: x (B, C) -> (B, C)."""
                total = sums[a] + x  # running sum over raster positions <= this one
                new_sums.append(total)
                hidden = ops.relu(ops.matmul(total / count, w["squeeze_kernel"]) + w["squeeze_bias"])
                x = x * ops.sigmoid(ops.matmul(hidden, w["excite_kernel"]) + w["excite_bias"])
                here = CausalAttention.spatial_descriptor(x)  # (B, 2)
                new_descriptors.append(here)
                spatial_taps = ops.stack(
                    [
                        here if (dy, dx) == (0, 0) else d_window[a, :, s_up + dy, s_side + dx]
                        for dy, dx in offsets
                    ],
                    axis=1,
                )  # (B, T, 2)
                return x * ops.sigmoid(
                    spatial.call_on_taps(spatial_taps, w["spatial_kernel"], w["spatial_bias"])
                )

            for b, (plan, w) in enumerate(zip(blocks, weights["blocks"], strict=True)):
                taps = ops.stack(
                    [h_window[b, :, pad + dx] if dx < 0 else h for dx in plan.horizontal_dx], axis=1
                )  # (B, T, C)
                pre = plan.horizontal.call_on_taps(taps, w["horizontal_kernel"], w["horizontal_bias"])
                gate = gated_activation(pre + pre_row[b])  # (B, C)
                if plan.horizontal_norm:
                    gate = gate * w["horizontal_scale"] + w["horizontal_shift"]
                if plan.attention is not None:
                    gate = attend(plan.attention, plan.spatial, plan.spatial_offsets, w, gate)
                gates.append(gate)
                if plan.has_h_out:
                    update = ops.matmul(gate, w["residual_kernel"]) + w["residual_bias"]
                    h = h + update if plan.residual else update
                    h_inputs.append(h)
            skip = ops.matmul(ops.concatenate(gates, axis=-1), weights["skip_kernel"]) + weights["skip_bias"]
            hidden = ops.relu(ops.matmul(ops.relu(skip), weights["hidden_kernel"]) + weights["hidden_bias"])
            if head.norm:
                hidden = hidden * weights["head_scale"] + weights["head_shift"]
            for a, spatial, offsets, w in zip(
                head.attention, head.spatial, head.spatial_offsets, weights["head_attention"], strict=True
            ):
                hidden = attend(a, spatial, offsets, w, hidden)
            logits = ops.matmul(hidden, weights["logits_kernel"]) + weights["logits_bias"]  # (B, K)
            noise = dynamic_slice(data["noise"], [0, row, j, 0], [batch, 1, 1, k])[:, 0, 0]
            keep = dynamic_slice(data["keep"], [0, row, j], [batch, 1, 1])[:, 0, 0]
            kept = dynamic_slice(data["kept"], [0, row, j], [batch, 1, 1])[:, 0, 0]
            code, log_p = choose(logits, noise, keep, kept, controls, filtered)
            x = ops.take(weights["table"], code, axis=0)  # (B, C): block 0 reads it from now on
            h_row = ops.slice_update(h_row, [0, 0, pad + j, 0], ops.stack([x, *h_inputs])[:, :, None])
            if self._attention:
                sums = ops.stack(new_sums)
                descriptors = ops.slice_update(
                    descriptors, [0, 0, s_up, s_side + j, 0], ops.stack(new_descriptors)[:, :, None, None]
                )
            codes = ops.slice_update(codes, [0, j], code[:, None])
            if with_logits:
                logits_row = ops.slice_update(logits_row, [0, j, 0], logits[:, None])
            return h_row, sums, descriptors, codes, logp + log_p, logits_row

        def run(weights, state, data, row, controls):
            batch = state["codes"].shape[0]
            from_row, caches = vertical_stack(weights, state, data, row)
            descriptors = state["descriptors"]  # rows i - s_up .. i after the shift
            descriptors = ops.concatenate(
                [descriptors[:, :, 1:], ops.zeros_like(descriptors[:, :, :1])], axis=2
            )
            carry = (
                ops.zeros((depth, batch, pad + g, c), "float32"),  # horizontal inputs, this row
                state["sums"],
                descriptors,
                ops.zeros((batch, g), "int32"),
                state["logp"],
                ops.zeros((batch, g, k) if with_logits else (), "float32"),
            )
            h_row, sums, descriptors, codes, logp, logits_row = ops.fori_loop(
                0, g,
                lambda j, carry: position(weights, carry, data, row, j, controls, from_row),
                carry,
            )
            side = blocks[0].side
            embedded = ops.pad(h_row[0, :, pad:], ((0, 0), (side, side), (0, 0)))  # this row's codes
            caches[0] = ops.concatenate([caches[0][:, 1:], embedded[:, None]], axis=1)
            out = {
                "codes": ops.slice_update(state["codes"], [0, row, 0], codes[:, None]),
                "logp": logp,
                "vertical": caches,
                "sums": sums,
                "descriptors": descriptors,
            }
            if with_logits:
                out["logits"] = ops.slice_update(state["logits"], [0, row, 0, 0], logits_row[:, None])
            return out

        return run

    def teacher_forced_logits(
        self, codes: np.ndarray, cond=None, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> np.ndarray:
        """float32 (N, H, W, K) logits of given codes int32 (N, H, W), computed through the
        cached path (every code kept), to compare with the prior's full forward pass."""
        controls = check_controls(batch_size=batch_size)
        codes = np.asarray(codes)
        keep = (codes, np.ones(codes.shape, dtype=bool))
        _, _, logits = self._sample(None, cond, keep, controls, progress=False, with_logits=True)
        return logits
