"""The hierarchical VQ-VAE: model, quantizer and layers (keras.ops only, any backend)."""

from hvq_utils.vqvae.model import VQVAE, build_vqvae, compile_vqvae, psnr_db
from hvq_utils.vqvae.quantizer import VectorQuantizer

__all__ = ["VQVAE", "VectorQuantizer", "build_vqvae", "compile_vqvae", "psnr_db"]
