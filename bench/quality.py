"""Quality of VQ-VAE variants on the same data, at equal steps and at equal wall-clock time.

    python bench/quality.py                                  # demo: full vs seed, under 20 min, 2 cores
    python bench/quality.py --variant full=demo --no-priors  # one variant, no priors
    python bench/quality.py --scale smoke --steps 4 --seconds 20 --prior-steps 4
    python bench/quality.py --variant a=demo --variant b=demo,res_blocks=2,encoder_channels=16:32:64:64:96
    python bench/quality.py --data runs/demo/data --out quality.json --markdown quality.md

Prints one JSON object on stdout (also written to --out) and a markdown table on stderr (also
written to --markdown), ready for the README's "Quality" section. Progress goes to stderr.

Variants. `--variant NAME=PRESET[+ARCH][,key=value...]` (repeatable): PRESET's settings, then
the VQ-VAE keys ("vqvae" group) that the preset ARCH sets, then the key=value overrides, in
the syntax of `--set`, except that tuple values separate their items with ":" instead of ","
(encoder_channels=64:64:64:64:64). Where ARCH's encoder_channels has another length than the
variant's stride-2 count (downsamples[0]), it is cut (or its last width repeated) to fit. The
default is `--scale`'s pair:

- `full=SCALE`: this project's architecture at the scale preset (`demo`: the demo preset);
- `seed=SCALE+seed,encoder_channels=32:...,decoder_channels=64`: the `seed` preset's VQ-VAE
  keys (arch=seed, codebook_update=grad, restart_after=0, cbam_reduction=4, uniform encoder
  widths, a full-resolution trunk twice as wide) over the scale preset, at a quarter of the
  seed's widths (128 -> 32, 256 -> 64). Everything else (image size, grids, latent dim,
  codebook sizes, batch, learning rate, steps, the prior settings) is the scale preset's, so
  the variants differ in the VQ-VAE only and the priors measure their codes. Why a quarter:
  one training step of SeedVQVAE at 128 pixels, batch 16, on a 2-core CPU took 32x the demo
  preset's at the seed's own widths (39 s against 1.2 s, both on a loaded machine; 300 steps
  over 3 hours), 9x at half widths and 3.6x at a quarter (2.0 s against 0.56 s, idle), the
  widest that keeps the whole default run within 30 minutes.

Data: `--data DIR` (a `prepare` output), else the sample photographs (`make demo`'s) prepared
once at the scale preset into WORK/data and reused by later runs.

Budgets, each reported apart:
- equal steps: `--steps` (default: the scale preset's `steps`, 300 at demo);
- equal time: `--seconds S`, or `fastest` (the default): the training time of the fastest
  variant's equal-steps run, so every variant gets what the fastest needed for `--steps`
  steps. A callback stops training once S seconds have passed; the steps reached are reported.
Training seconds are the wall time of `model.fit` (the first step's tracing included, also
reported apart), on the same reader, batch and seed as stage 02. Wall-clock figures need a
machine nobody else is using: the JSON records the load average and each run's CPU seconds,
which fall below cores x train seconds when other jobs share the cores. Each run is then handed to
`train_vqvae`, which takes the run's checkpoint as finished and evaluates and saves it with its
manifest, so `encode_codes` and `train_prior` can read it like any stage-02 output.

Per variant and budget, on the WHOLE validation split: PSNR (mean of per-image PSNR,
`psnr_db`), SSIM (scikit-image, channel_axis, data_range 1, mean over images), per level the
share of the codebook used and the perplexity (exp of the entropy of the code histogram over
the split), and the PSNR lost when that level alone is ablated (`reconstruct(levels=others)`:
it is decoded from its codebook's mean vector). With `--priors` (the default), the
equal-steps VQ-VAE encodes both splits (`encode_codes`) and the three priors train on its codes
(`train_prior`, the variant's prior settings: the scale preset's by default); reported: bits
per code on train (the stage's figure: the mean over its last `checkpoint_every` steps,
dropout on) and on validation.

WORK (`--work`, default runs/quality) holds data/ and runs/; runs/ is this benchmark's scratch
and is replaced on every run. Seeds are fixed (Keras' global seed, the reader's shuffle seed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

LEVELS = ("top", "middle", "bottom")
BUDGETS = ("steps", "time")
SCRATCH_MARK = ".quality-bench"
# The seed preset's widths, divided by this, make the default `seed` variant (see above).
SEED_WIDTH_DIVISOR = 4


# --- variants ---


def default_variants(scale: str) -> list[str]:
    """The default pair at a scale preset: this project's architecture and the seed's."""
    from hvq_utils.config import PRESETS, get_preset

    seed = PRESETS["seed"]
    stride_convs = get_preset(scale).downsamples[0]
    encoder = max(1, seed["encoder_channels"][0] // SEED_WIDTH_DIVISOR)
    decoder = max(1, seed["decoder_channels"] // SEED_WIDTH_DIVISOR)
    widths = ":".join([str(encoder)] * stride_convs)
    return [f"full={scale}", f"seed={scale}+seed,encoder_channels={widths},decoder_channels={decoder}"]


def parse_variant(spec: str):
    """"NAME=PRESET[+ARCH][,key=value...]" -> (NAME, Config); tuple values use ":" (see above)."""
    from hvq_utils.config import PRESETS, get_preset, group_of, parse_overrides

    name, sep, rest = spec.partition("=")
    if not sep or not rest or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(
            f"--variant {spec!r} is not NAME=PRESET[+ARCH][,key=value...] with a NAME of letters, "
            "digits, '_', '-' or '.'; e.g. --variant seed=demo+seed,decoder_channels=64"
        )
    head, *pairs = rest.split(",")
    preset, _, arch = head.partition("+")
    for p in (preset, arch) if arch else (preset,):
        if p not in PRESETS:
            raise ValueError(f"--variant {spec!r} names preset {p!r}; use one of {', '.join(PRESETS)}")
    arch_keys = {k: v for k, v in PRESETS[arch].items() if group_of(k) == "vqvae"} if arch else {}
    overrides = parse_overrides([p.replace(":", ",") for p in pairs if p])
    if "encoder_channels" in arch_keys and "encoder_channels" not in overrides:
        others = {k: v for k, v in {**arch_keys, **overrides}.items() if k != "encoder_channels"}
        n = get_preset(preset, **others).downsamples[0]
        widths = tuple(arch_keys["encoder_channels"])
        arch_keys["encoder_channels"] = widths[:n] + widths[-1:] * max(0, n - len(widths))
    return name, get_preset(preset, **{**arch_keys, **overrides})


# --- metrics (numpy in, numbers out) ---


def code_stats(hist: np.ndarray) -> tuple[float, float]:
    """A level's code histogram over a split, int (K,) -> (share of the K codes used at least
    once, perplexity: exp of the entropy of the histogram, between 1 and K)."""
    hist = np.asarray(hist, np.float64)
    p = hist[hist > 0] / hist.sum()
    return float((hist > 0).mean()), float(np.exp(-np.sum(p * np.log(p))))


def psnr_per_image(images: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """float (B, S, S, 3) in [0, 1], twice -> PSNR in dB per image, float64 (B,) (`psnr_db`)."""
    from keras import ops

    from hvq_utils.vqvae import psnr_db

    mse = np.mean((np.asarray(recon, np.float64) - images) ** 2, axis=(1, 2, 3))  # (B,)
    return np.asarray(ops.convert_to_numpy(psnr_db(mse.astype("float32"))), np.float64)


def ssim_per_image(images: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """float (B, S, S, 3) in [0, 1], twice -> SSIM per image (scikit-image, colour), float64 (B,)."""
    from skimage.metrics import structural_similarity

    pairs = zip(np.asarray(images, np.float32), np.asarray(recon, np.float32), strict=True)
    return np.array([structural_similarity(a, b, channel_axis=-1, data_range=1.0) for a, b in pairs])


def validation_scores(vq, batches) -> dict:
    """Scores of a VQ-VAE over every batch of `batches` (float32 (B, S, S, 3) arrays in [0, 1]).

    Returns {"images", "psnr", "ssim", "code_usage": {level}, "perplexity": {level},
    "psnr_lost": {level: full PSNR - PSNR with that level ablated}}; PSNR and SSIM are means
    of per-image values, code usage and perplexity come from the histogram over all batches.
    """
    from keras import ops

    sizes = vq.config.codebook_sizes
    hist = {lv: np.zeros(k, np.int64) for lv, k in zip(LEVELS, sizes, strict=True)}
    psnr, ssim = [], []
    ablated: dict[str, list] = {lv: [] for lv in LEVELS}
    for images in batches:
        images = np.asarray(images, np.float32)
        for lv, codes in vq.encode(images).items():
            hist[lv] += np.bincount(ops.convert_to_numpy(codes).ravel(), minlength=len(hist[lv]))
        recon = ops.convert_to_numpy(vq.reconstruct(images))
        psnr.append(psnr_per_image(images, recon))
        ssim.append(ssim_per_image(images, recon))
        for lv in LEVELS:
            others = tuple(o for o in LEVELS if o != lv)
            ablated[lv].append(psnr_per_image(images, ops.convert_to_numpy(vq.reconstruct(images, others))))
    if not psnr:
        raise ValueError("no validation images to score; prepare the data with val_fraction > 0")
    full = float(np.mean(np.concatenate(psnr)))
    stats = {lv: code_stats(h) for lv, h in hist.items()}
    return {
        "images": int(sum(len(p) for p in psnr)),
        "psnr": full,
        "ssim": float(np.mean(np.concatenate(ssim))),
        "code_usage": {lv: stats[lv][0] for lv in LEVELS},
        "perplexity": {lv: stats[lv][1] for lv in LEVELS},
        "psnr_lost": {lv: full - float(np.mean(np.concatenate(ablated[lv]))) for lv in LEVELS},
    }


# --- training ---


def _budget_callback(steps: int | None, seconds: float | None):
    """A Keras callback that times `fit` and stops it after `steps` steps or `seconds`."""
    import keras

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()
            self.cpu_start = time.process_time()
            self.first_step_s = None
            self.last_loss = None

        def on_train_batch_end(self, batch, logs=None):
            elapsed = time.perf_counter() - self.start
            if self.first_step_s is None:
                self.first_step_s = elapsed  # tracing and compilation included
            loss = (logs or {}).get("loss")
            self.last_loss = None if loss is None else float(loss)
            if self.last_loss is not None and not math.isfinite(self.last_loss):
                self.model.stop_training = True
            elif steps is not None and batch + 1 >= steps:
                self.model.stop_training = True
            elif seconds is not None and elapsed >= seconds:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.start
            self.cpu_seconds = time.process_time() - self.cpu_start

    return Budget()


def train_run(data_dir: Path, out_dir: Path, config, steps: int | None, seconds: float | None) -> tuple:
    """Train a VQ-VAE of `config` on `data_dir` for `steps` steps or `seconds` seconds, finish
    it as a stage-02 output in `out_dir`; returns (model, run report)."""
    import keras

    from hvq_utils.data import image_dataset
    from hvq_utils.loop import CHECKPOINTS, checkpoints, current_step, save_model
    from hvq_utils.manifest import read_manifest
    from hvq_utils.runtime import setup_runtime
    from hvq_utils.train_vqvae import train_vqvae
    from hvq_utils.vqvae import build_vqvae, compile_vqvae

    config = config.adopt(read_manifest(data_dir, "prepare"))
    rt = setup_runtime(config, "batch_size")
    batch = rt.global_batch(config.batch_size)
    keras.utils.set_random_seed(config.seed)
    with rt.scope():
        vq = compile_vqvae(build_vqvae(config), config)
    # Stage 02's reader for a run from step 0: same shuffle and flips.
    train = image_dataset(data_dir, "train", batch, training=True, flip=config.flip, seed=config.seed)
    budget = _budget_callback(steps, seconds)
    # shuffle=False: the reader shuffles (Keras would only warn that it cannot).
    vq.fit(train, epochs=1, steps_per_epoch=steps or 10**9, shuffle=False, callbacks=[budget], verbose=0)
    done = current_step(vq)
    if budget.last_loss is None or not math.isfinite(budget.last_loss):
        raise RuntimeError(f"{out_dir}: the loss is {budget.last_loss} after step {done}; nothing to score")
    # The stage's own checkpoint name: train_vqvae resumes from it, finds it finished, and
    # evaluates and saves it with the manifest that encode_codes reads.
    save_model(vq, out_dir / CHECKPOINTS / f"step-{done:07d}.keras")
    if checkpoints(out_dir)[-1][0] != done:
        raise RuntimeError(f"{out_dir}: hvq_utils.loop no longer finds the checkpoint of step {done}")
    manifest = train_vqvae(data_dir, out_dir, config.replace(steps=done))
    timed = budget.seconds - budget.first_step_s
    report = {
        "model": f"{type(vq).__module__}.{type(vq).__name__}",
        "parameters": int(vq.count_params()),
        "batch": batch,
        "steps": done,
        "train_seconds": round(budget.seconds, 2),
        "first_step_seconds": round(budget.first_step_s, 2),
        # This process's CPU time (all its threads) over the same span: well below cores x
        # train_seconds when other jobs shared the cores, and the wall-clock figures suffer.
        "cpu_seconds": round(budget.cpu_seconds, 2),
        # Steady state: the steps after the first, which traces and compiles.
        "images_per_s": round((done - 1) * batch / timed, 3) if done > 1 and timed > 0 else None,
        "final_loss": budget.last_loss,
        "stage_psnr": manifest["metrics"]["psnr"],
    }
    return vq, report


def image_batches(data_dir: Path, split: str, batch: int):
    from hvq_utils.data import image_dataset

    return image_dataset(data_dir, split, batch).as_numpy_iterator()


def train_priors(data_dir: Path, run_dir: Path, config) -> dict:
    """Encode both splits with the VQ-VAE in run_dir/vqvae and train the three priors on the
    codes; returns {level: {bits_per_code: {train, val}, uniform_bits, steps, seconds}}."""
    import keras

    from hvq_utils.encode import encode_codes
    from hvq_utils.train_prior import train_prior

    start = time.perf_counter()
    codes = encode_codes(data_dir, run_dir / "vqvae", run_dir / "codes", config)
    out = {"encode_seconds": round(time.perf_counter() - start, 2)}
    for level in LEVELS:
        keras.utils.set_random_seed(config.prior_seed)
        start = time.perf_counter()
        m = train_prior(level, run_dir / "codes", run_dir / f"prior-{level}", config)
        out[level] = {
            "bits_per_code": m["metrics"]["bits_per_code"],
            "uniform_bits": math.log2(codes["codebook_sizes"][level]),
            "steps": m["steps"],
            "seconds": round(time.perf_counter() - start, 2),
        }
    return out


# --- report ---


def _levels(values: dict | None, fmt: str) -> str:
    return " / ".join(format(values[lv], fmt) for lv in LEVELS) if values else "-"


def markdown_table(result: dict) -> str:
    """The result as markdown: one row per variant and budget, then the priors' bits per code."""
    rows = [
        "| variant | budget | parameters | steps | train s | images/s | PSNR dB | SSIM "
        "| codes used t/m/b | perplexity t/m/b | PSNR lost without t/m/b (dB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        for budget in BUDGETS:
            r = v.get(budget)
            if r is None:
                continue
            s = r["validation"]
            seconds = result["budgets"]["seconds"]
            label = "equal steps" if budget == "steps" else f"equal time ({seconds:.0f} s)"
            ips = "-" if r["images_per_s"] is None else f"{r['images_per_s']:.1f}"
            rows.append(
                f"| {name} | {label} | {r['parameters']:,} | {r['steps']} | {r['train_seconds']:.0f} | {ips} "
                f"| {s['psnr']:.2f} | {s['ssim']:.3f} | {_levels(s['code_usage'], '.0%')} "
                f"| {_levels(s['perplexity'], '.1f')} | {_levels(s['psnr_lost'], '.2f')} |"
            )
    priors = {n: v["priors"] for n, v in result["variants"].items() if v.get("priors")}
    if priors:
        rows += [
            "",
            "| variant | prior steps | bits per code, train t/m/b | validation t/m/b | uniform t/m/b |",
            "|---|---|---|---|---|",
        ]
        for name, p in priors.items():
            bits = {split: {lv: p[lv]["bits_per_code"][split] for lv in LEVELS} for split in ("train", "val")}
            uniform = {lv: p[lv]["uniform_bits"] for lv in LEVELS}
            rows.append(
                f"| {name} | {p['top']['steps']} | {_levels(bits['train'], '.2f')} "
                f"| {_levels(bits['val'], '.2f')} | {_levels(uniform, '.0f')} |"
            )
    return "\n".join(rows) + "\n"


# --- main ---


def _scratch(work: Path) -> Path:
    """WORK/runs, emptied: refuses a folder this benchmark did not make."""
    runs = work / "runs"
    if runs.exists():
        if not (runs / SCRATCH_MARK).is_file():
            raise FileExistsError(f"{runs} exists but was not made by bench/quality.py; give another --work")
        shutil.rmtree(runs)
    runs.mkdir(parents=True)
    (runs / SCRATCH_MARK).write_text("scratch of bench/quality.py; replaced on every run\n")
    return runs


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be 1 or more")
    return value


def _seconds_arg(text: str) -> float | str:
    if text == "fastest":
        return text
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--seconds {text} must be above 0, or 'fastest'")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:8]),
    )
    parser.add_argument("--scale", default="demo", help="preset of the data, default variants and budgets")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=PRESET[+ARCH][,key=value...]",
        help="a VQ-VAE to compare (repeatable); tuple values with ':', e.g. encoder_channels=64:64:64:64:64",
    )
    parser.add_argument("--data", type=Path, help="a prepare output (default: the sample data, prepared)")
    parser.add_argument("--work", type=Path, default=Path("runs/quality"), help="data/ and scratch runs/")
    parser.add_argument(
        "--sample-count", type=_positive_int, default=400, help="sample crops to prepare (without --data)"
    )
    parser.add_argument(
        "--steps", type=_positive_int, help="equal-steps budget (default: the scale preset's steps)"
    )
    parser.add_argument(
        "--seconds", type=_seconds_arg, default="fastest",
        help="equal-time budget in seconds, or 'fastest': the fastest variant's equal-steps time",
    )
    parser.add_argument("--budgets", default="steps,time", help="which budgets to run: steps, time or both")
    parser.add_argument(
        "--priors", action=argparse.BooleanOptionalAction, default=True,
        help="encode with each equal-steps VQ-VAE and train the three priors (default: on)",
    )
    parser.add_argument(
        "--prior-steps", type=_positive_int, help="prior training steps (default: each variant's)"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    args.budgets = tuple(b for b in args.budgets.split(",") if b)
    if not args.budgets or set(args.budgets) - set(BUDGETS):
        parser.error(f"--budgets {','.join(args.budgets)!r}: use steps, time or steps,time")
    if args.seconds == "fastest" and "time" in args.budgets and "steps" not in args.budgets:
        parser.error("--seconds fastest needs the steps budget; give --seconds S for the time budget alone")
    return args


def run(args: argparse.Namespace) -> dict:
    from hvq_utils.config import get_preset

    t0 = time.perf_counter()
    scale = get_preset(args.scale)
    specs = args.variant or default_variants(args.scale)
    variants = dict(parse_variant(s) for s in specs)
    if len(variants) != len(specs):
        raise ValueError(f"--variant names must differ: {specs}")
    steps = args.steps or scale.steps
    overrides = {"steps": steps}
    if args.prior_steps:
        overrides["prior_steps"] = args.prior_steps
    variants = {n: c.replace(**overrides) for n, c in variants.items()}

    from hvq_utils.runtime import setup_runtime

    rt = setup_runtime(scale, "batch_size")
    import keras

    from hvq_utils.manifest import read_manifest
    from hvq_utils.prepare import prepare_images

    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.data is None:
        prepare_images("sample", args.work / "data", scale, sample_count=args.sample_count)
        data_dir = args.work / "data"
    else:
        data_dir = args.data
    data = read_manifest(data_dir, "prepare")
    prepare_s = time.perf_counter() - start
    runs = _scratch(args.work)

    result: dict = {
        "bench": "quality",
        "scale": args.scale,
        "backend": keras.backend.backend(),
        "accelerator": rt.accelerator,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "data": {
            "dir": str(data_dir),
            "image_size": data["image_size"],
            "train": data["splits"].get("train", 0),
            "validation": data["splits"].get("validation", 0),
            "prepare_seconds": round(prepare_s, 2),
        },
        "budgets": {"steps": steps, "seconds": None, "seconds_rule": args.seconds},
        "variants": {
            n: {"spec": s, "vqvae": c.section("vqvae"), "prior": c.section("prior")}
            for (n, c), s in zip(variants.items(), specs, strict=True)
        },
    }

    def score(name: str, budget: str, config, **limit) -> None:
        run_dir = runs / name / budget
        vq, report = train_run(data_dir, run_dir / "vqvae", config, **limit)
        start = time.perf_counter()
        report["validation"] = validation_scores(vq, image_batches(data_dir, "validation", report["batch"]))
        report["score_seconds"] = round(time.perf_counter() - start, 2)
        result["variants"][name][budget] = report
        print(f"quality: {name} {budget}: {json.dumps(report)}", file=sys.stderr)

    if "steps" in args.budgets:
        for name, config in variants.items():
            score(name, "steps", config, steps=steps, seconds=None)
            if args.priors:
                priors = train_priors(data_dir, runs / name / "steps", config)
                result["variants"][name]["priors"] = priors
    if "time" in args.budgets:
        seconds = args.seconds
        if seconds == "fastest":
            seconds = min(v["steps"]["train_seconds"] for v in result["variants"].values())
        result["budgets"]["seconds"] = seconds
        for name, config in variants.items():
            score(name, "time", config, steps=None, seconds=seconds)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds_total"] = round(time.perf_counter() - t0, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from hvq_utils.runtime import tf_defaults

    tf_defaults()  # what the package's stages set before TensorFlow loads (oneDNN on the CPU)
    # Keras' progress lines and the stages' output go to stderr: stdout carries the JSON only.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    table = markdown_table(result)
    print(table, file=sys.stderr)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
