"""The gated PixelCNN prior over one level's codes, for all three levels.

    prior = build_prior(config, "middle")                # conditioned on the top codes
    compile_prior(prior, config)
    logits = prior({"codes": middle, "top": top}, training=False)   # float32 (B, 32, 32, 256)

The top prior is unconditional; the middle prior sees the top codes; the bottom prior sees
the top and middle codes. The logits at a position depend only on this level's codes
before it in raster order (layers.py says how, layer by layer), and on the conditioning
codes anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np
from keras import ops

from hvq_utils.config import Config, upper_levels
from hvq_utils.prior.layers import CodeEmbedding, Conditioning, GatedBlock

_register = keras.saving.register_keras_serializable(package="hvq")


@_register
class PixelCNNPrior(keras.Model):
    """Gated PixelCNN over one level's (grid_size, grid_size) codes.

    Call with {"codes": int32 (B, H, W), <upper level>: int32 (B, h, w), ...} holding the
    keys in `required_inputs` (others are ignored); returns float32 logits (B, H, W,
    num_codes). The forward pass, which a cached sampler repeats stage by stage:

        x    = embedding(codes)                       # (B, H, W, C)
        cond = condition(inputs)                      # (B, H, W, C) or None for the top level
        v, h = x, x
        for block in blocks:                          # GatedBlock; the first has mask type "A"
            v, h, skip_b = block(v, h, cond)
        logits = head(sum of skip_b)                  # ReLU, 1x1, ReLU, 1x1

    conditioning: {level: {"num_codes": K, "grid_size": g}} per upper level (empty for top).
    codebook_dims: None for learned embeddings, else {level: D} for this level and each
    upper level, whose codes are embedded by the VQ-VAE's frozen (K, D) codebook vectors
    (initial values from `codebooks`, which is not part of the config: the vectors are
    saved with the weights).
    """

    def __init__(
        self,
        level: str,
        num_codes: int,
        grid_size: int,
        channels: int,
        kernel_size: int,
        dilations: list[int],
        dropout: float = 0.0,
        attention: bool = True,
        attention_reduction: int = 8,
        conditioning: dict[str, dict] | None = None,
        codebook_dims: dict[str, int] | None = None,
        codebooks: dict[str, np.ndarray] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not dilations:
            raise ValueError("dilations=[] gives a prior with no blocks; give one per block")
        self.level = level
        self.num_codes = num_codes
        self.grid_size = grid_size
        self.channels = channels
        self.kernel_size = kernel_size
        self.dilations = tuple(int(d) for d in dilations)
        self.dropout_rate = dropout
        self.use_attention = attention
        self.attention_reduction = attention_reduction
        # Plain dicts copied into tuples of items: Keras would wrap dict attributes for tracking.
        self._conditioning = tuple((k, dict(v)) for k, v in (conditioning or {}).items())
        self._codebook_dims = None if codebook_dims is None else tuple(codebook_dims.items())
        dims = dict(self._codebook_dims or ())
        codebooks = codebooks or {}
        self.embedding = CodeEmbedding(
            num_codes, channels, codebook_dim=dims.get(level), codebook=codebooks.get(level),
            name="embedding",
        )
        self.conditioning = None
        if self._conditioning:
            sources = [
                {
                    "level": name,
                    "num_codes": spec["num_codes"],
                    "factor": _upsampling_factor(name, spec["grid_size"], level, grid_size),
                    "codebook_dim": dims.get(name),
                }
                for name, spec in self._conditioning
            ]
            self.conditioning = Conditioning(
                channels, kernel_size, sources, codebooks=codebooks, name="conditioning"
            )
        self.blocks = [
            GatedBlock(
                channels, kernel_size=kernel_size, dilation_rate=d, mask_type="A" if b == 0 else "B",
                dropout=dropout, attention=attention, attention_reduction=attention_reduction,
                conditioned=self.conditioning is not None,
                return_horizontal=b < len(self.dilations) - 1, name=f"block_{b}",
            )
            for b, d in enumerate(self.dilations)
        ]
        self.head_hidden = keras.layers.Dense(channels, activation="relu", name="head_hidden")
        # float32 logits under a mixed-precision policy: the softmax and the loss need them.
        self.head_logits = keras.layers.Dense(num_codes, dtype="float32", name="head_logits")
        self.build()

    @property
    def required_inputs(self) -> tuple[str, ...]:
        """Keys of the input dict: "codes", then the upper levels, top first."""
        return ("codes", *(name for name, _ in self._conditioning))

    def symbolic_inputs(self) -> dict:
        """{key: keras.Input int32 (None, side, side)} for each key of `required_inputs`."""
        sides = {"codes": self.grid_size, **{k: v["grid_size"] for k, v in self._conditioning}}
        return {
            key: keras.Input((sides[key], sides[key]), dtype="int32", name=key)
            for key in self.required_inputs
        }

    def build(self, input_shape=None):
        """Creates every weight by one symbolic forward pass on `symbolic_inputs()`.

        The sizes come from the constructor, so input_shape is unused. Each sublayer then
        knows its output shape, which `summary()` shows.
        """
        self.call(self.symbolic_inputs())

    def _check_inputs(self, inputs) -> None:
        needed = ", ".join(self.required_inputs)
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"the {self.level} prior takes a dict with keys {needed}; "
                f"got {type(inputs).__name__}"
            )
        sides = {"codes": self.grid_size, **{k: v["grid_size"] for k, v in self._conditioning}}
        for key in self.required_inputs:
            side = sides[key]
            if key not in inputs:
                raise ValueError(
                    f"the {self.level} prior needs inputs {needed}; {key!r} is missing: "
                    f"add the {key} codes as int32 (B, {side}, {side})"
                )
            shape = tuple(inputs[key].shape[1:])
            if shape != (side, side):
                raise ValueError(
                    f"inputs[{key!r}] has grid {shape} but the {self.level} prior expects "
                    f"({side}, {side}); pass codes of the preset this prior was built for"
                )

    def condition(self, inputs: Mapping):
        """Conditioning features float (B, H, W, C) from the upper levels' codes; None on top."""
        if self.conditioning is None:
            return None
        return self.conditioning({name: inputs[name] for name, _ in self._conditioning})

    def head(self, skip):
        """Logits float32 (B, H, W, num_codes) from the summed skips (B, H, W, C); pointwise."""
        return self.head_logits(self.head_hidden(ops.relu(skip)))

    def logits_from_embedding(self, x, cond=None, training=None):
        """The network after the code embedding: x float (B, H, W, C) -> logits."""
        v = h = x
        skip = None
        for block in self.blocks:
            v, h, s = block(v, h, cond, training=training)
            skip = s if skip is None else skip + s
        return self.head(skip)

    def call(self, inputs, training=None):
        self._check_inputs(inputs)
        x = self.embedding(inputs["codes"])  # (B, H, W, C)
        return self.logits_from_embedding(x, self.condition(inputs), training=training)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "level": self.level,
            "num_codes": self.num_codes,
            "grid_size": self.grid_size,
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "dilations": list(self.dilations),
            "dropout": self.dropout_rate,
            "attention": self.use_attention,
            "attention_reduction": self.attention_reduction,
            "conditioning": {k: dict(v) for k, v in self._conditioning},
            "codebook_dims": None if self._codebook_dims is None else dict(self._codebook_dims),
        }


