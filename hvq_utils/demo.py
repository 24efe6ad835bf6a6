"""`make demo`: all seven stages, in order, on the sample photographs that ship with scikit-image.

Each stage writes its own directory under `out` (data/, vqvae/, codes/, prior-top/, ...,
samples/), exactly as the notebooks and the CLI do, so a re-run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hvq_utils.config import LEVELS, Config

log = logging.getLogger(__name__)


def run_demo(out: str | Path, config: Config) -> dict:
    """Run prepare -> train-vqvae -> encode -> the three priors -> sample; returns {stage: manifest}."""
    from hvq_utils.encode import encode_codes
    from hvq_utils.prepare import prepare_images
    from hvq_utils.sample import sample_images
    from hvq_utils.train_prior import train_prior
    from hvq_utils.train_vqvae import train_vqvae

    out = Path(out)
    done: dict = {}
    t0 = time.time()
    done["prepare"] = prepare_images("sample", out / "data", config)
    done["train-vqvae"] = train_vqvae(out / "data", out / "vqvae", config)
    done["encode"] = encode_codes(out / "data", out / "vqvae", out / "codes", config)
    for level in LEVELS:
        done[f"prior-{level}"] = train_prior(level, out / "codes", out / f"prior-{level}", config)
    priors = {level: out / f"prior-{level}" for level in LEVELS}
    done["sample"] = sample_images(out / "vqvae", priors, out / "samples", config)
    log.info("demo finished in %.0f s; every stage's output is under %s/", time.time() - t0, out)
    log.info("gallery: %s", (out / "samples" / "gallery.zip").resolve())
    return done
