"""VectorQuantizer: nearest neighbours, the EMA update, restarts, gradients and dtypes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from hvq_utils.vqvae import VectorQuantizer

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="inspects a TensorFlow graph / tape"
)


def _quantizer(codebook: np.ndarray, **kwargs) -> VectorQuantizer:
    """A built quantizer whose codebook is `codebook` (K, D), already initialised."""
    k, d = codebook.shape
    q = VectorQuantizer(k, d, seed=0, **kwargs)
    q.build((None, None, None, d))
    q.codebook.assign(codebook)
    q.initialized.assign(1.0)
    return q


def _nearest(flat: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Brute-force nearest code per row: flat (N, D), codebook (K, D) -> int (N,)."""
    return np.argmin(((flat[:, None, :] - codebook[None, :, :]) ** 2).sum(-1), axis=1)


def _np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def test_codes_are_the_brute_force_nearest_codebook_vectors():
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(16, 6)).astype(np.float32)
    z = rng.normal(size=(2, 5, 5, 6)).astype(np.float32)
    out = _quantizer(codebook)(z)
    expected = _nearest(z.reshape(-1, 6), codebook).reshape(2, 5, 5)
    assert _np(out["codes"]).dtype == np.int32
    np.testing.assert_array_equal(_np(out["codes"]), expected)
    np.testing.assert_allclose(_np(out["quantized"]), codebook[expected], atol=1e-6)


def _ema_reference(codebook, batches, decay, eps):
    """NumPy reference of the debiased, Laplace-smoothed EMA codebook update."""
    k = len(codebook)
    count, sums, steps = np.zeros(k), np.zeros(codebook.shape), np.zeros(k)
    codebook = codebook.astype(np.float64)
    for z in batches:
        flat = z.reshape(-1, codebook.shape[1]).astype(np.float64)
        codes = _nearest(flat, codebook)
        batch_count = np.bincount(codes, minlength=k)
        batch_sum = np.zeros_like(sums)
        np.add.at(batch_sum, codes, flat)
        count = decay * count + (1 - decay) * batch_count
        sums = decay * sums + (1 - decay) * batch_sum
        steps += 1
        count_hat = count / (1 - decay**steps)
        sum_hat = sums / (1 - decay**steps)[:, None]
        total = count_hat.sum()
        smoothed = (count_hat + eps) / (total + k * eps) * total
        codebook = np.where(count_hat[:, None] > 0, sum_hat / smoothed[:, None], codebook)
    return codebook, count, sums, steps


def test_ema_update_matches_a_numpy_reference_over_three_steps():
    rng = np.random.default_rng(1)
    codebook = rng.normal(size=(8, 3)).astype(np.float32)
    # Few vectors per batch, so some codes go unused in some steps; a large epsilon and a
    # short decay make the smoothing and the debiasing visible in the result.
    batches = [rng.normal(size=(1, 2, 3, 3)).astype(np.float32) for _ in range(3)]
    q = _quantizer(codebook, decay=0.8, epsilon=0.5, restart_after=0)
    for z in batches:
        q(z, training=True)
    want_codebook, want_count, want_sum, want_steps = _ema_reference(codebook, batches, 0.8, 0.5)
    np.testing.assert_allclose(_np(q.codebook), want_codebook, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(q.ema_count), want_count, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(q.ema_sum), want_sum, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_np(q.ema_steps), want_steps)


def test_first_training_batch_sets_the_codebook_from_the_latents():
    q = VectorQuantizer(8, 4, seed=0)
    vector = np.array([0.3, -2.0, 5.0, 1.5], np.float32)
    z = np.broadcast_to(vector, (2, 3, 3, 4))  # every latent vector is the same
    q(z)  # inference leaves the random initial codebook alone
    assert float(_np(q.initialized)) == 0.0
    q(z, training=True)
    assert float(_np(q.initialized)) == 1.0
    np.testing.assert_allclose(_np(q.vectors()), np.broadcast_to(vector, (8, 4)), rtol=1e-5)


def test_restart_moves_an_unused_code_onto_the_data_and_resets_its_statistics():
    rng = np.random.default_rng(2)
    centres = np.array([[0, 0], [3, 0], [0, 3]], np.float32)
    codebook = np.concatenate([centres, [[100.0, 100.0]]]).astype(np.float32)
    q = _quantizer(codebook, restart_after=2)
    batches = [
        (centres[rng.integers(0, 3, 32)] + rng.normal(0, 0.1, (32, 2))).astype(np.float32)
        for _ in range(2)
    ]
    q(batches[0].reshape(2, 4, 4, 2), training=True)
    assert _np(q.unused).tolist() == [0, 0, 0, 1]
    np.testing.assert_array_equal(_np(q.codebook)[3], [100.0, 100.0])
    q(batches[1].reshape(2, 4, 4, 2), training=True)  # second unused step: restarted
    revived = _np(q.codebook)[3]
    assert np.min(np.abs(batches[1] - revived).sum(1)) < 1e-6  # one of this batch's latents
    assert _np(q.ema_count)[3] == 0 and _np(q.ema_steps)[3] == 0 and _np(q.unused)[3] == 0
    np.testing.assert_array_equal(_np(q.ema_sum)[3], [0.0, 0.0])
    assert _np(q.ema_count)[:3].min() > 0  # the used codes kept their statistics


