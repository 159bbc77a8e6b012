"""How sure a caption is: the decoder's word probabilities combined with how familiar the image looks.

A blind user acts on what the cane says, and a confident wrong description is worse than silence. The decoder's
own word probabilities miss the worst case: an image unlike any it was trained on (a street, not a synthetic
scene) still gets a fluent, probable caption. So each image's encoder features are also compared with those of
in-distribution images, from small statistics `scenecap calibrate` stores in the bundle:

  pooled   = per channel of sqrt(features), the mean and the standard deviation over locations  [2 * feature_dim]
  distance = sqrt(Mahalanobis^2 in a k-dim PCA subspace + residual energy / its per-dimension mean on the fit
             set), probabilistic PCA's isotropic residual: about sqrt(pooled_dim) for a typical image
  familiar = 2 ** -max(0, (distance - q50) / (q95 - q50))  (q50, q95: of the calibration images' distances)

(Measured on the demo bundle: sqrt and the spread separate photographs from synthetic scenes with AUROC 0.99
against 0.95 for the plain mean and spread, and 0.68 for the mean alone; a residual weighted as one dimension
instead of its 240 hid most of the difference.) So an image as typical as half the calibration set is fully
familiar, one at the 95th percentile half so, and a photograph tens of spreads away about 0.

Optionally (`scenecap calibrate --outlier-images`), outlier exposure: images the cane must not describe
confidently (photographs, not scenes) give a direction in the same pooled space, Fisher's linear discriminant
between them and the fit set (both covariances, shrunk), and each image also gets

  score    = (pooled - mean) . direction
  familiar = the Gaussian's familiarity * 2 ** -max(0, (score - s50) / (s95 - s50))  (s50, s95: the validation
             images' scores)

(Measured on the demo bundle, with photographs and textures the tests never see as the outliers: AUROC against
the test photographs 0.92 -> 1.00, against the held-out shifted drawing style 0.76 -> 0.91.)

confidence = word confidence * familiarity, where word confidence is the geometric mean
probability of the caption's tokens (<end> included): exp(log_prob / tokens).

Optionally (`scenecap caption --second-look`, on a bundle calibrated with `scenecap calibrate --second-look`):
the image zoomed in by SECOND_LOOK_ZOOM (the centre 95%, resized back) is encoded again and the decoder reads
the caption's own words along it (teacher forcing). A caption the model would not say again of a slightly
different view of the same scene is one it has guessed: the second look is the probability of its least likely
word on that view, exp(min log p), and multiplies the confidence. (Measured on the demo bundle, its threshold
set to keep 95% of 200 fresh own-style scenes confident: the share of 3,000 shifted-style scenes captioned
confidently and wrongly 6.1% -> 4.4%, 3.8% with the threshold set on 1,000; on those scenes, right against
wrong, AUROC 0.61 -> 0.81. The geometric mean on the second view, or the least likely word on the first, moved
neither; nor did a blur; mirroring and turning change the words of a correct caption, so they are no second
look for reading it along.) It costs an encoder pass and one decoder step per word, about as much as the caption
itself, which is why it is not the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from scenecap.edge.errors import ScenecapError

MAX_COMPONENTS = 16
SECOND_LOOK_ZOOM = 1.05  # 2-3 pixels each side at 128 px: a new view of every object, none cut off
MAX_REFERENCES = 100_000  # calibration distances kept in the stats file (a few thousand images is plenty)
STATS_ARRAYS = ("mean", "components", "variances", "residual", "references")
OUTLIER_ARRAYS = ("direction", "direction_references")  # with --outlier-images only
# Fisher's discriminant regularised towards the identity by this share of the mean variance: a few hundred
# images in hundreds of dimensions leave the covariance nearly singular.
DIRECTION_SHRINKAGE = 1e-3
VARIANCE_FLOOR = 1e-6  # relative to the largest variance: a direction the fit set never moved in is not infinite


@dataclass
class NoveltyStats:
    """The in-distribution features' Gaussian: mean [P], components [k, P] (orthonormal rows), variances [k],
    residual (mean residual energy on the fit set), references (sorted calibration distances); with outlier
    exposure, the discriminant direction [P] and the validation images' sorted scores along it."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual: float
    references: np.ndarray
    direction: np.ndarray | None = None
    direction_references: np.ndarray | None = None

    # The familiarity scales, computed once: np.quantile per caption cost a quarter of a millisecond.
    @cached_property
    def scale(self) -> tuple[float, float]:
        """(q50, q95) of the calibration distances."""
        return _quantiles(self.references)

    @cached_property
    def direction_scale(self) -> tuple[float, float]:
        """(s50, s95) of the validation images' scores along the outlier direction."""
        return _quantiles(self.direction_references)

    @property
    def q50(self) -> float:
        return self.scale[0]

    @property
    def q95(self) -> float:
        return self.scale[1]

    def arrays(self) -> dict[str, np.ndarray]:
        """As stored in the bundle's stats file (float32, plain arrays: read back with allow_pickle=False)."""
        out = {"mean": self.mean.astype(np.float32), "components": self.components.astype(np.float32),
               "variances": self.variances.astype(np.float32),
               "residual": np.array([self.residual], np.float32),
               "references": np.sort(self.references).astype(np.float32)}
        if self.direction is not None:
            out["direction"] = self.direction.astype(np.float32)
            out["direction_references"] = np.sort(self.direction_references).astype(np.float32)
        return out


