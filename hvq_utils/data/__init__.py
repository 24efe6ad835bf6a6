"""Data: image decoding (decode.py), TFRecord shards and the `tf.data` readers for images
(records.py) and codes (codes.py), and the sample photographs (sample.py).

    from hvq_utils.data import image_dataset, code_dataset, CodeShardWriter

The readers need TensorFlow (tensorflow-cpu is enough); they are imported on first use, so
the worker processes of `prepare`, which only run Pillow, never load it, and TensorFlow's
environment defaults (`hvq_utils.runtime.TF_DEFAULTS`) are set then, not at import.
"""

from __future__ import annotations

import importlib

# name -> module that defines it; imported on first use (PEP 562).
_LAZY = {
    "image_dataset": "hvq_utils.data.records",
    "code_dataset": "hvq_utils.data.codes",
    "CodeShardWriter": "hvq_utils.data.codes",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        from hvq_utils.runtime import tf_defaults

        tf_defaults()  # before TensorFlow loads with the reader
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hvq_utils.data' has no attribute {name!r}")
