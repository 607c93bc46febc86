"""py-numeric: a numpy job (a model-scoring style warm-up followed by a compute burst).

Ready = arrays built and the first kernels run; then the remaining work and exit 0.
Knobs: SIZE, SEED, DTYPE=float32|float64, OPS=comma list of linalg,fft,poly,stats,random,
SAVE=none|npy|npz|txt, BATCHES (scoring batches after ready), CRASH=0|1 (a singular matrix:
LinAlgError before ready).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import fail_early, knob, mark_ready  # noqa: E402

import numpy as np  # noqa: E402


def main() -> None:
    n = int(knob("SIZE", "256"))
    rng = np.random.default_rng(int(knob("SEED", "1")))
    dtype = np.dtype(knob("DTYPE", "float64"))
    ops = [o for o in knob("OPS", "linalg").split(",") if o]
    a = rng.standard_normal((n, n)).astype(dtype)
    if knob("CRASH", "0") == "1":
        a[:, 1] = a[:, 0]
        try:
            np.linalg.inv(a.astype(np.float64) @ np.zeros((n, n)))
        except np.linalg.LinAlgError as exc:
            fail_early(f"model matrix is singular: {exc}")
    results = {}
    if "linalg" in ops:
        results["det"] = float(np.linalg.slogdet(a)[1])
        results["sv"] = np.linalg.svd(a, compute_uv=False)[:3]
    if "fft" in ops:
        results["fft"] = np.abs(np.fft.rfft(a[0])).max()
    mark_ready(f"n={n} ops={','.join(ops)}")
    # The job's main work: score batches of rows through a small two-layer model built from `a`.
    w1 = a[:64, :].T.copy() if n >= 64 else a.T.copy()
    for _ in range(int(knob("BATCHES", "10"))):
        x = rng.standard_normal(((1 << 20) // n, w1.shape[1])).astype(dtype)  # constant work per batch
        h = np.maximum(x @ w1.T, 0)
        results["score"] = float((h @ a[:, :1]).mean())
    if "poly" in ops:
        p = np.polynomial.Polynomial.fit(np.arange(n), a[:, 0], deg=5)
        results["poly"] = p.coef[:2]
    if "stats" in ops:
        results["pct"] = np.percentile(a, [5, 50, 95])
        results["hist"] = np.histogram(a, bins=16)[0][:3]
    if "random" in ops:
        results["perm"] = rng.permutation(n)[:3]
        results["beta"] = rng.beta(2.0, 5.0, size=8).mean()
    save = knob("SAVE", "none")
    if save == "npy":
        np.save("/tmp/result.npy", a[:8])
    elif save == "npz":
        np.savez_compressed("/tmp/result.npz", a=a[:8], **{k: np.asarray(v) for k, v in results.items()})
    elif save == "txt":
        np.savetxt("/tmp/result.txt", a[:4])
    print({k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in results.items()}, flush=True)


if __name__ == "__main__":
    main()
