"""Presets and configuration: one typed config, its keys grouped by the stage that owns them.

    from hvq_utils import get_preset
    cfg = get_preset("demo", image_size=256)      # keyword overrides
    cfg = get_preset("full", **parse_overrides(["prior_steps=5000"]))   # --set key=value
    cfg.section("prior")                          # {"prior_blocks": [20, 20, 15], ...}

Every key belongs to exactly one group (`GROUPS`): "data" (stage 01, prepare),
"vqvae" (02), "encode" (03), "prior" (04-06), "sample" (07) and "runtime" (how a stage
runs, not what it makes: never compared). A stage records, hashes and compares only its
own group; what earlier stages fixed (image size, grids, codebook sizes, the models) it
takes from its inputs' manifests (`Config.adopt`), so `get_preset(name, stage=...)` refuses
an override of another group's key rather than ignore it (`foreign_setting`). Every value is
checked when the config is made, so a bad one fails before any work.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

LEVELS = ("top", "middle", "bottom")
RESIZE_POLICIES = ("pad", "crop", "stretch")
CODEBOOK_UPDATES = ("ema", "grad")
ENCODER_KINDS = ("separate", "shared")
ARCHITECTURES = ("hvq", "seed")
PRIOR_EMBEDDINGS = ("learned", "codebook")
MIXED_PRECISION = ("auto", "off", "bfloat16", "float16")

GROUP_ORDER = ("data", "vqvae", "encode", "prior", "sample", "runtime")
# The stages, in pipeline order, and the groups their outputs are made with: those their
# inputs fixed, then the stage's own group, last.
STAGE_RECORDS = {
    "prepare": ("data",),
    "train-vqvae": ("data", "vqvae"),
    "encode": ("data", "vqvae", "encode"),
    "train-prior": ("data", "vqvae", "encode", "prior"),
    "sample": ("data", "vqvae", "sample"),
}
STAGE_GROUPS = {stage: groups[-1] for stage, groups in STAGE_RECORDS.items()}  # the group each owns
# Where the user meets each stage: its notebook(s), for messages.
STAGE_NUMBERS = {"prepare": "01", "train-vqvae": "02", "encode": "03", "train-prior": "04-06", "sample": "07"}
# The groups a stage takes from an input's manifest instead of from the config, and that input
# (its command-line option; the notebooks' parameter has the same name in capitals). `sample`
# uses no encode or prior setting: the priors it loads were trained with theirs.
FIXED_BY_INPUT = {
    "prepare": {},
    "train-vqvae": {"data": "--data"},
    "encode": {"data": "--vqvae", "vqvae": "--vqvae"},
    "train-prior": {"data": "--codes", "vqvae": "--codes", "encode": "--codes"},
    "sample": {"data": "--vqvae", "vqvae": "--vqvae", "encode": "--top/--middle/--bottom",
               "prior": "--top/--middle/--bottom"},
}


def upper_levels(level: str) -> tuple[str, ...]:
    """The levels a level is conditioned on, top first: () for top, ("top",) for middle, ..."""
    if level not in LEVELS:
        raise ValueError(f"level={level!r} is unknown; use one of {', '.join(LEVELS)}")
    return LEVELS[: LEVELS.index(level)]


def _key(default, group: str, help: str, resumable: bool = False):
    """A config field: its default (the full preset's), its group, one line of help, and
    whether a stage may resume into an output made with another value (step counts)."""
    return field(default=default, metadata={"group": group, "help": help, "resumable": resumable})


@dataclass(frozen=True)
class Config:
    """Every knob of the pipeline. Per-level tuples are ordered (top, middle, bottom)."""

    # --- data: stage 01 (prepare) ---
    image_size: int = _key(512, "data", "side of the square model input, pixels")
    resize: str = _key("pad", "data", "pad (keep aspect, pad), crop (centre crop) or stretch")
    pad_color: tuple[int, int, int] = _key((0, 0, 0), "data", "fill for pad, and background for alpha")
    min_image_side: int = _key(64, "data", "smaller source images are rejected, pixels")
    val_fraction: float = _key(0.05, "data", "share of images in validation (by path hash)")
    shard_mb: float = _key(100.0, "data", "target TFRecord shard size, megabytes")
    jpeg_quality: int = _key(95, "data", "JPEG quality of the stored images")

    # --- vqvae: stage 02 (train-vqvae) ---
    downsamples: tuple[int, int, int] = _key(
        (5, 4, 3), "vqvae", "stride-2 convolutions from the image to each level's grid (top first)"
    )
    arch: str = _key(
        "hvq", "vqvae", "hvq (this project's layers) or seed (the seed implementation's, see SEED.md)"
    )
    latent_dim: int = _key(64, "vqvae", "dimension of every latent and codebook vector")
    codebook_sizes: tuple[int, int, int] = _key((512, 256, 64), "vqvae", "codes per level (top first)")
    encoder: str = _key("separate", "vqvae", "separate (the seed: one encoder per level) or shared stem")
    # Narrow near full resolution, where convolutions are dear.
    encoder_channels: tuple[int, ...] = _key(
        (16, 32, 64, 128, 256), "vqvae", "width after each stride-2 convolution"
    )
    res_blocks: int = _key(2, "vqvae", "residual blocks after each encoder (with CBAM) and in the decoder")
    cbam: bool = _key(True, "vqvae", "CBAM attention in the encoders' residual blocks")
    cbam_reduction: int = _key(8, "vqvae", "channel reduction of CBAM's MLP")
    decoder_channels: int = _key(16, "vqvae", "width of the merged full-resolution decoder trunk")
    codebook_update: str = _key("ema", "vqvae", "ema, or grad (codebook loss + commitment, the seed's)")
    ema_decay: float = _key(0.99, "vqvae", "decay of the EMA codebook statistics")
    commitment: float = _key(0.25, "vqvae", "weight of the commitment loss")
    restart_after: int = _key(100, "vqvae", "steps a code may stay unused before it is restarted; 0: never")
    code_lookup: str = _key(
        "euclidean", "vqvae", "euclidean, or cosine (unit-length latents and codes: no shrinking to 0)"
    )
    level_dropout: float = _key(
        0.0, "vqvae", "chance per image and step that training decodes without the middle (or bottom) level"
    )
    coarse_loss: tuple[float, float] = _key(
        (0.3, 1.0), "vqvae", "weights of the coarse losses: top alone, top+middle (hvq arch; 0,0: off)"
    )
    batch_size: int = _key(16, "vqvae", "training images per device; the global batch is this x devices")
    learning_rate: float = _key(3e-4, "vqvae", "Adam learning rate")
    steps: int = _key(20000, "vqvae", "total training steps", resumable=True)
    flip: bool = _key(True, "vqvae", "random horizontal flips while training")
    seed: int = _key(0, "vqvae", "seed of the VQ-VAE's initialisation, codebook picks and data order")

    # --- encode: stage 03 ---
    encode_batch_size: int = _key(16, "encode", "images per device per encoder call")
    encode_flips: bool = _key(
        True, "encode", "also encode the train images flipped left-right: twice the codes for the priors"
    )

    # --- prior: stages 04-06 (train-prior) ---
    prior_arch: str = _key(
        "hvq", "prior", "hvq (this project's blocks) or seed (the seed's kernels, dilations, dropout)"
    )
    prior_blocks: tuple[int, int, int] = _key((20, 20, 15), "prior", "gated blocks per level (top first)")
    prior_channels: tuple[int, int, int] = _key((256, 128, 64), "prior", "channels per level (top first)")
    prior_kernel: int = _key(3, "prior", "kernel side of the masked convolutions (odd)")
    prior_dilations: tuple[int, ...] = _key((1, 2, 4), "prior", "dilations, cycled over the gated blocks")
    prior_dropout: float = _key(0.1, "prior", "dropout in every gated block")
    prior_attention: bool = _key(True, "prior", "causal CBAM in every gated block")
    prior_embedding: str = _key("learned", "prior", "learned, or codebook (the VQ-VAE's vectors, frozen)")
    prior_batch_size: int = _key(32, "prior", "training grids per device; the global batch is this x devices")
    prior_learning_rate: float = _key(3e-4, "prior", "Adam learning rate")
    prior_steps: int = _key(20000, "prior", "total training steps", resumable=True)
    prior_seed: int = _key(0, "prior", "seed of the prior's initialisation and data order")

    # --- sample: stage 07 ---
    n: int = _key(16, "sample", "images to generate")
    temperature: float = _key(1.0, "sample", "softmax temperature (> 0; below 1: safer, less varied)")
    top_k: int = _key(0, "sample", "sample among the k likeliest codes; 0: all")
    top_p: float = _key(1.0, "sample", "sample among the likeliest codes holding this probability; 1: all")
    sample_seed: int = _key(0, "sample", "seed of the samples (same seed, same images)")
    sample_batch_size: int = _key(16, "sample", "images sampled at once")

    # --- runtime: how any stage runs; recorded, never compared ---
    checkpoint_every: int = _key(500, "runtime", "training steps between checkpoints")
    mixed_precision: str = _key("auto", "runtime", "auto (bfloat16 on TPU, float16 on GPU, off on CPU), "
                                "off, bfloat16 or float16")

    def __post_init__(self) -> None:
        _validate(self)

    # --- derived sizes ---
    @property
    def reduction(self) -> int:
        """The top level's reduction factor (32 at the full preset)."""
        return 2 ** self.downsamples[0]

    @property
    def grid_sizes(self) -> tuple[int, int, int]:
        """Latent grid side per level, (top, middle, bottom): (16, 32, 64) at 512 pixels."""
        return tuple(self.image_size // 2**d for d in self.downsamples)  # type: ignore[return-value]

    def level(self, name: str) -> int:
        """Index of a level name in the per-level tuples."""
        if name not in LEVELS:
            raise ValueError(f"level={name!r} is unknown; use one of {', '.join(LEVELS)}")
        return LEVELS.index(name)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def section(self, group: str) -> dict:
        """The values of one group's keys, JSON-ready: what a stage records and compares."""
        keys = group_keys(group)
        return {k: v for k, v in self.to_dict().items() if k in keys}

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        return cls(**_coerce_all(d))

    def replace(self, **overrides) -> Config:
        return dataclasses.replace(self, **_coerce_all(overrides))

    def adopt(self, manifest: dict) -> Config:
        """This config with every group an input artifact fixed replaced by its values.

        manifest: an artifact's manifest; its "settings" ({group: values}) hold its own
        group and every group upstream of it. A prior trained on smoke-preset codes with
        `--preset demo` thus gets the demo prior settings and the codes' own grids.
        """
        values: dict = {}
        for group, section in manifest.get("settings", {}).items():
            if group != "runtime":
                values.update(section)
        return self.replace(**values)


def group_of(key: str) -> str:
    """The group that owns a key, e.g. group_of("prior_dropout") == "prior"."""
    for f in dataclasses.fields(Config):
        if f.name == key:
            return f.metadata["group"]
    raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(sorted(_field_types()))}")


def group_keys(group: str) -> tuple[str, ...]:
    """The keys a group owns, in declaration order."""
    if group not in GROUP_ORDER:
        raise ValueError(f"group={group!r} is unknown; use one of {', '.join(GROUP_ORDER)}")
    return tuple(f.name for f in dataclasses.fields(Config) if f.metadata["group"] == group)


def resumable_keys() -> frozenset[str]:
    """Keys an unfinished or finished output may be resumed with a new value of (step counts)."""
    return frozenset(f.name for f in dataclasses.fields(Config) if f.metadata["resumable"])


def help_lines(group: str) -> list[str]:
    """One "key (default): help" line per key of a group, defaults of the full preset."""
    lines = []
    for f in dataclasses.fields(Config):
        if f.metadata["group"] == group:
            default = f.default
            if isinstance(default, tuple):
                default = ",".join(map(str, default))
            lines.append(f"  {f.name} ({default}): {f.metadata['help']}")
    return lines


def _field_types() -> dict[str, object]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _coerce(key: str, value, hint) -> object:
    """Turn a command-line string or a JSON list into the field's type."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        args = typing.get_args(hint)
        inner = args[0]
        try:
            return tuple(_coerce(key, v, inner) for v in value)
        except TypeError:
            raise ValueError(f"{key}={value!r} is not a list; give comma-separated values") from None
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}={value!r} is not a boolean; use true or false")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{key}={value!r} must be a number")
        try:
            number = hint(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}={value!r} is not a valid {hint.__name__}") from None
        if hint is int and isinstance(value, float) and value != int(value):
            raise ValueError(f"{key}={value!r} must be a whole number")
        return number
    return str(value) if hint is str else value


def _coerce_all(values: dict) -> dict:
    types = _field_types()
    unknown = sorted(set(values) - set(types))
    if "preset" in unknown:
        raise ValueError("preset is not a setting; choose it with --preset NAME (or get_preset(NAME))")
    if unknown:
        raise ValueError(f"unknown config key {unknown[0]!r}; known keys: {', '.join(sorted(types))}")
    return {k: _coerce(k, v, types[k]) for k, v in values.items()}


def _one_of(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not allowed; use one of {', '.join(allowed)}")


def _validate(c: Config) -> None:
    _one_of("resize", c.resize, RESIZE_POLICIES)
    _one_of("codebook_update", c.codebook_update, CODEBOOK_UPDATES)
    _one_of("encoder", c.encoder, ENCODER_KINDS)
    _one_of("arch", c.arch, ARCHITECTURES)
    _one_of("code_lookup", c.code_lookup, ("euclidean", "cosine"))
    _one_of("prior_arch", c.prior_arch, ARCHITECTURES)
    _one_of("prior_embedding", c.prior_embedding, PRIOR_EMBEDDINGS)
    _one_of("mixed_precision", c.mixed_precision, MIXED_PRECISION)
    for key in ("downsamples", "codebook_sizes", "prior_blocks", "prior_channels"):
        if len(getattr(c, key)) != 3:
            raise ValueError(f"{key}={getattr(c, key)!r} needs 3 values, one per level (top, middle, bottom)")
    d = c.downsamples
    if not (d[0] > d[1] > d[2] >= 1):
        raise ValueError(f"downsamples={d!r} must shrink from top to bottom and stay >= 1, e.g. (5, 4, 3)")
    if c.image_size < 1 or c.image_size % c.reduction:
        ok = max(c.reduction, round(c.image_size / c.reduction) * c.reduction)
        raise ValueError(
            f"image_size={c.image_size} is not divisible by {c.reduction} "
            f"(the top level's reduction); use {ok}"
        )
    if len(c.encoder_channels) != d[0]:
        raise ValueError(
            f"encoder_channels has {len(c.encoder_channels)} widths but the top encoder has "
            f"{d[0]} stride-2 convolutions (downsamples[0]); give {d[0]} widths"
        )
    for level, k in zip(LEVELS, c.codebook_sizes, strict=True):
        if k < 2:
            raise ValueError(f"codebook_sizes has {k} codes for the {level} level; use 2 or more")
    positive = (
        "latent_dim",
        "res_blocks",
        "cbam_reduction",
        "decoder_channels",
        "batch_size",
        "steps",
        "checkpoint_every",
        "prior_kernel",
        "prior_batch_size",
        "prior_steps",
        "min_image_side",
        "jpeg_quality",
        "encode_batch_size",
        "n",
        "sample_batch_size",
    )
    for key in positive:
        if getattr(c, key) < 1:
            raise ValueError(f"{key}={getattr(c, key)} must be 1 or more")
    for key in ("encoder_channels", "prior_blocks", "prior_channels", "prior_dilations"):
        if any(v < 1 for v in getattr(c, key)) or not getattr(c, key):
            raise ValueError(f"{key}={getattr(c, key)!r} needs values of 1 or more")
    if not 0.0 <= c.val_fraction < 1.0:
        raise ValueError(f"val_fraction={c.val_fraction} must be in [0, 1)")
    if not 0.0 < c.ema_decay < 1.0:
        raise ValueError(f"ema_decay={c.ema_decay} must be in (0, 1), e.g. 0.99")
    if not 0.0 <= c.prior_dropout < 1.0:
        raise ValueError(f"prior_dropout={c.prior_dropout} must be in [0, 1)")
    if c.prior_kernel % 2 == 0:
        raise ValueError(f"prior_kernel={c.prior_kernel} must be odd, e.g. 3")
    if c.jpeg_quality > 100:
        raise ValueError(f"jpeg_quality={c.jpeg_quality} must be at most 100")
    if c.shard_mb <= 0 or c.learning_rate <= 0 or c.prior_learning_rate <= 0:
        raise ValueError("shard_mb, learning_rate and prior_learning_rate must be positive")
    if c.restart_after < 0:
        raise ValueError(f"restart_after={c.restart_after} must be 0 (never) or more")
    if not c.temperature > 0:
        raise ValueError(f"temperature={c.temperature} must be above 0, e.g. 1.0")
    if c.top_k < 0:
        raise ValueError(f"top_k={c.top_k} must be 0 (all codes) or more")
    if len(c.coarse_loss) != 2 or min(c.coarse_loss) < 0.0:
        raise ValueError(
            f"coarse_loss={c.coarse_loss!r} needs 2 weights >= 0 (top alone, top + middle), "
            "e.g. 0.3,1.0; 0,0 turns the coarse losses off"
        )
    if not 0.0 <= c.level_dropout < 1.0:
        raise ValueError(f"level_dropout={c.level_dropout} must be in [0, 1); 0 turns it off")
    if not 0.0 < c.top_p <= 1.0:
        raise ValueError(f"top_p={c.top_p} must be in (0, 1]; 1 keeps every code")


PRESETS: dict[str, dict] = {
    # 512x512 images, grids 16/32/64, latent dim 64, codebooks 512/256/64 (the seed document's
    # sizes); widths, prior shapes, EMA codebooks and coarse losses are this project's (see the
    # README, "Quality", for the evidence).
    "full": {},
    # The seed implementation's architecture at the full size (../shared/SEED.md): 128-wide
    # encoders, 256-wide blocks after the conditioning and at full resolution, a codebook
    # trained by gradient without restarts; priors with its kernels, dilations and dropout
    # over the frozen codebook vectors. To compare against; `full` is the default.
    "seed": dict(
        arch="seed",
        encoder_channels=(128, 128, 128, 128, 128),
        decoder_channels=256,
        cbam_reduction=4,
        codebook_update="grad",
        restart_after=0,
        coarse_loss=(0.0, 0.0),
        prior_arch="seed",
        prior_embedding="codebook",
        prior_dropout=0.2,
    ),
    # A laptop CPU in minutes, on the sample data that ships: grids 4/8/16.
    "demo": dict(
        image_size=128,
        encoder_channels=(16, 32, 64, 64, 64),
        res_blocks=1,
        decoder_channels=32,
        min_image_side=32,
        shard_mb=8.0,
        # 500 steps of 8 at 1e-3 take the time 300 of 16 at 3e-4 did and reconstruct 0.6-1 dB
        # better (README, "Quality"); 2e-3 let the top codebook collapse to one code.
        batch_size=8,
        steps=500,
        learning_rate=1e-3,
        checkpoint_every=100,
        restart_after=20,
        prior_blocks=(4, 4, 3),
        prior_channels=(64, 48, 32),
        prior_batch_size=32,
        prior_steps=300,
        prior_learning_rate=1e-3,
        val_fraction=0.1,
        n=16,
    ),
    # Tests and CI, seconds: 32x32 images, grids 4/8/16 through 3/2/1 downsamples.
    "smoke": dict(
        image_size=32,
        downsamples=(3, 2, 1),
        encoder_channels=(8, 16, 16),
        res_blocks=1,
        latent_dim=8,
        codebook_sizes=(16, 8, 4),
        cbam_reduction=4,
        decoder_channels=8,
        min_image_side=16,
        shard_mb=0.05,
        batch_size=4,
        steps=6,
        checkpoint_every=3,
        restart_after=2,
        prior_blocks=(2, 2, 2),
        prior_channels=(16, 8, 8),
        prior_dilations=(1, 2),
        prior_batch_size=4,
        prior_steps=6,
        val_fraction=0.2,
        learning_rate=1e-3,
        encode_batch_size=4,
        n=4,
        sample_batch_size=4,
    ),
}


def foreign_setting(stage: str, key: str) -> str | None:
    """Why `stage` refuses an override of `key`, in one line, or None when it reads the key.

    A stage reads its own group and "runtime"; a key of another group it would silently ignore:
    one of an upstream stage comes from an input's manifest (FIXED_BY_INPUT), one of a later
    stage is not used. Unknown keys give None (the config itself refuses them).
    """
    if stage not in STAGE_GROUPS:
        raise ValueError(f"stage={stage!r} is unknown; use one of {', '.join(STAGE_GROUPS)}")
    try:
        group = group_of(key)
    except ValueError:
        return None
    if group in (STAGE_GROUPS[stage], "runtime"):
        return None
    owner = next(s for s, g in STAGE_GROUPS.items() if g == group)
    why = f"{key} belongs to stage {STAGE_NUMBERS[owner]} {owner} (python -m hvq_utils {owner}); "
    source = FIXED_BY_INPUT[stage].get(group)
    if source:
        manifest = "inputs' manifests" if "/" in source else "input's manifest"
        why += f"{stage} takes it from its {source} {manifest}"
    else:
        why += f"{stage} does not use it"
    own = [k for k in group_keys(STAGE_GROUPS[stage]) if k.endswith(f"_{key}")]
    return why + (f"; did you mean {own[0]}?" if own else "")


def get_preset(name: str = "full", *, stage: str | None = None, **overrides) -> Config:
    """The named preset with keyword overrides applied and checked.

    get_preset("smoke", steps=10) -> Config; unknown names or keys raise ValueError.
    stage: the stage the config is for ("prepare", "train-vqvae", "encode", "train-prior",
    "sample"); an override of a key that stage does not read (another stage's group) raises
    ValueError naming the stage that owns it (`foreign_setting`). None: any key (the demo, which
    runs every stage).
    """
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is unknown; use one of {', '.join(PRESETS)}")
    if stage is not None:
        if stage not in STAGE_GROUPS:
            raise ValueError(f"stage={stage!r} is unknown; use one of {', '.join(STAGE_GROUPS)}")
        for key, value in overrides.items():
            why = foreign_setting(stage, key)
            if why:
                raise ValueError(f"{key}={value!r}: {why}")
    values = {**PRESETS[name], **overrides}
    return Config(**_coerce_all(values))


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """["steps=10", "resize=crop"] -> {"steps": "10", "resize": "crop"} (coerced later)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r} is not key=value; write e.g. --set steps=1000")
        out[key.strip()] = value.strip()
    return out
