"""Building blocks of the VQ-VAE: CBAM attention and the residual block that carries it.

CBAM ("Convolutional Block Attention Module", Woo et al. 2018, arXiv 1807.06521) rescales
a feature map twice: per channel, from an MLP over its average- and max-pooled summary,
then per pixel, from a 7x7 convolution over the channel-wise average and maximum. The seed
put it inside the encoders' residual blocks, and so does this model; the decoder's blocks,
most of them at full resolution, go without.

Everything is `keras.ops`, so these layers run on the TensorFlow and the JAX backends.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="hvq")
class CBAM(layers.Layer):
    """Channel then spatial attention; the output has the input's shape.

    x: (B, H, W, C) -> (B, H, W, C), in the layer's compute dtype.
    """

    def __init__(self, reduction: int = 8, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.reduction = reduction
        self.kernel_size = kernel_size

    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = max(channels // self.reduction, 1)
        # One MLP shared by the average- and the max-pooled descriptor, as in the paper.
        policy = self.dtype_policy
        self.squeeze = layers.Dense(hidden, activation="relu", name="squeeze", dtype=policy)
        self.excite = layers.Dense(channels, name="excite", dtype=policy)
        self.spatial = layers.Conv2D(
            1, self.kernel_size, padding="same", name="spatial", dtype=policy
        )
        self.squeeze.build((None, channels))
        self.excite.build((None, hidden))
        self.spatial.build((*input_shape[:-1], 2))

    def call(self, x):
        avg = ops.mean(x, axis=(1, 2))  # (B, C)
        peak = ops.max(x, axis=(1, 2))  # (B, C)
        gate = ops.sigmoid(self.excite(self.squeeze(avg)) + self.excite(self.squeeze(peak)))
        x = x * gate[:, None, None, :]
        summary = ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )  # (B, H, W, 2)
        return x * ops.sigmoid(self.spatial(summary))

    def get_config(self):
        return {
            **super().get_config(),
            "reduction": self.reduction,
            "kernel_size": self.kernel_size,
        }


@keras.saving.register_keras_serializable(package="hvq")
class ResBlock(layers.Layer):
    """x + CBAM(conv1x1(relu(conv3x3(relu(x))))), the VQ-VAE residual block with attention.

    The 3x3 convolution narrows to half the width (`hidden`) and the 1x1 widens back, which
    halves the cost of the block at the high resolutions where the decoder runs it.
    x: (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, cbam: bool = True, reduction: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.cbam = cbam
        self.reduction = reduction

    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = max(channels // 2, 1)
        policy = self.dtype_policy
        self.conv3 = layers.Conv2D(hidden, 3, padding="same", name="conv3", dtype=policy)
        self.conv1 = layers.Conv2D(channels, 1, name="conv1", dtype=policy)
        self.conv3.build(input_shape)
        self.conv1.build((*input_shape[:-1], hidden))
        self.attention = None
        if self.cbam:
            self.attention = CBAM(self.reduction, name="cbam", dtype=policy)
            self.attention.build(input_shape)

    def call(self, x):
        h = self.conv1(ops.relu(self.conv3(ops.relu(x))))
        if self.attention is not None:
            h = self.attention(h)
        return x + h

    def get_config(self):
        return {**super().get_config(), "cbam": self.cbam, "reduction": self.reduction}
