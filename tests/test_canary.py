"""Canaries: pure-JAX reproductions of upstream miscompilations that jaxgrad's programs hit.

No jaxgrad code runs here: if a jax/jaxlib release brings one of these bugs back, this file fails
CI before any number of jaxgrad's is trusted (jaxgrad/_known_bad.py lists the versions excluded).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad import _known_bad

T, F = 8, 32


def _rows(normalise):
    return lambda x: jax.vmap(normalise)(x.reshape(T, F)).reshape(-1)


LAYER_NORM = _rows(lambda v: (v - jnp.mean(v, keepdims=True)) * jax.lax.rsqrt(jnp.var(v, keepdims=True) + 1e-5))
RMS_NORM = _rows(lambda v: v * jax.lax.rsqrt(jnp.mean(v * v, keepdims=True) + 1e-5))


@pytest.mark.parametrize("f", [LAYER_NORM, RMS_NORM], ids=["layer_norm", "rms_norm"])
def test_batched_jacrev_of_a_norm_vmapped_over_rows_is_compiled_right(f):
    # jaxlib 0.10.2 on XLA:CPU: 0.54 max error for the layer norm (0.0 on 0.10.1; issue 27)
    X = jnp.stack([jax.random.normal(jax.random.key(1), (T * F,))] * 3) * jnp.array([[1.0], [0.5], [-1.0]])
    reference = np.stack([np.asarray(jax.jacrev(f)(x)) for x in X])  # unbatched, not jitted
    batched = np.asarray(jax.jit(jax.vmap(jax.jacrev(f)))(X))
    forward = np.asarray(jax.jit(jax.vmap(jax.jacfwd(f)))(X))
    assert np.abs(forward - reference).max() <= 1e-5
    assert np.abs(batched - reference).max() <= 1e-5, "jit(vmap(jacrev)) miscompiled: see jaxgrad/_known_bad.py"


def test_the_installed_jaxlib_is_not_a_known_bad_one():
    assert _known_bad.known_bad() is None, f"jaxlib {_known_bad.jaxlib_version()}: {_known_bad.known_bad()}"
    assert _known_bad.known_bad("0.10.2") is not None
