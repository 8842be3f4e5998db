"""Retraining: merge the feedback, rerun the pipeline, gate the challenger, promote, keep a record.

`retrain(...)` is the whole run: merge the store's new feedback into the dataset exactly
once (merge.py), cut a common holdout from the newest feedback, train a challenger on the
rest (the `run_<verb>` steps locally, or a Kubeflow run through the kfp client), score the
champion and the challenger on that same holdout, ask `fusionrec.evaluation.gate.decide_promotion`,
and on promotion train the challenger's recipe once more on all the data, holdout included
(monitor.refit), package that model, copy it under monitor.models_root and move the champion
pointer in the shared state (every serving replica follows it; rollout.py). With the Kubeflow
trigger the pipeline trains and gates on the cluster, and its `package` task publishes a promoted
model and moves the same pointer (`fusionrec.packaging.run_package` with a rollout). Every run
writes `record.json` in its folder and a line in `<work>/runs.jsonl`.

The shared state (`ServingState`, on the feedback store's database) also brings the items added
while serving into the merge, so they and their feedback enter the next model.

The backends come in as arguments typed by small protocols: a `RunSubmitter` for the
Kubeflow trigger (the CLI binds `pipelines.submit.submit` to a host and the compiled
pipeline) and a `fusionrec.packaging.ModelStore` for the promotion (`serving.store.BentoStore`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fusionrec.config import Params
from fusionrec.io import find_table, read_table, write_json
from fusionrec.monitoring.merge import (
    HOLDOUT_FILE,
    cut_holdout,
    merge_feedback,
    read_watermark,
    training_copy,
)
from fusionrec.monitoring.rollout import FEEDBACK_URL_ENV, is_remote
from fusionrec.schema import INTERACTIONS_STEM, ITEM_ID, ITEMS_STEM, USER_ID

if TYPE_CHECKING:
    from fusionrec.monitoring.state import ServingState
    from fusionrec.packaging import ModelStore

logger = logging.getLogger(__name__)
RUNS_LOG = "runs.jsonl"


class RetrainError(RuntimeError):
    """A retraining run that cannot go on; the message says which stage and why."""


class RunSubmitter(Protocol):
    """Submits one training-pipeline run to Kubeflow Pipelines (the host, namespace, credentials and
    compiled pipeline are the implementation's: `functools.partial(pipelines.submit.submit, host, ...)`)."""

    def __call__(self, arguments: dict[str, Any]) -> dict[str, str]:
        """Create the run with these pipeline arguments; returns its record ({"kind", "id", "host"})."""
        ...


# --- the common holdout ---------------------------------------------------------------------
def holdout_fingerprint(holdout: pd.DataFrame) -> str:
    """Hash of the holdout's (user, item) pairs: equal fingerprints = comparable numbers."""
    pairs = sorted(zip(holdout[USER_ID].astype(str), holdout[ITEM_ID].astype(str), strict=True))
    return hashlib.sha256(repr(pairs).encode()).hexdigest()[:16]


def holdout_metrics(model_dir: Path, known: pd.DataFrame, holdout: pd.DataFrame, item_ids: list[str],
                    ks: list[int], exposure: pd.DataFrame | None = None) -> dict[str, Any]:
    """Ranking metrics of one model on the common holdout, in a shared item space.

    Known users are scored by the model; users it never saw are folded in from their known
    items. Items the model does not know score -inf. Known items (all of the user's other
    interactions, negatives included) are excluded from the ranking.

    With `exposure`, each user's ranking is restricted to the items that user was shown in
    the holdout period. Feedback only exists for what the serving model chose to show, so a
    full ranking would credit the champion for its own top-k; among the shown items both
    models compete on the same footing: who ranks what the users clicked higher.

    Args:
        known: interactions that are not in the holdout (user_id, item_id).
        holdout: the test pairs (user_id, item_id).
        item_ids: the shared item space (the dataset's catalogue).
        exposure: served (user_id, item_id) pairs of the holdout period; None = full ranking.
    """
    from fusionrec.evaluation.metrics import evaluate_scores
    from fusionrec.models.recommender import Recommender

    model = Recommender.load(model_dir)
    users = sorted(set(holdout[USER_ID].astype(str)))
    upos = {u: i for i, u in enumerate(users)}
    ipos = {it: j for j, it in enumerate(item_ids)}

    def matrix(frame: pd.DataFrame) -> sp.csr_matrix:
        f = frame[frame[USER_ID].astype(str).isin(upos) & frame[ITEM_ID].astype(str).isin(ipos)]
        rows = f[USER_ID].astype(str).map(upos).to_numpy()
        cols = f[ITEM_ID].astype(str).map(ipos).to_numpy()
        m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(item_ids)))
        m.data[:] = 1.0
        return m

    known_m, test_m = matrix(known), matrix(holdout)
    shown = matrix(exposure).toarray().astype(bool) if exposure is not None else None
    col_of = np.array([model.item_index(i) if model.item_index(i) is not None else -1 for i in item_ids])
    present = col_of >= 0

    def score_fn(batch: np.ndarray) -> np.ndarray:
        out = np.full((len(batch), len(item_ids)), -np.inf, dtype=np.float64)
        for r, u in enumerate(batch):
            uid = users[int(u)]
            idx = model.user_index(uid)
            if idx is not None:
                s = model.score_users(np.array([idx]))[0]  # (n_model_items,)
            else:
                hist = col_of[known_m[int(u)].indices]
                s = model.score_histories([hist[hist >= 0]])[0]
            out[r, present] = s[col_of[present]]
            if shown is not None:
                out[r, ~shown[int(u)]] = -np.inf
        return out

    result = evaluate_scores(score_fn, known_m, test_m, ks=ks)
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float | np.floating | np.integer)}


