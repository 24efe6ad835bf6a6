"""`python -m hvq_utils <stage>`: the notebooks' stages from a shell.

    python -m hvq_utils prepare --src DIR --out DIR [--preset P] [--set key=value ...]
    python -m hvq_utils train-vqvae --data DIR --out DIR [--preset P] [--steps N]
    python -m hvq_utils encode --data DIR --vqvae DIR --out DIR
    python -m hvq_utils train-prior --level L --codes DIR --out DIR [--preset P] [--steps N]
    python -m hvq_utils sample --vqvae DIR --top DIR --middle DIR --bottom DIR --out DIR [--n N]
        [--temperature T] [--top-k K] [--top-p P] [--seed S] [--variations-of IMAGES_DIR]
        [--keep top|top,middle] [--inpaint x0,y0,x1,y1|MASK_IMAGE]
    python -m hvq_utils demo --out DIR

Each stage reads only its own group of settings (and "runtime") from --preset and --set
(`--help` lists them); the rest comes from its inputs, so a --set of another stage's setting
is refused, naming the stage that owns it; `demo` runs every stage and takes every setting.
A bad argument or artifact ends the command with one line saying what to do (exit 2).
"""

from __future__ import annotations

import argparse
import logging
import sys

from hvq_utils.config import (
    LEVELS,
    PRESETS,
    STAGE_GROUPS,
    foreign_setting,
    get_preset,
    help_lines,
    parse_overrides,
)

log = logging.getLogger(__name__)


class UsageError(ValueError):
    """A bad command line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises UsageError (one line, exit 2) instead of
    printing the usage block."""

    def error(self, message: str):
        raise UsageError(f"{message}; see python -m hvq_utils {self.prog.split()[-1]} --help")


def _stage_parser(sub, name: str, help: str, groups: tuple[str, ...]) -> argparse.ArgumentParser:
    epilog = ["settings (--set key=value; defaults of the full preset):"]
    for group in (*groups, "runtime"):
        epilog += [f" {group}:", *help_lines(group)]
    p = sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="full", choices=sorted(PRESETS), help="size preset")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of this stage, e.g. --set resize=crop (repeatable)",
    )
    return p


