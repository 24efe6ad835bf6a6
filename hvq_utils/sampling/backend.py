"""What differs between the backends for sampling: compiling a program, matmul precision,
and a float32 copy of a prior. TensorFlow and JAX are imported inside the functions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import keras


def compile_program(fn: Callable, donate_state: bool = True) -> Callable:
    """fn(weights, state, *args) as one compiled program: jax.jit (the state's buffers
    donated) or tf.function with XLA (jit_compile); other backends run it as it is."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn, donate_argnums=(1,) if donate_state else ())
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, autograph=False)
    return fn


@contextlib.contextmanager
def full_precision():
    """Float32 matmuls at full precision inside: TF32 off on TensorFlow (restored after),
    jax.default_matmul_precision("float32") on JAX (no bfloat16 passes on TPU)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        # "float32", not its newer alias "highest", which JAX 0.4.30 (the [jax] floor) refuses.
        with jax.default_matmul_precision("float32"):
            yield
    elif backend == "tensorflow":
        import tensorflow as tf

        was = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(False)
        try:
            yield
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(was)
    else:
        yield


def dynamic_slice(x, start, shape):
    """x[start[0] : start[0] + shape[0], ...] for traced starts and static sizes.

    keras.ops.slice lowers to tf.slice, which XLA compiles again for every start value;
    this is XLA's DynamicSlice on TensorFlow (and lax.dynamic_slice on JAX).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        from tensorflow.compiler.tf2xla.python import xla

        starts = tf.stack([tf.cast(i, "int32") for i in start])
        return xla.dynamic_slice(x, starts, list(shape))
    if backend == "jax":
        import jax

        return jax.lax.dynamic_slice(x, list(start), list(shape))
    return keras.ops.slice(x, start, shape)


def to_device(tree):
    """numpy arrays (nested dicts and lists) -> backend tensors of the same dtypes."""
    return keras.tree.map_structure(keras.ops.convert_to_tensor, tree)


def float32_twin(model: keras.Model) -> keras.Model:
    """`model` itself when every layer computes in float32, else a copy built under the
    float32 policy. The copy's weights are set by `sync_weights`."""
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in model._flatten_layers()):
        return model
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return type(model).from_config({**model.get_config(), "dtype": "float32"})
    finally:
        keras.config.set_dtype_policy(previous)


def sync_weights(twin: keras.Model, model: keras.Model) -> None:
    """Copies model's current weights (float32 variables under any policy) into its twin."""
    if twin is not model:
        twin.set_weights(model.get_weights())
