"""The curse of dimensionality: distance concentration, k-nearest neighbours, and PCA.

- Distance concentration (Beyer, Goldstein, Ramakrishnan & Shaft 1999, "When is
  'nearest neighbor' meaningful?", Thm. 1): for i.i.d. coordinates the relative
  contrast (D_max - D_min) / D_min of the distances from a query to n points tends
  to 0 as the dimension d grows (like 1/sqrt(d) for fixed n, Aggarwal et al. 2001):
  everything is about as far away as everything else.
- k-NN (Fix & Hodges 1951; Cover & Hart 1967): Euclidean distances, majority vote
  of the k nearest training points. Its accuracy needs many samples, and added
  noise dimensions drown the signal's distances.
- PCA (Pearson 1901; Hotelling 1933): the explained-variance curve and k-NN
  accuracy on the first m components; an isotropic Gaussian control, whose variance
  is spread evenly over all directions, has no few components worth keeping.

Each ``*_experiment`` function is the study of its experiment (a measurement function of the Study
protocol, :func:`whylearn.studies.base.call_study`): it takes ``out_dir``, writes ``out_dir/figures/*.png``
and returns numbers for ``summary.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from whylearn.analysis.plotting import save_figure, subplots

log = logging.getLogger("whylearn")

SAMPLERS = ("uniform", "gaussian")


# -- distances -------------------------------------------------------------------------------
def pairwise_sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n, m) between rows of A (n, d) and B (m, d), clipped at 0."""
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d2, 0.0)