def _config(args: argparse.Namespace, **extra):
    """The config of args.stage: --preset, then --set, then the stage's own options (`extra`).
    A --set of a key the stage does not read would be ignored without a word: refused instead."""
    overrides = parse_overrides(args.overrides)
    stage = None if args.stage == "demo" else args.stage  # demo runs every stage: every group
    for key, value in overrides.items():
        why = stage and foreign_setting(stage, key)
        if why:
            raise UsageError(f"--set {key}={value}: {why}")
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return get_preset(args.preset, **overrides)  # refused above, with the --set form in the message


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m hvq_utils", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True, parser_class=_Parser)

    p = _stage_parser(sub, "prepare", "01: image folder -> sharded image TFRecords", ("data",))
    p.add_argument("--src", required=True, help="image folder (searched recursively), or 'sample'")
    p.add_argument("--out", required=True, help="output directory for shards and manifest.json")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")

    p = _stage_parser(sub, "train-vqvae", "02: train the 3-level VQ-VAE (resumes if interrupted)", ("vqvae",))
    p.add_argument("--data", required=True, help="output directory of `prepare`")
    p.add_argument("--out", required=True, help="output directory (checkpoints, logs, vqvae.keras)")
    p.add_argument("--steps", type=int, default=None, help="total training steps (setting: steps)")
    p.add_argument("--resume-from", default=None, help="an earlier (read-only) output to continue from")

    p = _stage_parser(sub, "encode", "03: images -> code TFRecords with the frozen VQ-VAE", ("encode",))
    p.add_argument("--data", required=True, help="output directory of `prepare`")
    p.add_argument("--vqvae", required=True, help="output directory of `train-vqvae`")
    p.add_argument("--out", required=True, help="output directory for code shards")
    p.add_argument(
        "--batch-size", type=int, default=None, help="images per device per encoder call (encode_batch_size)"
    )

    p = _stage_parser(sub, "train-prior", "04-06: train one level's PixelCNN prior", ("prior",))
    p.add_argument("--level", required=True, choices=LEVELS)
    p.add_argument("--codes", required=True, help="output directory of `encode`")
    p.add_argument("--out", required=True, help="output directory (checkpoints, logs, prior.keras)")
    p.add_argument("--steps", type=int, default=None, help="total training steps (setting: prior_steps)")
    p.add_argument("--resume-from", default=None, help="an earlier (read-only) output to continue from")

    p = _stage_parser(sub, "sample", "07: sample new images and write their gallery", ("sample",))
    p.add_argument("--vqvae", required=True, help="output directory of `train-vqvae`")
    for level in LEVELS:
        p.add_argument(f"--{level}", required=True, help=f"output directory of the {level} prior")
    p.add_argument("--out", required=True, help="output directory (samples, gallery.zip, manifest.json)")
    p.add_argument("--n", type=int, default=None, help="images to sample (setting: n)")
    p.add_argument(
        "--temperature", type=float, default=None, help="softmax temperature (setting: temperature)"
    )
    p.add_argument("--top-k", type=int, default=None, help="0: all codes (setting: top_k)")
    p.add_argument("--top-p", type=float, default=None, help="1: all codes (setting: top_p)")
    p.add_argument("--seed", type=int, default=None, help="(setting: sample_seed)")
    p.add_argument("--batch-size", type=int, default=None, help="(setting: sample_batch_size)")
    p.add_argument("--variations-of", default=None, help="a folder of images to make variations of")
    p.add_argument("--keep", default="top", help="levels kept from each source image: top, or top,middle")
    p.add_argument(
        "--inpaint",
        default=None,
        help="x0,y0,x1,y1 in image pixels, or a mask image (white = resample); needs --variations-of",
    )

    p = _stage_parser(
        sub,
        "demo",
        "the whole pipeline on the sample data that ships (demo preset)",
        tuple(STAGE_GROUPS.values()),
    )
    p.add_argument("--out", default="runs/demo", help="directory for every stage's output")
    p.set_defaults(preset="demo")
    return parser


def run(args: argparse.Namespace) -> object:
    # The config first: a bad --set fails at once, before TensorFlow or Keras loads.
    if args.stage == "prepare":
        config = _config(args)
        from hvq_utils.prepare import prepare_images

        return prepare_images(args.src, args.out, config, workers=args.workers)
    if args.stage == "train-vqvae":
        config = _config(args, steps=args.steps)
        from hvq_utils.train_vqvae import train_vqvae

        return train_vqvae(args.data, args.out, config, resume_from=args.resume_from)
    if args.stage == "encode":
        config = _config(args, encode_batch_size=args.batch_size)
        from hvq_utils.encode import encode_codes

        return encode_codes(args.data, args.vqvae, args.out, config)
    if args.stage == "train-prior":
        config = _config(args, prior_steps=args.steps)
        from hvq_utils.train_prior import train_prior

        return train_prior(args.level, args.codes, args.out, config, resume_from=args.resume_from)
    if args.stage == "sample":
        config = _config(
            args,
            n=args.n,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            sample_seed=args.seed,
            sample_batch_size=args.batch_size,
        )
        from hvq_utils.sample import sample_images

        priors = {level: getattr(args, level) for level in LEVELS}
        keep = tuple(k for k in args.keep.split(",") if k)
        return sample_images(
            args.vqvae,
            priors,
            args.out,
            config,
            variations_of=args.variations_of,
            keep=keep,
            inpaint=args.inpaint,
        )
    if args.stage == "demo":
        config = _config(args)
        from hvq_utils.demo import run_demo

        return run_demo(args.out, config)
    raise AssertionError(args.stage)


def main(argv: list[str] | None = None) -> int:
    from hvq_utils.manifest import ManifestError
    from hvq_utils.runtime import configure_logging, tf_defaults

    configure_logging()
    try:
        args = build_parser().parse_args(argv)
        tf_defaults()
        run(args)
    except (ValueError, ManifestError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
