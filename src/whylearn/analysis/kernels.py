"""Kernels: lifting data into more dimensions makes it linearly separable, and the kernel trick
computes the lifted dot products without the lift.

- Concentric circles are not linearly separable in the plane; with the lifted coordinate
  z = x^2 + y^2 they are (a plane z = const separates them). Compared: raw (x, y),
  (x, y, xy) and (x, y, x^2 + y^2) features, each decided exactly by a linear program and fitted
  by a converged linear classifier (:func:`linear_fit_accuracy`).
- The polynomial kernel k(x, x') = (x . x' + c)^d equals phi(x) . phi(x') for the explicit map
  phi of all monomials of degree <= d with multinomial weights (Aizerman, Braverman &
  Rozonoer 1964; Boser, Guyon & Vapnik 1992; Schoelkopf & Smola 2002, Sec. 2.1). phi has
  C(n + d, d) coordinates, so the explicit route costs that much per point while the
  kernel costs O(n) per pair.
- The kernel perceptron (Aizerman et al. 1964; Freund & Schapire 1999): the perceptron
  in dual form, w = sum_i alpha_i y_i phi(x_i), predicting sign(sum_i alpha_i y_i k(x_i, x)).
  It solves XOR (Minsky & Papert's counterexample) and the circles.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from whylearn.analysis.plotting import save_figure, subplots

LIFTS = ("raw", "xy", "z")  # (x, y); (x, y, xy); (x, y, x^2 + y^2)


# -- data ---------------------------------------------------------------------------------------
def make_circles(n: int = 400, factor: float = 0.5, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric noisy circles in the plane: inner (radius ``factor``) label 1, outer (radius 1) label 0.

    Returns: (X (n, 2), y (n,) in {0, 1}). Raises ValueError unless 0 < factor < 1 and n >= 2.
    """
    if not 0 < factor < 1 or n < 2:
        raise ValueError(f"need 0 < factor < 1 and n >= 2, got factor={factor}, n={n}")
    rng = np.random.default_rng(seed)
    n_out = n // 2
    theta = rng.uniform(0, 2 * math.pi, n)
    r = np.where(np.arange(n) < n_out, 1.0, factor)
    X = np.stack([r * np.cos(theta), r * np.sin(theta)], 1) + noise * rng.standard_normal((n, 2))
    y = (np.arange(n) >= n_out).astype(int)
    return X, y


def make_xor() -> tuple[np.ndarray, np.ndarray]:
    """The four XOR points (+-1, +-1) with label 1 where the signs differ."""
    X = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    return X, np.array([0, 1, 1, 0])


# -- explicit lifts -------------------------------------------------------------------------------
def lift_features(X: np.ndarray, lift: str) -> np.ndarray:
    """Planar points (n, 2) -> ``raw`` (x, y), ``xy`` (x, y, xy) or ``z`` (x, y, x^2 + y^2).

    Raises ValueError for another lift or input that is not (n, 2).
    """
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"lift_features takes planar points (n, 2), got shape {X.shape}")
    if lift == "raw":
        return X
    if lift == "xy":
        return np.column_stack([X, X[:, 0] * X[:, 1]])
    if lift == "z":
        return np.column_stack([X, (X**2).sum(1)])
    raise ValueError(f"unknown lift {lift!r}; allowed: {list(LIFTS)}")


