"""Small helpers shared by tests."""
import numpy as np


def assert_within_se(measured, predicted, se, n_se=4.0, what=""):
    """|measured − predicted| ≤ n_se standard errors (the project's Monte-Carlo tolerance)."""
    err = abs(float(measured) - float(predicted))
    assert err <= n_se * float(se), (
        f"{what}: measured {float(measured):.6g} vs predicted {float(predicted):.6g}, "
        f"|diff| = {err:.3g} > {n_se} SE = {n_se * float(se):.3g}"
    )


def standard_error(x):
    x = np.asarray(x, dtype=np.float64)
    return x.std(ddof=1) / np.sqrt(x.size)
