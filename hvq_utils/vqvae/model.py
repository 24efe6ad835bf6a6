"""The 3-level VQ-VAE of the seed: three encoders, three quantizers, one decoder.

    vq = build_vqvae(get_preset("full"))
    codes = vq.encode(images)        # images: float32 (B, 512, 512, 3) in [0, 1]
    # {"top": int32 (B, 16, 16), "middle": int32 (B, 32, 32), "bottom": int32 (B, 64, 64)}
    images = vq.decode(codes)        # float32 (B, 512, 512, 3) in [0, 1]
    compile_vqvae(vq, config); vq.fit(image_batches)   # batches of images only, no labels

Encoders (sizes at the full preset). Each level reads the image through its own stride-2
convolutions (5, 4 and 3 of them: 16, 32 and 64 pixel grids), then residual blocks with CBAM
attention. The middle level also sees the quantized top latents and the bottom level the
quantized top and middle latents, each upsampled to its grid by stride-2 transposed
convolutions and concatenated before a 1x1 convolution to the latent dim. With
`encoder="shared"` the levels share one stem instead: the bottom level's convolutions run once,
the middle level continues from them with one more and the top level with another, which more
than halves the encoder's arithmetic (the decoder's, unchanged, then dominates).

Decoder. Each level's quantized latents go through a 3x3 convolution and residual blocks at
their own grid, then up to the image size through their own chain of stride-2 transposed
convolutions (widths mirror the encoder's); the three results are summed into a
`decoder_channels` wide trunk, and residual blocks and a 3x3 convolution make RGB. The trunk
runs at full resolution, which is why it is narrow and its blocks carry no CBAM.

Output: clipped to [0, 1] with a straight-through gradient. A plain clip would stop the
gradient of a pixel that overshoots the range in the wrong direction; a sigmoid would need
infinite logits for the exact black of "pad" resizing and flattens gradients near 0 and 1.

Ablation (`reconstruct(images, levels=...)`): a level left out is decoded from its codebook's
usage-weighted mean vector at every position, the latent the decoder sees on average for that
level, instead of zeros, which the decoder never saw. The picture then shows what the named
levels carry on top of an "average" contribution of the others.

Coarse losses (`coarse_loss`, hvq architecture only). Left to the reconstruction alone, the
bottom level, which sees the image 4x finer than the top, learns to carry everything, and the
upper levels' latents shrink to the origin: ablating the top cost 0.00 dB after the demo
training. So training also decodes the top level alone and the top and middle levels together
(the same trunk on the running sum of the level streams, pooled: 4x the top grid's side, 8x the
middle's), and adds the MSE of each against the image pooled alike, weighted by `coarse_loss`
(0.3 and 1.0). The top level must then draw the coarse picture and each lower level adds what
the levels above lack.

Training: `fit` on batches of images. `call` returns the reconstruction with the latent loss
(the coarse losses included) and the code statistics; `compute_loss` returns MSE + the
quantizers' latent losses and updates the metrics `mse`, `psnr` (dB, mean of per-image
PSNR) and `<level>_perplexity`, `<level>_usage` (fraction of the codebook used in the batch),
which `fit` and `evaluate` log on the TensorFlow and the JAX backends.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from hvq_utils.config import LEVELS, Config, upper_levels
from hvq_utils.vqvae.layers import ResBlock
from hvq_utils.vqvae.quantizer import VectorQuantizer, replica_count
from hvq_utils.vqvae.subpixel import SubPixelConvTranspose

# (upper, lower) level indices: each lower encoder sees every upper level's quantized latents.
_CONDITIONS = tuple((LEVELS.index(u), i) for i, level in enumerate(LEVELS) for u in upper_levels(level))


def _down(widths, name: str) -> keras.Sequential:
    """Stride-2 4x4 convolutions with ReLU, one per width: (B, H, W, C) -> (B, H/2^n, W/2^n, w)."""
    convs = [
        layers.Conv2D(w, 4, strides=2, padding="same", activation="relu", name=f"{name}_down{i}")
        for i, w in enumerate(widths)
    ]
    return keras.Sequential(convs, name=name)


def _up(widths, name: str, relu_last: bool) -> list[layers.Layer]:
    """Stride-2 4x4 transposed convolutions, one per width, each doubling the grid side.

    Sub-pixel form: what Conv2DTranspose(w, 4, strides=2, padding="same") computes, from the
    same weights, through a plain stride-1 convolution, which XLA's CPU backend (JAX) trains
    several times faster than a transposed one (see subpixel.py).
    """
    return [
        SubPixelConvTranspose(
            w, name=f"{name}_up{i}", activation="relu" if relu_last or i < len(widths) - 1 else None
        )
        for i, w in enumerate(widths)
    ]


@keras.saving.register_keras_serializable(package="hvq")
class VQVAE(keras.Model):
    """The hierarchical VQ-VAE; build it with `build_vqvae(config)`.

    call(images, training) -> reconstructions: float32 (B, S, S, 3) in [0, 1], for images
    float (B, S, S, 3) in [0, 1], S = config.image_size.
    """

    # Whether `_decode_latents(coarse=True)` exists, which `coarse_loss` trains (not the seed's).
    has_coarse_decodes = True

    def __init__(self, config: Config | dict, **kwargs):
        super().__init__(**kwargs)
        c = config if isinstance(config, Config) else Config.from_dict(config)
        self.config = c
        d = c.downsamples  # stride-2 steps to each grid, (top, middle, bottom)
        widths = c.encoder_channels

        def blocks(level: str, part: str) -> list[layers.Layer]:
            # CBAM where the seed had it, in the encoders; the decoder's blocks are plain,
            # which matters at full resolution, where attention costs more than the convolutions.
            return [
                ResBlock(
                    c.cbam and part == "encoder", c.cbam_reduction, name=f"{level}_{part}_res{i}"
                )
                for i in range(c.res_blocks)
            ]

        if c.encoder == "separate":
            self.stems = [_down(widths[: d[i]], f"{level}_stem") for i, level in enumerate(LEVELS)]
        else:
            # Run in reverse order: bottom from the image, middle from bottom, top from middle.
            self.stems = [
                _down(widths[d[1] : d[0]], "top_stem"),
                _down(widths[d[2] : d[1]], "middle_stem"),
                _down(widths[: d[2]], "bottom_stem"),
            ]
        self.encoder_blocks = [
            keras.Sequential([*blocks(level, "encoder"), layers.ReLU()], name=f"{level}_encoder")
            for level in LEVELS
        ]
        self.conditioners = [
            keras.Sequential(
                _up([c.latent_dim] * (d[upper] - d[lower]), f"{LEVELS[upper]}_to_{LEVELS[lower]}",
                    relu_last=True),
                name=f"{LEVELS[upper]}_to_{LEVELS[lower]}",
            )
            for upper, lower in _CONDITIONS
        ]
        self.pre_quantizers = [
            layers.Conv2D(c.latent_dim, 1, name=f"{level}_pre_quantizer") for level in LEVELS
        ]
        self._make_quantizers_and_metrics(c)
        # Upsampling widths mirror the encoder: the width the encoder had at each grid side,
        # and decoder_channels at full size.
        self.decoder_streams = [
            keras.Sequential(
                [
                    layers.Conv2D(widths[d[i] - 1], 3, padding="same", name=f"{level}_decoder_in"),
                    *blocks(level, "decoder"),
                    layers.ReLU(),
                    *_up([*widths[: d[i] - 1][::-1], c.decoder_channels], f"{level}_decoder",
                         relu_last=False),
                ],
                name=f"{level}_decoder",
            )
            for i, level in enumerate(LEVELS)
        ]
        self.trunk = keras.Sequential(
            [
                *blocks("trunk", "decoder"),
                layers.ReLU(),
                # float32 so the images come out float32 under a mixed-precision policy.
                layers.Conv2D(3, 3, padding="same", dtype="float32", name="to_rgb"),
            ],
            name="trunk",
        )

    def _make_quantizers_and_metrics(self, c: Config) -> None:
        """What every architecture shares besides its layers: the quantizers, the level-dropout
        seed and the metrics (`SeedVQVAE` calls this too)."""
        self.quantizers = [
            VectorQuantizer(
                c.codebook_sizes[i], c.latent_dim, update=c.codebook_update, decay=c.ema_decay,
                commitment=c.commitment, restart_after=c.restart_after, seed=c.seed + i,
                lookup=c.code_lookup, name=f"{level}_quantizer",
            )
            for i, level in enumerate(LEVELS)
        ]
        self._dropout_seed = keras.random.SeedGenerator(c.seed + 17, name="level_dropout_seed")
        self.trackers = [keras.metrics.Mean(name="mse"), keras.metrics.Mean(name="psnr")]
        for level in LEVELS:
            self.trackers += [
                keras.metrics.Mean(name=f"{level}_perplexity"),
                keras.metrics.Mean(name=f"{level}_usage"),
            ]

    # --- forward pieces ---
    def _features(self, images) -> list:
        """Encoder features per level (top, middle, bottom), before conditioning."""
        self._check_images(images)
        if self.config.encoder == "separate":
            raw = [stem(images) for stem in self.stems]
        else:
            bottom = self.stems[2](images)
            middle = self.stems[1](bottom)
            raw = [self.stems[0](middle), middle, bottom]
        return [block(h) for block, h in zip(self.encoder_blocks, raw, strict=True)]

    def _quantize(self, images, training: bool = False) -> list[dict]:
        """Quantizer outputs per level (top, middle, bottom); see VectorQuantizer.call."""
        features = self._features(images)
        outputs: list[dict] = []
        for i in range(len(LEVELS)):
            parts = [features[i]]
            for (upper, lower), conditioner in zip(_CONDITIONS, self.conditioners, strict=True):
                if lower == i:
                    parts.append(conditioner(outputs[upper]["quantized"]))
            h = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
            z = self.pre_quantizers[i](h)  # (B, g, g, latent_dim)
            outputs.append(self.quantizers[i](z, training=training))
        return outputs

    def _decode_latents(self, latents: list, training=False, coarse: bool = False):
        """Quantized latents per level (top, middle, bottom) -> float32 (B, S, S, 3) in [0, 1].
        (`training` matters only to architectures with BatchNorm in the decoder, `SeedVQVAE`.)

        coarse=True also returns the coarse decodes the coarse losses train:
        (images, [top alone, top + middle]), each the trunk run on the running sum of the
        level streams average-pooled by `_coarse_pool` (to 64x64 and 256x256 at 512 pixels),
        float32 (B, s, s, 3). Pooled first, both together cost about a quarter of the
        full-size trunk pass.
        """
        merged = self.decoder_streams[0](latents[0])
        sums = [merged]
        for stream, q in zip(self.decoder_streams[1:], latents[1:], strict=True):
            merged = merged + stream(q)  # (B, S, S, decoder_channels)
            sums.append(merged)
        images = _clip_straight_through(self.trunk(merged))
        if not coarse:
            return images
        pools = [self._coarse_pool(i) for i in range(2)]
        return images, [
            _clip_straight_through(self.trunk(ops.average_pool(s, p, p)))
            for s, p in zip(sums[:2], pools, strict=True)
        ]

    def _coarse_pool(self, level_index: int) -> int:
        """Average pooling from the image to a coarse decode's side: 4x the top grid's side for
        the top alone, 8x the middle grid's for top + middle (the bottom grid's 4x).

        Chosen by single demo-scale runs (README, "Quality"): pooling the top + middle decode
        to 4x the middle grid's side left the middle level weak (0.6 dB lost when ablated, at
        weights 0.3 / 0.3), and 8x for both decodes too (0.4 dB).
        """
        return max(1, 2 ** (self.config.downsamples[level_index] - 2 - level_index))

    def _coarse_losses(self, images, coarse: list):
        """Per-image MSE, (B,), of the top-alone and the top+middle coarse decodes against the
        image average-pooled alike, weighted by `coarse_loss` and summed. The
        trunk is the full decoder's, so the top level must carry the coarse picture and the
        lower levels add what it lacks, which keeps a level from collapsing into nothing."""
        x = ops.cast(images, "float32")
        total = 0.0
        for i, got in enumerate(coarse):
            p = self._coarse_pool(i)
            weight = self.config.coarse_loss[i]
            total = total + weight * ops.mean((ops.average_pool(x, p, p) - got) ** 2, axis=(1, 2, 3))
        return total

    def _drop_levels(self, latents: list, training) -> list:
        """Level dropout: while training, each image's middle and bottom latents are each
        replaced, with chance `level_dropout`, by the level's mean vector (as `reconstruct`
        ablates a level), so the decoder must also draw the picture from the levels above
        and those cannot leave everything to the bottom level."""
        rate = self.config.level_dropout
        if not training or rate <= 0.0:
            return latents
        kept = [latents[0]]
        for quantizer, q in zip(self.quantizers[1:], latents[1:], strict=True):
            drop = keras.random.uniform(ops.shape(q)[:1], seed=self._dropout_seed) < rate  # (B,)
            mean = ops.zeros_like(q) + ops.cast(quantizer.mean_vector(), q.dtype)
            kept.append(ops.where(drop[:, None, None, None], ops.stop_gradient(mean), q))
        return kept

    def _check_images(self, images) -> None:
        size = self.config.image_size
        shape = tuple(images.shape)
        expected = (size, size, 3)
        wrong = [s is not None and s != e for s, e in zip(shape[1:], expected, strict=False)]
        if len(shape) != 4 or any(wrong):
            raise ValueError(
                f"images have shape {shape} but this VQ-VAE takes (B, {size}, {size}, 3) "
                f"(image_size={size}); resize them or build the model for their size"
            )

    def build(self, input_shape):
        # A symbolic pass (shapes only, no arithmetic) builds every sublayer, in order.
        self.call(keras.KerasTensor(tuple(input_shape)))

    def call(self, images, training=False):
        """images float (B, S, S, 3) -> {"images": float32 (B, S, S, 3) reconstruction,
        "latent_loss": float32 (B,), "<level>_perplexity", "<level>_usage": float32 (B,)}.

        The batch statistics are repeated per image, so that `predict` can concatenate
        batches and `compute_loss` reads everything it needs from this return value.
        """
        outputs = self._quantize(images, training=training)
        latents = self._drop_levels([o["quantized"] for o in outputs], training)
        if training and self.has_coarse_decodes and max(self.config.coarse_loss) > 0.0:
            recon, coarse = self._decode_latents(latents, training=training, coarse=True)
            extra = self._coarse_losses(images, coarse)
        else:
            recon = self._decode_latents(latents, training=training)
            extra = 0.0
        per_image = ops.ones_like(recon[:, 0, 0, 0], dtype="float32")  # (B,)
        latent_loss = per_image * sum(o["loss"] for o in outputs) + extra
        result = {"images": recon, "latent_loss": latent_loss}
        for level, o in zip(LEVELS, outputs, strict=True):
            result[f"{level}_perplexity"] = per_image * o["perplexity"]
            result[f"{level}_usage"] = per_image * o["usage"]
        return result

    # --- public API ---
    def encode(self, images) -> dict:
        """images: float32 (B, S, S, 3) in [0, 1] -> {level: int32 (B, g, g)}, g = grid side."""
        outputs = self._quantize(ops.convert_to_tensor(images, "float32"))
        return {level: o["codes"] for level, o in zip(LEVELS, outputs, strict=True)}

    def code_model(self) -> keras.Model:
        """A functional model over this VQ-VAE's layers: images -> {level: int32 codes}.

        `code_model().predict_on_batch(images)` gives what `encode(images)` gives, but as one
        compiled program (tf.function, or jax.jit on JAX, where `encode` runs op by op).
        """
        if getattr(self, "_code_model", None) is None:
            size = self.config.image_size
            images = keras.Input((size, size, 3), name="images")
            outputs = self._quantize(images)
            codes = {level: o["codes"] for level, o in zip(LEVELS, outputs, strict=True)}
            # Not tracked as a sublayer: it holds no weights of its own and is not saved.
            object.__setattr__(self, "_code_model", keras.Model(images, codes, name="codes"))
        return self._code_model

    def decode(self, codes: dict):
        """{level: int (B, g, g)} for all three levels -> float32 (B, S, S, 3) in [0, 1]."""
        missing = [level for level in LEVELS if level not in codes]
        if missing:
            raise ValueError(
                f"codes lack the {', '.join(missing)} level(s); give all of {', '.join(LEVELS)}"
            )
        latents = [q.lookup(codes[lv]) for q, lv in zip(self.quantizers, LEVELS, strict=True)]
        return self._decode_latents(latents)

    def reconstruct(self, images, levels: tuple[str, ...] | list[str] = LEVELS):
        """Decode images keeping only `levels`; the others are ablated.

        images: float32 (B, S, S, 3) in [0, 1] -> float32 (B, S, S, 3) in [0, 1]. An ablated
        level's latents are replaced by its codebook's usage-weighted mean vector everywhere.
        """
        unknown = [level for level in levels if level not in LEVELS]
        if unknown:
            raise ValueError(f"levels={tuple(levels)!r} has unknown {unknown[0]!r}; use {LEVELS}")
        outputs = self._quantize(ops.convert_to_tensor(images, "float32"))
        latents = []
        for level, quantizer, o in zip(LEVELS, self.quantizers, outputs, strict=True):
            q = o["quantized"]  # (B, g, g, D)
            if level not in levels:
                q = ops.zeros_like(q) + quantizer.mean_vector()  # (D,) broadcast over B, g, g
            latents.append(q)
        return self._decode_latents(latents)

    def codebooks(self) -> dict:
        """The codebook vectors per level: {level: float32 (K, D)}, K the level's codebook size."""
        return {level: q.vectors() for level, q in zip(LEVELS, self.quantizers, strict=True)}

    # --- training ---
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """MSE(x, reconstruction) + the quantizers' latent losses; updates the model's metrics.

        x: the images batch, float (B, S, S, 3); y is unused (batches carry images only);
        y_pred: what `call` returned for x.
        """
        x = ops.cast(x, "float32")
        per_image = ops.mean((x - y_pred["images"]) ** 2, axis=(1, 2, 3))  # (B,)
        latent_loss = ops.mean(y_pred["latent_loss"])
        values = [per_image, psnr_db(per_image)]
        for level in LEVELS:
            values += [y_pred[f"{level}_perplexity"], y_pred[f"{level}_usage"]]
        # Per image, so that a short last batch counts per image and `mse` and `psnr` over a
        # pass are means per image.
        for tracker, value in zip(self.trackers, values, strict=True):
            tracker.update_state(value)
        # Keras sums the replicas' gradients under tf.distribute; keep the loss a global mean.
        return (ops.mean(per_image) + latent_loss) / replica_count()

    def get_config(self) -> dict:
        # What the model is, not how it was trained or fed: the image size and the VQ-VAE's
        # own group of settings (nanoGPT's GPTConfig split).
        own = self.config.section("vqvae")
        return {**super().get_config(), "config": {"image_size": self.config.image_size, **own}}

    @classmethod
    def from_config(cls, config: dict) -> VQVAE:
        config = dict(config)
        return cls(Config.from_dict(config.pop("config")), **config)