def linear_fit_accuracy(F: np.ndarray, y: np.ndarray, F_test: np.ndarray | None = None,
                        y_test: np.ndarray | None = None, max_iter: int = 10_000) -> dict[str, float | bool | int]:
    """Whether features F (n, p) are linearly separable, and the accuracy of a converged linear classifier.

    - ``separable``: the exact answer, a linear-programming feasibility check (is
      y_i (w.f_i + b) >= 1 feasible? :func:`whylearn.models.perceptron.linearly_separable`).
    - ``train_acc`` / ``test_acc``: scikit-learn ``LogisticRegression`` (L2, C = 1, lbfgs) on
      standardized features, run to convergence. A convex loss does not maximize accuracy: on
      features that are not separable it can stay near chance where a better hyperplane exists;
      on separable ones it separates (here: every training point).

    Raises:
        RuntimeError: the solver did not converge within ``max_iter`` iterations (scikit-learn's
            ConvergenceWarning, raised instead of shown, so no unfinished fit is reported).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from whylearn.models.perceptron import linearly_separable  # start-up: torch (and scipy), for the exact separability test only

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            clf.fit(F, y)
        except ConvergenceWarning as e:
            raise RuntimeError(f"logistic regression did not converge in {max_iter} iterations: {e}") from e
    import torch

    out: dict[str, float | bool | int] = {
        "train_acc": float(clf.score(F, y)),
        "separable": linearly_separable(torch.as_tensor(np.asarray(F, np.float64)), torch.as_tensor(np.asarray(y))),
        "iterations": int(clf[-1].n_iter_.max()),
    }
    if F_test is not None:
        out["test_acc"] = float(clf.score(F_test, y_test))
    return out


def polynomial_kernel(X: np.ndarray, Y: np.ndarray, degree: int, c: float = 1.0) -> np.ndarray:
    """k(x, y) = (x . y + c)^degree for all pairs: (n, m) from X (n, p), Y (m, p)."""
    return (np.asarray(X, np.float64) @ np.asarray(Y, np.float64).T + c) ** degree


def polynomial_feature_count(num_inputs: int, degree: int) -> int:
    """Coordinates of the explicit map of (x . y + c)^d on R^n: C(n + d, d) (all monomials of degree <= d)."""
    return math.comb(num_inputs + degree, degree)


def polynomial_features(X: np.ndarray, degree: int, c: float = 1.0, chunk: int = 4096) -> np.ndarray:
    """The explicit feature map phi with phi(x) . phi(y) = (x . y + c)^degree.

    With x~ = (x, sqrt(c)) in R^(p+1), (x~ . y~)^d = sum over multi-indices a with |a| = d of
    (d! / prod a_i!) prod x~_i^a_i prod y~_i^a_i, so phi_a(x) = sqrt(d! / prod a_i!) prod x~_i^a_i:
    one coordinate per monomial of x of degree <= d, C(p + d, d) in all.

    Args:
        X: (n, p). degree: d >= 0. c: >= 0.

    Returns:
        (n, C(p + d, d)).

    Raises:
        ValueError: negative degree or c.
    """
    if degree < 0 or c < 0:
        raise ValueError(f"degree and c must be >= 0, got degree={degree}, c={c}")
    X = np.asarray(X, np.float64)
    n, p = X.shape
    Xt = np.column_stack([X, np.full(n, math.sqrt(c))])
    if degree == 0:
        return np.ones((n, 1))
    combos = np.array(list(itertools.combinations_with_replacement(range(p + 1), degree)), dtype=np.intp)  # (F, d)
    counts = np.zeros((combos.shape[0], p + 1), dtype=np.int64)
    np.add.at(counts, (np.arange(combos.shape[0])[:, None], combos), 1)
    log_coef = math.lgamma(degree + 1) - np.vectorize(math.lgamma)(counts + 1.0).sum(1)
    coef = np.exp(0.5 * log_coef)
    out = np.empty((n, combos.shape[0]))
    for i in range(0, combos.shape[0], chunk):
        idx = combos[i:i + chunk]
        out[:, i:i + chunk] = Xt[:, idx].prod(-1) * coef[i:i + chunk]
    return out


def rbf_kernel(X: np.ndarray, Y: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """k(x, y) = exp(-gamma |x - y|^2): (n, m). Its feature space is infinite-dimensional."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    d2 = (X * X).sum(1)[:, None] + (Y * Y).sum(1)[None, :] - 2 * X @ Y.T
    return np.exp(-gamma * np.maximum(d2, 0.0))


