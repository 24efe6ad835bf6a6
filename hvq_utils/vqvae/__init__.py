"""The hierarchical VQ-VAE: model, quantizer and layers (keras.ops only, any backend)."""

from hvq_utils.vqvae.model import VQVAE, build_vqvae, compile_vqvae, psnr_db
from hvq_utils.vqvae.quantizer import VectorQuantizer
from hvq_utils.vqvae.seed import SeedVQVAE  # registers the class, so load_model finds it

__all__ = ["VQVAE", "SeedVQVAE", "VectorQuantizer", "build_vqvae", "compile_vqvae", "psnr_db"]
