"""jaxgrad's XLA workarounds (jaxgrad/_xla_workarounds.py) are applied on import and keep a user's choice."""

import os
import subprocess
import sys
import textwrap

import pytest

from jaxgrad import _xla_workarounds

# Without the workaround this program deadlocks on XLA:CPU (jaxlib 0.10, 2 cores): LAPACK QR
# beside a matmul under the concurrency-optimised scheduler. Orthogonal weights need exactly this.
PROGRAM = textwrap.dedent("""
    import os, jaxgrad, jax, jax.numpy as jnp, numpy as np
    def f(k):
        h = jnp.ones(32)
        for kk in jax.random.split(k, 2):
            h = jnp.tanh(jnp.linalg.qr(jax.random.normal(kk, (32, 32)))[0] @ h)
        return h.sum()
    out = np.asarray(jax.jit(jax.vmap(f))(jax.random.split(jax.random.key(0), 64)))
    print(os.environ["XLA_FLAGS"], out.shape)
""")


def _run(env):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **env}
    return subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_orthogonal_weights_beside_matmuls_do_not_deadlock():
    out = _run({"XLA_FLAGS": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"{_xla_workarounds.FLAG}=false" in out.stdout and "(64,)" in out.stdout


def test_a_users_own_setting_of_the_flag_is_kept(monkeypatch):
    monkeypatch.setattr(_xla_workarounds, "_backends_started", lambda: False)  # this session has computed
    monkeypatch.setenv("XLA_FLAGS", f"--xla_dump_to=/nonexistent {_xla_workarounds.FLAG}=true")
    assert not _xla_workarounds.apply()
    assert os.environ["XLA_FLAGS"] == f"--xla_dump_to=/nonexistent {_xla_workarounds.FLAG}=true"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert _xla_workarounds.apply()
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {_xla_workarounds.FLAG}=false"


@pytest.mark.slow
def test_importing_jaxgrad_after_a_computation_warns(tmp_path):
    program = (
        "import warnings, jax.numpy as jnp; jnp.ones(2).block_until_ready()\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always'); import jaxgrad\n"
        "print([str(x.message)[:40] for x in w])"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "JAX computed something before jaxgrad" in out.stdout
