"""Training on several devices ends where one device ends: 8 data-parallel JAX devices, and
2 TensorFlow devices under MirroredStrategy with a checkpoint and a resume in between."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

STEP_ON_8_DEVICES = """
    import json, sys
    import jax, keras, numpy as np
    from hvq_utils import get_preset
    from hvq_utils.vqvae import build_vqvae, compile_vqvae

    assert len(jax.devices()) == 8, jax.devices()
    config = get_preset("smoke", cbam=False)
    rng = np.random.default_rng(0)
    first, second = (rng.random((8, 32, 32, 3), dtype=np.float32) for _ in range(2))
    keras.utils.set_random_seed(0)

    # One single-device step initialises the codebooks from data, so the compared step
    # moves real clusters (and restarts the codes the first batch left unused).
    vq = compile_vqvae(build_vqvae(config), config)
    vq.fit(first, batch_size=8, epochs=1, verbose=0)
    vq.save(sys.argv[1])
    seeds = [np.array(q.seed_generator.state) for q in vq.quantizers]
    vq.fit(second, batch_size=8, epochs=1, verbose=0, shuffle=False)

    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    dp = keras.models.load_model(sys.argv[1])
    for q, seed in zip(dp.quantizers, seeds):  # seed states are not saved; match the picks
        q.seed_generator.state.assign(seed)
    dp.fit(second, batch_size=8, epochs=1, verbose=0, shuffle=False)

    def state(model):
        return {f"{q.name}/{name}": np.array(getattr(q, name)).tolist()
                for q in model.quantizers
                for name in ("codebook", "ema_count", "ema_sum", "ema_steps", "unused")}

    print(json.dumps({
        "single": state(vq),
        "parallel": state(dp),
        "devices": len(dp.quantizers[0].codebook.value.sharding.device_set),
        "weights": max(float(np.abs(np.array(a) - np.array(b)).max())
                       for a, b in zip(vq.trainable_weights, dp.trainable_weights)),
    }))
"""


def test_one_step_on_8_devices_gives_the_single_device_codebook_statistics(tmp_path):
    import numpy as np

    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        # 8 simulated CPU devices; without XLA's optimisation passes a step compiles in seconds.
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8 "
        "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
    }
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STEP_ON_8_DEVICES), str(tmp_path / "vq.keras")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    for name, single in out["single"].items():
        np.testing.assert_allclose(out["parallel"][name], single, rtol=1e-4, atol=1e-5, err_msg=name)
    assert out["weights"] < 1e-4
    assert any(np.array(v).max() > 0 for k, v in out["single"].items() if k.endswith("ema_steps"))


MIRRORED_TRAIN_AND_RESUME = """
    import json, sys
    from contextlib import nullcontext
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from hvq_utils import get_preset
    from hvq_utils.loop import current_step, fit_resumable
    from hvq_utils.prior import build_prior, compile_prior
    from hvq_utils.vqvae import build_vqvae, compile_vqvae

    config = get_preset("smoke", cbam=False, prior_dropout=0.0, restart_after=1)
    rng = np.random.default_rng(0)
    images = rng.random((4, 8, 32, 32, 3), dtype=np.float32)  # 4 global batches of 8
    top = rng.integers(0, 16, (4, 8, 4, 4)).astype("int32")
    middle = rng.integers(0, 8, (4, 8, 8, 8)).astype("int32")

    def vq_batches(step):
        return tf.data.Dataset.from_tensor_slices(images[step:]).repeat()

    def prior_batches(step):
        x = {"codes": middle[step:], "top": top[step:]}
        return tf.data.Dataset.from_tensor_slices((x, middle[step:])).repeat()

    def run(out, scope, build, batches):
        # Two steps, a checkpoint each; the process "dies"; a new call resumes to step 3.
        keras.utils.set_random_seed(0)
        fit_resumable(build, batches, None, out, 2, 1, scope, verbose=0)
        model, _ = fit_resumable(build, batches, None, out, 3, 1, scope, verbose=0)
        return model

    def vq_state(model):
        names = ("codebook", "ema_count", "ema_sum", "ema_steps", "unused")
        return {f"{q.name}/{n}": np.array(getattr(q, n)).tolist() for q in model.quantizers for n in names}

    def weights(model):
        return [np.array(w) for w in model.trainable_weights]

    def gap(a, b):
        return max(float(np.abs(x - y).max()) for x, y in zip(a, b))

    out = sys.argv[1]
    results = {}
    mirrored = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    for name, strategy in (("single", None), ("mirrored", mirrored)):
        scope = strategy.scope if strategy else nullcontext
        vq = run(f"{out}/{name}-vq", scope, lambda: compile_vqvae(build_vqvae(config), config), vq_batches)
        prior = run(f"{out}/{name}-prior", scope,
                    lambda: compile_prior(build_prior(config, "middle"), config), prior_batches)
        results[name] = {
            "vq": vq_state(vq), "vq_weights": weights(vq), "prior_weights": weights(prior),
            "mirrored": [type(m.trainable_variables[0].value).__name__ for m in (vq, prior)],
            "steps": [current_step(vq), current_step(prior)],
        }
    single, mirrored = results["single"], results["mirrored"]
    print(json.dumps({
        "single": single["vq"], "mirrored": mirrored["vq"], "steps": mirrored["steps"],
        "types": mirrored["mirrored"],
        "vq_weights": gap(single["vq_weights"], mirrored["vq_weights"]),
        "prior_weights": gap(single["prior_weights"], mirrored["prior_weights"]),
    }))
"""


def test_training_and_resuming_under_mirrored_strategy_matches_one_device(tmp_path):
    """Kaggle's T4 x2 path: the VQ-VAE and a conditioned prior train, checkpoint, resume inside
    the strategy (mirrored variables), and end where a single device ends on the same batches."""
    import numpy as np

    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MIRRORED_TRAIN_AND_RESUME), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["steps"] == [3, 3]
    assert all("Mirrored" in t for t in out["types"]), out["types"]  # resumed inside the strategy
    for name, single in out["single"].items():
        np.testing.assert_allclose(out["mirrored"][name], single, rtol=1e-4, atol=1e-5, err_msg=name)
    assert out["vq_weights"] < 1e-4 and out["prior_weights"] < 1e-4
    assert any(np.array(v).max() > 0 for k, v in out["single"].items() if k.endswith("ema_steps"))
