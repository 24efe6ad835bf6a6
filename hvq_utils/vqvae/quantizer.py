"""The vector quantizer: nearest codebook vector per latent pixel, with a straight-through gradient.

Two ways to learn the codebook (`update`):

- "ema" (default): the codebook is a non-trainable variable that follows the running mean of
  the latent vectors assigned to each code (van den Oord et al. 2017, appendix; Razavi et al.
  2019). The running count and sum of every code are exponential moving averages, debiased
  like Adam's moments (divided by 1 - decay**t, t counted per code since its last reset),
  and the counts are Laplace-smoothed before dividing so that a rarely used code never
  divides by zero. The only loss is the commitment term, commitment * ||z - sg(e)||^2.
- "grad": the seed's. The codebook is trained by the optimizer through the codebook loss
  ||sg(z) - e||^2 plus commitment * ||z - sg(e)||^2.

In both modes the codebook is set to random latent vectors of the first training batch, and a
code that no latent vector chose for `restart_after` consecutive training steps is moved onto
a random latent vector of the current batch, with its running statistics reset.

Lookup (`lookup`): "euclidean" compares the latent vectors with the codebook as they are;
"cosine" scales both to unit length first (l2-normalised codes, as in ViT-VQGAN, Yu et al.
2022), so codes are picked by direction and the quantized latents are unit vectors. Then a
level's latents cannot shrink towards the origin together with their codebook, where the
commitment loss is smallest and every code decodes alike: the collapse seen in the upper levels.

Costs: distances come from one (N, D) x (D, K) matrix product and codes are looked up with a
gather, so memory stays O(N * K + N * D); nothing of shape (B, H, W, K, D) and no one-hot
matrix is ever made. All codebook arithmetic is float32, whatever the mixed-precision policy.

Precision: the nearest-code search must not depend on the accelerator, so its matrix product
runs at full float32 precision (`exact_matmul`: JAX's "highest" precision, where TPUs would
otherwise use bfloat16 passes; on TensorFlow `setup_runtime` turns TF32 off), and on vectors
centred on the codebook's mean, so that latents far from the origin lose no digits to
|z|^2 - 2 z.e + |e|^2 cancelling.

Replicas: under JAX, `keras.distribution.DataParallel` runs one program over the global batch,
so the batch sums are global as written. Under a TensorFlow `tf.distribute` strategy each
replica sees its own slice; `replica_sum` all-reduces the statistics, and the random picks
(the first batch's codebook, restarts) are rows of the global batch drawn alike on every
replica and gathered from the replica that holds each (`global_rows`), so every replica
uses the codebook a single device would, and the state variables keep the first replica's
value (aggregation "only_first_replica").
"""

from __future__ import annotations

import keras
from keras import ops

UPDATES = ("ema", "grad")
LOOKUPS = ("euclidean", "cosine")