def test_perplexity_and_usage_of_the_batch():
    codebook = np.eye(8, dtype=np.float32)
    z = np.stack([codebook[0], codebook[1]] * 4).reshape(1, 2, 4, 8)  # codes 0 and 1, 4 each
    out = _quantizer(codebook)(z)
    assert float(_np(out["perplexity"])) == pytest.approx(2.0, rel=1e-5)
    assert float(_np(out["usage"])) == pytest.approx(2 / 8)


def test_mean_vector_is_usage_weighted_and_plain_before_training():
    codebook = np.array([[0.0, 0.0], [4.0, 8.0]], np.float32)
    q = _quantizer(codebook)
    np.testing.assert_allclose(_np(q.mean_vector()), [2.0, 4.0], rtol=1e-6)
    q.ema_count.assign(np.array([3.0, 1.0], np.float32))
    np.testing.assert_allclose(_np(q.mean_vector()), [1.0, 2.0], rtol=1e-6)


@TF_ONLY
def test_no_broadcast_of_latents_against_the_codebook_and_no_one_hot():
    import tensorflow as tf

    n_shape, k, d = (2, 3, 5), 7, 11  # N = 30: sizes with no coincidental products
    q = VectorQuantizer(k, d, seed=0)
    q.build((None, None, None, d))
    graph = (
        tf.function(lambda z: q(z, training=True)["quantized"])
        .get_concrete_function(tf.TensorSpec((*n_shape, d), tf.float32))
        .graph
    )
    n = int(np.prod(n_shape))
    for op in graph.get_operations():
        assert op.type != "OneHot", op.name
        for t in op.outputs:
            if t.shape.rank is not None:
                assert t.shape.rank <= 4, (op.name, t.shape)
                if t.shape.is_fully_defined():
                    assert t.shape.num_elements() != n * k * d, (op.name, t.shape)


def test_a_codebook_too_big_to_broadcast_runs():
    # A (N, K, D) float32 tensor here would take 4096 * 2048 * 1024 * 4 bytes = 34 GB.
    rng = np.random.default_rng(3)
    codebook = rng.normal(size=(2048, 1024)).astype(np.float32)
    z = rng.normal(size=(1, 64, 64, 1024)).astype(np.float32)
    codes = _np(_quantizer(codebook)(z)["codes"])
    assert codes.shape == (1, 64, 64)
    sample = z.reshape(-1, 1024)[:16]
    np.testing.assert_array_equal(codes.reshape(-1)[:16], _nearest(sample, codebook))


