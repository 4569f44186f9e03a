"""k-means on frame features: learning (streamed, larger-than-RAM), applying, saving.

Two engines:

- ``lloyd`` (default): k-means++ seeding on a sample of frames, Lloyd iterations on
  that sample until it settles, then full Lloyd passes streamed over the shards in
  chunks (assignment = one matrix product per chunk). Memory stays at a few chunks
  whatever the size of the feature set.
- ``minibatch``: fairseq's ``learn_kmeans.py`` exactly (scikit-learn's
  ``MiniBatchKMeans`` with its settings and the same sampled frames), which loads every
  sampled frame into memory as fairseq does. Needs ``pip install hubertkit[sklearn]``.

Models are saved as a ``torch.save`` dict of tensors and plain values (readable with
``weights_only=True``). fairseq's joblib pickles are read only with ``trust_pickle``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from hubertkit.data.labels import write_sidecar
from hubertkit.data.shards import FeatureShard, check_one_manifest, read_shard, read_shards
from hubertkit.errors import HubertkitError
from hubertkit.features.dump import resolve_ranks
from hubertkit.fileio import atomic_open, atomic_path, save_torch
from hubertkit.parallel import ordered_map
from hubertkit.progress import progress_bar

log = logging.getLogger(__name__)

FORMAT = "hubertkit.kmeans"
CHUNK_FRAMES = 8192  # rows per matrix product: small enough that the distances stay in cache


@dataclass
class KMeansModel:
    centroids: np.ndarray  # [n_clusters, dim] float32
    meta: dict = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def fingerprint(self) -> str:
        """Identifies the centroids, wherever the file lives; label files record it."""
        return hashlib.sha256(np.ascontiguousarray(self.centroids, dtype="<f4").tobytes()).hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> None:
        state = {
            "format": FORMAT,
            "version": 1,
            "cluster_centers": torch.from_numpy(np.ascontiguousarray(self.centroids, dtype=np.float32)),
            "meta": dict(self.meta),
        }
        save_torch(state, path, "k-means model")

    def predict(self, feats: np.ndarray | torch.Tensor) -> np.ndarray:
        return assign(torch.as_tensor(np.asarray(feats, dtype=np.float32)), self._centroids_t())[0].numpy()

    def _centroids_t(self) -> tuple[torch.Tensor, torch.Tensor]:
        c = torch.from_numpy(np.ascontiguousarray(self.centroids, dtype=np.float32))
        return c, (c * c).sum(1)


def load_kmeans(path: str | os.PathLike, trust_pickle: bool = False) -> KMeansModel:
    """Read a hubertkit k-means model, or fairseq's joblib ``km.bin`` when ``trust_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise HubertkitError(f"k-means model {path} {'is a folder' if path.is_dir() else 'does not exist'}")
    with open(path, "rb") as f:
        magic = f.read(2)
    if not magic:
        raise HubertkitError(f"k-means model {path} is empty")
    if magic == b"PK":  # torch.save's zip container
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as e:
            raise HubertkitError(f"cannot read k-means model {path} (truncated or damaged?): "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT or not torch.is_tensor(state.get("cluster_centers")):
            raise HubertkitError(f"{path} is a torch file but not a hubertkit k-means model")
        return KMeansModel(_usable(state["cluster_centers"].numpy(), path), dict(state.get("meta", {})))
    if not trust_pickle:
        raise HubertkitError(
            f"{path} looks like a pickled (joblib) scikit-learn model, as fairseq's learn_kmeans.py writes. "
            "Unpickling can run arbitrary code; pass --trust-pickle (trust_pickle=True) if you trust this file"
        )
    try:
        import joblib
    except ImportError:
        raise HubertkitError("reading a joblib k-means model needs joblib: pip install 'hubertkit[sklearn]'") from None
    try:
        km = joblib.load(path)
    except Exception as e:  # whatever unpickling a damaged or foreign file raises
        raise HubertkitError(f"cannot read k-means model {path} as a joblib pickle: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not hasattr(km, "cluster_centers_"):
        raise HubertkitError(f"{path} holds a {type(km).__name__}, not a fitted k-means model")
    return KMeansModel(_usable(np.asarray(km.cluster_centers_), path), {"source": "joblib", "path": str(path)})


def _usable(centroids: np.ndarray, path: Path) -> np.ndarray:
    """Centroids that can label anything: a NaN centroid wins or loses every distance, so
    one cluster would take every frame with exit code 0."""
    if centroids.ndim != 2 or centroids.shape[0] == 0 or centroids.shape[1] == 0:
        raise HubertkitError(f"k-means model {path} has centroids of shape {tuple(centroids.shape)}: no clusters to label with")
    bad = ~np.isfinite(centroids).all(axis=1)
    if bad.any():
        raise HubertkitError(f"k-means model {path} has {int(bad.sum())} centroid(s) with NaN or infinite values "
                             f"(the first: cluster {int(np.argmax(bad))}); fit it again")
    return centroids.astype(np.float32)


def _number(value) -> float:
    """A metadata value as a number, NaN where it is missing or not one (it is only reported)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def export_kmeans(km_path: str | os.PathLike, out: str | os.PathLike, trust_pickle: bool = False) -> str:
    """``hubertkit export-kmeans KM_PATH OUT``: the centroids as a fitted scikit-learn
    ``MiniBatchKMeans`` in a joblib file, what fairseq's ``dump_km_label.py`` (and its
    HuBERT unit scripts) load; their labels are then ours."""
    try:
        import joblib
        from sklearn.cluster import MiniBatchKMeans
    except ImportError:
        raise HubertkitError("export-kmeans writes a scikit-learn model: pip install 'hubertkit[sklearn]'") from None
    if Path(out).exists() and Path(out).resolve() == Path(km_path).resolve():
        raise HubertkitError(f"OUT {out} is KM_PATH itself: the export would replace the model; give another file name")
    if Path(out).is_dir():
        raise HubertkitError(f"OUT {out} is a directory; give a file name, e.g. {Path(out) / 'km.bin'}")
    km = load_kmeans(km_path, trust_pickle)
    model = MiniBatchKMeans(n_clusters=km.n_clusters, max_iter=100, compute_labels=False, **MINIBATCH_DEFAULTS)
    # the attributes fit() leaves, so predict() and transform() work as on a fitted model
    model.cluster_centers_ = km.centroids.astype(np.float32)
    model.n_features_in_ = km.dim
    model.inertia_ = _number(km.meta.get("inertia")) * _number(km.meta.get("frames"))
    model.n_iter_ = model.n_steps_ = 0
    model._n_threads = os.cpu_count() or 1  # what fit() sets; predict() reads it
    with atomic_path(out) as tmp:
        joblib.dump(model, tmp)
    return f"wrote {out}: scikit-learn MiniBatchKMeans, {km.n_clusters} clusters of dim {km.dim} (joblib)"


def assign(x: torch.Tensor, centroids: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid and squared distance: argmin of ‖x‖² − 2x·C + ‖C‖², as fairseq."""
    c, c_norm = centroids
    partial = torch.addmm(c_norm, x, c.T, alpha=-2.0)
    dist, labels = partial.min(dim=1)
    dist = (dist + (x * x).sum(1)).clamp_(min=0.0)
    return labels, dist


# ---------------------------------------------------------------------------------
# Which frames k-means learns from: fairseq's `--percent` sampling of utterances.


@dataclass
class FrameSet:
    """Row ranges ``(shard, start, stop)`` over memory-mapped shards, read in chunks."""

    shards: list[FeatureShard]
    ranges: list[tuple[int, int, int]]

    @property
    def num_frames(self) -> int:
        return sum(stop - start for _, start, stop in self.ranges)

    @property
    def dim(self) -> int:
        return self.shards[0].dim

    def chunks(self, size: int = CHUNK_FRAMES) -> Iterator[np.ndarray]:
        """All frames in blocks of ``size`` rows, read in file order (the order of the
        sampled utterances does not matter to Lloyd), adjacent ranges merged."""
        merged: list[list[int]] = []
        for s, start, stop in sorted(self.ranges):
            if merged and merged[-1][0] == s and merged[-1][2] == start:
                merged[-1][2] = stop
            else:
                merged.append([s, start, stop])
        buf = np.empty((size, self.dim), dtype=np.float32)
        filled = 0
        for s, start, stop in merged:
            while start < stop:
                n = min(stop - start, size - filled)
                self.shards[s].read_rows(start, start + n, out=buf[filled : filled + n])
                filled += n
                start += n
                if filled == size:
                    yield buf
                    filled = 0
        if filled:
            yield buf[:filled]

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Frames at global positions ``index`` (sorted), e.g. an initialisation sample."""
        out = np.empty((len(index), self.dim), dtype=np.float32)
        sizes = np.array([stop - start for _, start, stop in self.ranges])
        ends = np.cumsum(sizes)
        which = np.searchsorted(ends, index, side="right")
        # position of each frame inside its shard
        local = index - (ends - sizes)[which] + np.array([start for _, start, _ in self.ranges])[which]
        shard_of = np.array([s for s, _, _ in self.ranges])[which]
        for s in np.unique(shard_of):
            sel = shard_of == s
            out[sel] = self.shards[s].take_rows(local[sel])
        return out

    def load(self) -> np.ndarray:
        """Every frame in memory, in sampled order (as fairseq concatenates them)."""
        out = np.empty((self.num_frames, self.dim), dtype=np.float32)
        at = 0
        for s, start, stop in self.ranges:
            self.shards[s].read_rows(start, stop, out=out[at : at + stop - start])
            at += stop - start
        return out


def sample_frames(feat_dir, split: str, nshard: int, percent: float, rng: np.random.RandomState) -> FrameSet:
    """fairseq's sampling: ``ceil(percent · n)`` utterances per shard without replacement,
    drawn from ``rng`` in shard order (``percent < 0``: every frame)."""
    if percent > 1:
        raise HubertkitError(f"--percent must be at most 1 (or -1 for all frames), got {percent}")
    shards = read_shards(feat_dir, split, nshard)
    ranges = []
    for s, shard in enumerate(shards):
        if percent < 0:
            ranges.append((s, 0, int(shard.lengths.sum())))
            continue
        n = int(np.ceil(len(shard) * percent))
        for i in rng.choice(len(shard), n, replace=False):
            ranges.append((s, int(shard.offsets[i]), int(shard.offsets[i] + shard.lengths[i])))
    return FrameSet(shards, [r for r in ranges if r[2] > r[1]])


# ---------------------------------------------------------------------------------
# The Lloyd engine.


def kmeans_plus_plus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (several candidates per step, the one lowering the potential most)."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    x_norm = (x * x).sum(1)
    centers = torch.empty(k, x.shape[1], dtype=x.dtype)
    centers[0] = x[torch.randint(n, (1,), generator=gen)]

    def sq_dist(c):
        return (x_norm[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]).clamp_(min=0)

    closest = sq_dist(centers[:1])[:, 0]
    for i in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than clusters; duplicates are harmless here
            probs = torch.ones(n)
        else:
            probs = closest / total
        candidates = torch.multinomial(probs, trials, replacement=True, generator=gen)
        dist = torch.minimum(closest[:, None], sq_dist(x[candidates]))
        best = dist.sum(0).argmin()
        centers[i] = x[candidates[best]]
        closest = dist[:, best]
    return centers


@dataclass
class _PassStats:
    sums: torch.Tensor
    counts: torch.Tensor
    inertia: float
    frames: int


def _lloyd_pass(chunks, centroids: torch.Tensor) -> _PassStats:
    k, d = centroids.shape
    cc = (centroids, (centroids * centroids).sum(1))
    sums = torch.zeros(k, d, dtype=torch.float64)
    counts = torch.zeros(k, dtype=torch.float64)
    inertia, frames = 0.0, 0
    for chunk in chunks:
        x = torch.from_numpy(np.asarray(chunk, dtype=np.float32))
        labels, dist = assign(x, cc)
        sums += torch.zeros(k, d).index_add_(0, labels, x).double()
        counts += torch.bincount(labels, minlength=k).double()
        inertia += dist.double().sum().item()
        frames += x.shape[0]
    return _PassStats(sums, counts, inertia, frames)


def _update(stats: _PassStats, old: torch.Tensor, reseed: torch.Tensor) -> torch.Tensor:
    """Means of the assigned frames; an empty cluster takes a far-away sample frame."""
    new = old.clone()
    full = stats.counts > 0
    new[full] = (stats.sums[full] / stats.counts[full, None]).float()
    empty = (~full).nonzero().flatten()
    if len(empty):
        _, dist = assign(reseed, (new, (new * new).sum(1)))
        far = dist.argsort(descending=True)[: len(empty)]
        new[empty[: len(far)]] = reseed[far]
        log.info("re-seeded %d empty cluster(s)", len(empty))
    return new


def _converged(previous: float, current: float, tol: float) -> bool:
    return math.isfinite(previous) and previous - current <= tol * previous


def lloyd(
    frames: FrameSet,
    n_clusters: int,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    init_size: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, float, int]:
    """Returns centroids, mean squared distance per frame, and full passes made."""
    n = frames.num_frames
    gen = torch.Generator().manual_seed(seed)
    init_size = min(n, init_size or max(20 * n_clusters, 20000))
    index = np.sort(torch.randperm(n, generator=gen)[:init_size].numpy())
    sample = torch.from_numpy(frames.rows(index))
    centroids = kmeans_plus_plus(sample, n_clusters, gen)
    # Settle on the sample first: cheap, in memory, and saves full passes.
    previous = math.inf
    for _ in range(max_iter):
        stats = _lloyd_pass([sample], centroids)
        if _converged(previous, stats.inertia, tol):
            break
        previous = stats.inertia
        centroids = _update(stats, centroids, sample)
    if init_size == n:  # the sample was everything
        return centroids.numpy(), stats.inertia / n, 0
    previous = math.inf
    bar = progress_bar(range(max_iter), desc="k-means passes", unit="pass", disable=not progress)
    for it in bar:
        stats = _lloyd_pass(frames.chunks(), centroids)
        mean = stats.inertia / stats.frames
        bar.set_postfix(inertia=f"{mean:.4f}", refresh=False)
        if _converged(previous, mean, tol):
            break
        previous = mean
        if it + 1 < max_iter:
            centroids = _update(stats, centroids, sample)
    bar.close()
    return centroids.numpy(), mean, it + 1


# fairseq's learn_kmeans.py defaults; its flags of the same names override them.
MINIBATCH_DEFAULTS = {"init": "k-means++", "batch_size": 10000, "tol": 0.0, "max_no_improvement": 100, "n_init": 20,
                      "reassignment_ratio": 0.0}
# what each MiniBatchKMeans option accepts (scikit-learn would fail later, with a traceback)
_MINIBATCH_RULES = {
    "init": (lambda v: v in ("k-means++", "random"), "'k-means++' or 'random'"),
    "batch_size": (lambda v: float(v) == int(v) >= 1, "an integer of at least 1"),
    "n_init": (lambda v: float(v) == int(v) >= 1, "an integer of at least 1"),
    "max_no_improvement": (lambda v: float(v) == int(v) >= 0, "an integer of at least 0"),
    "tol": (lambda v: math.isfinite(v) and v >= 0, "a number of at least 0"),
    "reassignment_ratio": (lambda v: math.isfinite(v) and v >= 0, "a number of at least 0"),
}


def _check_options(percent: float, seed: int, tol: float | None, options: dict) -> None:
    if not (percent == -1 or 0 < percent <= 1):  # NaN fails both
        raise HubertkitError(f"--percent must be in (0, 1] (a share of each shard's utterances) or -1 (all), got {percent}")
    if not 0 <= seed < 2**32:
        raise HubertkitError(f"--seed must be in 0..2**32-1, got {seed}")
    for key, value in {**options, **({"tol": tol} if tol is not None else {})}.items():
        ok, what = _MINIBATCH_RULES[key]
        try:
            good = ok(value)
        except (TypeError, ValueError, OverflowError):
            good = False
        if not good:
            raise HubertkitError(f"--{key} must be {what}, got {value!r}")


def minibatch(frames: FrameSet, n_clusters: int, max_iter: int = 100, **options) -> tuple[np.ndarray, float]:
    """fairseq's MiniBatchKMeans, with the global numpy RNG already seeded by the caller."""
    try:
        from sklearn.cluster import MiniBatchKMeans
    except ImportError:
        raise HubertkitError("--algo minibatch needs scikit-learn: pip install 'hubertkit[sklearn]'") from None
    feats = frames.load()
    km = MiniBatchKMeans(n_clusters=n_clusters, max_iter=max_iter, verbose=0, compute_labels=False, init_size=None,
                         **{**MINIBATCH_DEFAULTS, **options})
    km.fit(feats)
    return km.cluster_centers_.astype(np.float32), -km.score(feats) / len(feats)


@dataclass
class LearnSummary:
    path: str
    n_clusters: int
    frames: int
    inertia: float
    seconds: float

    def __str__(self) -> str:
        return (
            f"wrote {self.path}: {self.n_clusters} clusters from {self.frames} frames, "
            f"inertia {self.inertia:.5f} per frame, {self.seconds:.1f} s"
        )


def learn_kmeans(
    feat_dir: str | os.PathLike,
    split: str,
    nshard: int,
    km_path: str | os.PathLike,
    n_clusters: int,
    percent: float = -1,
    seed: int = 0,
    algo: str = "lloyd",
    max_iter: int = 100,
    tol: float | None = None,
    progress: bool = True,
    **minibatch_options,
) -> LearnSummary:
    """fairseq's ``learn_kmeans.py FEAT_DIR SPLIT NSHARD KM_PATH N_CLUSTERS``; its
    MiniBatchKMeans options (``batch_size``, ``n_init``, ...) apply to ``algo="minibatch"``."""
    start = time.time()
    if n_clusters < 1:
        raise HubertkitError(f"N_CLUSTERS must be at least 1, got {n_clusters}")
    if max_iter < 1:
        raise HubertkitError(f"--max-iter must be at least 1, got {max_iter}")
    if Path(km_path).is_dir():
        raise HubertkitError(f"KM_PATH {km_path} is a directory; give a file name, e.g. {Path(km_path) / 'km.pt'}")
    unknown = sorted(set(minibatch_options) - set(MINIBATCH_DEFAULTS))
    if unknown:
        raise HubertkitError(f"unknown k-means option(s) {', '.join(unknown)}; known: {', '.join(MINIBATCH_DEFAULTS)}")
    minibatch_options = {k: v for k, v in minibatch_options.items() if v is not None}
    _check_options(percent, seed, tol, minibatch_options)
    if algo == "lloyd" and minibatch_options:
        raise HubertkitError(f"option(s) {', '.join(sorted(minibatch_options))} belong to fairseq's MiniBatchKMeans: add --algo minibatch "
                             "(lloyd runs one k-means++ start over all sampled frames)")
    np.random.seed(seed)  # fairseq seeds the global RNG; its sampling and sklearn draw from it
    frames = sample_frames(feat_dir, split, nshard, percent, np.random.mtrand._rand)
    n = frames.num_frames
    if n < n_clusters:
        raise HubertkitError(
            f"only {n} frames sampled from {feat_dir}/{split}_*_{nshard}.npy, fewer than "
            f"{n_clusters} clusters; use a larger --percent or fewer clusters"
        )
    log.info("learning %d clusters from %d frames of dim %d (%s)", n_clusters, n, frames.dim, algo)
    if algo == "lloyd":
        centroids, inertia, passes = lloyd(frames, n_clusters, seed, max_iter, 1e-4 if tol is None else tol, progress=progress)
    elif algo == "minibatch":
        centroids, inertia = minibatch(frames, n_clusters, max_iter, **minibatch_options, **({} if tol is None else {"tol": tol}))
        passes = None
    else:
        raise HubertkitError(f"unknown --algo {algo!r}; choose 'lloyd' or 'minibatch'")
    meta = {
        "algo": algo,
        "inertia": float(inertia),
        "frames": int(n),
        "feat_dir": str(Path(feat_dir).resolve()),
        "split": split,
        "nshard": nshard,
        "percent": float(percent),
        "seed": seed,
    }
    if passes is not None:
        meta["passes"] = passes
    KMeansModel(centroids, meta).save(km_path)
    return LearnSummary(str(km_path), n_clusters, n, float(inertia), time.time() - start)


# ---------------------------------------------------------------------------------
# Applying a model: fairseq's dump_km_label.py.


class _LabelText:
    """Formats label ids as fairseq's text lines, vectorised: each id's digits and a
    separator are gathered from a zero-padded table, then the padding is dropped."""

    def __init__(self, n_clusters: int):
        names = [f"{i} ".encode() for i in range(n_clusters)]
        self.width = np.array([len(n) for n in names], dtype=np.int64)  # digits + separator
        self.table = np.zeros((n_clusters, int(self.width.max())), dtype=np.uint8)
        for i, n in enumerate(names):
            self.table[i, : len(n)] = np.frombuffer(n, dtype=np.uint8)

    def __call__(self, labels: np.ndarray, lengths: np.ndarray) -> bytes:
        if len(labels) == 0 or (lengths == 0).any():  # rare: lines without labels
            ends = np.cumsum(lengths)
            return "".join(" ".join(map(str, labels[e - n : e].tolist())) + "\n" for n, e in zip(lengths, ends)).encode()
        grid = self.table[labels]
        last = np.cumsum(lengths) - 1  # the last label of each utterance ends its line
        grid[last, self.width[labels[last]] - 1] = ord("\n")
        flat = grid.ravel()
        return flat[flat != 0].tobytes()


def dump_labels(
    feat_dir: str | os.PathLike,
    split: str,
    km_path: str | os.PathLike,
    nshard: int,
    rank: str | int,
    lab_dir: str | os.PathLike,
    trust_pickle: bool = False,
    label: str = "km",
    jobs: int = os.cpu_count() or 1,
    progress: bool = True,
) -> dict:
    """Label every frame of a feature shard with its nearest centroid (``jobs`` threads)."""
    start = time.time()
    km = load_kmeans(km_path, trust_pickle)
    c, c_norm = km._centroids_t()
    text = _LabelText(km.n_clusters)
    written, frames = [], 0
    check_one_manifest(feat_dir, split, nshard)
    for r in resolve_ranks(rank, nshard):
        shard = read_shard(feat_dir, split, r, nshard)
        if shard.dim != km.dim:
            raise HubertkitError(f"{shard.path} has {shard.dim}-dim features but {km_path} was fitted on {km.dim}-dim ones")
        out = Path(lab_dir) / f"{split}_{r}_{nshard}.{label}"

        def label_text(batch: tuple[int, int]) -> bytes:
            a, b = batch
            x = torch.from_numpy(shard.read_rows(int(shard.offsets[a]), int(shard.offsets[b - 1] + shard.lengths[b - 1])))
            # ‖x‖² cannot change the argmin; numpy's argmin is faster than torch's here
            labels = torch.addmm(c_norm, x, c.T, alpha=-2.0).numpy().argmin(axis=1)
            return text(labels, shard.lengths[a:b])

        batches = list(_utterance_batches(shard.lengths))
        with atomic_open(out, "wb") as f, progress_bar(
            total=len(shard), unit="utt", desc=f"labels {split} {r}", disable=not progress
        ) as bar:
            for (a, b), lines in zip(batches, ordered_map(label_text, batches, jobs)):
                f.write(lines)
                bar.update(b - a)
        write_sidecar(out, {
            "kmeans": km.fingerprint,
            "kmeans_path": str(Path(km_path).resolve()),
            "n_clusters": km.n_clusters,
            "feat_dir": str(Path(feat_dir).resolve()),
            "split": split,
            "utterances": len(shard),
            "frames": int(shard.lengths.sum()),
        })
        written.append(str(out))
        frames += int(shard.lengths.sum())
    return {"files": written, "frames": frames, "seconds": time.time() - start}


def _utterance_batches(lengths: np.ndarray, size: int = CHUNK_FRAMES) -> Iterator[tuple[int, int]]:
    """Runs of whole utterances of about ``size`` frames (at least one utterance each)."""
    a, total = 0, 0
    for i, n in enumerate(lengths.tolist()):
        total += n
        if total >= size:
            yield a, i + 1
            a, total = i + 1, 0
    if a < len(lengths):
        yield a, len(lengths)
