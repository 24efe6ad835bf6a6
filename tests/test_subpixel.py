"""SubPixelConvTranspose: Conv2DTranspose(f, 4, strides=2, padding="same") in sub-pixel form.

Every check runs on the current backend (KERAS_BACKEND=tensorflow or jax).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers, ops

from hvq_utils import get_preset
from hvq_utils.vqvae import build_vqvae, compile_vqvae
from hvq_utils.vqvae.subpixel import SubPixelConvTranspose

IN, OUT = 5, 7  # channels in != out, so a swapped kernel layout cannot pass


def _np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def _pair(activation, input_shape, seed: int = 0):
    """A Conv2DTranspose and a SubPixelConvTranspose holding the same random weights."""
    reference = layers.Conv2DTranspose(OUT, 4, strides=2, padding="same", activation=activation)
    layer = SubPixelConvTranspose(OUT, activation=activation)
    reference.build(input_shape)
    layer.build(input_shape)
    rng = np.random.default_rng(seed)
    for variable in reference.weights:  # a non-zero bias, so that it is checked too
        variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    layer.set_weights(reference.get_weights())
    return reference, layer


def _output_and_grads(layer, x: np.ndarray, probe: np.ndarray):
    """(layer(x), d/dx, d/dkernel, d/dbias) of sum(layer(x) * probe), on the current backend."""
    if keras.backend.backend() == "jax":
        import jax

        def loss(trainable, inputs):
            y, _ = layer.stateless_call(trainable, [], inputs)
            return ops.sum(y * probe), y

        (dvars, dx), y = jax.grad(loss, argnums=(0, 1), has_aux=True)(
            [v.value for v in layer.trainable_variables], ops.convert_to_tensor(x)
        )
        return y, dx, *dvars
    import tensorflow as tf

    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = layer(inputs)
        loss = tf.reduce_sum(y * probe)
    dx, *dvars = tape.gradient(loss, [inputs, *layer.trainable_variables])
    return y, dx, *dvars


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 5), (4, 4), (8, 8)])
def test_equals_conv2d_transpose_forward_and_gradients(size, activation):
    shape = (3, *size, IN)
    reference, layer = _pair(activation, shape)
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    probe = rng.normal(size=(3, 2 * size[0], 2 * size[1], OUT)).astype(np.float32)
    expected = _output_and_grads(reference, x, probe)
    got = _output_and_grads(layer, x, probe)
    assert tuple(got[0].shape) == (3, 2 * size[0], 2 * size[1], OUT)
    for name, e, g in zip(("output", "d/dx", "d/dkernel", "d/dbias"), expected, got, strict=True):
        e, g = _np(e), _np(g)
        assert g.shape == e.shape, name
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-4 * np.abs(e).max(), err_msg=name)


def test_equals_conv2d_transpose_in_a_tensorflow_graph_of_unknown_sizes():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only TensorFlow traces with unknown spatial sizes; JAX shapes are static")
    import tensorflow as tf

    reference, layer = _pair("relu", (None, None, None, IN))
    graph = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, IN), tf.float32)])
    x = np.random.default_rng(5).normal(size=(2, 3, 6, IN)).astype(np.float32)
    expected = _np(reference(x))
    np.testing.assert_allclose(_np(graph(x)), expected, rtol=1e-5, atol=1e-4 * np.abs(expected).max())


def test_holds_the_weights_of_conv2d_transpose_with_the_same_initial_values():
    shape = (2, 4, 4, IN)
    keras.utils.set_random_seed(3)
    reference = layers.Conv2DTranspose(OUT, 4, strides=2, padding="same", name="x_up0")
    reference.build(shape)
    keras.utils.set_random_seed(3)
    layer = SubPixelConvTranspose(OUT, name="x_up0")
    layer.build(shape)
    assert [v.path for v in layer.weights] == [v.path for v in reference.weights]
    assert [tuple(v.shape) for v in layer.weights] == [(4, 4, OUT, IN), (OUT,)]
    for mine, theirs in zip(layer.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_computes_in_the_compute_dtype(policy):
    shape = (2, 4, 4, IN)
    _, full = _pair("relu", shape)
    layer = SubPixelConvTranspose(OUT, activation="relu", dtype=policy)
    layer.build(shape)
    layer.set_weights(full.get_weights())
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == policy.removeprefix("mixed_")
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in layer.weights)
    expected = _np(full(x))
    np.testing.assert_allclose(_np(ops.cast(y, "float32")), expected, atol=0.05 * np.abs(expected).max())


def test_config_round_trips_and_a_saved_model_gives_the_same_outputs(tmp_path):
    layer = SubPixelConvTranspose(OUT, activation="relu", use_bias=False, name="x_up1")
    clone = SubPixelConvTranspose.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.activation is keras.activations.relu and not clone.use_bias

    model = keras.Sequential(
        [keras.Input((4, 4, IN)), SubPixelConvTranspose(OUT, activation="relu", name="x_up0"), layer]
    )
    path = tmp_path / "up.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe mode: the registered "hvq" name resolves
    assert [type(lr) for lr in loaded.layers] == [SubPixelConvTranspose] * 2
    x = np.random.default_rng(4).normal(size=(2, 4, 4, IN)).astype(np.float32)
    np.testing.assert_array_equal(_np(loaded(x)), _np(model(x)))
    assert tuple(loaded(x).shape) == (2, 16, 16, OUT)


def _sublayers(layer):
    return list(layer._flatten_layers(include_self=False, recursive=True))


def test_vqvae_upsamples_without_conv2d_transpose_and_trains_and_saves(tmp_path):
    config = get_preset("smoke").replace(cbam=False)
    keras.utils.set_random_seed(0)
    vq = compile_vqvae(build_vqvae(config), config)
    inner = _sublayers(vq)
    assert not [lr.name for lr in inner if isinstance(lr, layers.Conv2DTranspose)]
    ups = [lr for lr in inner if isinstance(lr, SubPixelConvTranspose)]
    # Conditioners: top->middle 1, top->bottom 2, middle->bottom 1; decoders: 3 + 2 + 1.
    assert len(ups) == 10
    assert {lr.name for lr in ups} >= {"top_to_bottom_up1", "top_decoder_up2", "bottom_decoder_up0"}
    last = {lr.name: lr.activation for lr in ups}
    assert last["top_decoder_up2"] is keras.activations.linear  # the decoders' last has none
    assert last["top_to_bottom_up1"] is keras.activations.relu  # the conditioners' last has ReLU

    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    before = [_np(w).copy() for w in ups[0].weights]
    losses = [float(vq.train_on_batch(images, return_dict=True)["loss"]) for _ in range(3)]
    assert all(np.isfinite(losses))
    assert not np.array_equal(_np(ups[0].kernel), before[0])  # gradients reach the kernel

    path = tmp_path / "vq.keras"
    vq.save(path)
    loaded = keras.models.load_model(path)
    # Compiled predictions: op-by-op calls would take most of this test's time on JAX.
    np.testing.assert_array_equal(
        loaded.predict_on_batch(images)["images"], vq.predict_on_batch(images)["images"]
    )
