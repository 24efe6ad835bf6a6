"""hvq_utils: a 3-level hierarchical VQ-VAE with PixelCNN priors, for 512x512 images.

Importing the package loads nothing heavy: Keras, TensorFlow and JAX are imported by the
functions that need them, so `setup_runtime()` can choose the backend first.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from hvq_utils.config import LEVELS, Config, get_preset, parse_overrides  # noqa: E402

# name -> module that defines it; imported on first use (PEP 562).
_LAZY = {
    "build_vqvae": "hvq_utils.vqvae",
    "build_prior": "hvq_utils.prior",
    "setup_runtime": "hvq_utils.runtime",
    "load_model": "hvq_utils.loading",
}

__all__ = ["LEVELS", "Config", "get_preset", "parse_overrides", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hvq_utils' has no attribute {name!r}")
