"""The seed implementation's VQ-VAE (`arch="seed"`), rebuilt from the numbers in SEED.md.

    vq = SeedVQVAE(get_preset("seed")); vq.build((1, 512, 512, 3))
    # the same API as VQVAE: encode, decode, reconstruct(levels=...), code_model, codebooks,
    # compute_loss and its metrics, fit, save and load_model

A subclass of `VQVAE` that makes other layers and overrides the forward pieces (`_features`,
`_quantize`, `_decode_latents`); VQVAE's `call` (level dropout included), the quantizers, the
loss, the metrics, the ablation by the codebook's mean vector and the saved config are VQVAE's. No
code of the seed is used: only the numbers SEED.md reads from it. Sizes below are the `seed`
preset's (512 pixels, every encoder width 128, latent dim 64, decoder_channels 256,
cbam_reduction 4).

Encoders. Level i (top, middle, bottom) reads the image through downsamples[i] (5, 4, 3)
stride-2 3x3 convolutions of widths encoder_channels[:downsamples[i]], each followed by ELU
and one residual block (`SeedResBlock`: 1x1 conv -> 3x3 conv at half width -> CBAM -> 1x1
conv, skip, BatchNorm). The top level then goes by a 1x1 convolution to the latent dim. The
middle level concatenates the quantized top latents, upsampled by 4x4 stride-2 transposed
convolutions of latent_dim channels, applies BatchNorm, 2 residual blocks at twice its last
encoder width (256), and a 1x1 convolution to the latent dim; the bottom level the same with
the quantized top and middle latents and 3 residual blocks.

Decoder. Per level a 1x1 convolution (twice the level's last encoder width for the top: 256,
the width itself for the others: 128), then 4x4 stride-2 transposed convolutions, each with
ELU and BatchNorm, up to the image size; the three summed; three 1x1 convolutions of
decoder_channels (256) at full resolution, BatchNorm, a 1x1 convolution to RGB (float32),
clipped to [0, 1] with VQVAE's straight-through clip. Every 4x4 stride-2 transposed
convolution is a `SubPixelConvTranspose` (same weights and outputs, faster).

Activation: ELU(alpha=0.1) everywhere one is applied (SEED.md: "throughout").

BatchNorm: `call(images, training)` (VQVAE's) passes `training` to the encoders, the
quantizers and the decoder, so `fit` trains on batch statistics and updates the moving ones,
on TensorFlow and on JAX; `encode`, `decode`, `reconstruct`, `predict`, `evaluate` and
`code_model` use the moving statistics.

Where SEED.md leaves something open, this module chooses (and the parameter count of the
`seed` preset, 8,599,587 without the quantizers' bookkeeping state, matches its 8.6M):

- Residual block: the first 1x1 convolution keeps the block's full width and the 3x3 one
  halves it ("1x1 -> 3x3 at half width"); 1x1 at half width instead would give 7.16M, far from
  8.6M. ELU after the first 1x1 and after the 3x3; the last 1x1 is linear; BatchNorm after the
  sum, with no activation after it. The skip is the block's input; where the input is not as
  wide as the block (the middle level's first 256-wide block reads 128 + 64 = 192 channels)
  the skip is the first 1x1 convolution's output, which then doubles as the projection.
- CBAM sits on the 3x3 convolution's half-width output. Channel gate: one MLP (Dense with
  bias, ELU, then Dense with bias) shared by the average- and max-pooled descriptors, summed,
  sigmoid; hidden width channels // cbam_reduction. Spatial gate: the channel-wise mean and
  max (2 maps, as in the CBAM paper) through one Conv2D(channels, 5, dilation 3 or 5, "same",
  with bias), sigmoid: one gate per pixel and channel. A spatial convolution over all channels
  instead would give about 11.8M parameters.
- Dilation 3 in every block of the top level, 5 in every block of the middle and bottom
  levels, the 256-wide blocks after the conditioning included.
- Stride-2 convolutions: "same" padding, bias, ELU after each, then the residual block.
- The top level's 1x1 convolution to the latent dim (SEED.md names it for middle and bottom
  only); every 1x1 convolution to the latent dim is linear.
- Conditioning: each (upper, lower) pair has its own transposed convolutions (the bottom level
  does not share the middle level's), with ELU after each; no BatchNorm until the one after
  the concatenation. Concatenation order: the level's own features, then top, then middle.
- Decoder: order transposed convolution -> ELU -> BatchNorm; ELU after the per-level 1x1
  convolution and after each of the three full-resolution 1x1 convolutions, BatchNorm after
  the third; the RGB convolution is linear. The levels are summed without activation.
- Widths at other sizes (the smoke preset has encoder_channels (8, 16, 16)): a level's blocks
  after the conditioning are 2 x its own last encoder width; in the decoder the transposed
  convolution that makes the grid of side S / 2^k has encoder_channels[k - 1] channels (the
  encoder's width there) and the one that makes full size encoder_channels[0], so the three
  levels meet at the same width. With every width 128 this is SEED.md's 128 everywhere.
- `res_blocks` is not used (the seed's counts are fixed: one per stride, 2 and 3 after the
  conditioning); `cbam=False` leaves CBAM out, as it does for VQVAE; `encoder` must be
  "separate" (the seed's). BatchNorm: Keras' defaults (momentum 0.99, epsilon 1e-3).
- Codebook sizes are the config's. The seed's code has 128 bottom codes (8,603,683
  parameters without the bookkeeping); with 64, the config's default, 4,096 fewer.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from hvq_utils.config import LEVELS, Config
from hvq_utils.vqvae.model import _CONDITIONS, VQVAE, _clip_straight_through
from hvq_utils.vqvae.subpixel import SubPixelConvTranspose

ALPHA = 0.1  # the seed's ELU slope for negative inputs
# Spatial-gate dilation per level (top, middle, bottom).
DILATIONS = (3, 5, 5)
# Residual blocks after the conditioning, per level (top has no conditioning).
CONDITIONED_BLOCKS = (0, 2, 3)


def _elu(name: str) -> layers.Layer:
    return layers.ELU(alpha=ALPHA, name=name)


@keras.saving.register_keras_serializable(package="hvq")
class SeedCBAM(layers.Layer):
    """The seed's CBAM: channel gate, then a per-pixel and per-channel spatial gate.

    x: (B, H, W, C) -> (B, H, W, C), in the layer's compute dtype. The spatial gate is one
    Conv2D(C, kernel_size, dilation_rate=dilation) over the channel-wise mean and max.
    """

    def __init__(self, reduction: int = 4, kernel_size: int = 5, dilation: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.reduction = reduction
        self.kernel_size = kernel_size
        self.dilation = dilation

    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = max(channels // self.reduction, 1)
        policy = self.dtype_policy
        self.squeeze = layers.Dense(hidden, name="squeeze", dtype=policy)
        self.excite = layers.Dense(channels, name="excite", dtype=policy)
        self.spatial = layers.Conv2D(
            channels, self.kernel_size, padding="same", dilation_rate=self.dilation,
            name="spatial", dtype=policy,
        )
        self.squeeze.build((None, channels))
        self.excite.build((None, hidden))
        self.spatial.build((*input_shape[:-1], 2))

    def _mlp(self, v):
        return self.excite(ops.elu(self.squeeze(v), ALPHA))

    def call(self, x):
        avg = ops.mean(x, axis=(1, 2))  # (B, C)
        peak = ops.max(x, axis=(1, 2))  # (B, C)
        x = x * ops.sigmoid(self._mlp(avg) + self._mlp(peak))[:, None, None, :]
        summary = ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )  # (B, H, W, 2)
        return x * ops.sigmoid(self.spatial(summary))  # (B, H, W, C) gates

    def get_config(self):
        return {
            **super().get_config(),
            "reduction": self.reduction,
            "kernel_size": self.kernel_size,
            "dilation": self.dilation,
        }


@keras.saving.register_keras_serializable(package="hvq")
class SeedResBlock(layers.Layer):
    """BatchNorm(skip + conv1x1(CBAM(elu(conv3x3(h)))), h = elu(conv1x1(x))), width `width`.

    The 3x3 convolution and CBAM run at width // 2. skip is x when x has `width` channels,
    else h. x: (B, H, W, C) -> (B, H, W, width); `training` drives the BatchNorm.
    """

    def __init__(self, width: int, dilation: int = 3, reduction: int = 4, cbam: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.dilation = dilation
        self.reduction = reduction
        self.cbam = cbam

    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = max(self.width // 2, 1)
        policy = self.dtype_policy
        self.conv_in = layers.Conv2D(self.width, 1, name="conv_in", dtype=policy)
        self.conv3 = layers.Conv2D(hidden, 3, padding="same", name="conv3", dtype=policy)
        self.conv_out = layers.Conv2D(self.width, 1, name="conv_out", dtype=policy)
        self.norm = layers.BatchNormalization(name="norm", dtype=policy)
        self.conv_in.build(input_shape)
        self.conv3.build((*input_shape[:-1], self.width))
        self.attention = None
        if self.cbam:
            self.attention = SeedCBAM(self.reduction, 5, self.dilation, name="cbam", dtype=policy)
            self.attention.build((*input_shape[:-1], hidden))
        self.conv_out.build((*input_shape[:-1], hidden))
        self.norm.build((*input_shape[:-1], self.width))
        self.projects = channels != self.width

    def call(self, x, training=None):
        h = ops.elu(self.conv_in(x), ALPHA)
        t = ops.elu(self.conv3(h), ALPHA)
        if self.attention is not None:
            t = self.attention(t)
        skip = h if self.projects else x
        return self.norm(skip + self.conv_out(t), training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.width)

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "dilation": self.dilation,
            "reduction": self.reduction,
            "cbam": self.cbam,
        }


def _decoder_widths(widths, steps: int) -> list[int]:
    """Widths of a level's transposed convolutions, from its grid (2^steps reduction) up:
    the encoder's width at each grid side reached, and widths[0] at full size."""
    return [widths[k - 1] if k >= 1 else widths[0] for k in range(steps - 1, -1, -1)]


