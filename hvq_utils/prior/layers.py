"""Layers of the gated PixelCNN prior, with their causal structure explicit.

Raster order: position (i, j) of an (H, W) grid comes before (i', j') when i < i', or when
i == i' and j < j'. The logits at a position may depend on the codes strictly before it.

Every spatial read of the network goes through one of two things, each of which says what
it reads, so that a cached, position-by-position sampler (hvq_utils.sampling) can reuse
these layers unchanged:

- `MaskedConv2D`: output (i, j) reads input (i + dy, j + dx) for the offsets listed by
  `receptive_offsets()` (from its 0/1 `mask`, `anchor` and `dilation_rate`). The mask is a
  constant multiplied into the kernel in `call`; the stored kernel is never edited.
  `call_on_taps` applies it to inputs already gathered at those offsets (one matmul).
- `CausalAttention.running_mean`: the mean over raster positions up to and including the
  current one (a running sum divided by a count).

Everything else (Dense, the gates, dropout, the residual and skip additions, and
BatchNormalization in inference, a per-channel affine map) is pointwise. The conditioning
(`Conditioning`) is not causal: upper levels' codes are known everywhere.

BatchNormalization (the seed architecture, `batch_norm=True`) is pointwise only in
inference: in training its batch statistics are taken over every position of the batch,
so a position's training-mode output moves (by O(1 / (B * H * W))) with later codes, as
in the seed implementation. Inference, evaluation and sampling are exactly causal.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

_register = keras.saving.register_keras_serializable(package="hvq")


def vertical_mask(kernel_size: int, mask_type: str) -> list[list[int]]:
    """Taps of the vertical stack's convolution: (k // 2 + 1, k) rows ending at the anchor row.

    The anchor is the centre of the last row. Type "B" reads the rows above and the
    current row; type "A" (the first block) zeroes the current row, so the vertical stack
    at row i only ever depends on input rows < i and feeds the horizontal stack unshifted.
    """
    n = kernel_size // 2
    mask = [[1] * kernel_size for _ in range(n + 1)]
    if mask_type == "A":
        mask[n] = [0] * kernel_size
    return mask


def horizontal_mask(kernel_size: int, mask_type: str) -> list[list[int]]:
    """Taps of the horizontal stack's convolution: one row, k // 2 + 1 columns ending at the anchor.

    Type "A" (the first block) zeroes the anchor, so the current code is never read;
    type "B" reads it (later blocks see features that already exclude the current code).
    """
    n = kernel_size // 2
    return [[1] * n + [0 if mask_type == "A" else 1]]


def raster_mask(kernel_size: int) -> list[list[int]]:
    """Square (k, k) taps at and before the centre in raster order (PixelCNN's type "B")."""
    n = kernel_size // 2
    return [
        [int(r < n or (r == n and c <= n)) for c in range(kernel_size)] for r in range(kernel_size)
    ]


def gated_activation(x):
    """tanh(a) * sigmoid(b) for x = [a, b] split on the last axis: (..., 2C) -> (..., C)."""
    a, b = ops.split(x, 2, axis=-1)
    return ops.tanh(a) * ops.sigmoid(b)


def _check_mask_type(mask_type: str) -> None:
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type={mask_type!r} is unknown; use 'A' (first block) or 'B'")


@_register
class MaskedConv2D(keras.layers.Layer):
    """A 2-D convolution whose taps are an explicit 0/1 mask around an anchor tap.

    x: float (B, H, W, C_in) -> float (B, H, W, filters). With d = dilation_rate, output
    (i, j) = bias + sum over taps (r, c) with mask[r][c] == 1 of
        x[i + (r - anchor[0]) * d, j + (c - anchor[1]) * d] @ kernel[r, c],
    reading zeros outside the grid. A sampler that keeps the inputs a position reads can
    stack them in `receptive_offsets` order and apply `call_on_taps`: one matmul.

    The mask is a constant multiplied into the kernel on every call (`masked_kernel`):
    training leaves the masked taps of the stored kernel untouched (their gradient is
    zero) and they never reach the output.
    """

    def __init__(
        self,
        filters: int,
        mask: list[list[int]],
        anchor: tuple[int, int],
        dilation_rate: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        taps = np.asarray(mask, dtype="float32")  # (kh, kw)
        if taps.ndim != 2 or not np.isin(taps, (0.0, 1.0)).all():
            raise ValueError(f"mask={mask!r} must be a 2-D list of 0s and 1s")
        kh, kw = taps.shape
        ar, ac = anchor
        if not (0 <= ar < kh and 0 <= ac < kw):
            raise ValueError(f"anchor={anchor!r} lies outside the {kh}x{kw} mask; pick a tap in it")
        if dilation_rate < 1:
            raise ValueError(f"dilation_rate={dilation_rate} must be 1 or more")
        self.filters = filters
        self.anchor = (int(ar), int(ac))
        self.dilation_rate = int(dilation_rate)
        self._mask = taps
        d = self.dilation_rate
        # Zero padding that puts the anchor tap on the output position ("valid" conv after it).
        self._padding = (
            (0, 0), (ar * d, (kh - 1 - ar) * d), (ac * d, (kw - 1 - ac) * d), (0, 0)
        )

    @property
    def mask(self) -> np.ndarray:
        """float32 (kh, kw): 1 where a tap is read, 0 where it is masked (a copy)."""
        return self._mask.copy()

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self._mask.shape

    def receptive_offsets(self) -> tuple[tuple[int, int], ...]:
        """(dy, dx) per unmasked tap, row-major: output (i, j) reads input (i + dy, j + dx)."""
        ar, ac = self.anchor
        d = self.dilation_rate
        rows, cols = np.nonzero(self._mask)
        return tuple(
            ((int(r) - ar) * d, (int(c) - ac) * d) for r, c in zip(rows, cols, strict=True)
        )

    def build(self, input_shape):
        kh, kw = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel", shape=(kh, kw, input_shape[-1], self.filters),
            initializer="glorot_uniform",
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def masked_kernel(self):
        """The kernel the convolution uses: kernel * mask, (kh, kw, C_in, filters)."""
        kernel = ops.convert_to_tensor(self.kernel)
        return kernel * ops.cast(self._mask[:, :, None, None], kernel.dtype)

    def tap_kernel(self, dtype=None):
        """The masked kernel's unmasked taps as one matrix: (T * C_in, filters).

        Rows are tap-major in `receptive_offsets` order, so (..., T, C_in) inputs reshaped
        to (..., T * C_in) multiply it. dtype: the result's (default: the kernel's).
        """
        rows, cols = np.nonzero(self._mask)
        kernel = self.masked_kernel()
        if dtype is not None:
            kernel = ops.cast(kernel, dtype)
        flat = ops.reshape(kernel, (-1, kernel.shape[2], self.filters))  # (kh * kw, C_in, F)
        taps = ops.take(flat, rows * self._mask.shape[1] + cols, axis=0)  # (T, C_in, F)
        return ops.reshape(taps, (-1, self.filters))

    def call_on_taps(self, taps, kernel=None, bias=None):
        """The convolution at positions whose inputs are already gathered: one matmul.

        taps: float (..., T, C_in), taps[..., t, :] the input at `receptive_offsets()[t]`
        from the output position -> float (..., filters), equal to `call` there. kernel
        (T * C_in, filters) and bias (filters,) default to `tap_kernel()` and `self.bias`;
        a sampler passes float32 copies of them.
        """
        kernel = self.tap_kernel() if kernel is None else kernel
        bias = self.bias if bias is None else bias
        t, c = taps.shape[-2:]
        flat = ops.reshape(taps, (*taps.shape[:-2], t * c))  # (..., T * C_in)
        return ops.matmul(flat, kernel) + bias

    def call(self, x):
        x = ops.pad(x, self._padding)  # (B, H + pad_h, W + pad_w, C_in)
        y = ops.conv(
            x, self.masked_kernel(), strides=1, padding="valid", dilation_rate=self.dilation_rate
        )
        return y + self.bias

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "mask": self._mask.astype(int).tolist(),
            "anchor": list(self.anchor),
            "dilation_rate": self.dilation_rate,
        }


@_register
class CausalAttention(keras.layers.Layer):
    """Causal CBAM (arXiv 1807.06521): channel, then spatial attention, both raster-causal.

    x: float (B, H, W, C) -> float (B, H, W, C), x's features at each position already
    depending only on codes before it. Channel attention: CBAM's global average pool
    becomes `running_mean` (positions up to and including the current one), through a
    shared MLP (C -> C // reduction -> C) and a sigmoid. Spatial attention: the channel
    mean and max per position, through a `MaskedConv2D` with a raster type-B mask of
    side `spatial_kernel` and dilation `spatial_dilation`, and a sigmoid. CBAM's
    max-pooled channel branch is left out so that a sampler needs running sums only.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 8,
        spatial_kernel: int = 7,
        spatial_dilation: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.channels = channels
        self.reduction = reduction
        self.spatial_kernel = spatial_kernel
        self.spatial_dilation = spatial_dilation
        self.squeeze = keras.layers.Dense(
            max(1, channels // reduction), activation="relu", name="squeeze"
        )
        self.excite = keras.layers.Dense(channels, name="excite")
        centre = spatial_kernel // 2
        self.spatial = MaskedConv2D(
            1, raster_mask(spatial_kernel), anchor=(centre, centre),
            dilation_rate=spatial_dilation, name="spatial",
        )

    def build(self, input_shape):
        self.squeeze.build(input_shape)
        self.excite.build((*input_shape[:-1], max(1, self.channels // self.reduction)))
        self.spatial.build((*input_shape[:-1], 2))

    def running_mean(self, x):
        """Mean over raster positions <= p, per channel: (B, H, W, C) -> (B, H, W, C).

        Summed in float32 (4,096 positions at the bottom level), returned in x's dtype.
        """
        _, h, w, c = x.shape
        flat = ops.reshape(ops.cast(x, "float32"), (-1, h * w, c))  # (B, H*W, C), raster order
        counts = ops.arange(1, h * w + 1, dtype="float32")[:, None]  # (H*W, 1)
        mean = ops.cumsum(flat, axis=1) / counts  # (B, H*W, C)
        return ops.cast(ops.reshape(mean, (-1, h, w, c)), x.dtype)  # (B, H, W, C)

    def channel_scale(self, mean):
        """Per-position channel weights in (0, 1) from a running mean: (..., C) -> (..., C)."""
        return ops.sigmoid(self.excite(self.squeeze(mean)))

    @staticmethod
    def spatial_descriptor(x):
        """Channel mean and max per position: (B, H, W, C) -> (B, H, W, 2)."""
        return ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )

    def spatial_scale(self, descriptor):
        """Per-position weights in (0, 1): (B, H, W, 2) -> (B, H, W, 1), via `self.spatial`."""
        return ops.sigmoid(self.spatial(descriptor))

    def call(self, x):
        x = x * self.channel_scale(self.running_mean(x))
        return x * self.spatial_scale(self.spatial_descriptor(x))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "channels": self.channels,
            "reduction": self.reduction,
            "spatial_kernel": self.spatial_kernel,
            "spatial_dilation": self.spatial_dilation,
        }


@_register
class GatedBlock(keras.layers.Layer):
    """One gated PixelCNN block (van den Oord et al. 2016) with vertical and horizontal stacks.

    Inputs: v, h float (B, H, W, C) (both the code embedding for the first block), cond
    float (B, H, W, C_cond) or None. Returns (v_out, h_out, skip), each (B, H, W, C).

        v_pre = vertical_conv(v) + condition_vertical(cond)                   # (B, H, W, 2C)
        v_out = vertical_norm(gate(v_pre))
        g     = horizontal_norm(gate(horizontal_conv(h) + vertical_to_horizontal(v_pre)
                                     + condition_horizontal(cond)))            # (B, H, W, C)
        g     = dropout(attention(g))
        h_out = h + residual(g)      (type "B"; type "A" has no residual: h is the code itself)
        skip  = skip(g)

    When return_horizontal is False (the last block: nothing reads h_out) there is no
    residual layer and h_out is h, unchanged (a tensor, so the block can be called on
    `keras.Input`s). The norms are BatchNormalization when batch_norm is True (the seed
    architecture), else absent (identity; so is vertical_norm in the last block, whose
    v_out nothing reads); the attention's spatial convolution has side spatial_kernel and
    dilation spatial_dilation.

    Causal structure: `vertical_conv` and `horizontal_conv` are `MaskedConv2D` (see
    `vertical_mask` and `horizontal_mask`); `attention` is a `CausalAttention` or None;
    every other sublayer is pointwise. With type "A" in the first block, v_out at row i
    depends on rows < i only and h_out, skip at (i, j) on raster positions < (i, j).
    A sampler runs the same steps through `vertical`, `horizontal_gate` and `outputs`.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        dilation_rate: int = 1,
        mask_type: str = "B",
        dropout: float = 0.0,
        attention: bool = True,
        attention_reduction: int = 8,
        conditioned: bool = False,
        return_horizontal: bool = True,
        batch_norm: bool = False,
        spatial_kernel: int = 7,
        spatial_dilation: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_mask_type(mask_type)
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd and 3 or more, e.g. 3")
        self.channels = channels
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.mask_type = mask_type
        self.dropout_rate = dropout
        self.use_attention = attention
        self.attention_reduction = attention_reduction
        self.conditioned = conditioned
        self.return_horizontal = return_horizontal
        self.batch_norm = batch_norm
        self.spatial_kernel = spatial_kernel
        self.spatial_dilation = spatial_dilation
        n = kernel_size // 2
        self.vertical_conv = MaskedConv2D(
            2 * channels, vertical_mask(kernel_size, mask_type), anchor=(n, n),
            dilation_rate=dilation_rate, name="vertical_conv",
        )
        self.horizontal_conv = MaskedConv2D(
            2 * channels, horizontal_mask(kernel_size, mask_type), anchor=(0, n),
            dilation_rate=dilation_rate, name="horizontal_conv",
        )
        self.vertical_to_horizontal = keras.layers.Dense(2 * channels, name="vertical_to_horizontal")
        self.condition_vertical = (
            keras.layers.Dense(2 * channels, name="condition_vertical") if conditioned else None
        )
        self.condition_horizontal = (
            keras.layers.Dense(2 * channels, name="condition_horizontal") if conditioned else None
        )
        self.attention = (
            CausalAttention(
                channels, reduction=attention_reduction, spatial_kernel=spatial_kernel,
                spatial_dilation=spatial_dilation, name="attention",
            )
            if attention
            else None
        )
        self.dropout = keras.layers.Dropout(dropout, name="dropout")
        self.residual = keras.layers.Dense(channels, name="residual") if return_horizontal else None
        self.skip = keras.layers.Dense(channels, name="skip")
        # Created last, so that a block without them keeps its weights' order. The last
        # block's vertical output is read by nothing: it has no norm (no weights left untrained).
        self.vertical_norm = (
            keras.layers.BatchNormalization(name="vertical_norm")
            if batch_norm and return_horizontal
            else None
        )
        self.horizontal_norm = (
            keras.layers.BatchNormalization(name="horizontal_norm") if batch_norm else None
        )

    @property
    def has_residual(self) -> bool:
        """Whether h_out adds h: not in a type "A" block, whose h is the current code."""
        return self.mask_type == "B"

    def build(self, v_shape, h_shape, cond_shape=None):
        wide = (*h_shape[:-1], 2 * self.channels)
        narrow = (*h_shape[:-1], self.channels)
        self.vertical_conv.build(v_shape)
        self.horizontal_conv.build(h_shape)
        self.vertical_to_horizontal.build(wide)
        if self.conditioned:
            if cond_shape is None:
                raise ValueError(f"{self.name} is conditioned=True but was built without cond")
            self.condition_vertical.build(cond_shape)
            self.condition_horizontal.build(cond_shape)
        if self.attention is not None:
            self.attention.build(narrow)
        if self.return_horizontal:
            self.residual.build(narrow)
        self.skip.build(narrow)
        if self.vertical_norm is not None:
            self.vertical_norm.build(narrow)
        if self.horizontal_norm is not None:
            self.horizontal_norm.build(narrow)

    def vertical(self, v, cond=None, training=None):
        """(v_pre (B, H, W, 2C), v_out (B, H, W, C)); reads v at `vertical_conv`'s offsets."""
        v_pre = self.vertical_conv(v)
        if self.conditioned:
            v_pre = v_pre + self.condition_vertical(cond)
        v_out = gated_activation(v_pre)
        if self.vertical_norm is not None:
            v_out = self.vertical_norm(v_out, training=training)
        return v_pre, v_out

    def horizontal_gate(self, h, v_pre, cond=None, training=None):
        """Gated (and normalised) horizontal features g (B, H, W, C), before attention.

        Reads h at `horizontal_conv`'s offsets and v_pre, cond at the same position.
        """
        pre = self.horizontal_conv(h) + self.vertical_to_horizontal(v_pre)
        if self.conditioned:
            pre = pre + self.condition_horizontal(cond)
        g = gated_activation(pre)
        if self.horizontal_norm is not None:
            g = self.horizontal_norm(g, training=training)
        return g

    def outputs(self, h, g, training=None):
        """(h_out, skip), each (B, H, W, C), from attended g; pointwise. h_out is h when
        return_horizontal is False."""
        g = self.dropout(g, training=training)
        if not self.return_horizontal:
            return h, self.skip(g)
        update = self.residual(g)
        h_out = h + update if self.has_residual else update
        return h_out, self.skip(g)

    def call(self, v, h, cond=None, training=None):
        if self.conditioned and cond is None:
            raise ValueError(f"{self.name} is conditioned=True; pass cond (B, H, W, C_cond)")
        v_pre, v_out = self.vertical(v, cond, training=training)
        g = self.horizontal_gate(h, v_pre, cond, training=training)
        if self.attention is not None:
            g = self.attention(g)
        h_out, skip = self.outputs(h, g, training=training)
        return v_out, h_out, skip

    def causal_structure(self) -> dict[str, tuple[tuple[int, int], ...] | str | None]:
        """What each stage reads, as (dy, dx) offsets from the output position.

        {"vertical": offsets into v, "horizontal": offsets into h (v_pre and cond are read
        at (0, 0)), "attention_channel": "running_mean" or None, "attention_spatial":
        offsets into the spatial descriptor or None, "residual": True if h_out adds h}.
        """
        attention = self.attention
        return {
            "vertical": self.vertical_conv.receptive_offsets(),
            "horizontal": self.horizontal_conv.receptive_offsets(),
            "attention_channel": "running_mean" if attention is not None else None,
            "attention_spatial": (
                attention.spatial.receptive_offsets() if attention is not None else None
            ),
            "residual": self.has_residual,
        }

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "dilation_rate": self.dilation_rate,
            "mask_type": self.mask_type,
            "dropout": self.dropout_rate,
            "attention": self.use_attention,
            "attention_reduction": self.attention_reduction,
            "conditioned": self.conditioned,
            "return_horizontal": self.return_horizontal,
            "batch_norm": self.batch_norm,
            "spatial_kernel": self.spatial_kernel,
            "spatial_dilation": self.spatial_dilation,
        }


