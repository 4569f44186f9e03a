"""ABX discriminability, as Libri-light's ABX (ZeroSpeech 2021) defines it: is a token X of
a phone closer to another token A of its phone than to a token B of another phone, all
three in the same context (previous and next phone)?

- Items: one per phone token, ``file onset offset phone prev next speaker`` (ZeroSpeech's
  ``.item`` format), made from phone alignments or read from a ``.item`` file.
- A token's frames: ``ceil(rate·onset − 0.5)`` to ``floor(rate·offset − 0.5)`` (exclusive);
  frames are L2-normalised (a zero frame sits at the largest distance from any other).
- Distance: the angle between frames, ``arccos(a·b) / π``, summed along the DTW path
  (steps right, down, diagonal) and divided by the path's length, in float32.
- Within speaker: A, B and X share the speaker; X runs over A's group (X ≠ A). Across:
  A and B share a speaker, X comes from another (at most ``max_x_across`` of them).
  Groups larger than ``max_size_group`` tokens are subsampled (seeded here).
- Score of a (context, speaker, phone A, phone B[, speaker X]) cell: the share of (A, B,
  X) with d(A, X) < d(B, X), ties counting a half; the error is 1 minus that, averaged
  over contexts (and X speakers), then over speakers, then over phone pairs.

Every distance a score needs is computed once, in batches of token pairs of equal
lengths (vectorised DTW), instead of one pair at a time; the cells of equal group sizes
are listed and scored as one array each, not one at a time (speakers who read
different sentences make many small cells).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubertkit.errors import HubertkitError
from hubertkit.fileio import write_text

SILENCES = {"sil", "sp", "spn", "SIL", "<sil>", ""}  # and PocketSphinx's fillers, +NSN+ and the like


@dataclass
class Items:
    """ZeroSpeech's item table: one row per phone token."""

    files: list[str]
    onset: np.ndarray
    offset: np.ndarray
    phone: list[str]
    prev: list[str]
    next: list[str]
    speaker: list[str]

    def __len__(self) -> int:
        return len(self.files)


def items_from_alignments(alignments: Mapping[str, list[tuple[str, float, float]]],
                          speakers: Mapping[str, str]) -> Items:
    """Every phone token whose neighbours are phones (not silence) within its utterance."""
    rows = []
    for key, phones in alignments.items():
        for k in range(1, len(phones) - 1):
            (prev, _, _), (phone, onset, offset), (nxt, _, _) = phones[k - 1 : k + 2]
            if not (math.isfinite(onset) and math.isfinite(offset)):
                raise HubertkitError(f"the alignment of {key} has a phone {phone!r} at a non-finite time ({onset}, {offset})")
            if not any(p in SILENCES or p.startswith("+") for p in (prev, phone, nxt)) and offset > onset:
                rows.append((key, onset, offset, phone, prev, nxt, speakers[key]))
    if not rows:
        raise HubertkitError("the alignments hold no phone with phones on both sides: nothing to score")
    files, onset, offset, phone, prev, nxt, speaker = zip(*rows)
    return Items(list(files), np.array(onset), np.array(offset), list(phone), list(prev), list(nxt), list(speaker))