@keras.saving.register_keras_serializable(package="hvq")
class SeedVQVAE(VQVAE):
    """The hierarchical VQ-VAE with the seed implementation's layers (see the module docstring).

    call(images, training) -> the dict VQVAE.call returns; images float (B, S, S, 3) in [0, 1].
    """

    # The seed trains on the reconstruction alone: `coarse_loss` does not apply.
    has_coarse_decodes = False

    def __init__(self, config: Config | dict, **kwargs):
        # VQVAE.__init__ would make the other architecture's layers: go to keras.Model's, and
        # make VQVAE's shared state (quantizers, level-dropout seed, metrics) with its helper.
        super(VQVAE, self).__init__(**kwargs)
        c = config if isinstance(config, Config) else Config.from_dict(config)
        if c.encoder != "separate":
            raise ValueError(
                f"encoder={c.encoder!r} is not available with arch='seed'; the seed's levels "
                "have separate encoders (use encoder=separate)"
            )
        self.config = c
        d = c.downsamples
        widths = c.encoder_channels

        def block(width, level_index, name):
            return SeedResBlock(
                width, DILATIONS[level_index], c.cbam_reduction, c.cbam, name=name
            )

        self.image_encoders = []
        for i, level in enumerate(LEVELS):
            parts = []
            for j, w in enumerate(widths[: d[i]]):
                parts += [
                    layers.Conv2D(w, 3, strides=2, padding="same", name=f"{level}_down{j}"),
                    _elu(f"{level}_down{j}_elu"),
                    block(w, i, f"{level}_res{j}"),
                ]
            self.image_encoders.append(keras.Sequential(parts, name=f"{level}_encoder"))
        self.conditioners = []
        for upper, lower in _CONDITIONS:
            name = f"{LEVELS[upper]}_to_{LEVELS[lower]}"
            parts = []
            for j in range(d[upper] - d[lower]):
                parts += [
                    SubPixelConvTranspose(c.latent_dim, name=f"{name}_up{j}"),
                    _elu(f"{name}_up{j}_elu"),
                ]
            self.conditioners.append(keras.Sequential(parts, name=name))
        self.heads = []  # after the conditioning: top has none
        for i, level in enumerate(LEVELS):
            parts = []
            if CONDITIONED_BLOCKS[i]:
                parts.append(layers.BatchNormalization(name=f"{level}_merge_norm"))
                parts += [
                    block(2 * widths[d[i] - 1], i, f"{level}_merge_res{j}")
                    for j in range(CONDITIONED_BLOCKS[i])
                ]
            parts.append(layers.Conv2D(c.latent_dim, 1, name=f"{level}_pre_quantizer"))
            self.heads.append(keras.Sequential(parts, name=f"{level}_head"))
        self._make_quantizers_and_metrics(c)
        self.decoder_streams = []
        for i, level in enumerate(LEVELS):
            width_in = widths[d[i] - 1] * (2 if i == 0 else 1)
            parts = [layers.Conv2D(width_in, 1, name=f"{level}_decoder_in"), _elu(f"{level}_decoder_in_elu")]
            for j, w in enumerate(_decoder_widths(widths, d[i])):
                parts += [
                    SubPixelConvTranspose(w, name=f"{level}_decoder_up{j}"),
                    _elu(f"{level}_decoder_up{j}_elu"),
                    layers.BatchNormalization(name=f"{level}_decoder_up{j}_norm"),
                ]
            self.decoder_streams.append(keras.Sequential(parts, name=f"{level}_decoder"))
        trunk = []
        for j in range(3):
            trunk += [
                layers.Conv2D(c.decoder_channels, 1, name=f"trunk_conv{j}"),
                _elu(f"trunk_conv{j}_elu"),
            ]
        self.trunk = keras.Sequential(
            [
                *trunk,
                layers.BatchNormalization(name="trunk_norm"),
                # float32 so the images come out float32 under a mixed-precision policy.
                layers.Conv2D(3, 1, dtype="float32", name="to_rgb"),
            ],
            name="trunk",
        )

    # --- forward pieces ---
    def _features(self, images, training=None) -> list:
        """Image-path encoder features per level (top, middle, bottom), before conditioning."""
        self._check_images(images)
        return [encoder(images, training=training) for encoder in self.image_encoders]

    def _quantize(self, images, training: bool = False) -> list[dict]:
        """Quantizer outputs per level (top, middle, bottom); see VectorQuantizer.call."""
        features = self._features(images, training=training)
        outputs: list[dict] = []
        for i in range(len(LEVELS)):
            parts = [features[i]]
            for (upper, lower), conditioner in zip(_CONDITIONS, self.conditioners, strict=True):
                if lower == i:
                    parts.append(conditioner(outputs[upper]["quantized"]))
            h = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
            z = self.heads[i](h, training=training)  # (B, g, g, latent_dim)
            outputs.append(self.quantizers[i](z, training=training))
        return outputs

    def _decode_latents(self, latents: list, training=False):
        """Quantized latents per level (top, middle, bottom) -> float32 (B, S, S, 3) in [0, 1]."""
        merged = self.decoder_streams[0](latents[0], training=training)
        for stream, q in zip(self.decoder_streams[1:], latents[1:], strict=True):
            merged = merged + stream(q, training=training)  # (B, S, S, widths[0])
        return _clip_straight_through(self.trunk(merged, training=training))

