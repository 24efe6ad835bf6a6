"""Codebook statistics are global: 8 data-parallel JAX devices agree with one device."""

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
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    for name, single in out["single"].items():
        np.testing.assert_allclose(
            out["parallel"][name], single, rtol=1e-4, atol=1e-5, err_msg=name
        )
    assert out["weights"] < 1e-4
    assert any(np.array(v).max() > 0 for k, v in out["single"].items() if k.endswith("ema_steps"))
