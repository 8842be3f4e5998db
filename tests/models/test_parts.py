"""Unit checks of the model parts: EASE, graphs, fusion, losses, context encoding, z-scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from fusionrec.models.context import encode_context, fit_context
from fusionrec.models.ease import EASE, ease_weights
from fusionrec.models.fusion import ItemEncoder, UserHead, item_matrix
from fusionrec.models.graph import (
    content_similarity_topk,
    knn_graph,
    lightgcn,
    normalized_adjacency,
    sym_spmm,
)
from fusionrec.models.inference_parts import zscore
from fusionrec.models.losses import alignment_loss, bpr_loss, sampled_softmax_loss, softmax_loss


def _x() -> sp.csr_matrix:
    return sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [0, 1, 1, 1]], dtype=np.float32))


def test_ease_matches_the_closed_form() -> None:
    x = _x().toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(4))
    expected = np.eye(4) - p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    b = ease_weights(_x(), 2.0)
    assert np.allclose(b, expected, atol=1e-5) and np.all(np.diag(b) == 0)
    model = EASE(2.0).fit(_x())
    assert np.allclose(model.score_users(np.array([0])), x[:1] @ b, atol=1e-5)


def test_normalized_adjacency_is_symmetric_and_scaled() -> None:
    adj = normalized_adjacency(_x()).to_dense()  # (8, 8)
    assert torch.allclose(adj, adj.T)
    assert adj[0, 4].item() == pytest.approx(1 / np.sqrt(2 * 2))  # user 0 (2 items) - item 0 (2 users)
    emb = torch.randn(8, 3)
    assert lightgcn(normalized_adjacency(_x()), emb, 0).equal(emb)


def test_sym_spmm_gradient_matches_dense() -> None:
    adj = normalized_adjacency(_x())
    x = torch.randn(8, 3, requires_grad=True)
    (sym_spmm(adj, x) ** 2).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    ((adj.to_dense() @ x) ** 2).sum().backward()
    assert torch.allclose(grad, x.grad, atol=1e-6)


def test_knn_graph_excludes_self_and_ignores_missing_modalities() -> None:
    v = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    mask = np.array([True, True, True, False])
    idx, _ = content_similarity_topk([(v, mask), (v, np.ones(4, bool))], k=1)
    assert idx[:, 0].tolist() == [1, 0, 3, 2]
    g = knn_graph([(v, np.ones(4, bool))], k=1).to_dense()
    assert torch.all(torch.diagonal(g) == 0) and torch.allclose(g, g.T)


@pytest.mark.parametrize("fusion", ["concat", "mean", "gated", "attention"])
def test_fusions_shape_and_mask(fusion: str) -> None:
    enc = ItemEncoder([5, 7], 4, fusion, hidden=0, reduced_dims=[5, 3])
    feats = [torch.randn(6, 5), torch.randn(6, 7)]
    mask = torch.tensor([[True, True]] * 5 + [[True, False]])
    z, content = enc(feats, mask)
    assert z.shape == (6, 2, 4) and content.shape == (6, 4)
    assert torch.all(z[5, 1] == 0)  # the missing modality contributes nothing
    if fusion == "mean":
        assert torch.allclose(content[5], z[5, 0])
    head = UserHead(4, 2, context_dim=0, attention=fusion == "attention")
    u = head(torch.randn(3, 4))
    items = item_matrix(content, z, mask, head.attention)
    assert (u @ items.T).shape == (3, 6)


def test_attention_score_is_the_user_weighted_sum_of_modality_scores() -> None:
    head = UserHead(4, 2, context_dim=0, attention=True)
    base = torch.randn(1, 4)
    e, z, mask = torch.randn(3, 4), torch.randn(3, 2, 4), torch.ones(3, 2, dtype=torch.bool)
    score = head(base) @ item_matrix(e, z, mask, True).T  # (1, 3)
    u = torch.nn.functional.normalize(base, dim=-1)
    a = torch.softmax(head.query(u) @ head.keys.T, dim=-1)[0]
    norm = torch.nn.functional.normalize
    expected = u @ norm(e, dim=-1).T + sum(a[m] * (u @ norm(z[:, m], dim=-1).T) for m in range(2))
    assert torch.allclose(score, expected, atol=1e-6)


def test_losses_prefer_the_positive() -> None:
    items = torch.nn.functional.normalize(torch.randn(10, 4), dim=-1)
    pos = torch.tensor([0, 1])
    good, bad = items[pos], -items[pos]
    neg = torch.tensor([5, 6, 7])
    assert softmax_loss(good, items, pos, 0.2) < softmax_loss(bad, items, pos, 0.2)
    assert sampled_softmax_loss(good, items, pos, 0.2, neg) < sampled_softmax_loss(bad, items, pos, 0.2, neg)
    assert bpr_loss(good, items, pos, neg[None, :].repeat(2, 1), 0.2) < bpr_loss(bad, items, pos, neg[None, :].repeat(2, 1), 0.2)
    z = torch.randn(8, 2, 4)
    aligned = torch.stack([z[:, 0], z[:, 0]], dim=1)
    assert alignment_loss(aligned, torch.ones(8, 2, dtype=torch.bool)) < alignment_loss(z, torch.ones(8, 2, dtype=torch.bool))


def test_context_encoding_is_standardised_and_one_hot() -> None:
    frame = pd.DataFrame({"hour": [0, 12, 24], "device": ["ios", "web", "ios"]})
    spec = fit_context(frame, ["hour", "device"])
    out = encode_context(spec, pd.DataFrame({"hour": [12], "device": ["tv"]}))
    assert out.shape == (1, 1 + 3) and out[0, 0] == pytest.approx(0.0) and out[0, -1] == 1.0  # unknown -> other
    with pytest.raises(ValueError, match="context column 'nope'"):
        fit_context(frame, ["nope"])


def test_weighted_ease_and_adjacency_use_the_values() -> None:
    x = _x()
    assert np.allclose(ease_weights(x, 2.0, weighted=True), ease_weights(x, 2.0), atol=1e-6)  # ones: as binary
    w = x.multiply(np.array([[1.0, 0.5, 0.25, 0.125]], dtype=np.float32)).tocsr()
    dense = w.toarray().astype(np.float64)
    p = np.linalg.inv(dense.T @ dense + 2.0 * np.eye(4))
    expected = np.eye(4) - p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(ease_weights(w, 2.0, weighted=True), expected, atol=1e-5)
    assert np.allclose(ease_weights(w, 2.0), ease_weights(x, 2.0), atol=1e-6)  # unweighted: any value counts as 1
    adj = normalized_adjacency(w, weighted=True).to_dense()
    assert torch.allclose(adj, adj.T)
    assert adj[0, 4].item() == pytest.approx(1.0 / np.sqrt(1.5 * 2.0))  # user 0: 1 + 0.5; item 0: 1 + 1


def _masked_zscore(scores: np.ndarray, ref: np.ndarray) -> np.ndarray:
    ref = np.broadcast_to(ref, scores.shape)
    out = np.empty_like(scores, dtype=np.float64)
    for r, (s, m) in enumerate(zip(scores.astype(np.float64), ref, strict=True)):
        sd = s[m].std() if m.any() else 0.0
        out[r] = (s - (s[m].mean() if m.any() else 0.0)) / (sd if sd > 1e-12 else 1.0)
    return out


@pytest.mark.parametrize("chunk_elems", [1, 7 * 50, 1 << 20])  # a row at a time, a ragged last chunk, one chunk
@pytest.mark.parametrize("per_row", [False, True])
def test_zscore_uses_only_the_reference_columns_in_chunks_of_rows(chunk_elems: int, per_row: bool) -> None:
    rng = np.random.default_rng(3)
    scores = (rng.standard_normal((23, 50)) * 4 + 2).astype(np.float32)
    ref = rng.random((23, 50) if per_row else 50) < 0.6
    if per_row:
        ref[5] = False  # a row without reference columns keeps its raw scale
        scores[6] = 1.5  # a constant row: no division by zero
        scores[7][~ref[7]] = -np.inf  # outside the reference columns: no part of the moments
    got = zscore(scores, ref, chunk_elems=chunk_elems)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _masked_zscore(scores, ref), rtol=1e-5, atol=1e-5)
    blend = zscore(scores, ref, weight=0.7, chunk_elems=chunk_elems)
    other = np.where(np.isfinite(scores), scores, 0.0)[::-1].copy()
    zscore(other, ref, out=blend, weight=0.3, add=True, chunk_elems=chunk_elems)
    np.testing.assert_allclose(blend, 0.7 * _masked_zscore(scores, ref) + 0.3 * _masked_zscore(other, ref),
                               rtol=1e-5, atol=1e-5)