def relative_contrast(X: np.ndarray, queries: np.ndarray | None = None, num_queries: int = 100,
                      rng: np.random.Generator | None = None) -> dict[str, float]:
    """(max - min) / min of Euclidean distances, query-to-point and over all pairs.

    Args:
        X: points (n, d), n >= 3.
        queries: query points (q, d); default: ``num_queries`` rows of X held out as queries.

    Returns:
        ``query``: the mean over queries of (D_max - D_min) / D_min of the query's distances
        to the points; ``pairwise``: (max - min) / min over all distinct pairs of points;
        ``query_std``: the standard deviation over queries.

    Raises:
        ValueError: fewer than 3 points, or a zero minimum distance (duplicate points).
    """
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or X.shape[0] < 3:
        raise ValueError(f"need points as an (n, d) array with n >= 3, got shape {X.shape}")
    if queries is None:
        rng = rng or np.random.default_rng(0)
        q = min(num_queries, X.shape[0] // 2)
        perm = rng.permutation(X.shape[0])
        queries, X = X[perm[:q]], X[perm[q:]]
    D = np.sqrt(pairwise_sq_distances(queries, X))
    dmin, dmax = D.min(1), D.max(1)
    P = np.sqrt(pairwise_sq_distances(X, X))[np.triu_indices(X.shape[0], 1)]
    if (dmin <= 0).any() or P.min() <= 0:
        raise ValueError("a minimum distance is 0 (duplicate points): the relative contrast is undefined")
    per_query = (dmax - dmin) / dmin
    return {"query": float(per_query.mean()), "query_std": float(per_query.std()),
            "pairwise": float((P.max() - P.min()) / P.min())}


def sample_points(kind: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """n i.i.d. points in R^d: ``uniform`` on [0, 1]^d or standard ``gaussian``. Raises ValueError on other kinds."""
    if kind == "uniform":
        return rng.random((n, d))
    if kind == "gaussian":
        return rng.standard_normal((n, d))
    raise ValueError(f"unknown sampler {kind!r}; allowed: {list(SAMPLERS)}")


def concentration_curve(kind: str, dims: Sequence[int], num_points: int = 1000, num_queries: int = 100,
                        seed: int = 0) -> dict[str, list[float]]:
    """Relative contrast of i.i.d. points of each dimension in ``dims``."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {"dims": [int(d) for d in dims], "query": [], "query_std": [], "pairwise": []}
    for d in dims:
        r = relative_contrast(sample_points(kind, num_points + num_queries, int(d), rng), num_queries=num_queries, rng=rng)
        for k in ("query", "query_std", "pairwise"):
            out[k].append(r[k])
    return out


def add_noise_dimensions(X: np.ndarray, num_noise: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Append ``num_noise`` i.i.d. N(0, scale^2) coordinates to each row of X (n, d) -> (n, d + num_noise)."""
    if num_noise < 0:
        raise ValueError(f"num_noise must be >= 0, got {num_noise}")
    if num_noise == 0:
        return np.asarray(X, np.float64)
    return np.concatenate([X, scale * rng.standard_normal((X.shape[0], num_noise))], axis=1)


# -- data ------------------------------------------------------------------------------------
def load_mnist_flat(data_dir: str | Path, num_train: int | None = None, num_test: int | None = None,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST as float arrays in [0, 1]: (x_train (n, 784), y_train, x_test (m, 784), y_test), seeded subsets."""
    # start-up: the datamodules import Lightning; the distance-concentration study needs numpy only
    from whylearn.data.idx import _MNIST_FILES, load_idx_dataset

    raw = load_idx_dataset("MNIST", data_dir, _MNIST_FILES, download=True)
    rng = np.random.default_rng(seed)

    def take(split, n):
        x = split.x.numpy().reshape(len(split), -1).astype(np.float64) / 255.0
        y = split.y.numpy()
        if n is not None and n < len(y):
            idx = np.sort(rng.permutation(len(y))[:n])
            x, y = x[idx], y[idx]
        return x, y

    xtr, ytr = take(raw["train"], num_train)
    xte, yte = take(raw["test"], num_test)
    return xtr, ytr, xte, yte


def load_mnist1d(num_samples: int = 5000, seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D (Greydanus 2020) as arrays: (x_train (n, 40), y_train, x_test, y_test); 80/20 split."""
    # start-up: the datamodules import Lightning; the distance-concentration study needs numpy only
    from whylearn.data.mnist1d import make_mnist1d

    s = make_mnist1d(num_samples=num_samples, seed=seed)
    return (s["train"].x.numpy().astype(np.float64), s["train"].y.numpy(),
            s["test"].x.numpy().astype(np.float64), s["test"].y.numpy())


# -- k-nearest neighbours ------------------------------------------------------------------------
def knn_accuracies(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   ks: Sequence[int]) -> dict[int, float]:
    """Test accuracy of Euclidean k-NN with majority vote, for each k in ``ks``, from one neighbour search.

    Neighbours come from scikit-learn's brute-force search (``NearestNeighbors``, nearest first).
    The vote (:func:`knn_vote`): the class with most of the k neighbours; a tie goes to the tied
    class whose neighbours are nearer on the whole (the larger sum of k - rank over its members,
    rank 0 the nearest), a remaining tie to the smallest label. scikit-learn's
    ``KNeighborsClassifier`` gives the same predictions with ``weights=rank_tiebreak_weights``
    (``tests/analysis/test_highdim.py`` checks it on real MNIST); its default (uniform weights) sends every
    tie to the smallest label.

    Raises:
        ValueError: some k outside [1, training size].
    """
    from sklearn.neighbors import NearestNeighbors

    kmax = max(ks)
    if kmax > len(y_train) or min(ks) < 1:
        raise ValueError(f"k must be in [1, {len(y_train)}] (the training size), got {list(ks)}")
    nn = NearestNeighbors(n_neighbors=kmax, algorithm="brute").fit(x_train)
    _, idx = nn.kneighbors(x_test)  # (m, kmax), nearest first
    labels = np.asarray(y_train)[idx]
    num_classes = int(max(np.max(y_train), np.max(y_test))) + 1
    return {int(k): float((knn_vote(labels[:, :k], num_classes) == y_test).mean()) for k in ks}


def knn_vote(neighbour_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The k-NN majority vote with whylearn's tie-breaking rule, from neighbour labels (m, k), nearest first.

    Each neighbour of rank r (0 = nearest) gives its class the integer score (k + 1) k / 2 + (k - r):
    one vote outweighs any sum of rank bonuses, so the most frequent class wins; among classes with
    equally many neighbours the larger sum of (k - r) wins (nearer on the whole); then the smallest
    label (argmax's first maximum). Exact integer arithmetic. Returns predictions (m,).
    """
    m, k = neighbour_labels.shape
    scores = np.zeros((m, num_classes), dtype=np.int64)
    np.add.at(scores, (np.arange(m)[:, None], neighbour_labels), rank_tiebreak_weights(np.zeros((1, k))).astype(np.int64))
    return scores.argmax(1)


def rank_tiebreak_weights(distances: np.ndarray) -> np.ndarray:
    """Per-neighbour weights (m, k) of :func:`knn_vote` for sorted neighbour distances (m, k): (k + 1) k / 2 + (k - rank).

    Usable as scikit-learn's ``KNeighborsClassifier(weights=rank_tiebreak_weights)``: integers,
    so the weighted sums are exact in floating point and the predictions equal :func:`knn_vote`'s.
    """
    k = np.asarray(distances).shape[1]
    return np.broadcast_to((k + 1) * k // 2 + (k - np.arange(k)), np.asarray(distances).shape).astype(np.float64)


def corrupt_labels(y: np.ndarray, fraction: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Replace round(fraction * n) labels by a uniformly random other class (as whylearn's datamodules do)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"label noise must be a fraction in [0, 1], got {fraction}")
    y = np.array(y, copy=True)
    idx = rng.permutation(len(y))[: int(round(fraction * len(y)))]
    y[idx] = (y[idx] + rng.integers(1, num_classes, size=len(idx))) % num_classes
    return y


# -- PCA ---------------------------------------------------------------------------------------
def pca_knn_curve(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                  components: Sequence[int], k: int = 3, seed: int = 0) -> dict[str, list[float]]:
    """Explained-variance ratios of PCA on x_train and k-NN test accuracy on the first m components for each m."""
    from sklearn.decomposition import PCA

    mmax = min(max(components), *x_train.shape)
    pca = PCA(n_components=mmax, svd_solver="full", random_state=seed).fit(x_train)
    ztr, zte = pca.transform(x_train), pca.transform(x_test)
    acc = [knn_accuracies(ztr[:, :m], y_train, zte[:, :m], y_test, [k])[k] for m in components if m <= mmax]
    return {"components": [int(m) for m in components if m <= mmax], "accuracy": acc,
            "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_]}


def components_for(evr: Sequence[float], fraction: float) -> int:
    """Fewest leading components whose explained-variance ratios sum to at least ``fraction``."""
    c = np.cumsum(evr)
    hit = np.nonzero(c >= fraction - 1e-12)[0]
    return int(hit[0] + 1) if hit.size else len(evr)


# -- experiments ---------------------------------------------------------------------------------
def distance_concentration_experiment(
    out_dir: Path,
    data_dir: str | Path,
    dims: Sequence[int] = (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
    num_points: int = 1000,
    num_queries: int = 100,
    noise_dims: Sequence[int] = (0, 10, 100, 1000, 3000, 10000),
    seed: int = 0,
) -> dict:
    """Relative contrast against dimension for uniform and Gaussian points and for MNIST with noise dimensions."""
    res = {kind: concentration_curve(kind, dims, num_points, num_queries, seed) for kind in SAMPLERS}
    rng = np.random.default_rng(seed)
    x, _, _, _ = load_mnist_flat(data_dir, num_train=num_points + num_queries, num_test=1, seed=seed)
    scale = float(x.std(0).mean())  # each noise coordinate as loud as an average pixel
    mnist = {"noise_dims": [int(n) for n in noise_dims], "dims": [], "query": [], "pairwise": [], "noise_std": scale}
    for n in noise_dims:
        r = relative_contrast(add_noise_dimensions(x, int(n), scale, rng), num_queries=num_queries, rng=rng)
        mnist["dims"].append(784 + int(n))
        mnist["query"].append(r["query"])
        mnist["pairwise"].append(r["pairwise"])
    fig, axes = subplots(2)
    for kind, style in zip(SAMPLERS, ("o-", "s-"), strict=False):
        axes[0].loglog(res[kind]["dims"], res[kind]["query"], style, label=f"{kind}, query to points")
        axes[0].loglog(res[kind]["dims"], res[kind]["pairwise"], style.replace("-", "--"), alpha=0.6,
                       label=f"{kind}, all pairs")
    d = np.array(dims, float)
    axes[0].loglog(d, res["uniform"]["query"][-1] * np.sqrt(d[-1] / d), "k:", lw=1, label="~ 1/sqrt(d)")
    axes[0].loglog(mnist["dims"], mnist["query"], "D-", color="tab:red", label="MNIST + noise dims, query")
    axes[0].set_xlabel("dimension d")
    axes[0].set_ylabel("(D_max - D_min) / D_min")
    axes[0].set_title(f"Distance concentration ({num_points} points)")
    axes[0].legend(fontsize=7)
    # histograms of query-to-point distances, normalised by their mean
    for dd in (2, 100, 10000):
        X = sample_points("gaussian", num_points + 1, dd, rng)
        dist = np.sqrt(pairwise_sq_distances(X[:1], X[1:]))[0]
        axes[1].hist(dist / dist.mean(), bins=40, histtype="step", density=True, label=f"Gaussian, d={dd}")
    axes[1].set_xlabel("distance / mean distance")
    axes[1].set_ylabel("density")
    axes[1].set_title("Distances from one query")
    axes[1].legend(fontsize=8)
    save_figure(fig, out_dir / "figures" / "distance_concentration.png")
    summary = {f"{kind}/{k}": v for kind in SAMPLERS for k, v in res[kind].items()}
    summary.update({f"mnist_noise/{k}": v for k, v in mnist.items()})
    for kind in SAMPLERS:
        summary[f"{kind}/contrast_d{dims[0]}"] = res[kind]["query"][0]
        summary[f"{kind}/contrast_d{dims[-1]}"] = res[kind]["query"][-1]
        summary[f"{kind}/contrast_exponent_high_d"] = contrast_exponent(res[kind]["dims"], res[kind]["query"])
    return summary


def contrast_exponent(dims: Sequence[int], contrast: Sequence[float], min_dim: int = 1000) -> float:
    """Least-squares slope of log contrast against log d over the dimensions >= ``min_dim`` (-1/2 for i.i.d. points).

    For i.i.d. coordinates D_max - D_min tends to a constant while D_min grows like sqrt(d)
    (Aggarwal, Hinneburg & Keim 2001, Thm. 1 with k = 2), so the contrast falls like d^(-1/2).
    nan with fewer than two such dimensions.
    """
    d = np.array([a for a in dims if a >= min_dim], dtype=np.float64)
    c = np.array([b for a, b in zip(dims, contrast, strict=True) if a >= min_dim], dtype=np.float64)
    if len(d) < 2:
        return float("nan")
    return float(np.polyfit(np.log(d), np.log(c), 1)[0])


def knn_experiment(
    out_dir: Path,
    data_dir: str | Path,
    mnist_train_sizes: Sequence[int] = (100, 300, 1000, 3000, 10000, 30000, 60000),
    mnist1d_train_sizes: Sequence[int] = (100, 300, 1000, 3000, 10000),
    ks: Sequence[int] = (1, 3, 5, 11, 21, 51),
    label_noise: Sequence[float] = (0.0, 0.1, 0.2, 0.4),
    noise_dims: Sequence[int] = (0, 10, 100, 1000, 10000),
    base_train_size: int = 10000,
    num_test: int = 2000,
    seed: int = 0,
) -> dict:
    """k-NN accuracy on MNIST and MNIST-1D against training-set size, k, label noise and added noise dimensions."""
    rng = np.random.default_rng(seed)
    ks = sorted(int(k) for k in ks)
    m_xtr, m_ytr, m_xte, m_yte = load_mnist_flat(data_dir, None, num_test, seed)
    n1d = int(max(mnist1d_train_sizes) / 0.8) + num_test
    d_xtr, d_ytr, d_xte, d_yte = load_mnist1d(num_samples=int(np.ceil(n1d / 10) * 10))
    d_xte, d_yte = d_xte[:num_test], d_yte[:num_test]
    data = {"mnist": (m_xtr, m_ytr, m_xte, m_yte), "mnist1d": (d_xtr, d_ytr, d_xte, d_yte)}
    sizes = {"mnist": [n for n in mnist_train_sizes if n <= len(m_ytr)],
             "mnist1d": [n for n in mnist1d_train_sizes if n <= len(d_ytr)]}
    out: dict = {"ks": ks}
    for name, (xtr, ytr, xte, yte) in data.items():
        perm = rng.permutation(len(ytr))
        by_n = {}
        for n in sizes[name]:
            sel = perm[:n]
            by_n[n] = knn_accuracies(xtr[sel], ytr[sel], xte, yte, [k for k in ks if k <= n])
            log.info("k-NN %s n=%d: %s", name, n, by_n[n])
        out[f"{name}/train_sizes"] = sizes[name]
        out[f"{name}/acc_vs_n"] = {str(k): [by_n[n].get(k, float("nan")) for n in sizes[name]] for k in ks}
        out.update({f"{name}/acc_largest_n/k{k}": v for k, v in by_n[sizes[name][-1]].items()})
        out[f"{name}/largest_n"] = sizes[name][-1]
        nb = min(base_train_size, len(ytr))
        sel = perm[:nb]
        noisy = {}
        for f in label_noise:
            y_noisy = corrupt_labels(ytr[sel], f, 10, rng)
            noisy[f] = knn_accuracies(xtr[sel], y_noisy, xte, yte, ks)
        out[f"{name}/acc_vs_label_noise"] = {str(f): [noisy[f][k] for k in ks] for f in label_noise}
        scale = float(xtr[sel].std(0).mean())
        nd = {}
        for m in noise_dims:
            nd[m] = knn_accuracies(add_noise_dimensions(xtr[sel], int(m), scale, rng), ytr[sel],
                                   add_noise_dimensions(xte, int(m), scale, rng), yte, [1, 5])
            log.info("k-NN %s +%d noise dims: %s", name, m, nd[m])
        out[f"{name}/noise_dims"] = [int(m) for m in noise_dims]
        out[f"{name}/acc_vs_noise_dims_k1"] = [nd[m][1] for m in noise_dims]
        out[f"{name}/acc_vs_noise_dims_k5"] = [nd[m][5] for m in noise_dims]
        out[f"{name}/base_train_size"] = nb
        out[f"{name}/noise_std"] = scale

    fig, axes = subplots(2, 2, width=5.2, height=3.8)
    for name, marker in (("mnist", "o"), ("mnist1d", "s")):
        for k in (1, 5, 51):
            if str(k) in out[f"{name}/acc_vs_n"]:
                axes[0, 0].semilogx(out[f"{name}/train_sizes"], out[f"{name}/acc_vs_n"][str(k)], marker + "-",
                                    label=f"{name}, k={k}", markersize=4)
        for f in label_noise:
            axes[0, 1].semilogx(ks, out[f"{name}/acc_vs_label_noise"][str(f)], marker + ("-" if name == "mnist" else "--"),
                                label=f"{name}, {int(100 * f)}% noise", markersize=4)
        dims0 = 784 if name == "mnist" else 40
        axes[1, 0].plot(list(noise_dims), out[f"{name}/acc_vs_noise_dims_k1"], marker + "-",
                        label=f"{name} ({dims0} dims) + noise, k=1")
    axes[0, 0].set(xlabel="training points", ylabel="test accuracy", title="k-NN against training-set size")
    axes[0, 1].set(xlabel="k", ylabel="test accuracy", title=f"k against label noise ({base_train_size} train)")
    axes[1, 0].set(xlabel="added noise dimensions", ylabel="test accuracy",
                   title=f"Added noise dimensions ({base_train_size} train)")
    axes[1, 0].set_xscale("symlog", linthresh=10)
    axes[1, 0].axhline(0.1, color="gray", ls=":", lw=1)
    for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
        ax.legend(fontsize=6)
    # the last panel: the nearest and farthest distances of MNIST test points against noise dims
    xtr, ytr, xte, yte = data["mnist"]
    sel = rng.permutation(len(ytr))[:2000]
    scale = out["mnist/noise_std"]
    ratios = []
    for m in noise_dims:
        A = add_noise_dimensions(xte[:100], int(m), scale, rng)
        B = add_noise_dimensions(xtr[sel], int(m), scale, rng)
        D = np.sqrt(pairwise_sq_distances(A, B))
        ratios.append(float(np.mean(D.min(1) / D.max(1))))
    axes[1, 1].plot(list(noise_dims), ratios, "o-")
    axes[1, 1].set_xscale("symlog", linthresh=10)
    axes[1, 1].set(xlabel="added noise dimensions", ylabel="D_min / D_max", title="MNIST: nearest / farthest neighbour")
    out["mnist/dmin_over_dmax_vs_noise_dims"] = ratios
    save_figure(fig, out_dir / "figures" / "knn.png")
    return out


def pca_experiment(out_dir: Path, data_dir: str | Path, num_train: int = 10000, num_test: int = 2000,
                   components: Sequence[int] = (1, 2, 5, 10, 20, 30, 50, 100, 200, 400, 784), k: int = 3,
                   control_dim: int = 784, seed: int = 0) -> dict:
    """PCA on MNIST (explained variance, k-NN accuracy on m components) against an isotropic Gaussian control.

    The control: x ~ N(0, I_d) with d = ``control_dim`` and labels sign(w . x) for a random unit w:
    every direction carries the same variance, so the leading components are no better than any others.
    """
    rng = np.random.default_rng(seed)
    xtr, ytr, xte, yte = load_mnist_flat(data_dir, num_train, num_test, seed)
    mn = pca_knn_curve(xtr, ytr, xte, yte, components, k, seed)
    w = rng.standard_normal(control_dim)
    w /= np.linalg.norm(w)
    gtr, gte = rng.standard_normal((num_train, control_dim)), rng.standard_normal((num_test, control_dim))
    ctl = pca_knn_curve(gtr, (gtr @ w > 0).astype(int), gte, (gte @ w > 0).astype(int), components, k, seed)

    fig, axes = subplots(2)
    for res, name in ((mn, "MNIST"), (ctl, f"isotropic Gaussian (d={control_dim})")):
        evr = np.array(res["explained_variance_ratio"])
        axes[0].plot(np.arange(1, len(evr) + 1), np.cumsum(evr), label=name)
        axes[1].semilogx(res["components"], res["accuracy"], "o-", label=name)
    axes[0].set(xlabel="components m", ylabel="cumulative explained variance", title="PCA explained variance")
    axes[0].set_xscale("log")
    axes[1].set(xlabel="components m", ylabel=f"{k}-NN test accuracy", title=f"{k}-NN on the first m components")
    for ax in axes:
        ax.legend(fontsize=8)
    save_figure(fig, out_dir / "figures" / "pca.png")
    out = {"mnist/" + key: v for key, v in mn.items()}
    out.update({"control/" + key: v for key, v in ctl.items()})
    for name, res in (("mnist", mn), ("control", ctl)):
        evr = res["explained_variance_ratio"]
        for f in (0.5, 0.9, 0.95):
            out[f"{name}/components_for_{int(100 * f)}pct_variance"] = components_for(evr, f)
        out[f"{name}/acc_best"] = max(res["accuracy"])
        out[f"{name}/acc_at_10_components"] = res["accuracy"][res["components"].index(10)] if 10 in res["components"] else None
        out[f"{name}/acc_all_components"] = res["accuracy"][-1]
    return out
