"""Learning routing rules from executions: plain numpy and scikit-learn, no database, no Dagster.

How a tenant's executions become rules:
  1. micro-clusters: spherical k-means (MiniBatchKMeans on unit vectors) with many small clusters
     (about `micro_cluster_size` requests each), fitted on a bounded sample, so that years of
     history fit in memory;
  2. evidence: for every micro-cluster and system, how that system did there: executions, a
     Wilson lower bound of its success rate, satisfaction, cost, duration;
  3. rules: micro-clusters that share their best system and lie close together are merged
     (average-linkage agglomeration on cosine) into one kind of request; a kind left below
     `min_rule_executions` joins the nearest kind of the same system when similar enough. Outcomes,
     not only text, draw the borders: two phrasings best served by different systems stay apart;
  4. a merged group backed by at least `min_rule_executions` executions becomes a rule, with up to
     `prototypes_per_rule` prototype vectors (a router scores a rule by its best prototype), the
     recommended system and the runners-up, and a confidence in [0, 1].
Which executions are evidence is the reader's to say (`ExecutionBatch.counted`; the database reader
uses routing/evidence.py's one definition): the others still shape the micro-clusters and count as
a rule's support, but their outcomes say nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans, MiniBatchKMeans

# Merging micro-clusters needs "close" on each embedder's own scale: hashed n-grams give lower
# cosines than sentence embeddings for the same paraphrases. Cells only merge when the same system
# served them best. Two levels: cells at least MERGE_SIMILARITY alike make one kind of request; a kind
# left below min_rule_executions then joins the most similar kind of the same system when at least
# RESCUE_SIMILARITY alike, rather than losing its rule (a kind split in two by the micro-clusters).
# Merging everything at the generous level instead loses the kinds a system serves (21 rules
# instead of 91 on the sample world, 0.62 instead of 0.74 agreement with the systems that
# succeeded); merging only at the strict level loses small kinds (CLINC150, hashing: 0.72 instead
# of 0.81). Unknown embedders use the defaults.
MERGE_SIMILARITY = {"hashing": 0.30, "minilm": 0.45, "openai": 0.45}
DEFAULT_MERGE_SIMILARITY = 0.40
RESCUE_SIMILARITY = {"hashing": 0.10, "minilm": 0.25, "openai": 0.25}
DEFAULT_RESCUE_SIMILARITY = 0.25


@dataclass(frozen=True, kw_only=True)
class RecommendationWeights:
    """How a system's evidence in a cluster is scored. Success (through its Wilson lower bound)
    comes first by default; satisfaction, cost and duration break near-ties."""

    success: float = 0.70
    satisfaction: float = 0.15
    cost: float = 0.10
    duration: float = 0.05


@dataclass(frozen=True, kw_only=True)
class LearnerSettings:
    min_rule_executions: int = 50
    micro_cluster_size: int = 12
    max_micro_clusters: int = 2000
    sample_size: int = 60_000
    prototypes_per_rule: int = 4
    merge_similarity: float | None = None  # None: the embedder's default
    rescue_similarity: float | None = None  # None: the embedder's default
    identity_similarity: float = 0.80  # a new cluster is an existing rule when their centroids are this close
    max_alternatives: int = 3
    min_system_executions: int = 3  # below this a system is no candidate in a cluster
    refine_passes: int = 3
    weights: RecommendationWeights = field(default_factory=RecommendationWeights)
    seed: int = 0

    def merge_similarity_for(self, embedder_name: str) -> float:
        if self.merge_similarity is not None:
            return self.merge_similarity
        return MERGE_SIMILARITY.get(embedder_name, DEFAULT_MERGE_SIMILARITY)

    def rescue_similarity_for(self, embedder_name: str) -> float:
        if self.rescue_similarity is not None:
            return self.rescue_similarity
        return RESCUE_SIMILARITY.get(embedder_name, DEFAULT_RESCUE_SIMILARITY)


def wilson_lower_bound(successes: np.ndarray, trials: np.ndarray, z: float = 1.96) -> np.ndarray:
    """Lower bound of the Wilson score interval; 0 where there are no trials."""
    return _wilson(successes, trials, z, -1.0)


def wilson_upper_bound(successes: np.ndarray, trials: np.ndarray, z: float = 1.96) -> np.ndarray:
    """Upper bound of the Wilson score interval; 1 where there are no trials."""
    bound = _wilson(successes, trials, z, 1.0)
    return np.where(np.asarray(trials) > 0, bound, 1.0)


def _wilson(successes: np.ndarray, trials: np.ndarray, z: float, side: float) -> np.ndarray:
    successes = np.asarray(successes, dtype=float)
    trials = np.asarray(trials, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / trials
        denominator = 1 + z * z / trials
        centre = p + z * z / (2 * trials)
        margin = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
        bound = (centre + side * margin) / denominator
    return np.where(trials > 0, np.clip(bound, 0.0, 1.0), 0.0)


def add_at(target: np.ndarray, index: tuple[np.ndarray, ...] | np.ndarray, values: np.ndarray | float = 1.0) -> None:
    """target[index] += values, repeated indices accumulating (what np.add.at does, through one
    bincount: np.add.at was a fifth of the learner's time over a million executions)."""
    flat = np.ravel_multi_index(index if isinstance(index, tuple) else (index,), target.shape)
    weights = np.broadcast_to(np.asarray(values, dtype=float), flat.shape)
    target.reshape(-1)[...] += np.bincount(flat, weights=weights, minlength=target.size).astype(target.dtype)


def add_rows(target: np.ndarray, index: np.ndarray, rows: np.ndarray) -> None:
    """target[index[i]] += rows[i] for every i, repeated indices accumulating: rows sorted by index
    and summed per run with np.add.reduceat."""
    if len(index) == 0:
        return
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    target[ordered[starts]] += np.add.reduceat(rows[order], starts, axis=0)


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Evidence: per (cluster, system) sums, additive so that streamed batches can be accumulated.


@dataclass(kw_only=True)
class Evidence:
    """Sums per cluster (rows) and system (columns)."""

    executions: np.ndarray
    successes: np.ndarray
    satisfaction_sum: np.ndarray
    satisfaction_n: np.ndarray
    cost_sum: np.ndarray
    cost_n: np.ndarray
    duration_sum: np.ndarray
    duration_n: np.ndarray

    @classmethod
    def zeros(cls, clusters: int, systems: int) -> Evidence:
        return cls(**{f.name: np.zeros((clusters, systems)) for f in fields(cls)})

    def add(
        self,
        cluster: np.ndarray,
        system: np.ndarray,
        success: np.ndarray,
        satisfaction: np.ndarray,
        cost: np.ndarray,
        duration: np.ndarray,
        counted: np.ndarray,
    ) -> None:
        """Accumulate executions; `counted` is False for those left out of the evidence."""
        c, s = cluster[counted], system[counted]
        add_at(self.executions, (c, s))
        add_at(self.successes, (c, s), success[counted].astype(float))
        for values, total, n in (
            (satisfaction, self.satisfaction_sum, self.satisfaction_n),
            (cost, self.cost_sum, self.cost_n),
            (duration, self.duration_sum, self.duration_n),
        ):
            known = counted & ~np.isnan(values)
            add_at(total, (cluster[known], system[known]), values[known])
            add_at(n, (cluster[known], system[known]))


@dataclass(frozen=True, kw_only=True)
class SystemRanking:
    order: list[int]  # candidate systems, best first
    scores: np.ndarray
    wilson: np.ndarray


def rank_systems(
    evidence: Evidence, row: int, weights: RecommendationWeights, settings: LearnerSettings
) -> SystemRanking:
    """Systems of one cluster ordered by weighted evidence: Wilson lower bound of the success rate,
    mean satisfaction (1-5 scaled to 0-1), then cost and duration relative to the cluster's worst."""
    n = evidence.executions[row]
    wilson = wilson_lower_bound(evidence.successes[row], n)
    with np.errstate(invalid="ignore", divide="ignore"):
        satisfaction = evidence.satisfaction_sum[row] / evidence.satisfaction_n[row]
        cost = evidence.cost_sum[row] / evidence.cost_n[row]
        duration = evidence.duration_sum[row] / evidence.duration_n[row]
    satisfaction_term = np.where(np.isnan(satisfaction), 0.5, (satisfaction - 1) / 4)
    cost_term = _cheaper_is_better(cost)
    duration_term = _cheaper_is_better(duration)
    scores = (
        weights.success * wilson
        + weights.satisfaction * satisfaction_term
        + weights.cost * cost_term
        + weights.duration * duration_term
    )
    candidates = [int(i) for i in np.flatnonzero(n >= settings.min_system_executions)]
    candidates.sort(key=lambda i: (-scores[i], -wilson[i], i))
    return SystemRanking(order=candidates, scores=scores, wilson=wilson)


def _cheaper_is_better(values: np.ndarray) -> np.ndarray:
    known = ~np.isnan(values)
    if not known.any():
        return np.full(values.shape, 0.5)
    worst = float(np.max(values[known]))
    if worst <= 0:
        return np.where(known, 1.0, 0.5)
    return np.where(known, 1.0 - np.nan_to_num(values) / worst, 0.5)


# ---------------------------------------------------------------------------------------------
# Clustering


def micro_cluster_count(n: int, settings: LearnerSettings) -> int:
    return int(max(1, min(settings.max_micro_clusters, round(n / settings.micro_cluster_size))))


def fit_micro_clusters(sample: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Spherical k-means: k-means on unit vectors, centroids renormalised."""
    k = min(k, len(sample))
    if k <= 1:
        return normalise_rows(sample.mean(axis=0, keepdims=True))
    kmeans = MiniBatchKMeans(
        n_clusters=k,
        random_state=seed,
        batch_size=max(2048, 3 * k),
        n_init=1,
        max_iter=60,
        max_no_improvement=6,
        reassignment_ratio=0.001,
        init="random",  # k-means++ costs more than the whole fit at thousands of clusters
    )
    kmeans.fit(sample)
    return normalise_rows(kmeans.cluster_centers_)


def nearest(vectors: np.ndarray, centroids: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Index of the most similar centroid for every row, and that cosine (rows are unit vectors)."""
    labels = np.empty(len(vectors), dtype=np.int64)
    sims = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        scores = vectors[start : start + chunk] @ centroids.T
        labels[start : start + chunk] = scores.argmax(axis=1)
        sims[start : start + chunk] = scores[np.arange(len(scores)), labels[start : start + chunk]]
    return labels, sims


def group_micro_clusters(centroids: np.ndarray, best_system: np.ndarray, merge_similarity: float) -> np.ndarray:
    """Merge micro-clusters that have the same best system and are close (average linkage on
    cosine). Micro-clusters with no best system (best_system -1) get group -1."""
    groups = np.full(len(centroids), -1, dtype=np.int64)
    next_group = 0
    for system in sorted(set(best_system.tolist()) - {-1}):
        members = np.flatnonzero(best_system == system)
        if len(members) == 1:
            labels = np.zeros(1, dtype=np.int64)
        else:
            agglomeration = AgglomerativeClustering(
                n_clusters=None, metric="cosine", linkage="average", distance_threshold=1.0 - merge_similarity
            )
            labels = agglomeration.fit_predict(centroids[members])
        groups[members] = labels + next_group
        next_group += int(labels.max()) + 1
    return groups


def rescue_small_groups(
    groups: np.ndarray, vector_sums: np.ndarray, members: np.ndarray, min_size: float, similarity: float
) -> np.ndarray:
    """Groups (each of one system's cells, as group_micro_clusters makes them) with fewer than
    `min_size` members join the most similar group of the same system when their centroids are at
    least `similarity` alike, smallest first, until none can. `members` counts the executions each
    cell brings. Returns the new group of every cell."""
    valid = groups >= 0
    if not valid.any():
        return groups
    n = int(groups.max()) + 1
    sums = np.zeros((n, vector_sums.shape[1]))
    add_rows(sums, groups[valid], vector_sums[valid])
    size = np.zeros(n)
    add_at(size, groups[valid], members[valid])
    target = np.arange(n)
    while _rescue_pass(sums, size, target, min_size, similarity):
        pass
    while not np.array_equal(target[target], target):  # follow merges into merged groups
        target = target[target]
    out = groups.copy()
    out[valid] = target[groups[valid]]
    return out


def _rescue_pass(sums: np.ndarray, size: np.ndarray, target: np.ndarray, min_size: float, similarity: float) -> bool:
    """One pass over the small groups, smallest first: each joins its most similar group when alike
    enough (sums and sizes move to it, `target` records where it went). A group is alive while it
    has members. Returns whether any group joined another."""
    merged = False
    for g in sorted(np.flatnonzero((size > 0) & (size < min_size)).tolist(), key=lambda g: (size[g], g)):
        if size[g] == 0 or size[g] >= min_size:  # joined, or grown, earlier in this pass
            continue
        # Groups of one system are numbered apart from other systems' by group_micro_clusters'
        # construction; the caller passes one system's cells at a time.
        candidates = np.flatnonzero(size > 0)
        candidates = candidates[candidates != g]
        if not len(candidates):
            continue
        sims = normalise_rows(sums[candidates]) @ normalise_rows(sums[g : g + 1])[0]
        best = int(np.argmax(sims))
        if sims[best] < similarity:
            continue
        h = int(candidates[best])
        sums[h] += sums[g]
        size[h] += size[g]
        size[g] = 0
        target[g] = h
        merged = True
    return merged


def prototypes_for(
    vector_sums: np.ndarray, member_counts: np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to k prototypes from a group's micro-clusters (their vector sums and sizes): the
    micro-clusters themselves when there are at most k, else a weighted k-means over them."""
    centroids = normalise_rows(vector_sums)
    if len(centroids) <= k:
        return centroids, member_counts.astype(np.int64)
    kmeans = KMeans(n_clusters=k, random_state=seed, n_init=3)
    labels = kmeans.fit_predict(centroids, sample_weight=member_counts)
    sums = np.zeros((k, vector_sums.shape[1]))
    counts = np.zeros(k, dtype=np.int64)
    add_rows(sums, labels, vector_sums)
    add_at(counts, labels, member_counts)
    keep = counts > 0
    return normalise_rows(sums[keep]), counts[keep]


# ---------------------------------------------------------------------------------------------
# Rules


@dataclass(kw_only=True)
class LearnedRule:
    """A rule as the learner sees it, before it is matched to a stored rule. Its rates and
    similarity figures are not kept here: the store recomputes them from the memberships."""

    centroid: np.ndarray
    prototypes: np.ndarray
    prototype_members: np.ndarray
    pattern: str
    recommended: int  # system column
    alternatives: list[int]
    executions: int  # support: every execution of its cells, evidence or not
    wilson: float  # success lower bound of the recommended system
    cohesion: float = 0.0
    margin: float = 1.0
    confidence: float = 0.0


def rule_confidence(executions: int, cohesion: float, margin: float, wilson: float, min_rule_executions: int) -> float:
    """A rule's confidence in [0, 1]: support (executions against the minimum), cohesion (how
    alike its requests are), margin (how far it stands from the tenant's nearest other rule) and
    the success lower bound of its recommended system, combined as a weighted geometric mean so that
    one weak part pulls the whole down."""
    support = executions / (executions + min_rule_executions)
    parts = np.clip(np.array([support, cohesion, margin, wilson]), 1e-6, 1.0)
    weights = np.array([0.25, 0.15, 0.15, 0.45])
    return float(np.clip(np.exp(np.sum(weights * np.log(parts)) / weights.sum()), 0.0, 1.0))


def summarise_group(
    evidence: Evidence, row: int, ranking: SystemRanking, active: np.ndarray
) -> tuple[int, list[int]] | None:
    """Recommended system and alternatives among the active systems, or None if there is none."""
    candidates = [s for s in ranking.order if active[s]]
    if not candidates:
        return None
    recommended, rest = candidates[0], candidates[1:]
    alternatives = [s for s in rest if evidence.successes[row, s] > 0]
    return recommended, alternatives


# A new request joins a rule when it is about as alike as the rule's least typical members: the 5th
# percentile of member similarity, less this tolerance.
FLOOR_TOLERANCE = 0.05


def margins(centroids: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """1 - the cosine to the nearest other rule's centroid, clipped to [0, 1]."""
    pool = centroids if others is None else np.vstack([centroids, others])
    if len(pool) <= 1:
        return np.ones(len(centroids))
    nearest_other = np.empty(len(centroids))
    for start in range(0, len(centroids), 2048):  # bounded memory with thousands of rules
        sims = centroids[start : start + 2048] @ pool.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -1.0
        nearest_other[start : start + len(sims)] = sims.max(axis=1)
    return np.clip(1.0 - nearest_other, 0.0, 1.0)


def match_rules(new_centroids: np.ndarray, old_centroids: np.ndarray, threshold: float) -> dict[int, int]:
    """Greedy one-to-one matching of new clusters to stored rules by centroid cosine, best pairs
    first; only pairs at least `threshold` alike. Returns {new index: old index}."""
    if len(new_centroids) == 0 or len(old_centroids) == 0:
        return {}
    pairs_found, sims_found = [], []
    for start in range(0, len(new_centroids), 2048):  # bounded memory with thousands of rules
        sims = new_centroids[start : start + 2048] @ old_centroids.T
        close = np.argwhere(sims >= threshold)
        sims_found.append(sims[close[:, 0], close[:, 1]])
        close[:, 0] += start
        pairs_found.append(close)
    pairs, pair_sims = np.vstack(pairs_found), np.concatenate(sims_found)
    order = np.argsort(-pair_sims, kind="stable")
    matched: dict[int, int] = {}
    used_old: set[int] = set()
    for new, old in pairs[order]:
        if int(new) in matched or int(old) in used_old:
            continue
        matched[int(new)] = int(old)
        used_old.add(int(old))
    return matched


# ---------------------------------------------------------------------------------------------
# The learner: streamed batches in, rules out. The caller feeds the same executions once per pass
# (evidence, each refinement, measuring), so memory stays bounded by the sample and the batch size,
# whatever the history.


@dataclass(kw_only=True)
class ExecutionBatch:
    ids: list
    vectors: np.ndarray  # unit rows
    system: np.ndarray  # column of the handling system, -1 if unknown
    success: np.ndarray  # bool
    satisfaction: np.ndarray  # float, nan when unrated
    cost: np.ndarray  # float, nan when unknown
    duration: np.ndarray  # float ms, nan when unknown
    counted: np.ndarray  # bool: part of the evidence
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, kw_only=True)
class _Seeds:
    """Seed cells (micro-cluster, system), each with the requests that stand for it and its group
    (its kind of request)."""

    cells: list[tuple[int, int]]
    system: np.ndarray  # each seed's system column
    vectors: np.ndarray  # vector sum of the requests that stand for the seed
    sizes: np.ndarray  # how many requests `vectors` sums
    groups: np.ndarray  # each seed's group, numbered densely


class RuleLearner:
    """Spherical micro-clusters, outcome evidence, merged rules with prototypes.

    The unit that becomes part of a rule is a cell: a micro-cluster and a system. A micro-cluster's
    best system always seeds a cell; another system seeds one too when it served enough of the
    micro-cluster's requests and its success rate is statistically as good (its Wilson upper bound
    reaches the best's lower bound): the micro-cluster then holds two kinds of request that text
    alone could not tell apart, and each goes with the system that served it. Cells that seed
    nothing (a system that did badly there) join the best system's cell, as evidence against it.
    Seed cells of one system that lie close together merge into one rule.
    """

    def __init__(self, n_systems: int, embedder_name: str, settings: LearnerSettings) -> None:
        self.n_systems = max(n_systems, 1)
        self.embedder_name = embedder_name
        self.settings = settings
        self.micro: np.ndarray | None = None
        self.rules: list[LearnedRule] = []

    # pass 0: a bounded sample fixes the micro-clusters
    def fit(self, sample: np.ndarray, total_executions: int) -> None:
        k = micro_cluster_count(total_executions, self.settings)
        self.micro = fit_micro_clusters(sample, k, self.settings.seed)
        k = len(self.micro)
        self._evidence = Evidence.zeros(k, self.n_systems)
        self._members = np.zeros((k, self.n_systems + 1), dtype=np.int64)  # last column: no system
        self._sums = np.zeros((k, self.micro.shape[1]))
        # Vector sums of the successful executions per cell: a rule's prototypes are drawn from the
        # requests its system actually served.
        self._served: dict[int, np.ndarray] = {}
        self._served_n: dict[int, int] = {}
        self._medoid_sim = np.full(k, -2.0)
        self._medoid_text = [""] * k

    # pass 1: evidence, vector sums and a representative request per micro-cluster
    def accumulate(self, batch: ExecutionBatch) -> None:
        assert self.micro is not None, "fit() first"
        labels, sims = nearest(batch.vectors, self.micro)
        known = batch.system >= 0
        system = np.where(known, batch.system, 0)
        self._evidence.add(
            labels, system, batch.success, batch.satisfaction, batch.cost, batch.duration, batch.counted & known
        )
        add_at(self._members, (labels, np.where(known, batch.system, self.n_systems)))
        add_rows(self._sums, labels, batch.vectors)
        self._add_served(batch, labels, served=known & batch.success & batch.counted)
        self._update_medoids(batch, labels, sims)

    def _add_served(self, batch: ExecutionBatch, labels: np.ndarray, served: np.ndarray) -> None:
        """Vector sums and counts of the requests each cell's system served (succeeded, as evidence)."""
        if not served.any():
            return
        cells = labels[served] * self.n_systems + batch.system[served]
        unique, inverse = np.unique(cells, return_inverse=True)
        sums = np.zeros((len(unique), batch.vectors.shape[1]))
        add_rows(sums, inverse, batch.vectors[served])
        counts = np.bincount(inverse, minlength=len(unique))
        for j, cell in enumerate(unique.tolist()):
            if cell in self._served:
                self._served[cell] += sums[j]
                self._served_n[cell] += int(counts[j])
            else:
                self._served[cell] = sums[j].copy()
                self._served_n[cell] = int(counts[j])

    def _update_medoids(self, batch: ExecutionBatch, labels: np.ndarray, sims: np.ndarray) -> None:
        """Keep, per micro-cluster, the text of the request nearest its centroid so far."""
        order = np.lexsort((-sims, labels))
        first = np.ones(len(order), dtype=bool)
        first[1:] = labels[order][1:] != labels[order][:-1]
        for i in order[first]:
            label = int(labels[i])
            if sims[i] > self._medoid_sim[label]:
                self._medoid_sim[label] = float(sims[i])
                self._medoid_text[label] = batch.texts[i]

    def _seed_cells(self, active_systems: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Best system per micro-cluster (-1: none) and the seed cells (micro-cluster, system)."""
        settings = self.settings
        k = len(self._sums)
        best = np.full(k, -1, dtype=np.int64)
        seeds: list[tuple[int, int]] = []
        # A micro-cluster holds a dozen requests: any system that served one is a candidate there;
        # the minimum number of executions per system applies to the merged rule.
        micro_settings = replace(settings, min_system_executions=1)
        for m in np.flatnonzero(self._members.sum(axis=1) > 0):
            ranking = rank_systems(self._evidence, int(m), settings.weights, micro_settings)
            candidates = [s for s in ranking.order if active_systems[s]]
            if not candidates:
                continue
            best[m] = candidates[0]
            seeds.append((int(m), candidates[0]))
            floor = ranking.wilson[candidates[0]]
            upper = wilson_upper_bound(self._evidence.successes[m], self._evidence.executions[m])
            for s in candidates[1:]:
                if self._evidence.successes[m, s] >= settings.min_system_executions and upper[s] >= floor:
                    seeds.append((int(m), s))
        return best, seeds

    def build(self, active_systems: np.ndarray) -> list[LearnedRule]:
        """Merge seed cells into rules; groups below min_rule_executions make no rule."""
        best, cells = self._seed_cells(active_systems)
        seeds = self._seeds(cells, best)
        cell_group = self._cell_groups(seeds, best)
        n_groups = int(seeds.groups.max()) + 1 if len(cells) else 0
        evidence, members = self._group_evidence(cell_group, n_groups)
        self.rules = []
        group_rule = np.full(n_groups, -1, dtype=np.int64)
        for g in range(n_groups):
            rule = self._rule_of_group(g, seeds, evidence, int(members[g]), active_systems)
            if rule is not None:
                group_rule[g] = len(self.rules)
                self.rules.append(rule)
        # The rule of every cell (-1: none), for measure().
        self._cell_rule = np.where(cell_group >= 0, group_rule[np.maximum(cell_group, 0)], -1)
        self._cohesion_sum = np.zeros(len(self.rules))
        self._measured = np.zeros(len(self.rules))
        self._index_prototypes()
        return self.rules

    def _seeds(self, cells: list[tuple[int, int]], best: np.ndarray) -> _Seeds:
        """The seed cells with their vectors, grouped into kinds of request."""
        vectors, sizes = self._seed_vectors(cells)
        system = np.array([s for _, s in cells], dtype=np.int64)
        groups = self._group_seeds(system, vectors, self._seed_members(cells, best))
        return _Seeds(cells=cells, system=system, vectors=vectors, sizes=sizes, groups=groups)

    def _seed_vectors(self, cells: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Each seed's vector sum and how many requests it sums: the requests its system served in
        the micro-cluster, else (it served none there) the whole micro-cluster."""
        vectors = np.empty((len(cells), self._sums.shape[1]))
        sizes = np.empty(len(cells), dtype=np.int64)
        for j, (m, s) in enumerate(cells):
            cell = m * self.n_systems + s
            if cell in self._served:
                vectors[j], sizes[j] = self._served[cell], self._served_n[cell]
            else:
                vectors[j], sizes[j] = self._sums[m], self._members[m].sum()
        return vectors, sizes

    def _seed_members(self, cells: list[tuple[int, int]], best: np.ndarray) -> np.ndarray:
        """Executions each seed brings to its group: its own cell's, and for a micro-cluster's best
        system also the cells that seed nothing (they join the best's group, as evidence)."""
        seeded = np.zeros(self._members.shape, dtype=bool)
        for m, s in cells:
            seeded[m, s] = True
        unseeded = (self._members * ~seeded).sum(axis=1)
        return np.array([self._members[m, s] + (unseeded[m] if s == best[m] else 0) for m, s in cells], dtype=float)

    def _group_seeds(self, system: np.ndarray, vectors: np.ndarray, members: np.ndarray) -> np.ndarray:
        """Group of every seed, numbered densely: seeds of one system merge at the strict similarity,
        then groups below min_rule_executions (counting the `members` each seed brings) join their
        system's nearest group at the rescue similarity."""
        settings = self.settings
        unit = normalise_rows(vectors) if len(vectors) else vectors
        groups = group_micro_clusters(unit, system, settings.merge_similarity_for(self.embedder_name))
        for one_system in np.unique(system).tolist():
            own = np.flatnonzero(system == one_system)
            first = groups[own].min()
            rescued = rescue_small_groups(
                groups[own] - first,
                vectors[own],
                members[own],
                settings.min_rule_executions,
                settings.rescue_similarity_for(self.embedder_name),
            )
            groups[own] = rescued + first
        if len(vectors):
            groups = np.unique(groups, return_inverse=True)[1].astype(np.int64)
        return groups

    def _cell_groups(self, seeds: _Seeds, best: np.ndarray) -> np.ndarray:
        """Group of every cell (micro-cluster, system or the no-system column), -1 for none: a seed's
        own group, else the group of its micro-cluster's best system's seed."""
        cell_group = np.full((len(self._sums), self.n_systems + 1), -1, dtype=np.int64)
        seed_index = {cell: j for j, cell in enumerate(seeds.cells)}
        for m in np.flatnonzero(best >= 0):
            cell_group[m, :] = seeds.groups[seed_index[(int(m), int(best[m]))]]
        for (m, s), g in zip(seeds.cells, seeds.groups, strict=True):
            cell_group[m, s] = g
        return cell_group

    def _group_evidence(self, cell_group: np.ndarray, n_groups: int) -> tuple[Evidence, np.ndarray]:
        """The cells' evidence summed per group and system, and every group's executions."""
        evidence = Evidence.zeros(n_groups, self.n_systems)
        group = cell_group[:, : self.n_systems].ravel()
        keep = group >= 0
        system = np.tile(np.arange(self.n_systems), len(self._sums))[keep]
        for f in fields(Evidence):
            add_at(getattr(evidence, f.name), (group[keep], system), getattr(self._evidence, f.name).ravel()[keep])
        members = np.zeros(n_groups, dtype=np.int64)
        every_cell = cell_group.ravel()
        add_at(members, every_cell[every_cell >= 0], self._members.ravel()[every_cell >= 0])
        return evidence, members

    def _rule_of_group(
        self, g: int, seeds: _Seeds, evidence: Evidence, members: int, active_systems: np.ndarray
    ) -> LearnedRule | None:
        """Group g as a rule, or None: too few executions, or no active system to recommend."""
        settings = self.settings
        if members < settings.min_rule_executions:
            return None
        ranking = rank_systems(evidence, g, settings.weights, settings)
        summary = summarise_group(evidence, g, ranking, active_systems)
        if summary is None:
            return None
        recommended, alternatives = summary
        in_group = np.flatnonzero(seeds.groups == g)
        prototypes, prototype_members = prototypes_for(
            seeds.vectors[in_group], seeds.sizes[in_group], settings.prototypes_per_rule, settings.seed
        )
        centroid = normalise_rows(seeds.vectors[in_group].sum(axis=0, keepdims=True))[0]
        micro_ids = np.array([seeds.cells[j][0] for j in in_group])
        medoid = micro_ids[np.argmax(self.micro[micro_ids] @ centroid)]
        return LearnedRule(
            centroid=centroid,
            prototypes=prototypes,
            prototype_members=prototype_members,
            pattern=self._medoid_text[int(medoid)],
            recommended=recommended,
            alternatives=alternatives[: settings.max_alternatives],
            executions=members,
            wilson=float(ranking.wilson[recommended]),
        )

    def _index_prototypes(self) -> None:
        """Every rule's prototypes stacked (rules in order, each rule's rows contiguous), plus two
        views that keep the passes linear in the number of rules: prototypes per system (refine
        compares a request with its own system's prototypes only) and a padded (rule, prototype,
        dimension) block (measure compares a request with its own rule's prototypes only)."""
        rules = self.rules
        dim = self.micro.shape[1] if self.micro is not None else 1
        counts = np.array([len(r.prototypes) for r in rules], dtype=np.int64)
        self._prototype_offsets = np.concatenate([[0], np.cumsum(counts)])
        self._prototype_matrix = (
            np.vstack([r.prototypes for r in rules]).astype(np.float32) if rules else np.zeros((0, dim), np.float32)
        )
        self._prototype_rule = np.repeat(np.arange(len(rules)), counts)
        self._prototype_system = np.array([rules[r].recommended for r in self._prototype_rule], dtype=np.int64)
        self._system_prototypes = {
            int(s): np.flatnonzero(self._prototype_system == s) for s in np.unique(self._prototype_system)
        }
        width = int(counts.max()) if len(counts) else 1
        self._rule_block = np.zeros((len(rules), width, dim), dtype=np.float32)
        self._rule_block_valid = np.zeros((len(rules), width), dtype=bool)
        for i, rule in enumerate(rules):
            self._rule_block[i, : len(rule.prototypes)] = rule.prototypes
            self._rule_block_valid[i, : len(rule.prototypes)] = True
        self._refined_sums = np.zeros(self._prototype_matrix.shape, dtype=np.float64)
        self._refined_n = np.zeros(len(self._prototype_matrix), dtype=np.int64)

    def apply_refinement(self) -> None:
        for i, rule in enumerate(self.rules):
            own = np.arange(self._prototype_offsets[i], self._prototype_offsets[i + 1])
            won = own[self._refined_n[own] > 0]
            if len(won):
                rule.prototypes = normalise_rows(self._refined_sums[won])
                rule.prototype_members = self._refined_n[won]
        self._index_prototypes()

    # pass 2: which rule each execution belongs to, and how alike it is to the rule's prototypes
    def measure(self, batch: ExecutionBatch) -> tuple[np.ndarray, np.ndarray]:
        """Rule index (-1: none) and similarity to the rule's best prototype, per execution."""
        assert self.micro is not None
        micro, _ = nearest(batch.vectors, self.micro)
        column = np.where(batch.system >= 0, batch.system, self.n_systems)
        rule = self._cell_rule[micro, column]
        sims = np.zeros(len(batch), dtype=np.float32)
        member = rule >= 0
        if member.any():
            sims[member] = self._best_own_prototype(batch.vectors[member], rule[member])
            add_at(self._cohesion_sum, rule[member], sims[member])
            add_at(self._measured, rule[member])
        return rule, sims

    def _best_own_prototype(self, vectors: np.ndarray, rule: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Similarity of each vector to the best prototype of its own rule."""
        out = np.empty(len(vectors), dtype=np.float32)
        for start in range(0, len(vectors), chunk):
            owned = rule[start : start + chunk]
            scores = np.einsum("nd,npd->np", vectors[start : start + chunk], self._rule_block[owned])
            scores[~self._rule_block_valid[owned]] = -2.0
            out[start : start + chunk] = scores.max(axis=1)
        return out

    def refine(self, batch: ExecutionBatch) -> None:
        """A refinement pass over the prototypes (a Lloyd step per system): every request a system
        served goes to the nearest prototype of a rule recommending that system; apply_refinement()
        then moves prototypes to their new means. Requests that landed in a micro-cluster of
        another kind are won back by their own rule."""
        served = batch.success & batch.counted & np.isin(batch.system, self._prototype_system)
        if not served.any() or not len(self._prototype_matrix):
            return
        vectors, systems = batch.vectors[served], batch.system[served]
        nearest_prototype = np.empty(len(vectors), dtype=np.int64)
        for system in np.unique(systems).tolist():
            rows = np.flatnonzero(systems == system)
            own = self._system_prototypes[system]
            nearest_prototype[rows] = own[(vectors[rows] @ self._prototype_matrix[own].T).argmax(axis=1)]
        add_rows(self._refined_sums, nearest_prototype, vectors)
        add_at(self._refined_n, nearest_prototype)

    def finish(self) -> list[LearnedRule]:
        """Cohesion, margins and confidence, once every execution has been measured."""
        if not self.rules:
            return []
        rule_margins = margins(np.vstack([r.centroid for r in self.rules]))
        for i, rule in enumerate(self.rules):
            measured = self._measured[i]
            rule.cohesion = float(self._cohesion_sum[i] / measured) if measured else 0.0
            rule.margin = float(rule_margins[i])
            rule.confidence = rule_confidence(
                rule.executions, max(rule.cohesion, 0.0), rule.margin, rule.wilson, self.settings.min_rule_executions
            )
        return self.rules