# -- the kernel perceptron --------------------------------------------------------------------------
class KernelPerceptron:
    """The perceptron in dual form: f(x) = sum_i alpha_i y_i k(x_i, x), alpha_i = mistakes made on x_i.

    Args:
        kernel: callable (X (n, p), Y (m, p)) -> Gram matrix (n, m).
        max_epochs: passes over the data (stops early after a pass without mistakes).

    Labels are given in {0, 1} and used as {-1, +1}. Attributes after :meth:`fit`: ``alpha`` (n,),
    ``mistakes`` (total updates), ``epochs`` (passes made), ``converged``.
    """

    def __init__(self, kernel: Callable[[np.ndarray, np.ndarray], np.ndarray], max_epochs: int = 100) -> None:
        self.kernel, self.max_epochs = kernel, int(max_epochs)

    def fit(self, X: np.ndarray, y: np.ndarray) -> KernelPerceptron:
        self.X = np.asarray(X, np.float64)
        self.s = np.where(np.asarray(y) > 0, 1.0, -1.0)
        K = self.kernel(self.X, self.X)
        n = len(self.s)
        self.alpha = np.zeros(n)
        self.mistakes, self.converged = 0, False
        for epoch in range(1, self.max_epochs + 1):
            errors = 0
            for i in range(n):
                if self.s[i] * (K[i] @ (self.alpha * self.s)) <= 0:
                    self.alpha[i] += 1.0
                    errors += 1
            self.mistakes += errors
            self.epochs = epoch
            if errors == 0:
                self.converged = True
                break
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.kernel(np.asarray(X, np.float64), self.X) @ (self.alpha * self.s)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(X) == np.asarray(y)).mean())