def _clip_straight_through(raw):
    """Forward: clip to [0, 1]; backward: identity, so overshooting pixels are pulled back."""
    return raw + ops.stop_gradient(ops.clip(raw, 0.0, 1.0) - raw)


def psnr_db(mse):
    """PSNR in dB of images in [0, 1] from their per-image mean squared error: (B,) -> (B,).

    The one definition of the package: metrics report the mean of per-image PSNR.
    """
    return -10.0 * ops.log(ops.maximum(mse, 1e-10)) / ops.log(10.0)


def build_vqvae(config: Config) -> VQVAE:
    """The VQ-VAE for `config` (a `SeedVQVAE` for arch="seed"), built on a (1, S, S, 3) input
    so its weights exist."""
    if config.arch == "seed":
        from hvq_utils.vqvae.seed import SeedVQVAE  # a subclass of VQVAE: imported late

        vq = SeedVQVAE(config)
    else:
        vq = VQVAE(config)
    vq.build((1, config.image_size, config.image_size, 3))
    return vq


def compile_vqvae(vq: VQVAE, config: Config) -> VQVAE:
    """Compile for `fit` with Adam(config.learning_rate); the loss is the model's own.

    Under a "mixed_float16" policy Keras wraps the optimizer in a LossScaleOptimizer. The
    compile state is saved with the model, so `keras.models.load_model` gives it back
    compiled, optimizer state included.
    """
    vq.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    # Made now, not inside the first traced step: that would trace the step twice.
    vq.optimizer.build(vq.trainable_variables)
    return vq