@_register
class CodeEmbedding(keras.layers.Layer):
    """Codes to vectors: int (B, H, W) -> float (B, H, W, output_dim).

    codebook_dim None: a learned (num_codes, output_dim) table (`keras.layers.Embedding`,
    which casts its indices to int). Otherwise the VQ-VAE's codebook, float32 (num_codes,
    codebook_dim), frozen, then a learned 1x1 projection to output_dim; with project=False
    there is no projection and the codebook vectors themselves are the output (output_dim
    must then equal codebook_dim). `codebook` gives the initial vectors; it is not part of
    the config, since the vectors are saved and restored with the weights. Codes are cast
    to int32 first: Keras builds a model under tf.distribute from float placeholders.
    """

    def __init__(
        self,
        num_codes: int,
        output_dim: int,
        codebook_dim: int | None = None,
        codebook: np.ndarray | None = None,
        project: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_codes = num_codes
        self.output_dim = output_dim
        self.codebook_dim = codebook_dim
        self.project = project
        if codebook is not None:
            codebook = np.asarray(codebook, dtype="float32")
            if codebook_dim is None or codebook.shape != (num_codes, codebook_dim):
                raise ValueError(
                    f"codebook has shape {codebook.shape} but this embedding expects "
                    f"({num_codes}, {codebook_dim}); pass the level's (codes, dim) codebook"
                )
        learned = codebook_dim is None
        if not learned and not project and output_dim != codebook_dim:
            raise ValueError(
                f"project=False outputs the {codebook_dim}-wide codebook vectors, not "
                f"output_dim={output_dim}; pass output_dim={codebook_dim} or project=True"
            )
        self._initial_codebook = codebook
        self.table = keras.layers.Embedding(num_codes, output_dim, name="table") if learned else None
        self.projection = (
            keras.layers.Dense(output_dim, name="projection") if not learned and project else None
        )

    def build(self, codes_shape):
        if self.table is not None:
            self.table.build(codes_shape)
            return
        initial = self._initial_codebook
        self.codebook = self.add_weight(
            name="codebook", shape=(self.num_codes, self.codebook_dim), dtype="float32",
            initializer="zeros" if initial is None else keras.initializers.Constant(initial),
            trainable=False,
        )
        if self.projection is not None:
            self.projection.build((*codes_shape, self.codebook_dim))

    def call(self, codes):
        if self.table is not None:
            return self.table(codes)  # (B, H, W, output_dim)
        vectors = ops.take(self.codebook, ops.cast(codes, "int32"), axis=0)  # (B, H, W, codebook_dim)
        if self.projection is None:
            return ops.cast(vectors, self.compute_dtype)
        return self.projection(vectors)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_codes": self.num_codes,
            "output_dim": self.output_dim,
            "codebook_dim": self.codebook_dim,
            "project": self.project,
        }


