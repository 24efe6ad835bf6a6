"""Sampling codes from the priors: a cached, incremental sampler and the naive reference.

    from hvq_utils.sampling import sample_levels
    codes, bits = sample_levels({"top": top, "middle": middle, "bottom": bottom}, n=10, seed=0)
    images = vqvae.decode(codes)

cached.py holds `CachedSampler` (each layer computes only the new position, after
Ramachandran et al. 2017); reference.py the reference (a full forward pass per position),
for tests and benchmarks; levels.py chains the three levels; controls.py the checked
controls and the Gumbel-max pick both samplers share.
"""

from hvq_utils.sampling.cached import CachedSampler, UncacheableError
from hvq_utils.sampling.controls import Controls, check_controls
from hvq_utils.sampling.levels import sample_levels
from hvq_utils.sampling.reference import ReferenceSampler, reference_sample

__all__ = [
    "CachedSampler",
    "Controls",
    "ReferenceSampler",
    "UncacheableError",
    "check_controls",
    "reference_sample",
    "sample_levels",
]