def pooled_features(features: np.ndarray) -> np.ndarray:
    """Encoder features [1, locations, dim] (float) -> [2 * dim]: the mean and spread of each channel's square root
    over the image (the spread tells a plain synthetic background from a photograph's texture; the root keeps a
    few strong activations from drowning the many weak ones a photograph has)."""
    x = np.maximum(np.asarray(features, np.float32).reshape(-1, features.shape[-1]), 0.0)
    root = np.sqrt(x)
    mean = root.mean(axis=0)
    # The spread from E[root^2] - mean^2, where root^2 is x itself: no second pass as np.std makes (measured on
    # the demo's 256 x 128 features: this function 145 -> 65 us a caption).
    spread = np.sqrt(np.maximum(x.mean(axis=0) - mean * mean, 0.0))
    return np.concatenate([mean, spread])


def fit_stats(pooled: np.ndarray, components: int = MAX_COMPONENTS) -> NoveltyStats:
    """The Gaussian of in-distribution pooled features [n, P] (residual: mean energy outside the k components);
    references are filled by `with_references`."""
    pooled = np.asarray(pooled, np.float64)
    n, p = pooled.shape
    k = min(int(components), MAX_COMPONENTS, n - 1, p)
    if k < 1:
        raise ScenecapError(f"{n} calibration image(s); need at least 2 to fit the image statistics")
    mean = pooled.mean(axis=0)
    centred = pooled - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    variances = s[:k] ** 2 / (n - 1)
    variances = np.maximum(variances, variances.max() * VARIANCE_FLOOR + 1e-12)
    comps = vt[:k]
    resid = centred - (centred @ comps.T) @ comps
    residual = float(max((resid ** 2).sum(axis=1).mean(), 1e-12))
    return NoveltyStats(mean, comps, variances, residual, np.zeros(1))


def distance(stats: NoveltyStats, pooled: np.ndarray) -> float:
    """How far one image's pooled features lie from the in-distribution Gaussian (about sqrt(pooled_dim))."""
    centred = np.asarray(pooled, np.float64) - stats.mean
    proj = stats.components @ centred
    maha2 = float((proj ** 2 / stats.variances).sum())
    resid2 = float((centred ** 2).sum() - (proj ** 2).sum())
    per_dim = stats.residual / max(stats.mean.size - stats.components.shape[0], 1)
    return math.sqrt(max(maha2 + max(resid2, 0.0) / per_dim, 0.0))


def with_references(stats: NoveltyStats, distances: np.ndarray) -> NoveltyStats:
    """The same Gaussian with the calibration images' distances (held out from the fit) as its reference."""
    refs = np.sort(np.asarray(distances, np.float64))
    if refs.size < 2:
        raise ScenecapError("need at least 2 validation images to place the familiarity scale")
    return NoveltyStats(stats.mean, stats.components, stats.variances, stats.residual, refs)


def familiarity(stats: NoveltyStats, d: float) -> float:
    """In [0, 1]: 1 up to the calibration median distance, halving with each (q95 - q50) beyond it."""
    return _halving(d, stats.scale)


def _quantiles(references: np.ndarray) -> tuple[float, float]:
    return float(np.quantile(references, 0.5)), float(np.quantile(references, 0.95))


def _halving(x: float, scale: tuple[float, float]) -> float:
    """1 up to q50, halving with each (q95 - q50) beyond it."""
    q50, q95 = scale
    spread = max(q95 - q50, 1e-6 * max(abs(q50), 1.0))
    return float(2.0 ** -max(0.0, (x - q50) / spread))