# --- pipeline runners -----------------------------------------------------------------------
def train_local(data_dir: Path, work: Path, params: Params) -> Path:
    """Run ingest -> split -> featurize -> search -> train on data_dir with the `run_<verb>` steps, as
    `dvc repro` does; the model folder.

    What is trained is resolved as in the DVC pipeline: params.train with the search's overlay laid
    over it (the search runs when search.enabled; off, its overlay is empty).
    """
    from fusionrec.steps import (
        resolve_train_config,
        run_featurize,
        run_ingest,
        run_search,
        run_split,
        run_train,
    )

    run_ingest(data_dir, work / "ingested", params.ingest)
    run_split(work / "ingested", work / "split", params.split)
    run_featurize(work / "ingested", work / "features", params.featurize)
    search = run_search(work / "ingested", work / "features", work / "split", work / "search", params.search,
                        params.train)
    cfg = resolve_train_config(params.train, search.outputs["overlay"])
    run_train(work / "ingested", work / "features", work / "split", work / "model", cfg)
    return work / "model"


def kfp_arguments(data_uri: str, champion_metrics: dict[str, Any], params: Params | None = None) -> dict[str, Any]:
    """The training pipeline's arguments for a retraining run.

    Args:
        data_uri: where the cluster reads the merged dataset (the pipeline's `data_uri`).
        champion_metrics: the champion's holdout metrics (the pipeline's promotion gate input).
        params: when given, its split and train sections go in as the run's `split_cfg` and
            `train_cfg` (the challenger's settings, see `challenger_params`), and an object-store
            monitor.models_root as `models_root` (where the run publishes what it promotes). A path
            of this machine means nothing in the pipeline's pods: the compiled default stands (the
            models volume the promoting task mounts at /models).
    """
    arguments: dict[str, Any] = {"data_uri": data_uri, "champion_metrics": champion_metrics}
    if params is not None:
        arguments.update(split_cfg=params.split.model_dump(mode="json"), train_cfg=params.train.model_dump(mode="json"))
        if is_remote(params.monitor.models_root):
            arguments["models_root"] = params.monitor.models_root
    return arguments