# -- timing -------------------------------------------------------------------------------------
def time_kernel_vs_explicit(num_points: int = 400, num_inputs: int = 10, degrees: Sequence[int] = (1, 2, 3, 4, 5, 6, 7),
                            repeats: int = 7, seed: int = 0) -> dict[str, list]:
    """Wall time (s, best of ``repeats``) of the Gram matrix of a polynomial kernel: the kernel trick
    against building the explicit features and multiplying them, for each degree."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((num_points, num_inputs)) / math.sqrt(num_inputs)
    out: dict[str, list] = {"degrees": [int(d) for d in degrees], "features": [], "kernel_s": [], "explicit_s": [],
                            "max_abs_diff": []}
    for d in degrees:
        tk, te = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            K = polynomial_kernel(X, X, d)
            tk.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            F = polynomial_features(X, d)
            G = F @ F.T
            te.append(time.perf_counter() - t0)
        out["features"].append(F.shape[1])
        out["kernel_s"].append(min(tk))
        out["explicit_s"].append(min(te))
        out["max_abs_diff"].append(float(np.abs(K - G).max() / np.abs(K).max()))
        del F, G
    return out


# -- the experiment --------------------------------------------------------------------------------
def kernels_experiment(out_dir: Path, num_points: int = 400, noise: float = 0.05, factor: float = 0.5,
                       degrees: Sequence[int] = (1, 2, 3, 4, 5, 6, 7), timing_points: int = 400, timing_inputs: int = 10,
                       seed: int = 0) -> dict:
    """Circles lifted by z = x^2 + y^2, the kernel identity, kernel perceptrons on XOR and circles, and timing."""
    X, y = make_circles(num_points, factor, noise, seed)
    Xt, yt = make_circles(num_points, factor, noise, seed + 1)
    lifts = {lift: linear_fit_accuracy(lift_features(X, lift), y, lift_features(Xt, lift), yt) for lift in LIFTS}

    rng = np.random.default_rng(seed)
    P = rng.standard_normal((50, 3))
    identity = {d: float(np.abs(polynomial_kernel(P, P, d) - polynomial_features(P, d) @ polynomial_features(P, d).T).max()
                         / np.abs(polynomial_kernel(P, P, d)).max()) for d in (1, 2, 3, 4)}

    Xx, yx = make_xor()
    kp = {
        "xor/linear": KernelPerceptron(lambda A, B: polynomial_kernel(A, B, 1), 100).fit(Xx, yx),
        "xor/poly2": KernelPerceptron(lambda A, B: polynomial_kernel(A, B, 2), 100).fit(Xx, yx),
        "circles/linear": KernelPerceptron(lambda A, B: polynomial_kernel(A, B, 1), 100).fit(X, y),
        "circles/poly2": KernelPerceptron(lambda A, B: polynomial_kernel(A, B, 2), 100).fit(X, y),
        "circles/rbf": KernelPerceptron(lambda A, B: rbf_kernel(A, B, 2.0), 100).fit(X, y),
    }
    kp_res = {}
    for name, model in kp.items():
        data, tdata = ((Xx, yx), (Xx, yx)) if name.startswith("xor") else ((X, y), (Xt, yt))
        kp_res[name] = {"train_acc": model.score(*data), "test_acc": model.score(*tdata), "converged": model.converged,
                        "epochs": model.epochs, "mistakes": int(model.mistakes), "support": int((model.alpha > 0).sum())}
    timing = time_kernel_vs_explicit(timing_points, timing_inputs, degrees, seed=seed)

    fig, axes = subplots(3, 2, width=4.3, height=3.8)
    ax = axes[0, 0]
    for c, m in ((0, "o"), (1, "^")):
        ax.scatter(X[y == c, 0], X[y == c, 1], s=8, marker=m, label=f"class {c}")
    ax.set(title="Concentric circles: not linearly separable", xlabel="x", ylabel="y", aspect="equal")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    np.sqrt((X**2).sum(1))
    z = (X**2).sum(1)
    for c, m in ((0, "o"), (1, "^")):
        ax.scatter(X[y == c, 0], z[y == c], s=8, marker=m)
    thr = 0.5 * (z[y == 1].max() + z[y == 0].min())
    ax.axhline(thr, color="k", ls="--", lw=1, label=f"plane z = {thr:.2f}")
    ax.set(title="Lifted: z = x^2 + y^2 (side view)", xlabel="x", ylabel="z")
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    xs = np.arange(len(LIFTS))
    ax.bar(xs - 0.2, [lifts[l]["train_acc"] for l in LIFTS], 0.4, label="train")
    ax.bar(xs + 0.2, [lifts[l]["test_acc"] for l in LIFTS], 0.4, label="test")
    ax.set_xticks(xs, ["(x, y)", "(x, y, xy)", "(x, y, x²+y²)"])
    for k, lift in enumerate(LIFTS):
        ax.text(k, 1.07, "separable" if lifts[lift]["separable"] else "not separable (LP)", ha="center", fontsize=7)
    ax.axhline(0.5, color="gray", ls=":", lw=1)
    ax.set(ylim=(0, 1.15), ylabel="accuracy", title="Converged logistic regression")
    ax.legend(fontsize=7)
    for ax, name, (data, lab) in ((axes[1, 0], "xor/poly2", (Xx, yx)), (axes[1, 1], "circles/rbf", (X, y))):
        g = np.linspace(-1.6, 1.6, 150)
        GX, GY = np.meshgrid(g, g)
        F = kp[name].decision_function(np.column_stack([GX.ravel(), GY.ravel()])).reshape(GX.shape)
        ax.contourf(GX, GY, F > 0, alpha=0.25, levels=[-0.5, 0.5, 1.5], colors=["tab:blue", "tab:orange"])
        for c, m in ((0, "o"), (1, "^")):
            ax.scatter(data[lab == c, 0], data[lab == c, 1], s=12 if name.startswith("circles") else 60, marker=m)
        ax.set(title=f"Kernel perceptron, {name} (train acc {kp_res[name]['train_acc']:.2f})", aspect="equal")
        ax.title.set_fontsize(9)
    ax = axes[1, 2]
    ax.semilogy(timing["degrees"], timing["kernel_s"], "o-", label="kernel trick (x.y + 1)^d")
    ax.semilogy(timing["degrees"], timing["explicit_s"], "s-", label="explicit features, then dot products")
    for d, f, t in zip(timing["degrees"], timing["features"], timing["explicit_s"], strict=False):
        ax.annotate(f"{f}", (d, t), fontsize=6, textcoords="offset points", xytext=(0, 4))
    ax.set(xlabel="degree d", ylabel="seconds", title=f"Gram matrix, {timing_points} points in R^{timing_inputs}")
    ax.legend(fontsize=7)
    save_figure(fig, out_dir / "figures" / "kernels.png")

    out = {f"lift/{l}/{k}": v for l in LIFTS for k, v in lifts[l].items()}
    out.update({f"kernel_identity/max_rel_diff_d{d}": v for d, v in identity.items()})
    out.update({f"kernel_perceptron/{n}/{k}": v for n, r in kp_res.items() for k, v in r.items()})
    out.update({f"timing/{k}": v for k, v in timing.items()})
    out["timing/explicit_over_kernel_at_max_degree"] = timing["explicit_s"][-1] / max(timing["kernel_s"][-1], 1e-12)
    return out
