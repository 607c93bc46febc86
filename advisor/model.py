"""One estimator pair trained across all services: P(file read before ready in the next run) and
the expected first-access time given it is read. See docs/decisions.md (model type)."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from advisor.features import FEATURES

log = logging.getLogger(__name__)


class StartupModel:
    """fit(X, need, log_t_ms, weight) / predict(X) -> (p_need, t_ms)."""

    def __init__(self, max_iter: int = 60, learning_rate: float = 0.2, max_leaf_nodes: int = 15,
                 max_train_rows: int = 100_000, n_threads: int = 1, random_state: int = 0) -> None:
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        # One OpenMP thread: on a shared 2-core node more threads spin against each other and the
        # fit gets many times slower; the workload is small enough for one core.
        self.n_threads = n_threads
        self.learning_rate = learning_rate
        self.max_train_rows = max_train_rows
        self.random_state = random_state
        self.classifier: HistGradientBoostingClassifier | None = None
        self.regressor: HistGradientBoostingRegressor | None = None
        self.constant_p: float | None = None
        self.constant_t: float = 0.0
        self.n_train_rows = 0

    def fit(self, X: np.ndarray, need: np.ndarray, log_t_ms: np.ndarray, weight: np.ndarray | None = None) -> StartupModel:
        with threadpool_limits(self.n_threads):
            return self._fit(X, need, log_t_ms, weight)

    def _fit(self, X: np.ndarray, need: np.ndarray, log_t_ms: np.ndarray, weight: np.ndarray | None) -> StartupModel:
        if X.ndim != 2 or X.shape[1] != len(FEATURES):
            raise ValueError(f"expected {len(FEATURES)} feature columns, got {X.shape}")
        if len(X) == 0:
            raise ValueError("no training examples (every service needs at least 2 runs)")
        rng = np.random.default_rng(self.random_state)
        # Weights enter as a weighted sample (Efraimidis-Spirakis keys u^(1/w), top rows kept), not as
        # sample_weight: weighted binning in HistGradientBoosting costs more than the whole fit.
        if weight is not None or len(X) > self.max_train_rows:
            w = np.ones(len(X)) if weight is None else np.asarray(weight, dtype=float)
            keep_n = min(self.max_train_rows, int((w > 0).sum()))
            keys = np.log(rng.random(len(X))) / np.where(w > 0, w, np.nan)
            keys = np.nan_to_num(keys, nan=-np.inf)
            keep = np.sort(np.argpartition(-keys, keep_n - 1)[:keep_n]) if keep_n < len(X) else np.flatnonzero(w > 0)
            X, need, log_t_ms = X[keep], need[keep], log_t_ms[keep]
        weight = None
        self.n_train_rows = len(X)
        need = need.astype(bool)
        if need.all() or not need.any():
            self.constant_p = float(need.mean())
        else:
            self.classifier = HistGradientBoostingClassifier(
                max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
                early_stopping=False,
                random_state=self.random_state,
            ).fit(X, need, sample_weight=weight)
        pos = need & np.isfinite(log_t_ms)
        if pos.sum() >= 10:
            self.regressor = HistGradientBoostingRegressor(
                max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
                early_stopping=False,
                random_state=self.random_state,
            ).fit(X[pos], log_t_ms[pos], sample_weight=None if weight is None else weight[pos])
        else:
            self.constant_t = float(np.nanmean(log_t_ms[pos])) if pos.any() else 0.0
        log.info("model_fit rows=%d positives=%d", len(X), int(need.sum()))
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with threadpool_limits(self.n_threads):
            return self._predict(X)

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(X) == 0:
            return np.zeros(0), np.zeros(0)
        p = np.full(len(X), self.constant_p) if self.classifier is None else self.classifier.predict_proba(X)[:, 1]
        lt = np.full(len(X), self.constant_t) if self.regressor is None else self.regressor.predict(X)
        return p, np.expm1(np.clip(lt, 0.0, 30.0))
