"""Data: image folders -> image TFRecords (stage 01), and `tf.data` readers for images and codes.

    from hvq_utils.data import image_dataset, code_dataset, CodeShardWriter

The readers need TensorFlow (tensorflow-cpu is enough); they are imported on first use, so
the worker processes of `prepare`, which only run Pillow, never load it.
"""

from __future__ import annotations

import importlib

from hvq_utils.runtime import tf_defaults

tf_defaults()  # environment variables only: TensorFlow reads them when it loads

# name -> module that defines it; imported on first use (PEP 562).
_LAZY = {
    "image_dataset": "hvq_utils.data.records",
    "code_dataset": "hvq_utils.data.codes",
    "CodeShardWriter": "hvq_utils.data.codes",
    "prepare_images": "hvq_utils.data.prepare",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hvq_utils.data' has no attribute {name!r}")
