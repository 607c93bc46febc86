"""advisor.model: one estimator pair learns need probability and first-access time."""

from __future__ import annotations

import numpy as np
import pytest

from advisor.features import FEATURES
from advisor.model import StartupModel


def _data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, len(FEATURES))).astype(np.float32)
    freq = X[:, FEATURES.index("freq")]
    need = rng.random(n) < freq  # read with the probability of its history frequency
    t_mean = X[:, FEATURES.index("t_mean")] * 8
    log_t = np.where(need, t_mean + rng.normal(0, 0.1, n), np.nan)
    return X, need, log_t


def test_probability_tracks_frequency_and_time_tracks_history():
    X, need, log_t = _data()
    m = StartupModel(max_iter=60).fit(X, need, log_t)
    p, t_ms = m.predict(X)
    lo = X[:, FEATURES.index("freq")] < 0.2
    hi = X[:, FEATURES.index("freq")] > 0.8
    assert p[hi].mean() > 0.75 and p[lo].mean() < 0.25
    order = np.argsort(X[:, FEATURES.index("t_mean")])
    early, late = t_ms[order[:500]], t_ms[order[-500:]]
    assert np.median(early) * 5 < np.median(late)


def test_single_class_training_set_predicts_that_class():
    X, _, log_t = _data(200)
    m = StartupModel().fit(X, np.ones(200, bool), np.full(200, 3.0))
    p, t = m.predict(X[:5])
    assert np.all(p == 1.0)
    assert t == pytest.approx(np.expm1(3.0), rel=0.05)


def test_rejects_wrong_feature_count_and_empty_data():
    with pytest.raises(ValueError):
        StartupModel().fit(np.zeros((3, 2), np.float32), np.zeros(3, bool), np.zeros(3))
    with pytest.raises(ValueError):
        StartupModel().fit(np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, bool), np.zeros(0))


def test_row_cap_subsamples():
    X, need, log_t = _data(3000)
    m = StartupModel(max_iter=10, max_train_rows=1000).fit(X, need, log_t)
    assert m.n_train_rows == 1000
