"""The your_own_model study at a tiny size, and the two-sample Kolmogorov–Smirnov check it uses."""

import numpy as np
import pytest

from jaxgrad.stats import ks_two_sample
from tests.helpers import run_study_at_a_tiny_size

pytest.importorskip("equinox")
from experiments import your_own_model

TINY = your_own_model.Config(
    width=8,
    agreement_depth=4,
    depths=(2, 4),
    agreement_samples=64,
    sigma_w=(1.0, 2.0),
    boundary_width=8,
    boundary_depth=8,
    fit_start=3,
    boundary_samples=64,
    theory_points=9,
)


@pytest.mark.slow
def test_study_runs_end_to_end_at_a_tiny_size(tmp_path):
    data, comparisons = run_study_at_a_tiny_size(your_own_model, TINY, tmp_path)
    assert all(c.tolerance > 0 for c in comparisons)
    assert data["equinox_log_spectral_norm"].shape == (64, 4) and data["equinox_rate"].shape == (2,)
    assert float(data["critical_sigma_w2"]) == pytest.approx(1.761, abs=1e-3)  # Schoenholz et al. at σ_b² = 0.05
    # one compiled program for the Equinox model's σ_w grid (σ_w is a traced hyperparameter)
    rows = [
        r
        for r in __import__("jaxgrad").store.read_csv(tmp_path / "your_own_model" / "summary.csv")
        if r["part"] == "boundary" and r["model"] == "equinox"
    ]
    assert {int(r["compiles"]) for r in rows} == {1}


def test_ks_critical_value_holds_under_the_null_and_a_shift_exceeds_it():
    """Under one distribution D exceeds c(α)√((n+m)/nm) with probability ≈ α; a 0.5 SD shift at n = 400 always does."""
    rng = np.random.default_rng(0)
    rejections = [ks_two_sample(rng.normal(size=200), rng.normal(size=300), alpha=0.05) for _ in range(400)]
    rate = np.mean([r.statistic > r.critical for r in rejections])
    assert rate <= 0.05 + 4 * np.sqrt(0.05 * 0.95 / 400)  # the asymptotic value is slightly conservative at n ~ 200
    shifted = ks_two_sample(rng.normal(size=400), rng.normal(0.5, 1.0, size=400))
    assert shifted.statistic > shifted.critical
    with pytest.raises(ValueError, match="alpha"):
        ks_two_sample([0.0, 1.0], [0.0, 1.0], alpha=1.5)
