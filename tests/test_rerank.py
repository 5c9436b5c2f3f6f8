"""Cross-encoder reranking with the tiny cross-encoder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from irtune.beir import BeirDataset, doc_text, read_beir
from irtune.errors import ConfigError
from irtune.models import load_cross_encoder
from irtune.rerank import rerank
from irtune.runs import Run, cut, ranked

MAX_LENGTH = 128  # the tiny model has 128 positions


@pytest.fixture(scope="module")
def dataset(tiny_beir: Path) -> BeirDataset:
    return read_beir(tiny_beir, ["test"])


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder: Path):
    return load_cross_encoder(str(tiny_cross_encoder), MAX_LENGTH)


@pytest.fixture(scope="module")
def first_stage(dataset: BeirDataset) -> Run:
    """A fake retrieval run: 10 distinct-scored docs per test query."""
    doc_ids = list(dataset.corpus)
    return {
        qid: {doc_ids[(q * 7 + i) % len(doc_ids)]: 1.0 - i / 10 for i in range(10)}
        for q, qid in enumerate(dataset.split_queries("test"))
    }


def test_scores_in_unit_interval_and_top_k_kept(
    cross_encoder, dataset: BeirDataset, first_stage: Run
) -> None:
    """Every query keeps exactly its top_k retrieved docs, each rescored into [0, 1]."""
    out = rerank(cross_encoder, first_stage, dataset.queries, dataset.corpus, 3, batch_size=4)
    assert out.keys() == first_stage.keys()
    for qid, docs in first_stage.items():
        best3 = sorted(docs, key=docs.__getitem__, reverse=True)[:3]
        assert set(out[qid]) == set(best3)
        assert all(0.0 <= s <= 1.0 for s in out[qid].values())


def test_scores_come_from_the_cross_encoder(
    cross_encoder, dataset: BeirDataset, first_stage: Run
) -> None:
    """The new scores are sigmoid(raw logit) of the model, applied once; not first-stage scores."""
    import torch

    out = rerank(cross_encoder, first_stage, dataset.queries, dataset.corpus, 2, batch_size=8)
    qid = next(iter(out))
    pairs = [(dataset.queries[qid], doc_text(dataset.corpus[d])) for d in out[qid]]
    logits = cross_encoder.predict(pairs, activation_fn=torch.nn.Identity(), convert_to_tensor=True)
    expected = torch.sigmoid(logits.float()).tolist()
    assert list(out[qid].values()) == pytest.approx(expected, abs=1e-5)


def test_long_documents_are_truncated(cross_encoder, dataset: BeirDataset) -> None:
    """A document longer than max_length tokens is truncated, not a crash."""
    did = next(iter(dataset.corpus))
    corpus = {did: {"title": "", "text": "vitamin " * 1000}}
    qid = next(iter(dataset.queries))
    out = rerank(cross_encoder, {qid: {did: 1.0}}, dataset.queries, corpus, 5, batch_size=1)
    assert 0.0 <= out[qid][did] <= 1.0


def test_cut_breaks_ties_by_doc_id() -> None:
    """cut keeps the k best, equal scores in doc id order."""
    run = {"q": {"b": 0.5, "a": 0.5, "c": 0.9, "d": 0.1}}
    assert cut(run, 2) == {"q": {"c": 0.9, "a": 0.5}}
    assert cut(run, 10) == {"q": {"c": 0.9, "a": 0.5, "b": 0.5, "d": 0.1}}


def test_empty_folder_is_a_config_error(tmp_path: Path) -> None:
    """Pointing rerank.model at a folder without a model is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_cross_encoder(str(tmp_path), MAX_LENGTH)


# --- fusion with the first stage, chosen on dev -------------------------------------------


def test_combine_reorders_the_head_and_keeps_the_tail_in_order() -> None:
    """The top ``depth`` of the first stage are reordered by the fusion (weight 1: the
    cross-encoder's order; weight 0: the first stage's), the rest follow in the first stage's
    order below every fused score, and the run stays ``top_k`` deep."""
    from irtune.rerank import combine

    first = {"q": {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "e": 0.5}}
    ce = {"q": {"a": 0.1, "b": 0.2, "c": 0.9, "d": 0.99}}  # d lies below the depth
    order = lambda run: [doc for doc, _ in ranked(run["q"])]  # noqa: E731

    pure = combine(first, ce, "wsum", 1.0, depth=3, top_k=4)
    assert order(pure) == ["c", "b", "a", "d"]
    assert min(pure["q"][d] for d in "abc") >= 0 > pure["q"]["d"]
    assert order(combine(first, ce, "wsum", 0.0, depth=3, top_k=5)) == list("abcde")
    assert order(combine(first, ce, "wsum", 1.0, depth=4, top_k=5)) == list("dcbae")
    assert set(combine(first, ce, "rrf", 60, depth=2, top_k=3)["q"]) == {"a", "b", "c"}


def _perfect_run(dataset: BeirDataset, split: str) -> Run:
    """Each query's judged documents first (best grade first), then ten others."""
    others = list(dataset.corpus)
    run = {}
    for qid, judged in dataset.qrels[split].items():
        ranking = sorted(judged, key=lambda d: -judged[d])
        ranking += [d for d in others if d not in judged][:10]
        run[qid] = {doc: 1.0 - i / 100 for i, doc in enumerate(ranking)}
    return run