def reload_service(url: str, model: str, token: str | None, timeout: float = 120.0) -> dict[str, Any]:
    """Ask a running service to swap in `model` (folder or BentoML tag) via its authenticated /reload."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.post(f"{url.rstrip('/')}/reload", json={"model": model}, headers=headers, timeout=timeout)
    if resp.status_code != 200:
        raise RetrainError(f"service {url} refused the reload ({resp.status_code}): {resp.text[:300]}")
    return dict(resp.json())


# --- the run --------------------------------------------------------------------------------
def _catalogue(data_dir: Path) -> list[str]:
    items_path = find_table(data_dir, ITEMS_STEM)
    assert items_path is not None
    return read_table(items_path, dtype={ITEM_ID: str})[ITEM_ID].astype(str).tolist()


def retrain(
    data_dir: Path, feedback: pd.DataFrame, champion_dir: Path | None, work_dir: Path, params: Params,
    trigger: str = "local", reason: str = "", data_uri: str = "",
    trainer: Callable[[Path, Path, Params], Path] = train_local, served: pd.DataFrame | None = None,
    submitter: RunSubmitter | None = None, model_store: ModelStore | None = None,
    state: ServingState | None = None,
) -> dict[str, Any]:
    """One retraining run (see the module doc); returns the record it writes.

    Args:
        data_dir: the dataset folder the feedback is merged into (in place, exactly once).
        feedback: the store's feedback rows.
        champion_dir: the serving model's folder (None: nothing serves yet).
        work_dir: runs/<stamp>/ folders and runs.jsonl go here.
        trigger: "local" (steps in this process) or "kfp" (submit the pipeline, gate on the cluster).
        reason: what triggered the run (e.g. the monitor's reasons), kept in the record.
        trainer: (train_data_dir, run_dir, params) -> model folder; the steps by default.
        served: the store's served rows; the holdout is then ranked among what users were shown
            (see `holdout_metrics`); None = full ranking.
        submitter: submits the Kubeflow run (trigger "kfp" needs one).
        model_store: where a promoted challenger is packaged; None = not packaged (the service
            reloads the model folder).
        state: the serving state on the feedback store's database: its runtime items are merged
            into the dataset, its champion pointer moves on promotion (and names the champion
            when champion_dir is None). None = the state at FUSIONREC_FEEDBACK_URL or
            serve.feedback_url when either is set, else none.
    """
    if trigger == "kfp" and submitter is None:  # before the merge: a run that cannot go on changes nothing
        raise RetrainError("trigger 'kfp' needs a run submitter (the CLI builds one from --kfp-host)")
    if state is None and (url := os.environ.get(FEEDBACK_URL_ENV) or params.serve.feedback_url):
        from fusionrec.monitoring.state import ServingState
        from fusionrec.monitoring.store import FeedbackStore

        with FeedbackStore(url) as store:
            return retrain(data_dir, feedback, champion_dir, work_dir, params, trigger, reason, data_uri, trainer,
                           served, submitter, model_store, ServingState(store))
    cfg, started = params.monitor, time.time()
    if champion_dir is None and state is not None:
        champion_dir = _pointed_champion(state)
    run_dir = Path(work_dir) / "runs" / time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
    run_dir.mkdir(parents=True, exist_ok=True)
    # holdout candidates: feedback on pairs the champion never trained on (a re-consumption of a
    # training pair would credit the champion for remembering it)
    old_pairs = _trained_pairs(champion_dir, data_dir, feedback[USER_ID].astype(str).unique())
    pairs = zip(feedback[USER_ID].astype(str), feedback[ITEM_ID].astype(str), strict=True)
    fresh = feedback.loc[np.array([p not in old_pairs for p in pairs], dtype=bool)]
    new_ids = pd.to_numeric(feedback["id"]) > read_watermark(data_dir)
    merge = merge_feedback(data_dir, feedback, served, cfg.skip_after,
                           runtime_items=state.items_frame() if state is not None else None,
                           text_columns=params.ingest.text_columns)
    record: dict[str, Any] = {"started_at": started, "trigger": trigger, "reason": reason, "run_dir": str(run_dir),
                              "merge": merge.to_dict(), "data_fingerprint": merge.fingerprint}
    if trigger == "kfp":
        champ = json.loads((Path(champion_dir) / "holdout_metrics.json").read_text()) if champion_dir and (
            Path(champion_dir) / "holdout_metrics.json").is_file() else {}
        assert submitter is not None
        record["kfp"] = submitter(kfp_arguments(data_uri or str(data_dir), champ, challenger_params(params)))
        record["decision"] = {"promote": None, "reason": "submitted to Kubeflow; the pipeline's gate decides"}
        return _finish(record, run_dir, work_dir, started)
    holdout, organic = (cut_holdout(fresh, cfg.holdout_share, cfg.min_holdout) if new_ids.any()
                        else (fresh.iloc[0:0], False))
    if holdout.empty:
        record["decision"] = {"promote": False, "reason": f"too little new feedback for a holdout of at least "
                              f"{cfg.min_holdout} rows (monitor.min_holdout); nothing trained"}
        return _finish(record, run_dir, work_dir, started)
    holdout.to_parquet(run_dir / HOLDOUT_FILE, index=False)
    train_data = training_copy(data_dir, holdout, run_dir / "data")
    t0 = time.time()
    challenger_dir = trainer(train_data, run_dir, challenger_params(params))
    record["train_wall_s"] = round(time.time() - t0, 2)
    record["challenger_dir"] = str(challenger_dir)
    exposure = None if organic else _exposure(served, holdout)  # organic events: full ranking is fair
    record.update(_gate(data_dir, train_data, holdout, challenger_dir, champion_dir, params, exposure))
    if record["decision"]["promote"]:
        shipped = challenger_dir
        if cfg.refit:
            record["refit"] = _refit(data_dir, run_dir, challenger_dir, params, trainer)
            shipped = Path(record["refit"].get("model_dir") or challenger_dir)
        record["promoted_dir"] = str(shipped)
        record["promotion"] = _promote(shipped, run_dir, params, model_store, state)
    return _finish(record, run_dir, work_dir, started)


def challenger_params(params: Params) -> Params:
    """params for training the challenger: the monitor's retrain_split and retrain_half_life laid over.

    After a drift the newest interactions say most about the present: recency weights (by
    default a user's newest 16 interactions weigh at least half) let them outvote a long history.
    Training's own recency probe (retrain_half_life 0) judges on validation rows from the whole
    history, and in the closed loop it recovered less (expected click-through .344 / .378
    against .368 / .384 with 16, on two demo worlds).

    The epoch and the EASE blend are chosen on a random tenth of the interactions by default:
    each user's newest interaction (temporal-loo) is more often a click on what the old model
    showed than a find of the new taste, and one row per user is a noisy choice (in the closed
    loop the challenger validated at random reached 3-6% more click-through after a taste
    shift, on each of three demo worlds).
    """
    cfg, update = params.monitor, {}
    if cfg.retrain_split:
        update["split"] = params.split.with_overrides(protocol=cfg.retrain_split)
    if cfg.retrain_half_life > 0:
        update["train"] = params.train.with_overrides(recency_half_life=cfg.retrain_half_life)
    return params.model_copy(update=update)


def _exposure(served: pd.DataFrame | None, holdout: pd.DataFrame, margin_s: float = 60.0) -> pd.DataFrame | None:
    """What the holdout's users were shown from shortly before the holdout began (None without a log).

    Explored impressions (served.explored) count as shown: they are items the champion did not
    choose, so ranking among them favours it less than ranking among its own top-k alone.
    """
    if served is None or served.empty:
        return None
    start = float(holdout["timestamp"].min()) - margin_s
    users = set(holdout[USER_ID].astype(str))
    shown = served[(pd.to_numeric(served["ts"]) >= start) & served[USER_ID].astype(str).isin(users)]
    return shown[[USER_ID, ITEM_ID]].drop_duplicates()


def _trained_pairs(champion: Path | None, data_dir: Path, users: np.ndarray) -> set[tuple[str, str]]:
    """(user, item) pairs the champion trained on (its `seen`), or the dataset's pairs without one."""
    if champion is None:
        data = read_table(find_table(data_dir, INTERACTIONS_STEM) or Path(), dtype={USER_ID: str, ITEM_ID: str})
        return set(zip(data[USER_ID].astype(str), data[ITEM_ID].astype(str), strict=True))
    from fusionrec.models.recommender import Recommender

    model = Recommender.load(champion)
    out: set[tuple[str, str]] = set()
    for user in users:
        idx = model.user_index(str(user))
        if idx is not None:
            out.update((str(user), model.item_ids[i]) for i in model.seen(idx))
    return out


def _gate(data_dir: Path, train_data: Path, holdout: pd.DataFrame, challenger: Path, champion: Path | None,
          params: Params,
          exposure: pd.DataFrame | None = None) -> dict[str, Any]:
    """Score both models on the holdout (among what users were shown, when known) and ask the gate."""
    from fusionrec.evaluation.gate import HOLDOUT, decide_promotion

    # known = the whole history minus the holdout (not the challenger's possibly shortened copy):
    # an item a user met long ago is excluded for both models alike
    known = read_table(find_table(data_dir, INTERACTIONS_STEM) or Path(), dtype={USER_ID: str, ITEM_ID: str})
    test_pairs = set(zip(holdout[USER_ID].astype(str), holdout[ITEM_ID].astype(str), strict=True))
    known = known[[p not in test_pairs for p in zip(known[USER_ID].astype(str), known[ITEM_ID].astype(str), strict=True)]]
    items, ks, fp = _catalogue(train_data), list(params.evaluate.ks), holdout_fingerprint(holdout)
    chal = {**holdout_metrics(challenger, known, holdout, items, ks, exposure), HOLDOUT: fp}
    champ = {**holdout_metrics(champion, known, holdout, items, ks, exposure), HOLDOUT: fp} if champion else None
    write_json(challenger / "holdout_metrics.json", chal)
    decision = decide_promotion(chal, champ, params.evaluate)
    protocol = ("full ranking of organic feedback" if exposure is None
                else f"ranked among the {len(exposure)} shown (user, item) pairs")
    return {"holdout": {"fingerprint": fp, "rows": len(holdout), "users": int(holdout[USER_ID].nunique()),
                        "protocol": protocol},
            "challenger_metrics": chal, "champion_metrics": champ, "decision": decision.to_dict()}


def _refit(data_dir: Path, run_dir: Path, challenger_dir: Path, params: Params,
           trainer: Callable[[Path, Path, Params], Path]) -> dict[str, Any]:
    """Train the promoted challenger's recipe once more on all the merged data, holdout included.

    The holdout is there to judge the recipe. Once the recipe has passed, the newest feedback
    (after a taste shift, the newest signs of the new taste) is worth more inside the model than
    outside it. The refit trains the challenger's resolved train config (no second search), with
    the same split protocol, and reads the challenger's feature cache. It is trained on the
    holdout, so it is not scored on it again: the challenger's holdout metrics are copied into
    its folder as the recipe's.

    Returns:
        {"model_dir", "train_wall_s", "valid_metrics", "challenger_valid_metrics"}; on a failure
        {"error"}, and the gated challenger ships.
    """
    from fusionrec.config import TrainConfig
    from fusionrec.schema import MODEL_CONFIG

    saved = json.loads((challenger_dir / MODEL_CONFIG).read_text())
    known = {k: v for k, v in saved["train_config"].items() if k in TrainConfig.model_fields}
    featurize = params.featurize if params.featurize.cache_dir else params.featurize.with_overrides(
        cache_dir=str(run_dir / ".feature-cache"))  # where the challenger's featurize kept its vectors
    base = challenger_params(params)
    refit_params = base.model_copy(update={"train": TrainConfig(**known), "featurize": featurize,
                                           "search": base.search.with_overrides(enabled=False)})
    t0 = time.time()
    try:
        model_dir = Path(trainer(data_dir, run_dir / "refit", refit_params))
    except Exception as exc:  # the gated challenger is still a good model: it ships instead
        logger.error("the refit on all the merged data failed, the gated challenger ships: %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"}
    if (challenger_dir / "holdout_metrics.json").is_file():
        (model_dir / "holdout_metrics.json").write_text((challenger_dir / "holdout_metrics.json").read_text())
    refit_meta = json.loads((model_dir / MODEL_CONFIG).read_text())["meta"]
    return {"model_dir": str(model_dir), "train_wall_s": round(time.time() - t0, 2),
            "valid_metrics": refit_meta.get("valid_metrics"),
            "challenger_valid_metrics": saved["meta"].get("valid_metrics")}


def _pointed_champion(state: ServingState) -> Path | None:
    """The champion pointer's model folder when it is on a path this process reads, else None."""
    champ = state.champion()
    if champ is None or is_remote(champ.uri) or not Path(champ.uri).is_dir():
        return None
    return Path(champ.uri)


def _promote(model_dir: Path, run_dir: Path, params: Params, store: ModelStore | None,
             state: ServingState | None = None) -> dict[str, Any]:
    """Package the challenger (when a store is given), publish it under monitor.models_root and move
    the champion pointer (with a state), and ask the running service (if configured) to reload it.

    The challenger already passed this run's gate, so run_package gets no promotion.json. A rollout
    that fails is recorded (`champion_error`) and logged; the run's record is still written.
    """
    from fusionrec.monitoring.rollout import RolloutError, promote
    from fusionrec.monitoring.state import StateError
    from fusionrec.packaging import run_package

    out: dict[str, Any] = {}
    if store is not None:
        try:
            pkg = run_package(model_dir, run_dir / "package", params.package, store)
            out["package"] = json.loads(Path(pkg.outputs["package"]).read_text()).get("tag")
        except Exception as exc:  # a store that fails (disk, BentoML): the folder still serves
            logger.warning("packaging failed, the service will load the folder: %s", exc)
            out["package_error"] = str(exc)
    if state is not None:
        try:
            out["champion"] = promote(model_dir, state, params.monitor.models_root, source=str(run_dir),
                                      keep=params.monitor.keep_models).to_dict()
        except (RolloutError, StateError) as exc:
            logger.error("the challenger passed the gate but was not rolled out: %s", exc)
            out["champion_error"] = str(exc)
    url = params.monitor.service_url
    if url:
        out["reload"] = reload_service(url, str(Path(model_dir).resolve()), os.environ.get(params.monitor.token_env))
    return out


def _finish(record: dict[str, Any], run_dir: Path, work_dir: Path, started: float) -> dict[str, Any]:
    record["wall_s"] = round(time.time() - started, 2)
    write_json(run_dir / "record.json", record)
    with open(Path(work_dir) / RUNS_LOG, "a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
    return record
