"""Baselines scored by the same evaluator as the fusion model.

Every baseline has `fit(train_csr, features) -> self` and `score_users(user_idx) -> (b, n_items)`,
the interface of `fusionrec.models.recommender.Recommender`, so the evaluator ranks them all the
same way. Id-only: MostPop, ItemKNN, EASE, BPR-MF, LightGCN. Content: VBPR (its content terms
score items never seen in training) and content-kNN. `make_baseline(name, **params)` builds one
by the names used in `EvaluateConfig.baselines`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from fusionrec.models.ease import MAX_EASE_ITEMS

if TYPE_CHECKING:
    import torch

    from fusionrec.features.store import FeatureMatrix


class Baseline:
    """Common scoring: `score_users` is X_u @ S for item-item models, U_u @ V^T for factor models."""

    name = "baseline"
    needs_features = False
    max_items: int | None = None  # larger catalogues cannot be fitted (a dense n x n matrix); None = any size

    def __init__(self) -> None:
        self.user_factors: np.ndarray | None = None  # (n_users, d)
        self.item_factors: np.ndarray | None = None  # (n_items, d)
        self.history: sp.csr_matrix | None = None  # (n_users, n_items), item-item models
        self.similarity: np.ndarray | sp.csr_matrix | None = None  # (n_items, n_items)

    def fit(self, train: sp.csr_matrix, features: Mapping[str, FeatureMatrix] | None = None) -> Baseline:
        raise NotImplementedError

    @property
    def n_items(self) -> int:
        if self.item_factors is not None:
            return int(self.item_factors.shape[0])
        if self.history is None:
            raise RuntimeError(f"{self.name}: call fit() before scoring")
        return int(self.history.shape[1])

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores of every item for the given users: (b,) -> (b, n_items) float32."""
        user_idx = np.asarray(user_idx, dtype=np.int64)
        if self.item_factors is not None and self.user_factors is not None:
            return np.asarray(self.user_factors[user_idx] @ self.item_factors.T, dtype=np.float32)
        if self.history is None or self.similarity is None:
            raise RuntimeError(f"{self.name}: call fit() before scoring")
        scores = self.history[user_idx] @ self.similarity  # (b, n) x (n, n) -> (b, n)
        return np.asarray(scores.toarray() if sp.issparse(scores) else scores, dtype=np.float32)


def _binary(train: sp.csr_matrix) -> sp.csr_matrix:
    x = sp.csr_matrix(train, dtype=np.float32, copy=True)
    x.data[:] = 1.0
    x.eliminate_zeros()
    return x


class MostPop(Baseline):
    """Every user gets the items with the most training interactions."""

    name = "mostpop"

    def fit(self, train: sp.csr_matrix, features: Mapping[str, FeatureMatrix] | None = None) -> MostPop:
        x = _binary(train)
        self.user_factors = np.ones((x.shape[0], 1), dtype=np.float32)
        self.item_factors = np.asarray(x.sum(axis=0), dtype=np.float32).reshape(-1, 1)
        return self


class ItemKNN(Baseline):
    """Item-based kNN: cosine similarity of item columns, the k nearest neighbours of each item kept."""

    name = "itemknn"
    max_items = MAX_EASE_ITEMS  # the co-occurrence matrix is dense

    def __init__(self, k: int = 100, shrink: float = 0.0) -> None:
        super().__init__()
        self.k, self.shrink = int(k), float(shrink)

    def fit(self, train: sp.csr_matrix, features: Mapping[str, FeatureMatrix] | None = None) -> ItemKNN:
        x = _binary(train)
        gram = np.asarray((x.T @ x).toarray(), dtype=np.float32)  # (n, n) co-occurrence counts
        norms = np.sqrt(np.diag(gram))
        sim = gram / (np.outer(norms, norms) + self.shrink + 1e-9)
        np.fill_diagonal(sim, 0.0)
        self.history, self.similarity = x, _keep_top_k_rows(sim, self.k).T.tocsr()
        return self