def read_item_file(path: str | os.PathLike) -> Items:
    """A ZeroSpeech ``.item`` file: a header line, then ``file onset offset phone prev next speaker``."""
    path = Path(path)
    if not path.is_file():
        raise HubertkitError(f"item file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise HubertkitError(f"item file {path} is not UTF-8 text (byte {e.start})") from None
    rows = []
    for number, line in enumerate(text.splitlines()[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 7:
                raise ValueError(f"{len(fields)} fields")
            onset, offset = float(fields[1]), float(fields[2])
            if not (math.isfinite(onset) and math.isfinite(offset) and 0 <= onset < offset):
                raise ValueError(f"onset {fields[1]} and offset {fields[2]} must be finite, 0 <= onset < offset")
            rows.append((fields[0], onset, offset, *fields[3:]))
        except ValueError as e:
            raise HubertkitError(f"{path}:{number}: expected 'file onset offset phone prev next speaker' ({e})") from None
    if not rows:
        raise HubertkitError(f"item file {path} lists no items")
    files, onset, offset, phone, prev, nxt, speaker = zip(*rows)
    return Items(list(files), np.array(onset), np.array(offset), list(phone), list(prev), list(nxt), list(speaker))


def write_item_file(items: Items, path: str | os.PathLike) -> None:
    rows = zip(items.files, items.onset, items.offset, items.phone, items.prev, items.next, items.speaker)
    write_text(path, "#file onset offset #phone prev-phone next-phone speaker\n"
               + "".join(f"{f} {a:.4f} {b:.4f} {p} {q} {n} {s}\n" for f, a, b, p, q, n, s in rows))


def _normalise(x: np.ndarray) -> np.ndarray:
    """Unit-length frames, plus one coordinate that puts an all-zero frame at the largest
    angle from every other frame (and at 0 from another zero frame)."""
    x = np.asarray(x, dtype=np.float32)
    norm2 = (x * x).sum(axis=1, keepdims=True)
    zero = norm2[:, 0] == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        y = x / np.sqrt(norm2)
    y[zero] = 1 / math.sqrt(x.shape[1])
    border = np.full((len(x), 1), 1e-12, dtype=np.float32)
    border[zero] = -2e12
    return np.concatenate([y, border], axis=1)


@dataclass
class _Tokens:
    data: np.ndarray  # every token's frames, one after the other, normalised
    start: np.ndarray
    length: np.ndarray
    context: np.ndarray  # ids
    phone: np.ndarray
    speaker: np.ndarray


def _tokens(features: Mapping[str, np.ndarray], items: Items, rate: float) -> _Tokens:
    keep, chunks, starts, lengths, total = [], [], [], [], 0
    by_file = defaultdict(list)
    for i, f in enumerate(items.files):
        by_file[f].append(i)
    for f, rows in by_file.items():
        if f not in features:
            continue
        bad = np.flatnonzero(~np.isfinite(np.asarray(features[f])).all(axis=1))
        if len(bad):
            raise HubertkitError(f"the features of {f} hold NaN or infinite values ({len(bad)} of {len(features[f])} "
                                 f"frames, the first at frame {bad[0]}): ABX of such features means nothing; "
                                 "dump them again from a sound model")
        feats = _normalise(features[f])
        for i in rows:
            a = max(0, math.ceil(rate * items.onset[i] - 0.5))
            b = min(len(feats), math.floor(rate * items.offset[i] - 0.5))
            if a >= len(feats) or b <= a:
                continue
            keep.append(i)
            chunks.append(feats[a:b])
            starts.append(total)
            lengths.append(b - a)
            total += b - a
    if not keep:
        raise HubertkitError("no item of the item file falls on the features given (file names or times do not match)")

    def ids(values):
        return np.unique(np.asarray([values[i] for i in keep]), return_inverse=True)[1]

    contexts = [f"{p}+{n}" for p, n in zip(items.prev, items.next)]
    return _Tokens(np.concatenate(chunks), np.array(starts), np.array(lengths), ids(contexts), ids(items.phone),
                   ids(items.speaker))


def dtw_distances(data: np.ndarray, start: np.ndarray, length: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                  budget: int = 1 << 27) -> np.ndarray:
    """Length-normalised DTW distance (angular frame distance) between token ``rows[k]``
    (along the first axis) and token ``cols[k]``, for every k: pairs of equal lengths are
    computed together, and the loops run over frames, not pairs."""
    out = np.empty(len(rows), dtype=np.float32)
    lr, lc = length[rows], length[cols]
    order = np.lexsort((lc, lr))
    edges = np.flatnonzero(np.diff(lr[order]) | np.diff(lc[order])) + 1
    dim = data.shape[1]
    for group in np.split(order, edges):
        n, m = int(lr[group[0]]), int(lc[group[0]])
        step = max(1, budget // (4 * (n * m * 2 + (n + m) * dim)))
        for k in range(0, len(group), step):
            sel = group[k : k + step]
            x = data[start[rows[sel]][:, None] + np.arange(n)]
            y = data[start[cols[sel]][:, None] + np.arange(m)]
            dist = np.arccos(np.clip(np.matmul(x, y.transpose(0, 2, 1)), -1, 1)) / np.float32(np.pi)
            out[sel] = _dtw(dist.astype(np.float32))
    return out


def _dtw(dist: np.ndarray) -> np.ndarray:
    """``dist``: [pairs, n, m] frame distances. The cheapest path's cost over its length;
    the length is found by walking back preferring the diagonal, then left, then up."""
    p, n, m = dist.shape
    cost = np.empty_like(dist)
    cost[:, 0, 0] = dist[:, 0, 0]
    for i in range(1, n):
        cost[:, i, 0] = dist[:, i, 0] + cost[:, i - 1, 0]
    for j in range(1, m):
        cost[:, 0, j] = dist[:, 0, j] + cost[:, 0, j - 1]
    for i in range(1, n):
        above = np.minimum(cost[:, i - 1, 1:], cost[:, i - 1, :-1])  # min of up and diagonal, per column j ≥ 1
        for j in range(1, m):
            cost[:, i, j] = dist[:, i, j] + np.minimum(above[:, j - 1], cost[:, i, j - 1])
    i, j = np.full(p, n - 1), np.full(p, m - 1)
    steps = np.ones(p, dtype=np.int64)
    while True:
        live = np.flatnonzero((i > 0) & (j > 0))
        if not len(live):
            break
        a, b = i[live], j[live]
        up, left, diag = cost[live, a - 1, b], cost[live, a, b - 1], cost[live, a - 1, b - 1]
        go_diag = (diag <= left) & (diag <= up)
        go_left = ~go_diag & (left <= up)
        go_up = ~go_diag & ~go_left
        i[live] = a - (go_diag | go_up)
        j[live] = b - (go_diag | go_left)
        steps[live] += 1
    steps += np.where(i == 0, j, 0) + np.where(j == 0, i, 0)
    return (cost[:, n - 1, m - 1].astype(np.float64) / steps).astype(np.float32)


def _groups(tok: _Tokens):
    """Token indices grouped by (context, speaker, phone), as contiguous runs of one order."""
    order = np.lexsort((tok.phone, tok.speaker, tok.context))
    key = np.stack([tok.context[order], tok.speaker[order], tok.phone[order]], axis=1)
    bounds = np.concatenate([[0], np.flatnonzero((np.diff(key, axis=0) != 0).any(axis=1)) + 1, [len(order)]])
    by_cs: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = defaultdict(list)
    by_cp: dict[tuple[int, int], dict[int, np.ndarray]] = defaultdict(dict)
    for a, b in zip(bounds[:-1], bounds[1:]):
        c, s, p = (int(v) for v in key[a])
        by_cs[(c, s)].append((p, order[a:b]))
        by_cp[(c, p)][s] = order[a:b]
    return by_cs, by_cp


class _Pairs:
    """Ordered token pairs whose distances the scores need, each computed once."""

    def __init__(self, n: int):
        self.n, self.codes = n, []

    def add(self, rows: np.ndarray, cols: np.ndarray) -> int:
        """The pairs (rows[...], cols[...]) of two arrays of token ids (broadcast together);
        returns where their distances will be, in the broadcast shape."""
        self.codes.append(rows.astype(np.int64) * self.n + cols)
        return len(self.codes) - 1

    def solve(self, tok: _Tokens) -> None:
        codes = np.concatenate([c.ravel() for c in self.codes])
        unique, inverse = np.unique(codes, return_inverse=True)
        dist = dtw_distances(tok.data, tok.start, tok.length, unique // self.n, unique % self.n)[inverse]
        cuts = np.cumsum([c.size for c in self.codes])[:-1]
        self.values = [v.reshape(c.shape) for v, c in zip(np.split(dist, cuts), self.codes)]


def abx_error_rates(features: Mapping[str, np.ndarray], items: Items, rate: float,
                    modes: tuple[str, ...] | None = ("within", "across"), max_size_group: int = 10,
                    max_x_across: int = 5, seed: int = 0) -> dict[str, float]:
    """Within- and across-speaker ABX error rates (0..1) of ``features`` (file id →
    ``[frames, dim]`` at ``rate`` frames per second) on ``items``. Each mode in ``modes``
    must have a triplet; ``None``: the modes the items allow (one speaker: within only)."""
    required = modes is not None
    modes = ("within", "across") if modes is None else modes
    unknown = set(modes) - {"within", "across"}
    if unknown:
        raise HubertkitError(f"ABX modes are 'within' and 'across', got {sorted(unknown)}")
    check_abx_options(rate, max_size_group, max_x_across, seed)
    tok = _tokens(features, items, rate)
    by_cs, by_cp = _groups(tok)
    rng = np.random.default_rng(seed)

    def sample(idx: np.ndarray) -> np.ndarray:
        return np.sort(rng.choice(idx, max_size_group, replace=False)) if len(idx) > max_size_group else idx

    cells = {m: [] for m in modes}  # (speaker, phone A, phone B, A, B, X) per cell, X None within speakers
    for (c, s), phones in by_cs.items():
        if len(phones) < 2:
            continue
        for pa, a_idx in phones:
            others = [x for sx, x in by_cp[(c, pa)].items() if sx != s] if "across" in modes else []
            if len(others) > max_x_across:  # X speakers drawn once per A, as the reference does
                others = [others[k] for k in np.sort(rng.choice(len(others), max_x_across, replace=False))]
            for pb, b_idx in phones:
                if pb == pa:
                    continue
                if "within" in modes and len(a_idx) > 1:
                    cells["within"].append((s, pa, pb, sample(a_idx), sample(b_idx), None))
                for x_idx in others:
                    cells["across"].append((s, pa, pb, sample(a_idx), sample(b_idx), sample(x_idx)))
    if not any(cells.values()):
        raise HubertkitError("no ABX triplet: the items need a context shared by two phones of one speaker")
    if required and not cells.get("across", True):
        raise HubertkitError(f"no across-speaker ABX triplet: no phone in a context is spoken by two of the items' "
                             f"{tok.speaker.max() + 1} speaker(s); score within speakers only (--mode within)")
    if required and not cells.get("within", True):
        raise HubertkitError("no within-speaker ABX triplet: no speaker has two tokens of a phone in one context; "
                             "score across speakers only (--mode across)")
    return _mean_errors(cells, tok)


def check_abx_options(rate: float, max_size_group: int, max_x_across: int, seed: int) -> None:
    """The options' ranges, refused before any work with the flag to change."""
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise HubertkitError(f"--rate must be a positive number of frames per second, got {rate}")
    if max_size_group < 2:
        raise HubertkitError(f"--max-size-group must be at least 2 (a within-speaker cell needs two tokens of A), "
                             f"got {max_size_group}")
    if max_x_across < 1:
        raise HubertkitError(f"--max-x-across must be at least 1 (X speakers per cell), got {max_x_across}")
    if seed < 0:
        raise HubertkitError(f"--seed must be a non-negative integer, got {seed}")


def _mean_errors(cells: dict[str, list], tok: _Tokens) -> dict[str, float]:
    """Each mode's error: cells of the same sizes are scored together (their distances
    gathered as one array), then averaged over contexts (and X speakers), speakers and
    phone pairs."""
    pairs, shaped = _Pairs(len(tok.length)), []
    for mode, found in cells.items():
        by_shape = defaultdict(list)
        for k, (_, _, _, a, b, x) in enumerate(found):
            by_shape[(len(a), len(b), 0 if x is None else len(x))].append(k)
        for (na, nb, nx), ks in by_shape.items():
            a = np.stack([found[k][3] for k in ks])
            b = np.stack([found[k][4] for k in ks])
            if mode == "within":  # X runs over A's group, X ≠ A; d(A_i, A_j) once, the earlier token as the DTW's rows
                upper = np.triu_indices(na, 1)
                where = (pairs.add(a[:, upper[0]], a[:, upper[1]]), pairs.add(a[:, :, None], b[:, None, :]))
            else:
                x = np.stack([found[k][5] for k in ks])
                where = (pairs.add(x[:, :, None], a[:, None, :]), pairs.add(x[:, :, None], b[:, None, :]))
            shaped.append((mode, np.array(ks), na, nb, nx, where))
    pairs.solve(tok)
    errors = {mode: np.empty(len(found)) for mode, found in cells.items()}
    for mode, ks, na, nb, nx, (ia, ib) in shaped:
        if mode == "within":
            index = np.zeros((na, na), dtype=np.int64)  # where d(A_i, A_j) is among the upper pairs
            index[np.triu_indices(na, 1)] = np.arange(na * (na - 1) // 2)
            dxa = pairs.values[ia][:, index + index.T][:, :, :, None]  # [cell, X, A, 1]
            dxb = pairs.values[ib][:, :, None, :]  # [cell, X, 1, B]
            off = ~np.eye(na, dtype=bool)[None, :, :, None]
            lt, eq = ((dxa < dxb) & off).sum(axis=(1, 2, 3)), ((dxa == dxb) & off).sum(axis=(1, 2, 3))
            theta = (lt + 0.5 * eq) / (na * (na - 1) * nb)
        else:
            dxa, dxb = pairs.values[ia][:, :, :, None], pairs.values[ib][:, :, None, :]
            theta = ((dxa < dxb).sum(axis=(1, 2, 3)) + 0.5 * (dxa == dxb).sum(axis=(1, 2, 3))) / (nx * na * nb)
        errors[mode][ks] = 1 - theta
    out = {}
    for mode, found in cells.items():
        if not found:
            continue
        per_cell = defaultdict(list)
        for (s, pa, pb, *_), error in zip(found, errors[mode].tolist()):
            per_cell[(s, pa, pb)].append(error)
        per_pair = defaultdict(list)
        for (s, pa, pb), values in per_cell.items():
            per_pair[(pa, pb)].append(sum(values) / len(values))
        out[mode] = float(np.mean([sum(v) / len(v) for v in per_pair.values()]))
    return out