def _upsampling_factor(source: str, source_grid: int, level: str, grid: int) -> int:
    if grid % source_grid:
        raise ValueError(
            f"the {level} grid ({grid}) is not a multiple of the {source} grid ({source_grid}); "
            "use downsamples that differ by whole powers of two"
        )
    return grid // source_grid


def _checked_codebooks(
    config: Config, levels: tuple[str, ...], codebooks: Mapping | None
) -> dict[str, np.ndarray]:
    """{level: float32 (K, latent_dim)} for `levels`, or a clear error for a missing or bad one."""
    codebooks = codebooks or {}
    missing = [name for name in levels if name not in codebooks]
    if missing:
        raise ValueError(
            f"prior_embedding='codebook' needs codebooks for {', '.join(levels)}; missing "
            f"{', '.join(missing)}: pass codebooks={{level: (K, D) array}} from the VQ-VAE, "
            "or set prior_embedding='learned'"
        )
    out = {}
    for name in levels:
        array = np.asarray(codebooks[name], dtype="float32")
        expected = (config.codebook_sizes[config.level(name)], config.latent_dim)
        if array.shape != expected:
            raise ValueError(
                f"codebooks[{name!r}] has shape {array.shape} but the config's {name} codebook "
                f"is {expected}; pass the codebook of the VQ-VAE these codes came from"
            )
        out[name] = array
    return out


def build_prior(
    config: Config, level: str, codebooks: Mapping[str, np.ndarray] | None = None
) -> PixelCNNPrior:
    """The prior for `level` ("top", "middle" or "bottom"), sized by `config`.

    codebooks: {level: float32 (K, latent_dim)} for this level and the levels above it;
    required when config.prior_embedding == "codebook", ignored otherwise.
    Block b uses dilation config.prior_dilations[b % len(prior_dilations)].
    """
    i = config.level(level)
    if config.prior_kernel < 3:
        raise ValueError(
            f"prior_kernel={config.prior_kernel} lets the PixelCNN see no past codes; use 3 or more"
        )
    upper = upper_levels(level)
    codebook_dims = None
    if config.prior_embedding == "codebook":
        codebooks = _checked_codebooks(config, (*upper, level), codebooks)
        codebook_dims = {name: config.latent_dim for name in codebooks}
    else:
        codebooks = None
    blocks = config.prior_blocks[i]
    dilations = [config.prior_dilations[b % len(config.prior_dilations)] for b in range(blocks)]
    return PixelCNNPrior(
        level=level,
        num_codes=config.codebook_sizes[i],
        grid_size=config.grid_sizes[i],
        channels=config.prior_channels[i],
        kernel_size=config.prior_kernel,
        dilations=dilations,
        dropout=config.prior_dropout,
        attention=config.prior_attention,
        attention_reduction=config.cbam_reduction,
        conditioning={
            name: {
                "num_codes": config.codebook_sizes[config.level(name)],
                "grid_size": config.grid_sizes[config.level(name)],
            }
            for name in upper
        },
        codebook_dims=codebook_dims,
        codebooks=codebooks,
        name=f"{level}_prior",
    )


@_register
class BitsPerCode(keras.metrics.Mean):
    """Mean negative log-likelihood in bits per code: cross-entropy (nats) / ln 2.

    y_true: int (B, H, W) codes; y_pred: float32 (B, H, W, K) logits.
    """

    def __init__(self, name: str = "bits_per_code", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        nats = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        return super().update_state(nats / math.log(2.0), sample_weight=sample_weight)


def compile_prior(prior: PixelCNNPrior, config: Config) -> PixelCNNPrior:
    """Compiles `prior` for fit(x={"codes": ..., upper levels...}, y=codes) and returns it.

    Adam(config.prior_learning_rate), sparse categorical cross-entropy on the logits, and
    the `bits_per_code` metric (logged as bits_per_code and val_bits_per_code).
    """
    prior.compile(
        optimizer=keras.optimizers.Adam(config.prior_learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[BitsPerCode()],
    )
    return prior