def _keep_top_k_rows(sim: np.ndarray, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of each row (the neighbours of that item), as a sparse matrix."""
    n = sim.shape[0]
    k = min(k, n - 1) if n > 1 else 0
    if k <= 0:
        return sp.csr_matrix(sim.shape, dtype=np.float32)
    cols = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (n, k)
    rows = np.repeat(np.arange(n), k)
    vals = sim[rows, cols.ravel()]
    return sp.csr_matrix((vals, (rows, cols.ravel())), shape=sim.shape, dtype=np.float32)


class EASE(Baseline):
    """EASE (Steck 2019), the closed-form item-item model of `fusionrec.models.ease`."""

    name = "ease"
    max_items = MAX_EASE_ITEMS

    def __init__(self, lam: float = 300.0) -> None:
        super().__init__()
        self.lam = float(lam)

    def fit(self, train: sp.csr_matrix, features: Mapping[str, FeatureMatrix] | None = None) -> EASE:
        from fusionrec.models.ease import ease_weights

        x = _binary(train)
        self.history, self.similarity = x, ease_weights(x, self.lam)
        return self


class ContentKNN(Baseline):
    """User profile = mean of the content vectors of the history; score = cosine to each item."""

    name = "content-knn"
    needs_features = True

    def __init__(self, modalities: tuple[str, ...] | list[str] | None = None) -> None:
        super().__init__()
        self.modalities = modalities

    def fit(self, train: sp.csr_matrix, features: Mapping[str, FeatureMatrix] | None = None) -> ContentKNN:
        content = content_matrix(features, self.modalities, self.name)  # (n_items, D), unit rows
        x = _binary(train)
        counts = np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)
        profiles = np.asarray(x @ content) / counts[:, None]  # (n_users, n) x (n, D) -> (n_users, D)
        profiles /= np.linalg.norm(profiles, axis=1, keepdims=True) + 1e-9
        self.user_factors, self.item_factors = profiles.astype(np.float32), content
        return self


def content_matrix(
    features: Mapping[str, FeatureMatrix] | None, modalities: tuple[str, ...] | list[str] | None, who: str
) -> np.ndarray:
    """Concatenate the chosen feature matrices, each block L2-normalised and weighted 1/sqrt(m).

    A masked (missing) row stays zero, so it adds nothing rather than pretending to be data.
    Args:
        features: from `fusionrec.features.store.load_features`, keyed e.g. "text:minilm".
        modalities: keys or modality names ("text", "image") to use; None = all.
    Returns:
        (n_items, D) float32 whose non-empty rows have unit norm.
    """
    if not features:
        raise ValueError(f"{who} needs item features: pass the featurize output (--features)")
    keys = [k for k, f in features.items() if modalities is None or k in modalities or f.modality in modalities]
    if not keys:
        raise ValueError(f"{who}: none of the features {sorted(features)} matches {list(modalities or [])}")
    blocks = []
    for key in keys:
        values = np.asarray(features[key].values, dtype=np.float32)
        values = values / (np.linalg.norm(values, axis=1, keepdims=True) + 1e-9)
        values[~np.asarray(features[key].mask, dtype=bool)] = 0.0
        blocks.append(values / float(np.sqrt(len(keys))))
    return np.concatenate(blocks, axis=1).astype(np.float32)


class _BPRModel(Baseline):
    """Shared BPR training (Adam on sampled (user, positive, negative) triples) of the factor models."""

    def __init__(self, dim: int = 64, epochs: int = 100, batch_size: int = 8192, lr: float = 1e-2,
                 reg: float = 5e-3, seed: int = 2026, threads: int = 1, optimizer: str = "adam",
                 budget_s: float = 0.0) -> None:
        super().__init__()
        self.budget_s = float(budget_s)  # training stops at the first step past this many seconds (0 = none)
        self.epochs_run: float | None = None  # after fit: epochs trained, a fraction when the budget cut it
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"{self.name}: optimizer must be 'adam' or 'sgd', not {optimizer!r}")
        self.optimizer = optimizer  # sgd: lr is per triple (loss summed over the batch), as in Rendle et al.
        self.threads = int(threads)  # one thread: small dense ops are slower with more on a busy CPU
        self.dim, self.epochs, self.batch_size = int(dim), int(epochs), int(batch_size)
        self.lr, self.reg, self.seed = float(lr), float(reg), int(seed)

    def fit(self, train: sp.csr_matrix, features: Mapping[str, FeatureMatrix] | None = None) -> _BPRModel:
        import torch

        torch.manual_seed(self.seed)
        x = _binary(train)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            module = self._module(x, features)
            _train_bpr(module, x, self)
            with torch.no_grad():
                users, items = module.export()  # type: ignore[operator]
        finally:
            torch.set_num_threads(threads)
        self.user_factors, self.item_factors = users.numpy(), items.numpy()
        return self

    def _module(self, x: sp.csr_matrix, features: Mapping[str, FeatureMatrix] | None) -> torch.nn.Module:
        raise NotImplementedError


def _train_bpr(module: torch.nn.Module, x: sp.csr_matrix, hp: _BPRModel) -> None:
    """Minimise -log sigmoid(x_ui - x_uj) + reg * L2; negatives uniform over items seen in training.

    With `hp.budget_s`, training stops at the first step past the budget; `hp.epochs_run` says how
    far it got (at 10M interactions one LightGCN epoch takes about 4 hours on 2 cores).
    """
    import torch

    coo = x.tocoo()
    users, items = torch.as_tensor(coo.row, dtype=torch.long), torch.as_tensor(coo.col, dtype=torch.long)
    pool = torch.as_tensor(np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() > 0), dtype=torch.long)
    known = (users * x.shape[1] + items).sort().values  # (u, i) keys: a "negative" the user has is dropped
    gen = torch.Generator().manual_seed(hp.seed)
    if hp.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(module.parameters(), lr=hp.lr)
    else:
        opt = torch.optim.Adam(module.parameters(), lr=hp.lr)
    began, steps = time.monotonic(), max(-(-len(users) // hp.batch_size), 1)
    for epoch in range(hp.epochs):
        order = torch.randperm(len(users), generator=gen)
        for step, start in enumerate(range(0, len(order), hp.batch_size)):
            if hp.budget_s > 0 and time.monotonic() - began > hp.budget_s:
                hp.epochs_run = epoch + step / steps
                return
            b = order[start : start + hp.batch_size]
            neg = pool[torch.randint(len(pool), (len(b),), generator=gen)]
            key = users[b] * x.shape[1] + neg
            real = known[torch.searchsorted(known, key).clamp(max=len(known) - 1)] != key  # (B,) bool
            pos_score, neg_score, l2 = module(users[b], items[b], neg)  # (B,), (B,), ()
            ranking = -(torch.nn.functional.logsigmoid(pos_score - neg_score) * real).sum() / len(b)
            scale = float(len(b)) if hp.optimizer == "sgd" else 1.0  # sgd: summed, not averaged
            loss = scale * (ranking + hp.reg * l2)
            opt.zero_grad()
            loss.backward()
            opt.step()
    hp.epochs_run = float(hp.epochs)


def _triple_scores(u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (u * i).sum(-1), (u * j).sum(-1)  # (B, d) . (B, d) -> (B,)


class BPRMF(_BPRModel):
    """Matrix factorisation with item bias, trained with BPR (Rendle et al. 2009)."""

    name = "bpr-mf"

    def _module(self, x: sp.csr_matrix, features: Mapping[str, FeatureMatrix] | None) -> torch.nn.Module:
        import torch

        class MF(torch.nn.Module):
            def __init__(self, n_users: int, n_items: int, dim: int) -> None:
                super().__init__()
                self.user = torch.nn.Parameter(torch.randn(n_users, dim) * 0.1)
                self.item = torch.nn.Parameter(torch.randn(n_items, dim) * 0.1)
                self.bias = torch.nn.Parameter(torch.zeros(n_items))

            def forward(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, ...]:
                pu, qi, qj = self.user[u], self.item[i], self.item[j]
                pos, neg = _triple_scores(pu, qi, qj)
                l2 = (pu.square().sum() + qi.square().sum() + qj.square().sum()) / len(u)
                return pos + self.bias[i], neg + self.bias[j], l2

            def export(self) -> tuple[torch.Tensor, torch.Tensor]:
                ones = torch.ones(len(self.user), 1)
                return torch.cat([self.user, ones], 1), torch.cat([self.item, self.bias[:, None]], 1)

        return MF(x.shape[0], x.shape[1], self.dim)


class LightGCN(_BPRModel):
    """LightGCN (He et al. 2020), id only: mean of 0..L propagations on the normalised user-item graph."""

    name = "lightgcn"

    def __init__(self, n_layers: int = 2, **kw: Any) -> None:
        kw.setdefault("reg", 1e-4)  # on the ego embeddings, which propagation already smooths
        super().__init__(**kw)
        self.n_layers = int(n_layers)

    def _module(self, x: sp.csr_matrix, features: Mapping[str, FeatureMatrix] | None) -> torch.nn.Module:
        import torch

        n_users, n_items = x.shape
        adj = sp.bmat([[None, x], [x.T, None]]).tocsr()  # (U+I, U+I) bipartite graph
        deg = np.asarray(adj.sum(axis=1)).ravel()
        d = sp.diags(np.where(deg > 0, deg, 1.0) ** -0.5)
        norm = (d @ adj @ d).tocoo()
        index = torch.as_tensor(np.vstack([norm.row, norm.col]), dtype=torch.long)
        graph = torch.sparse_coo_tensor(index, torch.as_tensor(norm.data, dtype=torch.float32), norm.shape,
                                        check_invariants=False).coalesce()
        layers, dim = self.n_layers, self.dim

        class GCN(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = torch.nn.Parameter(torch.randn(n_users + n_items, dim) * 0.1)

            def propagate(self) -> torch.Tensor:
                out, h = self.emb, self.emb
                for _ in range(layers):
                    h = torch.sparse.mm(graph, h)  # (U+I, U+I) x (U+I, d) -> (U+I, d)
                    out = out + h
                return out / (layers + 1)

            def forward(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, ...]:
                e = self.propagate()
                pos, neg = _triple_scores(e[u], e[n_users + i], e[n_users + j])
                ego = self.emb[u], self.emb[n_users + i], self.emb[n_users + j]
                return pos, neg, sum((t.square().sum() for t in ego), torch.zeros(())) / len(u)

            def export(self) -> tuple[torch.Tensor, torch.Tensor]:
                e = self.propagate()
                return e[:n_users], e[n_users:]

        return GCN()


class VBPR(_BPRModel):
    """VBPR (He & McAuley 2016) on any content features: x_ui = b_i + g_u.g_i + t_u.(E f_i) + beta.f_i.

    Items never seen in training keep g_i = b_i = 0 (they are never sampled), so they are scored by
    the content terms alone: this is what lets VBPR rank cold items.
    """

    name = "vbpr"
    needs_features = True

    def __init__(self, content_dim: int | None = None, modalities: list[str] | None = None,
                 content_reg: float | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.content_reg = self.reg if content_reg is None else float(content_reg)  # L2 of E f_i, like g_i
        self.content_dim = max(self.dim // 4, 1) if content_dim is None else int(content_dim)  # rest: id factors
        if not 0 < self.content_dim < self.dim:
            raise ValueError(f"vbpr: content_dim must be between 1 and dim - 1 = {self.dim - 1}")
        self.modalities = modalities

    def _module(self, x: sp.csr_matrix, features: Mapping[str, FeatureMatrix] | None) -> torch.nn.Module:
        import torch

        feats = torch.as_tensor(content_matrix(features, self.modalities, self.name))  # (n_items, D)
        n_users, n_items = x.shape
        dim, cdim = self.dim - self.content_dim, self.content_dim
        content_w = self.content_reg / self.reg if self.reg > 0 else 0.0  # l2 is multiplied by reg later

        class Visual(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.gu = torch.nn.Parameter(torch.randn(n_users, dim) * 0.1)
                self.gi = torch.nn.Parameter(torch.zeros(n_items, dim).normal_(0, 0.1))
                self.tu = torch.nn.Parameter(torch.randn(n_users, cdim) * 0.1)
                self.proj = torch.nn.Linear(feats.shape[1], cdim, bias=False)  # E: (D -> cdim)
                self.beta = torch.nn.Linear(feats.shape[1], 1, bias=False)  # content bias beta'
                self.bias = torch.nn.Parameter(torch.zeros(n_items))

            def forward(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, ...]:
                proj, beta = self.proj(feats), self.beta(feats).squeeze(-1)  # (n_items, cdim), (n_items,):
                # projecting the catalogue once is cheaper than projecting 2B sampled rows
                pos, neg = (self.bias[t] + beta[t] + (self.gu[u] * self.gi[t]).sum(-1)
                            + (self.tu[u] * proj[t]).sum(-1) for t in (i, j))
                params = (self.gu[u], self.tu[u], self.gi[i], self.gi[j])
                l2 = sum((p.square().sum() for p in params), torch.zeros(()))
                l2 = l2 + content_w * (proj[i].square().sum() + proj[j].square().sum())
                return pos, neg, l2 / len(u)

            def export(self) -> tuple[torch.Tensor, torch.Tensor]:
                seen = torch.as_tensor(np.asarray(x.sum(axis=0)).ravel() > 0)[:, None]
                gi, bias = self.gi * seen, self.bias[:, None] * seen
                ones = torch.ones(n_users, 1)
                users = torch.cat([self.gu, self.tu, ones], 1)
                return users, torch.cat([gi, self.proj(feats), bias + self.beta(feats)], 1)

        return Visual()


REGISTRY: dict[str, Callable[..., Baseline]] = {
    "mostpop": MostPop,
    "itemknn": ItemKNN,
    "ease": EASE,
    "bpr-mf": BPRMF,
    "lightgcn": LightGCN,
    "vbpr": VBPR,
    "content-knn": ContentKNN,
}


def make_baseline(name: str, **params: Any) -> Baseline:
    """Build a baseline by its `EvaluateConfig.baselines` name, e.g. make_baseline("ease", lam=300)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(REGISTRY)}")
    try:
        return REGISTRY[name](**params)
    except TypeError as exc:
        raise ValueError(f"baseline {name!r}: bad parameters {params}: {exc}") from None


__all__ = ["BPRMF", "EASE", "REGISTRY", "VBPR", "Baseline", "ContentKNN", "ItemKNN", "LightGCN", "MostPop",
           "content_matrix", "make_baseline"]