@TF_ONLY
def test_gradient_is_straight_through():
    import tensorflow as tf

    rng = np.random.default_rng(4)
    q = _quantizer(rng.normal(size=(8, 4)).astype(np.float32))
    z = tf.constant(rng.normal(size=(2, 3, 3, 4)).astype(np.float32))
    upstream = tf.constant(rng.normal(size=(2, 3, 3, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = tf.reduce_sum(q(z)["quantized"] * upstream)
    np.testing.assert_allclose(tape.gradient(out, z).numpy(), upstream.numpy(), rtol=1e-6)


@TF_ONLY
def test_grad_mode_trains_the_codebook_with_the_codebook_and_commitment_losses():
    import tensorflow as tf

    rng = np.random.default_rng(5)
    codebook = rng.normal(size=(8, 4)).astype(np.float32)
    q = _quantizer(codebook, update="grad", commitment=0.25)
    assert q.codebook.trainable
    z = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    with tf.GradientTape() as tape:
        out = q(z)
    chosen = codebook[_nearest(z.reshape(-1, 4), codebook)]
    mse = np.mean((z.reshape(-1, 4) - chosen) ** 2)
    assert float(out["loss"]) == pytest.approx(1.25 * mse, rel=1e-5)
    grad = tape.gradient(out["loss"], q.codebook.value).numpy()
    used = np.unique(_np(out["codes"]))
    assert np.abs(grad[used]).sum() > 0
    assert np.abs(np.delete(grad, used, axis=0)).sum() == 0


def test_grad_mode_moves_codes_through_an_offset_not_the_trainable_variable():
    q = VectorQuantizer(4, 2, update="grad", seed=0)
    q.build((None, None, None, 2))
    before = _np(q.codebook).copy()
    z = np.broadcast_to(np.array([7.0, -7.0], np.float32), (1, 2, 2, 2))
    q(z, training=True)  # the first batch initialises the codebook
    np.testing.assert_array_equal(_np(q.codebook), before)  # the optimizer's variable
    np.testing.assert_allclose(_np(q.vectors()), np.broadcast_to([7.0, -7.0], (4, 2)), rtol=1e-6)


def test_codebook_math_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        q = VectorQuantizer(8, 4, seed=0)
        z = ops.cast(np.random.default_rng(6).normal(size=(2, 3, 3, 4)), "bfloat16")
        out = q(z, training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert q.compute_dtype == "float32" and q.codebook.dtype == "float32"
    for key in ("quantized", "loss", "perplexity", "usage"):
        assert keras.backend.standardize_dtype(out[key].dtype) == "float32", key


def test_config_round_trip_and_clear_errors():
    q = VectorQuantizer(8, 4, update="grad", decay=0.9, restart_after=5, seed=3)
    clone = VectorQuantizer.from_config(q.get_config())
    assert (clone.num_codes, clone.update, clone.decay, clone.restart_after) == (8, "grad", 0.9, 5)
    with pytest.raises(ValueError, match="update='adam' is not allowed"):
        VectorQuantizer(8, 4, update="adam")
    with pytest.raises(ValueError, match="latents have 5 channels but the codebook has dim=4"):
        VectorQuantizer(8, 4)(np.zeros((1, 2, 2, 5), np.float32))


def _far_from_the_origin(seed: int = 0):
    """Latents and codes clustered 1000 units from the origin, where |z|^2 - 2 z.e + |e|^2
    cancels 6 of float32's 7 digits (and bfloat16 passes would keep none)."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(size=64) * 1000.0 / 8.0  # |offset| ~ 1000
    latents = (offset + rng.normal(size=(2000, 64))).astype("float32")
    codebook = (offset + rng.normal(size=(256, 64))).astype("float32")
    d = ((latents[:, None, :].astype("float64") - codebook[None].astype("float64")) ** 2).sum(-1)
    ordered = np.sort(d, axis=1)
    clear = ordered[:, 1] - ordered[:, 0] > 1e-3  # no float near-ties
    return latents, codebook, d.argmin(1), clear


def test_nearest_code_search_is_exact_for_latents_far_from_the_origin():
    from hvq_utils.vqvae.quantizer import nearest_codes

    latents, codebook, truth, clear = _far_from_the_origin()
    codes = np.asarray(nearest_codes(ops.convert_to_tensor(latents), ops.convert_to_tensor(codebook)))
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(codes[clear], truth[clear])
    # Without centring, float32 itself picks wrong codes here: the test can tell.
    naive = ((codebook**2).sum(1)[None] - 2.0 * latents @ codebook.T).argmin(1)
    assert (naive[clear] != truth[clear]).mean() > 0.01


def test_nearest_code_search_asks_jax_for_full_float32_precision():
    """On JAX (the TPU backend) the distance product must not run in bfloat16 passes."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp
        from hvq_utils.vqvae.quantizer import nearest_codes
        print(jax.make_jaxpr(nearest_codes)(jnp.zeros((6, 4)), jnp.zeros((5, 4))))
        """
    )
    env = {**__import__("os").environ, "KERAS_BACKEND": "jax"}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    dots = r.stdout.split("dot_general[")[1:]  # each product's parameters follow its name
    assert dots and all("precision=(Precision.HIGHEST" in d[:300] for d in dots), r.stdout


def test_cosine_lookup_picks_by_direction_and_gives_unit_vectors():
    rng = np.random.default_rng(3)
    lengths = rng.uniform(0.1, 10.0, (16, 1)).astype(np.float32)
    codebook = rng.normal(size=(16, 6)).astype(np.float32) * lengths
    z = rng.normal(size=(2, 5, 5, 6)).astype(np.float32) * 0.01  # tiny latents: direction still counts
    out = _quantizer(codebook, lookup="cosine")(z)
    unit = codebook / np.linalg.norm(codebook, axis=1, keepdims=True)
    flat = z.reshape(-1, 6)
    expected = np.argmax((flat / np.linalg.norm(flat, axis=1, keepdims=True)) @ unit.T, axis=1)
    np.testing.assert_array_equal(_np(out["codes"]).ravel(), expected)
    np.testing.assert_allclose(np.linalg.norm(_np(out["quantized"]), axis=-1), 1.0, atol=1e-5)
    assert not np.array_equal(expected, _nearest(flat, codebook))  # euclidean would pick others
    with pytest.raises(ValueError, match="lookup='dot' is not allowed; use one of euclidean, cosine"):
        VectorQuantizer(4, 2, lookup="dot")