def test_dev_keeps_the_first_stage_where_reranking_hurts(
    tiny_beir: Path, tiny_cross_encoder: Path
) -> None:
    """A first stage that is perfect on dev and an untrained (random) cross-encoder: pure
    reranking would lose on dev, so dev chooses a weight that does not (here 0, the first
    stage's order, at the smallest depth on a tie), records the grid and the figures, and the
    test run is then the first stage's own order."""
    from irtune.config import Config
    from irtune.rerank import rerank_run

    dataset = read_beir(tiny_beir, ["test", "dev"])
    cfg = Config()
    cfg.dataset.source = str(tiny_beir)
    cfg.rerank.model = str(tiny_cross_encoder)
    cfg.rerank.max_length = MAX_LENGTH
    cfg.rerank.top_k = 12
    dev, test = _perfect_run(dataset, "dev"), _perfect_run(dataset, "test")

    result = rerank_run(test, dataset, cfg, dev)
    choices = result.choices
    dev_scores = choices["dev_ndcg_at_10"]
    assert dev_scores["first_stage"] == pytest.approx(1.0)
    assert dev_scores["reranked"] < dev_scores["first_stage"], "the random model did not hurt"
    assert dev_scores["chosen"] == pytest.approx(dev_scores["first_stage"])
    assert choices["ce_weight"] < 1.0 and choices["depth"] == 10, choices
    grid = choices["dev_ndcg_at_10_grid"]
    assert len(grid) == 2 * len(cfg.rerank.fusion_weights), grid  # depths 10 and 12
    assert max(grid.values()) == dev_scores["chosen"]
    ranked_test = {q: [d for d, _ in ranked(r)] for q, r in result.run.items()}
    assert ranked_test == {q: [d for d, _ in ranked(r)][:12] for q, r in test.items()}


def test_without_a_dev_run_it_reranks_and_says_so(
    tiny_beir: Path, tiny_cross_encoder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No dev run: pure reranking of the top_k (today's behaviour), a warning, and a
    ``fusion_fallback`` entry for MLflow's ``fallback.rerank_fusion`` tag."""
    from irtune.config import Config
    from irtune.rerank import rerank_run

    dataset = read_beir(tiny_beir, ["test"])
    cfg = Config()
    cfg.rerank.model = str(tiny_cross_encoder)
    cfg.rerank.max_length = MAX_LENGTH
    cfg.rerank.top_k = 5
    first = {q: {d: 1.0 - i / 10 for i, d in enumerate(list(dataset.corpus)[:8])}
             for q in dataset.qrels["test"]}  # fmt: skip
    result = rerank_run(first, dataset, cfg, dev_run={})
    assert result.choices["fusion_fallback"] == "no dev split: not chosen"
    assert (result.choices["depth"], result.choices["ce_weight"]) == (5, 1.0)
    assert any("No dev run" in r.getMessage() for r in caplog.records)
    model = load_cross_encoder(str(tiny_cross_encoder), MAX_LENGTH)
    alone = rerank(model, first, dataset.queries, dataset.corpus, 5, batch_size=32)
    for qid in first:
        assert [d for d, _ in ranked(result.run[qid])] == [d for d, _ in ranked(alone[qid])]


def test_one_choice_is_not_chosen_on_dev(
    tiny_beir: Path, tiny_cross_encoder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grids holding one depth (top_k) and one weight (1: pure reranking) leave nothing to
    choose: the dev queries are not scored (the cost of a rerank row measured alone), no dev
    figures are recorded, and the test run is the pure reranking of the top_k."""
    from irtune import rerank as rerank_module
    from irtune.config import Config

    dataset = read_beir(tiny_beir, ["test", "dev"])
    cfg = Config()
    cfg.rerank.model = str(tiny_cross_encoder)
    cfg.rerank.max_length = MAX_LENGTH
    cfg.rerank.top_k = 6
    cfg.rerank.fusion_weights = [1.0]
    cfg.rerank.depths = [6, 20]  # 20 > top_k: left out, so top_k is the only depth
    dev, test = _perfect_run(dataset, "dev"), _perfect_run(dataset, "test")
    scored: list[set[str]] = []
    real = rerank_module.rerank

    def spy(model, run, *args, **kwargs):
        scored.append(set(run))
        return real(model, run, *args, **kwargs)

    monkeypatch.setattr(rerank_module, "rerank", spy)
    result = rerank_module.rerank_run(test, dataset, cfg, dev)
    assert scored == [set(test)], "the dev queries were scored"
    assert result.choices == {"top_k": 6, "fusion": "wsum", "depth": 6, "ce_weight": 1.0}
    model = load_cross_encoder(str(tiny_cross_encoder), MAX_LENGTH)
    alone = real(model, test, dataset.queries, dataset.corpus, 6, batch_size=32)
    for qid in test:
        assert [d for d, _ in ranked(result.run[qid])] == [d for d, _ in ranked(alone[qid])]
