"""The decoder's upsampling layer: a 4x4 stride-2 transposed convolution in sub-pixel form.

`SubPixelConvTranspose(filters)` computes exactly what
`keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same")` computes from the same
weights, and holds the same weights: `kernel` (4, 4, filters, in_channels) in the transposed
convolution's layout, and `bias` (filters,). Only the arithmetic differs.

Why. Keras lowers a transposed convolution on JAX to a convolution over the input dilated with
zeros, for which XLA's CPU backend has no fast kernel: the full preset's 256 -> 512 layer took
about 20x as long as TensorFlow's for forward and backward, and the VQ-VAE trained about 12x
slower on JAX than on TensorFlow. Here the only convolution is a plain stride-1 one, and the
rest is a pad, reshapes, a transpose and a crop, fast on both backends.

The arithmetic. Along one axis, "same" with kernel 4 and stride 2 maps x (n pixels) to y
(2n pixels) by, with w the kernel along that axis (x = 0 outside 0..n-1),

    y[2m]     = x[m - 1] w[3] + x[m] w[1]
    y[2m + 1] = x[m] w[2]     + x[m + 1] w[0]

Pad x with one zero each side (xp, n + 2 pixels) and take 2-pixel windows xp[s], xp[s + 1],
s = 0..n: the window at s gives y[2s] with taps (w[3], w[1]), and y[2s - 1] with taps
(w[2], w[0]). So one 2x2 valid convolution of xp with 4 x filters outputs, the four (row,
column) phase kernels side by side on the channel axis, gives (n + 1) x (n + 1) positions;
depth to space (phases in the order odd, even) turns it into z of 2n + 2 pixels a side, with
z[j] = y[j - 1], and y is z without its outer ring. Window tap a of phase slot p' (0: odd
outputs, 1: even ones) is kernel row 2 (1 - a) + p', hence `_phase_kernel`. The extra row and
column cost (n + 1)^2 / n^2 more arithmetic: 1% at n = 256.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="hvq")
class SubPixelConvTranspose(layers.Layer):
    """Conv2DTranspose(filters, 4, strides=2, padding="same"), computed as a sub-pixel convolution.

    x: (B, H, W, C) -> (B, 2H, 2W, filters), in the layer's compute dtype; channels last.
    Weights: kernel (4, 4, filters, C) and bias (filters,), as Conv2DTranspose holds them,
    created in the same order with the same initializers.
    """

    def __init__(
        self,
        filters: int,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(filters) < 1:
            raise ValueError(f"filters={filters} must be a positive number of output channels")
        self.filters = int(filters)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name} needs a known channel count; got input shape {input_shape}")
        self.input_spec = layers.InputSpec(ndim=4, axes={-1: channels})
        self.kernel = self.add_weight(
            name="kernel", shape=(4, 4, self.filters, channels), initializer=self.kernel_initializer
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer
            )

    def _phase_kernel(self, channels: int):
        """kernel (4, 4, F, C) -> the four phases' 2x2 kernels as one: (2, 2, C, 4F), channels
        ordered (p', q', F), p' and q' the row and column phase slots (0: odd, 1: even outputs).
        """
        k = ops.reshape(self.kernel, (2, 2, 2, 2, self.filters, channels))  # (1 - a, p', 1 - b, q', F, C)
        # One axis a call: Keras 3.13's TensorFlow flip fails on a tuple of axes (ReverseV2 wants rank 1).
        k = ops.flip(ops.flip(k, axis=0), axis=2)  # (a, p', b, q', F, C)
        k = ops.transpose(k, (0, 2, 5, 1, 3, 4))  # (a, b, C, p', q', F)
        return ops.reshape(k, (2, 2, channels, 4 * self.filters))

    def call(self, x):
        _, h, w, channels = x.shape
        if h is None or w is None:
            h, w = ops.shape(x)[1], ops.shape(x)[2]
        padded = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # (B, H + 2, W + 2, C)
        r = ops.conv(padded, self._phase_kernel(channels))  # (B, H + 1, W + 1, 4F)
        r = ops.reshape(r, (-1, h + 1, w + 1, 2, 2, self.filters))  # (B, s, t, p', q', F)
        r = ops.transpose(r, (0, 1, 3, 2, 4, 5))  # (B, s, p', t, q', F)
        z = ops.reshape(r, (-1, 2 * h + 2, 2 * w + 2, self.filters))  # (B, 2H + 2, 2W + 2, F)
        # y = z less its outer ring. ops.slice, not z[:, 1:-1, 1:-1]: TensorFlow's gradient of a
        # strided slice is several times slower than that of a plain slice (a pad).
        y = ops.slice(z, (0, 1, 1, 0), (ops.shape(z)[0], 2 * h, 2 * w, self.filters))
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
