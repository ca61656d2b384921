"""Kepler's planets: two-body orbits from Kepler's equation, noisy observations, forecasting samples.

Kepler (Astronomia Nova 1609, Harmonices Mundi 1619) found his three laws in
about twenty years of Tycho Brahe's naked-eye positions: a few tens of good
oppositions per planet. This module simulates heliocentric planets on Keplerian
ellipses (the exact solution of the two-body problem, Newton's Principia I.11-17),
so a learner can be given as few or as many observations as we like.

Units: astronomical units (AU) and years, so the Sun's gravitational parameter is
GM = 4 pi^2 AU^3 / yr^2 and the period is T = a^1.5 years (Kepler's third law).

Orbit of a planet with semi-major axis ``a``, eccentricity ``e``, argument of
perihelion ``omega`` and mean anomaly ``M0`` at t = 0 (all planets in one plane,
moving counter-clockwise):

    n = 2 pi / T,  M(t) = M0 + n t                (mean anomaly)
    M = E - e sin E                                (Kepler's equation, solved by Newton's method)
    x' = a (cos E - e),  y' = a sqrt(1 - e^2) sin E (perifocal frame; rotated by omega)

:class:`KeplerDataModule` turns observations into forecasting samples: the
positions of one planet at ``window`` consecutive times ``dt`` apart (the input,
flattened to ``2 * window`` numbers) and its position ``horizon * dt`` after the
last of them (the target, 2 numbers). Training samples start inside the observed
time window [0, ``t_train``) (Tycho's ~20 years); a second test set lies after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch

from whylearn.data.base import ChunkLoader, EvalLoader, Split, TrainerPlacement

GM_SUN = 4.0 * math.pi**2  # AU^3 / yr^2


@dataclass(frozen=True)
class Planet:
    """Orbital elements of a planet on a Keplerian ellipse in the ecliptic plane.

    Args:
        name: for figures and tables.
        a: semi-major axis (AU), > 0.
        e: eccentricity, in [0, 1).
        omega: argument of perihelion (radians).
        M0: mean anomaly at t = 0 (radians).
    """

    name: str
    a: float
    e: float
    omega: float = 0.0
    M0: float = 0.0

    def __post_init__(self) -> None:
        if not self.a > 0:
            raise ValueError(f"planet {self.name!r}: semi-major axis a must be > 0 AU, got {self.a}")
        if not 0.0 <= self.e < 1.0:
            raise ValueError(f"planet {self.name!r}: eccentricity e must be in [0, 1) (a bound orbit), got {self.e}")

    @property
    def period(self) -> float:
        """Orbital period T = 2 pi sqrt(a^3 / GM) in years (Kepler's third law)."""
        return 2.0 * math.pi * math.sqrt(self.a**3 / GM_SUN)


# The six planets Kepler knew: J2000 semi-major axes, eccentricities and longitudes of
# perihelion (degrees); mean anomalies at t = 0 are the J2000 mean longitude minus perihelion.
_SOLAR = [
    ("Mercury", 0.38710, 0.20563, 77.46, 252.25),
    ("Venus", 0.72333, 0.00677, 131.60, 181.98),
    ("Earth", 1.00000, 0.01671, 102.94, 100.46),
    ("Mars", 1.52368, 0.09340, 336.04, 355.45),
    ("Jupiter", 5.20260, 0.04849, 14.75, 34.40),
    ("Saturn", 9.55491, 0.05551, 92.43, 49.94),
]
SOLAR_SYSTEM = {
    name: Planet(name, a, e, math.radians(peri), math.radians((lon - peri) % 360.0)) for name, a, e, peri, lon in _SOLAR
}


def planets_from_names(names: list[str]) -> list[Planet]:
    """The named planets of :data:`SOLAR_SYSTEM`. Raises ValueError naming the allowed names."""
    unknown = [n for n in names if n not in SOLAR_SYSTEM]
    if unknown or not names:
        raise ValueError(f"unknown planet(s) {unknown or names}; allowed: {list(SOLAR_SYSTEM)}")
    return [SOLAR_SYSTEM[n] for n in names]


def solve_kepler(M: np.ndarray, e: float | np.ndarray, tol: float = 1e-13, max_iter: int = 50) -> np.ndarray:
    """Eccentric anomaly E solving Kepler's equation M = E - e sin E (Newton's method).

    Args:
        M: mean anomalies (radians), any shape.
        e: eccentricity (or array broadcastable to M), in [0, 1).
        tol: stop when every |E - e sin E - M| < tol.

    Returns:
        E, the same shape as M (radians; the same branch as M, i.e. E - M is in [-e, e]).

    Raises:
        ValueError: e outside [0, 1). RuntimeError: no convergence in ``max_iter`` steps.
    """
    M = np.asarray(M, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    if np.any(e < 0) or np.any(e >= 1):
        raise ValueError(f"eccentricity must be in [0, 1), got {e}")
    turns = np.round(M / (2.0 * np.pi)) * 2.0 * np.pi  # solve for M in [-pi, pi], add the whole turns back
    M = M - turns
    # start at E = M + e sin M (first order), or pi-ish for high e (Danby 1987)
    E = np.where(e > 0.8, M + np.sign(np.sin(M)) * 0.85 * e, M + e * np.sin(M))
    for _ in range(max_iter):
        f = E - e * np.sin(E) - M
        if np.all(np.abs(f) < tol):
            return E + turns
        E = E - f / (1.0 - e * np.cos(E))
    raise RuntimeError(f"Kepler's equation did not converge in {max_iter} Newton steps (max residual {np.abs(f).max():.2e})")


def orbit_state(planet: Planet, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heliocentric position (AU) and velocity (AU/yr) of ``planet`` at times ``t`` (years).

    Returns:
        (positions (*t.shape, 2), velocities (*t.shape, 2)).
    """
    t = np.asarray(t, dtype=np.float64)
    a, e = planet.a, planet.e
    n = 2.0 * math.pi / planet.period
    E = solve_kepler(planet.M0 + n * t, e)
    b = a * math.sqrt(1.0 - e * e)
    cosE, sinE = np.cos(E), np.sin(E)
    px, py = a * (cosE - e), b * sinE
    Edot = n / (1.0 - e * cosE)  # dE/dt from differentiating Kepler's equation
    vx, vy = -a * sinE * Edot, b * cosE * Edot
    c, s = math.cos(planet.omega), math.sin(planet.omega)
    pos = np.stack([c * px - s * py, s * px + c * py], axis=-1)
    vel = np.stack([c * vx - s * vy, s * vx + c * vy], axis=-1)
    return pos, vel


def orbit_positions(planet: Planet, t: np.ndarray) -> np.ndarray:
    """Heliocentric positions (AU), shape (*t.shape, 2), of ``planet`` at times ``t`` (years)."""
    return orbit_state(planet, t)[0]


def specific_energy(pos: np.ndarray, vel: np.ndarray) -> np.ndarray:
    """Energy per unit mass v^2/2 - GM/r (AU^2/yr^2); -GM/(2a) on a Kepler orbit (vis-viva)."""
    return 0.5 * (vel**2).sum(-1) - GM_SUN / np.linalg.norm(pos, axis=-1)


def specific_angular_momentum(pos: np.ndarray, vel: np.ndarray) -> np.ndarray:
    """Angular momentum per unit mass x v_y - y v_x (AU^2/yr); sqrt(GM a (1 - e^2)) on a Kepler orbit."""
    return pos[..., 0] * vel[..., 1] - pos[..., 1] * vel[..., 0]


def integrate_two_body(pos0: np.ndarray, vel0: np.ndarray, t_end: float, steps: int) -> np.ndarray:
    """Integrate r'' = -GM r / |r|^3 with classical RK4 (an independent check of the Kepler solution).

    Returns:
        positions (steps + 1, 2) at times linspace(0, t_end, steps + 1).
    """
    def f(s: np.ndarray) -> np.ndarray:
        r = s[:2]
        return np.concatenate([s[2:], -GM_SUN * r / np.linalg.norm(r) ** 3])

    h = t_end / steps
    s = np.concatenate([pos0, vel0]).astype(np.float64)
    out = [s[:2].copy()]
    for _ in range(steps):
        k1 = f(s)
        k2 = f(s + 0.5 * h * k1)
        k3 = f(s + 0.5 * h * k2)
        k4 = f(s + h * k3)
        s = s + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(s[:2].copy())
    return np.stack(out)


def measured_period(positions: np.ndarray, dt: float) -> float:
    """Period (same time unit as ``dt``) from a sampled trajectory (n, 2): 2 pi over the mean angular rate.

    The polar angle is unwrapped (steps of less than half a turn are assumed), and the rate
    is the total angle swept over the elapsed time. Returns inf when no angle is swept.
    """
    theta = np.unwrap(np.arctan2(positions[:, 1], positions[:, 0]))
    swept = theta[-1] - theta[0]
    elapsed = dt * (positions.shape[0] - 1)
    return float(2.0 * math.pi * elapsed / swept) if swept > 0 else float("inf")


def fit_power_law(a: np.ndarray, T: np.ndarray) -> tuple[float, float]:
    """Least-squares fit log T = x log a + c; returns (x, R^2). Kepler's third law: x = 1.5."""
    la, lT = np.log(np.asarray(a, float)), np.log(np.asarray(T, float))
    x, c = np.polyfit(la, lT, 1)
    resid = lT - (x * la + c)
    ss = ((lT - lT.mean()) ** 2).sum()
    return float(x), float(1.0 - (resid**2).sum() / ss) if ss > 0 else float("nan")


def make_windows(planets: list[Planet], starts: np.ndarray, which: np.ndarray, window: int, horizon: int,
                 dt: float, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forecasting samples: ``window`` noisy positions ``dt`` apart -> the position ``horizon * dt`` later.

    Args:
        starts: time of each sample's first observation (years), shape (N,).
        which: index into ``planets`` of each sample, shape (N,).
        noise: standard deviation (AU) of the Gaussian observation noise on each coordinate.

    Returns:
        (inputs (N, 2 * window) noisy, noisy targets (N, 2), clean targets (N, 2)), float64.
    """
    offsets = np.arange(window + horizon) * dt
    N = starts.shape[0]
    pos = np.empty((N, window + horizon, 2))
    for p, planet in enumerate(planets):
        m = which == p
        if m.any():
            pos[m] = orbit_positions(planet, starts[m, None] + offsets[None, :])
    clean_target = pos[:, window + horizon - 1].copy()
    noisy = pos + noise * rng.standard_normal(pos.shape)
    return noisy[:, :window].reshape(N, 2 * window), noisy[:, window + horizon - 1], clean_target


class KeplerDataModule(TrainerPlacement, L.LightningDataModule):
    """Forecasting planets: (``window`` observed positions) -> (position ``horizon`` steps ahead).

    Inputs (B, 2 * window) in AU (x1, y1, x2, y2, ...); targets (B, 2) in AU. Training
    targets are noisy observations; validation and test targets are the true positions,
    so their error is the forecast error against the truth.

    Args:
        planets: names from :data:`SOLAR_SYSTEM` (Kepler's six by default).
        num_train: N, the number of training samples (observation windows), >= 1.
        window: observations per input; dt: their spacing (years); horizon: steps ahead.
        t_train: the observed time window [0, t_train) in years: training, validation and
            the in-window test samples start there (Tycho observed for about 20 years).
        t_test_end: out-of-window test samples start in [t_train, t_test_end).
        noise: observation noise (AU, per coordinate).
        num_val, num_test: sizes of the validation and of each test set.
        batch_size, steps_per_chunk, eval_batch_size, seed: as for the other datamodules. A training
            set smaller than 8 chunks is repeated (reshuffled) within an epoch, so that an epoch is
            never a single short step.

    Attributes after setup: ``train``, ``val``, ``test`` (in-window), ``test_out``
    (after the window), each a :class:`~whylearn.data.base.Split`, plus ``planet_index``
    dicts of the planet of each test sample.
    """

    name = "kepler"

    def __init__(self, planets: list[str] | None = None, num_train: int = 1000, window: int = 3, horizon: int = 1,
                 dt: float = 0.02, t_train: float = 20.0, t_test_end: float = 40.0, noise: float = 0.001,
                 num_val: int = 1000, num_test: int = 2000, batch_size: int = 64, steps_per_chunk: int = 32,
                 eval_batch_size: int = 4096, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__()
        self.planets = planets_from_names(list(planets) if planets is not None else list(SOLAR_SYSTEM))
        if num_train < 1 or window < 1 or horizon < 1:
            raise ValueError(f"num_train, window and horizon must be >= 1, got {num_train}, {window}, {horizon}")
        if not (dt > 0 and t_train > (window + horizon) * dt and t_test_end > t_train):
            raise ValueError(f"need dt > 0, t_train > (window + horizon) * dt and t_test_end > t_train; "
                             f"got dt={dt}, t_train={t_train}, t_test_end={t_test_end}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0 AU, got {noise}")
        self.num_train, self.window, self.horizon, self.dt = int(num_train), int(window), int(horizon), float(dt)
        self.t_train, self.t_test_end, self.noise = float(t_train), float(t_test_end), float(noise)
        self.num_val, self.num_test = int(num_val), int(num_test)
        self.batch_size, self.steps_per_chunk, self.eval_batch_size = int(batch_size), int(steps_per_chunk), int(eval_batch_size)
        self.seed, self.shuffle = int(seed), shuffle
        self.min_chunks_per_epoch = 8
        self.num_classes = 2  # output size (x, y): build.py sizes a model's `num_classes` from it
        self.train = self.val = self.test = self.test_out = None
        self.planet_index: dict[str, np.ndarray] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (2 * self.window,)

    def _sample(self, n: int, t0: float, t1: float, rng: np.random.Generator, clean_targets: bool) -> tuple[Split, np.ndarray]:
        span = (self.window + self.horizon - 1) * self.dt
        starts = rng.uniform(t0, t1 - span, size=n)
        which = rng.integers(0, len(self.planets), size=n)
        x, y_noisy, y_clean = make_windows(self.planets, starts, which, self.window, self.horizon, self.dt, self.noise, rng)
        y = y_clean if clean_targets else y_noisy
        return Split(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)), which

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        # separate streams so that the test sets do not change with num_train
        rng_train, rng_val, rng_test, rng_out = (np.random.default_rng([self.seed, i]) for i in range(4))
        self.train, _ = self._sample(self.num_train, 0.0, self.t_train, rng_train, clean_targets=False)
        self.val, _ = self._sample(self.num_val, 0.0, self.t_train, rng_val, clean_targets=True)
        self.test, self.planet_index["test"] = self._sample(self.num_test, 0.0, self.t_train, rng_test, clean_targets=True)
        self.test_out, self.planet_index["test_out"] = self._sample(self.num_test, self.t_train, self.t_test_end, rng_out,
                                                                    clean_targets=True)

    def _to_device(self) -> None:
        d = self._device()
        if self.train.x.device != d:
            self.train, self.val, self.test, self.test_out = (s.to(d) for s in (self.train, self.val, self.test, self.test_out))

    def train_dataloader(self) -> ChunkLoader:
        self.setup()
        self._to_device()
        # A small training set is repeated (each copy reshuffled) so that an epoch holds at least
        # `min_chunks_per_epoch` full chunks: N = 30 would otherwise make every epoch one step long.
        need = self.batch_size * self.steps_per_chunk * self.min_chunks_per_epoch
        reps = max(1, -(-need // self.num_train))
        split = self.train if reps == 1 else Split(self.train.x.repeat(reps, 1), self.train.y.repeat(reps, 1))
        k = self._steps_per_batch(self.steps_per_chunk)  # one step per batch when the fit asks: the same epoch
        return ChunkLoader(split, self.batch_size, k, self.seed, self._epoch, self.shuffle)

    def val_dataloader(self) -> EvalLoader:
        self.setup()
        self._to_device()
        return EvalLoader(self.val, self.eval_batch_size)

    def test_dataloader(self) -> EvalLoader:
        self.setup()
        self._to_device()
        return EvalLoader(self.test, self.eval_batch_size)

    def describe(self) -> dict:
        self.setup()
        return {"dataset": self.name, "planets": [p.name for p in self.planets], "train_size": self.num_train,
                "window": self.window, "horizon": self.horizon, "dt_years": self.dt, "t_train_years": self.t_train,
                "noise_au": self.noise, "test_size": len(self.test), "test_out_size": len(self.test_out)}