def _replica_context():
    """The TensorFlow `tf.distribute` replica context when a batch is split over several
    replicas; else None. TensorFlow is imported lazily, so JAX-only machines never import it."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def replica_sum(x):
    """`x` summed over the replicas of a TensorFlow `tf.distribute` strategy; else `x` itself."""
    context = _replica_context()
    if context is None:
        return x
    import tensorflow as tf

    return context.all_reduce(tf.distribute.ReduceOp.SUM, x)


def _replica():
    """(replica index, replicas) of the `tf.distribute` replica context; else (0, 1)."""
    context = _replica_context()
    if context is None:
        return 0, 1
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def global_rows(flat, rows):
    """Rows `rows` of the global batch, of which this replica holds `flat`: (N, D) -> (K, D).

    rows: int32 (K,) indices into the global batch (replica r holds rows r*N .. r*N + N - 1,
    as tf.distribute splits a batch). Each replica fills in the rows it holds and the
    replicas' parts are summed, so every replica gets the same (K, D) rows a single device
    would; without replicas this is take(flat, rows).
    """
    replica, replicas = _replica()
    if replicas == 1:
        return ops.take(flat, rows, axis=0)
    n = ops.shape(flat)[0]
    local = rows - replica * n  # (K,)
    mine = ops.logical_and(local >= 0, local < n)
    picked = ops.take(flat, ops.clip(local, 0, n - 1), axis=0)  # (K, D)
    return replica_sum(ops.where(mine[:, None], picked, 0.0))


def exact_matmul(a, b):
    """a @ b at full float32 precision on every backend (no bfloat16 or TF32 passes).

    JAX asks XLA for "highest" precision on this product alone; TensorFlow has no per-op
    setting, and `setup_runtime` turns TF32 off for the process instead.
    """
    if keras.backend.backend() == "jax":
        import jax.numpy as jnp

        return jnp.matmul(a, b, precision="highest")
    return ops.matmul(a, b)


def replica_count() -> int:
    """Number of replicas a TensorFlow `tf.distribute` strategy splits each batch over; else 1.

    Keras sums the replicas' gradients under `tf.distribute`, so a per-replica mean loss must
    be divided by this (Keras' built-in losses do the same).
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def nearest_codes(flat, codebook):
    """Index of the nearest codebook vector of each row: flat float32 (N, D), codebook float32
    (K, D) -> int32 (N,).

    |z - e|^2 = |z|^2 - 2 z.e + |e|^2, where |z|^2 is the same for every code of a row, so
    the argmin needs the last two terms only: one (N, D) x (D, K) product, at full float32
    precision, after centring both on the codebook's mean (distances are unchanged by it).
    """
    centre = ops.mean(codebook, axis=0)  # (D,)
    z, e = flat - centre, codebook - centre
    scores = ops.sum(e**2, axis=1)[None, :] - 2.0 * exact_matmul(z, ops.transpose(e))  # (N, K)
    return ops.cast(ops.argmin(scores, axis=1), "int32")


@keras.saving.register_keras_serializable(package="hvq")
class VectorQuantizer(keras.layers.Layer):
    """Nearest-codebook-vector quantization of a latent grid.

    call(z, training) with z: float (B, H, W, D) returns a dict:
      "quantized": float32 (B, H, W, D), the chosen codebook vectors, with the gradient of z
                   (straight-through estimator);
      "codes": int32 (B, H, W), the chosen code per latent pixel;
      "loss": float32 (), the latent loss to add to the reconstruction loss;
      "perplexity": float32 (), exp(entropy) of the batch's code histogram;
      "usage": float32 (), fraction of the codebook chosen at least once in the batch.
    With training=True the codebook state is updated (see the module docstring).

    Arguments: num_codes K, dim D, update "ema" or "grad", decay of the moving averages,
    commitment weight, restart_after (steps; 0 turns restarts off), epsilon for the Laplace
    smoothing, seed for the initial codebook and the random picks.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        update: str = "ema",
        decay: float = 0.99,
        commitment: float = 0.25,
        restart_after: int = 100,
        epsilon: float = 1e-5,
        seed: int | None = None,
        lookup: str = "euclidean",
        **kwargs,
    ):
        # Codebook statistics must stay float32 under a mixed policy, so the layer always
        # computes in float32 (any `dtype` given is replaced) and Keras casts its inputs to it.
        kwargs.pop("dtype", None)
        super().__init__(dtype="float32", **kwargs)
        if update not in UPDATES:
            raise ValueError(f"update={update!r} is not allowed; use one of {', '.join(UPDATES)}")
        if lookup not in LOOKUPS:
            raise ValueError(f"lookup={lookup!r} is not allowed; use one of {', '.join(LOOKUPS)}")
        self.lookup_kind = lookup
        self.num_codes = num_codes
        self.dim = dim
        self.update = update
        self.decay = decay
        self.commitment = commitment
        self.restart_after = restart_after
        self.epsilon = epsilon
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if input_shape[-1] != self.dim:
            raise ValueError(
                f"latents have {input_shape[-1]} channels but the codebook has dim={self.dim}; "
                "make the encoder's last layer output dim channels"
            )
        k, d = self.num_codes, self.dim

        def state(name, shape):
            return self.add_weight(
                shape=shape, initializer="zeros", dtype="float32", trainable=False,
                aggregation="only_first_replica", name=name,
            )

        self.codebook = self.add_weight(
            shape=(k, d),
            initializer=keras.initializers.RandomUniform(-1.0 / k, 1.0 / k, seed=self.seed),
            dtype="float32",
            trainable=self.update == "grad",
            # Trainable: the optimizer's, like any kernel. EMA: assigned in call, like the rest.
            aggregation="none" if self.update == "grad" else "only_first_replica",
            name="codebook",
        )
        if self.update == "grad":
            # Restarts and the data initialisation move a code by shifting it with this offset:
            # a JAX training step may not assign trainable variables (its optimizer owns them).
            self.offset = state("offset", (k, d))
        else:
            self.ema_sum = state("ema_sum", (k, d))  # running sum of the vectors per code
            self.ema_steps = state("ema_steps", (k,))  # steps since each code's last reset
        # Running count of the latent vectors per code: the EMA mode's cluster sizes, and in
        # both modes the weights of `mean_vector`.
        self.ema_count = state("ema_count", (k,))
        self.unused = state("unused", (k,))  # consecutive training steps without a vector
        self.initialized = state("initialized", ())  # 1.0 once set from the first batch

    def vectors(self):
        """The codebook in use: float32 (K, D) (unit vectors with the cosine lookup)."""
        if self.update == "grad":
            return self._norm(self.codebook + self.offset)
        return self._norm(ops.convert_to_tensor(self.codebook))

    def _norm(self, x):
        """x itself, or with the cosine lookup x scaled to unit length along the last axis."""
        if self.lookup_kind == "euclidean":
            return x
        return x / ops.sqrt(ops.maximum(ops.sum(x * x, axis=-1, keepdims=True), 1e-12))

    def lookup(self, codes):
        """Codebook vectors of codes: int (...) -> float32 (..., D)."""
        return ops.take(self.vectors(), ops.cast(codes, "int32"), axis=0)

    def mean_vector(self):
        """The codebook's mean, weighted by how often each code has been chosen: float32 (D,).

        An untrained quantizer has no counts yet and gives the plain mean.
        """
        weights = self.ema_count + 1e-12  # the tiny floor turns all-zero counts into uniform
        weights = weights / ops.sum(weights)
        return ops.matmul(weights[None, :], self.vectors())[0]  # (1, K) x (K, D) -> (D,)

    def call(self, z, training=False):
        z = ops.cast(z, "float32")
        grid_shape = ops.shape(z)[:-1]  # (B, H, W)
        flat = self._norm(ops.reshape(z, (-1, self.dim)))  # (N, D), N = B * H * W
        codebook = self.vectors()  # (K, D)
        if training:
            # One random draw of K latent vectors per step: the first batch's codebook, and
            # the new place of any code restarted this step.
            picks = global_rows(flat, self._random_rows(flat))  # (K, D)
            codebook = ops.where(self.initialized > 0, codebook, picks)
        codes = nearest_codes(flat, codebook)  # (N,)
        chosen = ops.take(codebook, codes, axis=0)  # (N, D)

        commit = ops.mean((flat - ops.stop_gradient(chosen)) ** 2)
        loss = self.commitment * commit
        if self.update == "grad":
            loss = loss + ops.mean((ops.stop_gradient(flat) - chosen) ** 2)

        counts = replica_sum(
            ops.segment_sum(ops.ones_like(codes, dtype="float32"), codes, self.num_codes)
        )  # (K,) latent vectors per code, over the global batch
        if training:
            self._update_state(flat, codes, counts, codebook, picks)

        probs = counts / ops.sum(counts)
        perplexity = ops.exp(-ops.sum(probs * ops.log(probs + 1e-10)))
        usage = ops.mean(ops.cast(counts > 0, "float32"))
        quantized = flat + ops.stop_gradient(chosen - flat)  # straight-through: dq/dz = 1
        return {
            "quantized": ops.reshape(quantized, (*grid_shape, self.dim)),  # (B, H, W, D)
            "codes": ops.reshape(codes, grid_shape),  # (B, H, W)
            "loss": loss,
            "perplexity": perplexity,
            "usage": usage,
        }

    def _random_rows(self, flat):
        """K random row indices of the global batch, drawn with replacement: int32 (K,).

        Every replica draws the same indices (their seed states are mirrored)."""
        rows = ops.shape(flat)[0] * _replica()[1]
        return keras.random.randint(
            (self.num_codes,), 0, rows, dtype="int32", seed=self.seed_generator
        )

    def _update_state(self, flat, codes, counts, codebook, picks):
        """One training step's update of the codebook state (assigns variables).

        flat: float32 (N, D); codes: int32 (N,); counts: float32 (K,) global;
        codebook: float32 (K, D) the codebook this step used; picks: float32 (K, D).
        """
        decay = self.decay
        ema_count = decay * self.ema_count + (1.0 - decay) * counts
        unused = ops.where(counts > 0, 0.0, self.unused + 1.0)
        if self.restart_after > 0:
            dead = unused >= self.restart_after  # (K,) codes to move onto this batch's picks
        else:
            dead = ops.zeros_like(unused, dtype="bool")
        ema_count = ops.where(dead, 0.0, ema_count)
        unused = ops.where(dead, 0.0, unused)

        if self.update == "ema":
            sums = replica_sum(ops.segment_sum(flat, codes, self.num_codes))  # (K, D)
            ema_sum = decay * self.ema_sum + (1.0 - decay) * sums
            steps = self.ema_steps + 1.0
            debias = 1.0 - ops.power(decay, steps)  # (K,)
            count_hat = ema_count / debias
            sum_hat = ema_sum / debias[:, None]
            # Laplace smoothing: every code gets epsilon of the total count, so none is zero.
            total = ops.sum(count_hat)
            smoothed = (count_hat + self.epsilon) / (total + self.num_codes * self.epsilon) * total
            # A code with no vector since its (re)start keeps its place until it gets one.
            new_codebook = ops.where(
                count_hat[:, None] > 0, sum_hat / smoothed[:, None], codebook
            )
            self.codebook.assign(ops.where(dead[:, None], picks, new_codebook))
            self.ema_sum.assign(ops.where(dead[:, None], 0.0, ema_sum))
            self.ema_steps.assign(ops.where(dead, 0.0, steps))
        else:
            # The optimizer moves the codebook; a code placed on a pick (the first batch, a
            # restart) gets the offset that puts it there, the others keep theirs exactly.
            moved = ops.logical_or(dead, self.initialized <= 0)  # (K,)
            offset = ops.convert_to_tensor(self.offset)
            self.offset.assign(ops.where(moved[:, None], picks - self.codebook, offset))
        self.ema_count.assign(ema_count)
        self.unused.assign(unused)
        self.initialized.assign(1.0)

    def get_config(self):
        return {
            **super().get_config(),
            "num_codes": self.num_codes,
            "dim": self.dim,
            "update": self.update,
            "decay": self.decay,
            "commitment": self.commitment,
            "restart_after": self.restart_after,
            "epsilon": self.epsilon,
            "seed": self.seed,
            "lookup": self.lookup_kind,
        }