def fit_direction(pooled: np.ndarray, outliers: np.ndarray, shrinkage: float = DIRECTION_SHRINKAGE) -> np.ndarray:
    """Fisher's discriminant [P] from in-distribution pooled features [n, P] towards outliers' [m, P]: the
    direction along which the outliers lie farthest from the scenes, in units of both sets' spread."""
    a, b = np.asarray(pooled, np.float64), np.asarray(outliers, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ScenecapError(f"{len(a)} fit and {len(b)} outlier image(s); need at least 2 of each for the direction")
    cov = np.cov(a, rowvar=False) + np.cov(b, rowvar=False)
    cov += shrinkage * max(np.trace(cov) / cov.shape[0], 1e-12) * np.eye(cov.shape[0])
    w = np.linalg.solve(cov, b.mean(axis=0) - a.mean(axis=0))
    return w / max(np.linalg.norm(w), 1e-12)


def outlier_score(stats: NoveltyStats, pooled: np.ndarray) -> float:
    """How far along the outlier direction one image lies from the in-distribution mean."""
    return float((np.asarray(pooled, np.float64) - stats.mean) @ stats.direction)


def with_direction(stats: NoveltyStats, direction: np.ndarray, val_pooled: np.ndarray) -> NoveltyStats:
    """The same statistics with the outlier direction, its scale placed by the validation images' scores."""
    refs = np.sort((np.asarray(val_pooled, np.float64) - stats.mean) @ np.asarray(direction, np.float64))
    if refs.size < 2:
        raise ScenecapError("need at least 2 validation images to place the outlier direction's scale")
    return NoveltyStats(stats.mean, stats.components, stats.variances, stats.residual, stats.references,
                        np.asarray(direction, np.float64), refs)


def image_familiarity(stats: NoveltyStats, pooled: np.ndarray) -> float:
    """In [0, 1]: the Gaussian's familiarity of one image's pooled features, times the outlier direction's when
    the statistics have one."""
    f = familiarity(stats, distance(stats, pooled))
    if stats.direction is not None:
        f *= _halving(outlier_score(stats, pooled), stats.direction_scale)
    return float(f)


def word_confidence(log_prob: float, n_tokens: int) -> float:
    """The geometric mean probability of a caption's tokens, in [0, 1] (0 for a caption with no tokens)."""
    if n_tokens <= 0 or not math.isfinite(log_prob):
        return 0.0
    return float(min(1.0, math.exp(log_prob / n_tokens)))


def second_look(log_probs: np.ndarray) -> float:
    """In [0, 1]: the probability of a caption's least likely word, read along a second view of the image (1.0
    for a caption with no words: nothing to doubt beyond its word confidence, which is 0)."""
    lp = np.asarray(log_probs, np.float64)
    return float(min(1.0, math.exp(lp.min()))) if lp.size else 1.0


def combine(word: float, familiar: float | None, look: float | None = None) -> float:
    """The caption's confidence: word confidence scaled by the image's familiarity (if the bundle has stats) and
    by the second look (if it took one)."""
    c = word if familiar is None else word * familiar
    return float(c if look is None else c * look)


def stats_shapes(components: int, pooled_dim: int, references: int,
                 direction_references: int = 0) -> dict[str, tuple[int, ...]]:
    """The stats file's arrays (STATS_ARRAYS, then OUTLIER_ARRAYS when direction_references > 0; float32 each) and
    their shapes: what the bundle loader expects."""
    shapes = {"mean": (pooled_dim,), "components": (components, pooled_dim), "variances": (components,),
              "residual": (1,), "references": (references,)}
    if direction_references:
        shapes.update(direction=(pooled_dim,), direction_references=(direction_references,))
    return shapes


def stats_from_arrays(arrays: dict[str, np.ndarray], where: str) -> NoveltyStats:
    """The stats file's arrays (shapes already checked by the bundle loader) as NoveltyStats; finite values only."""
    for name in (*STATS_ARRAYS, *(n for n in OUTLIER_ARRAYS if n in arrays)):
        if not np.all(np.isfinite(arrays[name])):
            raise ScenecapError(f"{where}: {name} holds NaN or infinite values; re-run 'scenecap calibrate'")
    variances = arrays["variances"].astype(np.float64)
    residual = float(arrays["residual"][0])
    if np.any(variances <= 0) or residual <= 0:
        raise ScenecapError(f"{where}: variances must be > 0; re-run 'scenecap calibrate'")
    direction = arrays.get("direction")
    if direction is not None and not np.any(direction):
        raise ScenecapError(f"{where}: the outlier direction is all zeros; re-run 'scenecap calibrate'")
    return NoveltyStats(arrays["mean"].astype(np.float64), arrays["components"].astype(np.float64), variances,
                        residual, np.sort(arrays["references"].astype(np.float64)),
                        None if direction is None else direction.astype(np.float64),
                        None if direction is None else np.sort(arrays["direction_references"].astype(np.float64)))


def threshold_at(confidences: np.ndarray, percentile: float) -> float:
    """The `unsure` threshold: this percentile of in-distribution validation confidences (lower ones are unsure)."""
    c = np.asarray(confidences, np.float64)
    if c.size == 0:
        raise ScenecapError("no validation captions to choose the threshold from")
    return float(np.percentile(c, percentile, method="lower"))
