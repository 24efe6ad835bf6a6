"""Loading the models this package saves (`vqvae.keras`, `prior.keras`, checkpoints).

    from hvq_utils import load_model
    vq = load_model("vqvae/vqvae.keras")

Keras finds a custom class by its registered name, which exists only once the module that
defines it has been imported; `load_model` imports them first, then loads in Keras' safe
mode (no Lambda layers, no pickled code), so a file from elsewhere cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path


def load_model(path: str | os.PathLike, compile: bool = True):
    """The Keras model saved at `path` (a .keras file written by this package)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; give the .keras file a training stage wrote "
            "(e.g. <out>/vqvae.keras or <out>/prior.keras)"
        )
    import keras

    import hvq_utils.prior  # noqa: F401  (registers the prior's classes)
    import hvq_utils.vqvae  # noqa: F401  (registers the VQ-VAE's classes)

    return keras.models.load_model(path, compile=compile, safe_mode=True)
