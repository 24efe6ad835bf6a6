"""The gated PixelCNN prior over one level's codes, for all three levels.

    prior = build_prior(config, "middle")                # conditioned on the top codes
    compile_prior(prior, config)
    logits = prior({"codes": middle, "top": top}, training=False)   # float32 (B, 32, 32, 256)

The top prior is unconditional; the middle prior sees the top codes; the bottom prior sees
the top and middle codes. The logits at a position depend only on this level's codes
before it in raster order (layers.py says how, layer by layer), and on the conditioning
codes anywhere.

Two architectures (config.prior_arch), the same layers: "hvq" (this project's: one kernel
size, cycled dilations, attention in every block, nearest-neighbour upsampling of the
conditioning) and "seed" (the seed implementation's numbers, ../shared/SEED.md; see
`seed_layout`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np
from keras import ops

from hvq_utils.config import Config, upper_levels
from hvq_utils.prior.layers import CausalAttention, CodeEmbedding, Conditioning, GatedBlock

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
        logits = head(sum of skip_b)                  # ReLU, 1x1, ReLU, [BatchNorm,
                                                      # attention x head_attention], 1x1

    conditioning: {level: {"num_codes": K, "grid_size": g}} per upper level (empty for top).
    codebook_dims: None for learned embeddings, else {level: D} for this level and each
    upper level, whose codes are embedded by the VQ-VAE's frozen (K, D) codebook vectors
    (initial values from `codebooks`, which is not part of the config: the vectors are
    saved with the weights).

    Per-block structure (defaults: the "hvq" architecture): kernel_sizes, one per block
    (None: kernel_size everywhere); first_block_attention (False: attention only in the
    residual blocks, b >= 1); spatial_kernel and spatial_dilation of every attention's
    masked spatial convolution; batch_norm (BatchNormalization after each block's two
    gates and after the head's hidden layer); head_attention (causal attention modules
    in the head, between its two 1x1 layers); conditioning_upsampling ("nearest" or
    "transposed", see `Conditioning`).
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
        kernel_sizes: list[int] | None = None,
        first_block_attention: bool = True,
        spatial_kernel: int = 7,
        spatial_dilation: int = 1,
        batch_norm: bool = False,
        head_attention: int = 0,
        conditioning_upsampling: str = "nearest",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not dilations:
            raise ValueError("dilations=[] gives a prior with no blocks; give one per block")
        if kernel_sizes is not None and len(kernel_sizes) != len(dilations):
            raise ValueError(
                f"kernel_sizes has {len(kernel_sizes)} entries for {len(dilations)} blocks; "
                "give one kernel size per block (or None)"
            )
        if head_attention and not attention:
            raise ValueError(f"head_attention={head_attention} needs attention=True")
        self.level = level
        self.num_codes = num_codes
        self.grid_size = grid_size
        self.channels = channels
        self.kernel_size = kernel_size
        self.dilations = tuple(int(d) for d in dilations)
        self.kernel_sizes = (
            tuple(int(k) for k in kernel_sizes) if kernel_sizes is not None
            else (kernel_size,) * len(self.dilations)
        )
        self._per_block_kernels = kernel_sizes is not None
        self.first_block_attention = first_block_attention
        self.spatial_kernel = spatial_kernel
        self.spatial_dilation = spatial_dilation
        self.batch_norm = batch_norm
        self.head_attention_count = int(head_attention)
        self.conditioning_upsampling = conditioning_upsampling
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
                channels, kernel_size, sources, codebooks=codebooks,
                upsampling=conditioning_upsampling, name="conditioning",
            )
        self.blocks = [
            GatedBlock(
                channels, kernel_size=k, dilation_rate=d, mask_type="A" if b == 0 else "B",
                dropout=dropout, attention=attention and (b > 0 or first_block_attention),
                attention_reduction=attention_reduction,
                conditioned=self.conditioning is not None,
                return_horizontal=b < len(self.dilations) - 1, batch_norm=batch_norm,
                spatial_kernel=spatial_kernel, spatial_dilation=spatial_dilation, name=f"block_{b}",
            )
            for b, (k, d) in enumerate(zip(self.kernel_sizes, self.dilations, strict=True))
        ]
        self.head_hidden = keras.layers.Dense(channels, activation="relu", name="head_hidden")
        # float32 logits under a mixed-precision policy: the softmax and the loss need them.
        self.head_logits = keras.layers.Dense(num_codes, dtype="float32", name="head_logits")
        # After the hvq layers, so that a prior without them keeps its weights' order.
        self.head_norm = keras.layers.BatchNormalization(name="head_norm") if batch_norm else None
        self.head_attentions = [
            CausalAttention(
                channels, reduction=attention_reduction, spatial_kernel=spatial_kernel,
                spatial_dilation=spatial_dilation, name=f"head_attention_{a}",
            )
            for a in range(self.head_attention_count)
        ]
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

    def head(self, skip, training=None):
        """Logits float32 (B, H, W, num_codes) from the summed skips (B, H, W, C).

        Pointwise, but for the head's causal attention modules (none in "hvq" priors).
        """
        x = self.head_hidden(ops.relu(skip))
        if self.head_norm is not None:
            x = self.head_norm(x, training=training)
        for attention in self.head_attentions:
            x = attention(x)
        return self.head_logits(x)

    def logits_from_embedding(self, x, cond=None, training=None):
        """The network after the code embedding: x float (B, H, W, C) -> logits."""
        v = h = x
        skip = None
        for block in self.blocks:
            v, h, s = block(v, h, cond, training=training)
            skip = s if skip is None else skip + s
        return self.head(skip, training=training)

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
            "kernel_sizes": list(self.kernel_sizes) if self._per_block_kernels else None,
            "first_block_attention": self.first_block_attention,
            "spatial_kernel": self.spatial_kernel,
            "spatial_dilation": self.spatial_dilation,
            "batch_norm": self.batch_norm,
            "head_attention": self.head_attention_count,
            "conditioning_upsampling": self.conditioning_upsampling,
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


# The seed implementation's priors (../shared/SEED.md), per level: the first block's kernel,
# the later blocks' kernel, {block index % 5: dilation} (else 1), and the head's attention
# modules. SEED.md gives the middle and bottom dilations as "2 or 3 at two of every five
# blocks"; this project reads that as 2 at i % 5 == 2 and 3 at i % 5 == 4.
SEED_FIRST_KERNEL = {"top": 7, "middle": 9, "bottom": 9}
SEED_KERNEL = {"top": 3, "middle": 3, "bottom": 5}
SEED_DILATIONS = {"top": {2: 2, 4: 2}, "middle": {2: 2, 4: 3}, "bottom": {2: 2, 4: 3}}
SEED_HEAD_ATTENTION = {"top": 2, "middle": 2, "bottom": 3}
SEED_DROPOUT_LEVELS = ("top", "middle")  # the seed's bottom prior has no dropout
SEED_SPATIAL_KERNEL = 5  # the causal attention's masked spatial convolution: 5x5, dilation 2
SEED_SPATIAL_DILATION = 2


def seed_layout(config: Config, level: str) -> dict:
    """The seed architecture's PixelCNNPrior arguments for `level` (block count from config).

    kernel_sizes: SEED_FIRST_KERNEL for block 0 (type "A", no residual), SEED_KERNEL after;
    dilations: SEED_DILATIONS by block index % 5; dropout: config.prior_dropout (0.2 in the
    "seed" preset) at top and middle, 0 at the bottom, as the seed had; attention (if
    config.prior_attention) in the residual blocks only (b >= 1) and SEED_HEAD_ATTENTION
    modules in the head, each with a 5x5 dilation-2 spatial convolution; BatchNormalization
    after each gate and in the head; conditioning by 4x4 stride-2 transposed convolutions.
    """
    blocks = config.prior_blocks[config.level(level)]
    by_index = SEED_DILATIONS[level]
    attention = config.prior_attention
    return {
        "kernel_size": SEED_KERNEL[level],
        "kernel_sizes": [SEED_FIRST_KERNEL[level]] + [SEED_KERNEL[level]] * (blocks - 1),
        "dilations": [by_index.get(b % 5, 1) for b in range(blocks)],
        "dropout": config.prior_dropout if level in SEED_DROPOUT_LEVELS else 0.0,
        "attention": attention,
        "first_block_attention": False,
        "spatial_kernel": SEED_SPATIAL_KERNEL,
        "spatial_dilation": SEED_SPATIAL_DILATION,
        "batch_norm": True,
        "head_attention": SEED_HEAD_ATTENTION[level] if attention else 0,
        "conditioning_upsampling": "transposed",
    }


def _hvq_layout(config: Config, level: str) -> dict:
    """This project's PixelCNNPrior arguments: config.prior_kernel everywhere, dilations
    cycled from config.prior_dilations, dropout and attention in every block."""
    if config.prior_kernel < 3:
        raise ValueError(
            f"prior_kernel={config.prior_kernel} lets the PixelCNN see no past codes; use 3 or more"
        )
    blocks = config.prior_blocks[config.level(level)]
    return {
        "kernel_size": config.prior_kernel,
        "dilations": [config.prior_dilations[b % len(config.prior_dilations)] for b in range(blocks)],
        "dropout": config.prior_dropout,
        "attention": config.prior_attention,
    }


def build_prior(
    config: Config, level: str, codebooks: Mapping[str, np.ndarray] | None = None
) -> PixelCNNPrior:
    """The prior for `level` ("top", "middle" or "bottom"), sized by `config`.

    codebooks: {level: float32 (K, latent_dim)} for this level and the levels above it;
    required when config.prior_embedding == "codebook", ignored otherwise.
    config.prior_arch "hvq": block b uses kernel config.prior_kernel and dilation
    config.prior_dilations[b % len(prior_dilations)]. "seed": the seed's kernels,
    dilations, dropout, attention placement, BatchNorm and conditioning (`seed_layout`;
    prior_kernel and prior_dilations are not used).
    """
    i = config.level(level)
    layout = seed_layout(config, level) if config.prior_arch == "seed" else _hvq_layout(config, level)
    upper = upper_levels(level)
    codebook_dims = None
    if config.prior_embedding == "codebook":
        codebooks = _checked_codebooks(config, (*upper, level), codebooks)
        codebook_dims = {name: config.latent_dim for name in codebooks}
    else:
        codebooks = None
    return PixelCNNPrior(
        level=level,
        num_codes=config.codebook_sizes[i],
        grid_size=config.grid_sizes[i],
        channels=config.prior_channels[i],
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
        **layout,
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