UPSAMPLINGS = ("nearest", "transposed")


@_register
class Conditioning(keras.layers.Layer):
    """Upper levels' codes to one feature map on this level's grid, seen at every position.

    inputs: {level: int32 (B, h, w)} for each source -> float (B, h * f, w * f, channels).
    Per source, summed over the sources; sublayers are named after their source level:

    - upsampling "nearest" (this project's): `CodeEmbedding` to `channels`, nearest-neighbour
      upsampling by its integer `factor` (`UpSampling2D`, "top_upsampling"), then a
      (kernel_size x kernel_size, "same") convolution ("top_conv").
    - upsampling "transposed" (the seed's): the codes' vectors (the frozen codebook
      vectors themselves, unprojected, or a learned `channels`-wide table), then log2(factor)
      linear 4x4 stride-2 transposed convolutions to `channels` ("top_transposed_0", ...);
      the factor must be a power of two. kernel_size is unused.

    sources: [{"level": "top", "num_codes": 512, "factor": 2, "codebook_dim": None}, ...].
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        sources: list[dict],
        codebooks: dict[str, np.ndarray] | None = None,
        upsampling: str = "nearest",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not sources:
            raise ValueError("sources=[] gives nothing to condition on; name an upper level")
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling={upsampling!r} is unknown; use one of {', '.join(UPSAMPLINGS)}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.upsampling = upsampling
        self.sources = tuple(dict(s) for s in sources)  # a tuple: Keras leaves it untracked
        codebooks = codebooks or {}
        transposed = upsampling == "transposed"
        self.embeddings = [
            CodeEmbedding(
                s["num_codes"],
                s["codebook_dim"] if transposed and s["codebook_dim"] is not None else channels,
                codebook_dim=s["codebook_dim"], codebook=codebooks.get(s["level"]),
                project=not transposed, name=f"{s['level']}_embedding",
            )
            for s in self.sources
        ]
        self.upsamplings, self.convs, self.transposed = [], [], []
        if transposed:
            # Flat, source after source: self._steps[s] of them per source.
            steps = []
            for s in self.sources:
                factor = int(s["factor"])
                n = factor.bit_length() - 1
                if factor < 2 or factor != 2**n:
                    raise ValueError(
                        f"the {s['level']} codes are upsampled by {factor}; transposed "
                        "upsampling needs a power of two (stride-2 steps)"
                    )
                steps.append(n)
                self.transposed.extend(
                    keras.layers.Conv2DTranspose(
                        channels, 4, strides=2, padding="same", name=f"{s['level']}_transposed_{t}"
                    )
                    for t in range(n)
                )
            self._steps = tuple(steps)
        else:
            self._steps = tuple(0 for _ in self.sources)
            self.upsamplings = [
                keras.layers.UpSampling2D(
                    size=s["factor"], interpolation="nearest", name=f"{s['level']}_upsampling"
                )
                for s in self.sources
            ]
            self.convs = [
                keras.layers.Conv2D(channels, kernel_size, padding="same", name=f"{s['level']}_conv")
                for s in self.sources
            ]

    def _parts(self):
        return zip(self.sources, self.embeddings, self.upsamplings, self.convs, strict=True)

    def _transposed_parts(self):
        """(source, embedding, [its transposed convs, in order]) per source."""
        start = 0
        for source, embedding, n in zip(self.sources, self.embeddings, self._steps, strict=True):
            yield source, embedding, self.transposed[start : start + n]
            start += n

    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(s["level"] for s in self.sources)

    def build(self, input_shape):
        if self.upsampling == "transposed":
            for source, embedding, convs in self._transposed_parts():
                batch, h, w = input_shape[source["level"]]
                embedding.build((batch, h, w))
                width = embedding.output_dim
                for conv in convs:
                    conv.build((batch, h, w, width))
                    h, w, width = 2 * h, 2 * w, self.channels
            return
        for source, embedding, upsampling, conv in self._parts():
            batch, h, w = input_shape[source["level"]]
            f = source["factor"]
            embedding.build((batch, h, w))
            upsampling.build((batch, h, w, self.channels))
            conv.build((batch, h * f, w * f, self.channels))

    def call(self, inputs):
        total = None
        if self.upsampling == "transposed":
            for source, embedding, convs in self._transposed_parts():
                x = embedding(inputs[source["level"]])  # (B, h, w, D or channels)
                for conv in convs:
                    x = conv(x)  # twice the side, channels
                total = x if total is None else total + x
            return total
        for source, embedding, upsampling, conv in self._parts():
            x = embedding(inputs[source["level"]])  # (B, h, w, channels)
            x = conv(upsampling(x))  # (B, h * f, w * f, channels)
            total = x if total is None else total + x
        return total

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "sources": [dict(s) for s in self.sources],
            "upsampling": self.upsampling,
        }
