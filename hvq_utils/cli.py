"""`python -m hvq_utils <stage>`: the notebooks' stages from a shell.

    python -m hvq_utils prepare --src DIR --out DIR [--preset P] [--set key=value ...]
    python -m hvq_utils train-vqvae --data DIR --out DIR [--preset P] [--steps N]
    python -m hvq_utils encode --data DIR --vqvae DIR --out DIR
    python -m hvq_utils train-prior --level L --codes DIR --out DIR [--preset P] [--steps N]
    python -m hvq_utils demo --out DIR

A bad argument or artifact ends the command with one line saying what to do (exit 2).
"""

from __future__ import annotations

import argparse
import sys

from hvq_utils.config import LEVELS, PRESETS, get_preset, parse_overrides


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="full", choices=sorted(PRESETS), help="size preset")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set resize=crop (repeatable)",
    )


def _config(args: argparse.Namespace, **extra):
    overrides = parse_overrides(args.overrides)
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return get_preset(args.preset, **overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hvq_utils", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)

    p = sub.add_parser("prepare", help="01: image folder -> sharded image TFRecords")
    p.add_argument("--src", required=True, help="image folder (searched recursively), or 'sample'")
    p.add_argument("--out", required=True, help="output directory for shards and manifest.json")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    _config_args(p)

    p = sub.add_parser("train-vqvae", help="02: train the 3-level VQ-VAE (resumes if interrupted)")
    p.add_argument("--data", required=True, help="output directory of `prepare`")
    p.add_argument("--out", required=True, help="output directory (checkpoints, logs, vqvae.keras)")
    p.add_argument("--steps", type=int, default=None, help="total training steps (config: steps)")
    _config_args(p)

    p = sub.add_parser("encode", help="03: images -> code TFRecords with the frozen VQ-VAE")
    p.add_argument("--data", required=True, help="output directory of `prepare`")
    p.add_argument("--vqvae", required=True, help="output directory of `train-vqvae`")
    p.add_argument("--out", required=True, help="output directory for code shards")
    p.add_argument("--batch-size", type=int, default=None, help="images per encoder call")

    p = sub.add_parser("train-prior", help="04-06: train one level's PixelCNN prior")
    p.add_argument("--level", required=True, choices=LEVELS)
    p.add_argument("--codes", required=True, help="output directory of `encode`")
    p.add_argument("--out", required=True, help="output directory (checkpoints, logs, prior.keras)")
    p.add_argument("--steps", type=int, default=None, help="total training steps (config: prior_steps)")
    _config_args(p)

    p = sub.add_parser("demo", help="the whole pipeline on the sample data that ships (demo preset)")
    p.add_argument("--out", default="runs/demo", help="directory for every stage's output")
    _config_args(p)
    p.set_defaults(preset="demo")
    return parser


def run(args: argparse.Namespace) -> object:
    # The config first: a bad --set fails at once, before TensorFlow or Keras loads.
    if args.stage == "prepare":
        config = _config(args)
        from hvq_utils.data.prepare import prepare_images

        return prepare_images(args.src, args.out, config, workers=args.workers)
    if args.stage == "train-vqvae":
        config = _config(args, steps=args.steps)
        from hvq_utils.train import train_vqvae

        return train_vqvae(args.data, args.out, config)
    if args.stage == "encode":
        from hvq_utils.encode import encode_codes

        return encode_codes(args.data, args.vqvae, args.out, batch_size=args.batch_size)
    if args.stage == "train-prior":
        config = _config(args, prior_steps=args.steps)
        from hvq_utils.train import train_prior

        return train_prior(args.level, args.codes, args.out, config)
    if args.stage == "demo":
        config = _config(args)
        from hvq_utils.demo import run_demo

        return run_demo(args.out, config)
    raise AssertionError(args.stage)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hvq_utils.manifest import ManifestError
    from hvq_utils.runtime import tf_defaults

    tf_defaults()

    try:
        run(args)
    except (ValueError, ManifestError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
