"""The PixelCNN priors over the latent codes: one gated PixelCNN serves all three levels.

    from hvq_utils.prior import build_prior, compile_prior
    prior = compile_prior(build_prior(config, "bottom"), config)
    prior.fit({"codes": bottom, "top": top, "middle": middle}, bottom, ...)

model.py holds the network and its builder; layers.py its layers, each with its causal
structure (masks, offsets, running means) explicit for the cached sampler
(hvq_utils.sampling).
"""

from hvq_utils.prior.layers import (
    CausalAttention,
    CodeEmbedding,
    Conditioning,
    GatedBlock,
    MaskedConv2D,
)
from hvq_utils.prior.model import (
    BitsPerCode,
    PixelCNNPrior,
    build_prior,
    compile_prior,
    seed_layout,
)

__all__ = [
    "BitsPerCode",
    "CausalAttention",
    "CodeEmbedding",
    "Conditioning",
    "GatedBlock",
    "MaskedConv2D",
    "PixelCNNPrior",
    "build_prior",
    "compile_prior",
    "seed_layout",
]
