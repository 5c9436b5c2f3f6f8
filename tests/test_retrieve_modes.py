"""Retrieval modes: BM25, score fusion (wsum, RRF), the fusion choice on dev, dense
pseudo-relevance feedback (Rocchio) chosen on dev, and the retrieve stage in ``hybrid``,
``bm25`` and feedback modes on the tiny assets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from irtune.beir import Corpus, Qrels, read_beir
from irtune.bm25 import bm25_search, corpus_token_ids, tokenize
from irtune.config import EvaluateConfig, IndexConfig, validate
from irtune.dense import dense_search, encode_queries, search
from irtune.encode import encode_corpus
from irtune.errors import ConfigError
from irtune.evaluate import evaluate_run
from irtune.feedback import choose_prf, feedback_rows, prf_grid, rocchio
from irtune.fusion import choose_fusion, fuse, fuse_rrf, fuse_wsum, min_max
from irtune.index import build_index, write_index
from irtune.models import load_bi_encoder
from irtune.retrieve import Retrieval, open_dense_index, retrieve, splits, uses_dense
from irtune.runs import Run

CORPUS: Corpus = {
    "a": {"title": "", "text": "apple banana apple"},
    "b": {"title": "", "text": "banana cherry"},
    "c": {"title": "", "text": "cherry date elderberry fig"},
}

# --- BM25 ------------------------------------------------------------------------------------


def test_bm25_ranks_the_best_matching_doc_first() -> None:
    """The doc sharing the most (and rarest) query words comes first."""
    run = bm25_search(CORPUS, {"q": "a cherry with a date"}, top_k=3)
    # c holds "cherry" and "date", b only "cherry"; a shares no word and is not retrieved.
    assert list(run["q"]) == ["c", "b"]


def test_bm25_score_is_lucene_bm25_with_the_given_k1_and_b() -> None:
    """The score equals Lucene's BM25 formula computed by hand, for non-default k1 and b."""
    k1, b = 0.9, 0.4
    run = bm25_search(CORPUS, {"q": "apples"}, top_k=3, k1=k1, b=b)
    # "apples" stems to "appl": in doc a twice (tf 2), one doc of 3 (df 1); lengths 3, 2, 4.
    idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    tf, dl, avgdl = 2, 3, 3
    # Lucene (since 8.0) drops classic BM25's constant (k1 + 1) factor from the numerator.
    expected = idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))
    assert run["q"] == {"a": pytest.approx(expected, rel=1e-5)}


def test_bm25_stems_and_drops_stopwords() -> None:
    """Inflected forms match (English stemmer); a stopwords-only query retrieves nothing."""
    run = bm25_search(CORPUS, {"stem": "Cherries", "stop": "the and of it"}, top_k=3)
    assert set(run["stem"]) == {"b", "c"}
    assert run["stop"] == {}


def test_bm25_respects_top_k(tiny_beir: Path) -> None:
    """Every query gets at most top_k docs, best first, all from the corpus."""
    dataset = read_beir(tiny_beir, ["test"])
    queries = dataset.split_queries("test")
    run = bm25_search(dataset.corpus, queries, top_k=5)
    assert run.keys() == queries.keys()
    for docs in run.values():
        assert 0 < len(docs) <= 5
        assert set(docs) <= dataset.corpus.keys()
        assert list(docs.values()) == sorted(docs.values(), reverse=True)
    assert any(len(docs) == 5 for docs in run.values())


def test_bm25_index_of_token_ids_is_the_index_of_token_strings(tiny_beir: Path) -> None:
    """Token ids built a few texts at a time index exactly as bm25s indexes the strings."""
    import bm25s
    import Stemmer

    from irtune.beir import doc_text

    dataset = read_beir(tiny_beir, ["test"])
    texts = [doc_text(doc) for doc in dataset.corpus.values()]
    stemmer = Stemmer.Stemmer("english")
    ids, vocab = corpus_token_ids(iter(texts), stemmer, chunk=7)
    strings = tokenize(texts, stemmer)
    words = list(vocab)  # numbered as they came
    assert strings == [[words[i] for i in doc] for doc in ids]
    from_ids, from_strings = bm25s.BM25(csc_backend="scipy"), bm25s.BM25()
    from_ids.index((ids, vocab), show_progress=False)
    from_strings.index(strings, show_progress=False)
    for query in tokenize(list(dataset.split_queries("test").values()), stemmer):
        np.testing.assert_array_equal(
            from_ids.get_scores_from_ids(from_ids.get_tokens_ids(query)),
            from_strings.get_scores_from_ids(from_strings.get_tokens_ids(query)),
        )


# --- fusion ----------------------------------------------------------------------------------


def test_min_max() -> None:
    """Scores map to 0..1, best 1; all-equal scores map to 1, not 0."""
    assert min_max({"a": 3.0, "b": 2.0, "c": 1.0}) == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert min_max({"a": 7.0}) == {"a": 1.0}
    assert min_max({}) == {}
    assert min_max({"a": 4.0, "b": 2.0}, floor=0.0) == {"a": 1.0, "b": 0.5}


def test_wsum_math() -> None:
    """wsum adds w * dense + (1 - w) * bm25 on min-max normalised scores; missing counts 0."""
    dense = {"q": {"a": 0.9, "b": 0.5, "c": 0.1}}
    sparse = {"q": {"c": 20.0, "d": 10.0}}
    # BM25 filled top_k=3: min-max over its list (e, its worst, maps to 0); the fused run is
    # cut to 3, ties broken by doc id.
    fused = fuse_wsum(dense, {"q": {**sparse["q"], "e": 5.0}}, dense_weight=0.25, top_k=3)
    assert fused["q"] == pytest.approx({"c": 0.75, "a": 0.25, "d": 0.25})
    assert list(fused["q"]) == ["c", "a", "d"]
    # BM25 found only 2 of top_k=10, so every other doc scored 0: normalised from 0.
    fused = fuse_wsum(dense, sparse, dense_weight=0.25, top_k=10)
    assert fused["q"] == pytest.approx({"a": 0.25, "b": 0.125, "c": 0.75, "d": 0.375})
    assert list(fused["q"]) == ["c", "d", "a", "b"]


def test_rrf_math() -> None:
    """RRF adds 1 / (k + rank) over the runs, ranks from 1; absent docs add nothing."""
    run1 = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    run2 = {"q": {"c": 0.9, "a": 0.8}}
    fused = fuse_rrf([run1, run2], k=60, top_k=10)
    assert fused["q"] == pytest.approx({"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61})
    assert list(fused["q"]) == ["a", "c", "b"]


def test_fused_runs_are_cut_to_top_k() -> None:
    """A fused run keeps top_k docs per query, even where the union of the runs is larger."""
    dense = {"q": {f"d{i}": 1.0 - i / 10 for i in range(5)}}
    sparse = {"q": {f"s{i}": 5.0 - i for i in range(5)}, "only_sparse": {"x": 1.0}}
    for method, param in (("wsum", 0.5), ("rrf", 10)):
        fused = fuse(dense, sparse, method, param, top_k=3)
        assert fused.keys() == {"q", "only_sparse"}
        assert len(fused["q"]) == 3
        assert fused["only_sparse"].keys() == {"x"}


def _constructed_runs(n: int = 6) -> tuple[Qrels, Run, Run]:
    """Dev qrels where query i has one relevant doc ``rel{i}``; a run that ranks it first and
    a useless one that ranks other docs only."""
    qrels = {f"q{i}": {f"rel{i}": 1} for i in range(n)}
    good = {f"q{i}": {f"rel{i}": 10.0, f"x{i}": 5.0, f"y{i}": 1.0} for i in range(n)}
    useless = {f"q{i}": {f"z{i}": 0.9, f"w{i}": 0.8, f"v{i}": 0.1} for i in range(n)}
    return qrels, good, useless


GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_wsum_weight_chosen_on_dev_favours_the_good_run() -> None:
    """With a useless dense run the chosen dense weight is low; with useless BM25, high."""
    qrels, good, useless = _constructed_runs()
    low = choose_fusion(useless, good, qrels, "wsum", GRID, top_k=10, ndcg_k=10)
    assert low.param in GRID and low.param < 0.5
    assert low.param_name == "dense_weight"
    assert low.dev == {"dense": 0.0, "bm25": 1.0, "fused": 1.0}
    high = choose_fusion(good, useless, qrels, "wsum", GRID, top_k=10, ndcg_k=10)
    assert high.param in GRID and high.param > 0.5
    assert high.dev == {"dense": 1.0, "bm25": 0.0, "fused": 1.0}
    # Every grid value was scored, and the choice is the best of them (first on ties).
    assert list(low.grid) == [str(w) for w in GRID]
    assert low.grid[str(low.param)] == max(low.grid.values())
    assert low.param == 0.1


def test_fusion_choice_uses_only_the_qrels_it_is_given() -> None:
    """The choice follows the dev qrels: where dev and test disagree, dev's optimum wins."""
    # Dense finds the relevant doc of the "dev" queries, BM25 that of the "test" queries.
    dev = {"q0": {"d": 1}, "q1": {"d": 1}}
    test = {"q0": {"s": 1}, "q1": {"s": 1}}
    dense = {q: {"d": 1.0, "n": 0.5} for q in dev}
    sparse = {q: {"s": 9.0, "m": 3.0} for q in dev}
    # No 0.5 in the grid: there "d" and "s" would tie, and ties are trec_eval's to break.
    grid = [0.2, 0.4, 0.6, 0.8]
    on_dev = choose_fusion(dense, sparse, dev, "wsum", grid, top_k=10, ndcg_k=10)
    on_test = choose_fusion(dense, sparse, test, "wsum", grid, top_k=10, ndcg_k=10)
    assert (on_dev.param, on_test.param) == (0.6, 0.2)


def test_rrf_k_chosen_on_dev() -> None:
    """RRF's k is the grid value that ranks the relevant doc first on dev.

    The relevant doc is fourth in both runs; each run has its own first doc. k=1 favours
    single first places (1/2 > 2/5); k=60 flattens the ranks and the doc both runs agree on
    wins (2/64 > 1/61).
    """
    qrels = {f"q{i}": {"rel": 1} for i in range(3)}
    dense = {q: {"a": 4.0, "x1": 3.0, "x2": 2.0, "rel": 1.0} for q in qrels}
    sparse = {q: {"b": 4.0, "y1": 3.0, "y2": 2.0, "rel": 1.0} for q in qrels}
    choice = choose_fusion(dense, sparse, qrels, "rrf", [1, 60], 10, 10)
    assert choice.param_name == "rrf_k"
    assert choice.param == 60
    assert choice.grid["60"] == 1.0 > choice.grid["1"]
    fourth = round(1 / math.log2(5), 6)
    assert choice.dev == {"dense": fourth, "bm25": fourth, "fused": 1.0}


def test_empty_grid_is_rejected() -> None:
    qrels, good, useless = _constructed_runs()
    with pytest.raises(ValueError, match="grid"):
        choose_fusion(good, useless, qrels, "wsum", [], 10, 10)


# --- dense pseudo-relevance feedback ----------------------------------------------------------


def _unit(*rows: list[float]) -> np.ndarray:
    m = np.array(rows, dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# One query [1, 0, 0]. d1 is its nearest doc; d2 shares d1's second dimension but is far from
# the query itself; d3 is in between. Plain search ranks d1, d3, d2. Moving the query toward
# d1 (k=1, beta=2) ranks d1, d2, d3: feedback helps when d2 is relevant, hurts when d3 is.
PRF_DOCS = _unit([1, 1, 0], [0.2, 1, 0], [0.9, 0, 1])
PRF_IDS = ["d1", "d2", "d3"]
PRF_QUERY = _unit([1, 0, 0])


def _flat(vectors: np.ndarray):
    return build_index(vectors, IndexConfig(type="flat"))


def test_rocchio_moves_the_query_toward_its_top_docs() -> None:
    """q' = normalise(q + beta * mean of the top k docs), checked against numpy."""
    rng = np.random.default_rng(0)
    docs = _unit(*rng.normal(size=(50, 8)))
    queries = _unit(*rng.normal(size=(4, 8)))
    moved = rocchio(_flat(docs), queries, k=3, beta=0.7)
    top = np.argsort(-(queries @ docs.T), axis=1)[:, :3]
    expected = queries + 0.7 * docs[top].mean(axis=1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert moved == pytest.approx(expected, abs=1e-5)
    assert rocchio(_flat(docs), queries, k=0, beta=0.7) is queries


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_rocchio_reads_the_vectors_of_approximate_indexes(kind: str) -> None:
    """HNSW and IVF indexes hand back their vectors too (IVF through a direct map)."""
    rng = np.random.default_rng(1)
    docs = _unit(*rng.normal(size=(400, 8)))
    queries = _unit(*rng.normal(size=(3, 8)))
    exact = rocchio(_flat(docs), queries, k=4, beta=0.5)
    # Search settings wide enough that the approximate top 4 is the exact one.
    cfg = IndexConfig(type=kind, hnsw_ef_search=400, ivf_nlist=4, ivf_nprobe=4)
    assert rocchio(build_index(docs, cfg), queries, k=4, beta=0.5) == pytest.approx(exact, abs=1e-5)


def test_feedback_rows_name_a_runs_top_docs_as_index_rows() -> None:
    """Best first (score, then doc id, as the TREC writer orders), -1 where a run is short."""
    run = {"a": {"d3": 0.2, "d1": 0.9, "d2": 0.2}, "b": {"d2": 1.0}}
    rows = feedback_rows(run, ["b", "a", "c"], PRF_IDS, 2)
    assert rows.tolist() == [[1, -1], [0, 1], [-1, -1]]
    assert rows.dtype == np.int64


def test_rocchio_uses_the_feedback_rows_it_is_given() -> None:
    """With a first pass's rows, the centroid is of those documents, padding ignored."""
    rng = np.random.default_rng(2)
    docs = _unit(*rng.normal(size=(20, 8)))
    queries = _unit(*rng.normal(size=(2, 8)))
    rows = np.array([[7, 3, 12], [5, -1, -1]])
    moved = rocchio(_flat(docs), queries, k=3, beta=0.5, rows=rows)
    centroids = np.stack([docs[[7, 3, 12]].mean(axis=0), docs[5]])
    expected = queries + 0.5 * centroids
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert moved == pytest.approx(expected, abs=1e-5)
    # k below the rows' width takes each query's first k.
    first = rocchio(_flat(docs), queries[:1], k=1, beta=0.5, rows=rows[:1])
    assert first == pytest.approx(_unit(queries[0] + 0.5 * docs[7]), abs=1e-5)


def test_prf_grid_lists_no_feedback_once() -> None:
    assert prf_grid([0, 2, 0, 3], [0.5, 1.0]) == [(0, 0.0), (2, 0.5), (2, 1.0), (3, 0.5), (3, 1.0)]
    assert prf_grid([0], [0.5]) == [(0, 0.0)]


@pytest.mark.parametrize(
    ("relevant", "expected", "key"), [("d2", (1, 2.0), "k=1,beta=2"), ("d3", (0, 0.0), "k=0")]
)
def test_prf_chosen_on_dev_only_when_it_helps(relevant: str, expected: tuple, key: str) -> None:
    """Feedback is chosen when it lifts the dev relevant doc, and left off when it sinks it."""
    index, grid = _flat(PRF_DOCS), [(0, 0.0), (1, 0.5), (1, 2.0)]
    # The worked example above, in numbers: plain d1, d3, d2; with feedback d1, d2, d3.
    plain = search(index, PRF_IDS, ["q"], PRF_QUERY, 3)["q"]
    moved = search(index, PRF_IDS, ["q"], rocchio(index, PRF_QUERY, 1, 2.0), 3)["q"]
    assert (list(plain), list(moved)) == (["d1", "d3", "d2"], ["d1", "d2", "d3"])

    qrels = {"q": {relevant: 1}}
    choice = choose_prf(index, PRF_IDS, ["q"], PRF_QUERY, qrels, grid, 3, 10)
    assert (choice.k, choice.beta) == expected
    assert list(choice.grid) == ["k=0", "k=1,beta=0.5", "k=1,beta=2"]
    assert choice.grid[key] == max(choice.grid.values())
    with pytest.raises(ValueError, match="grid"):
        choose_prf(index, PRF_IDS, ["q"], PRF_QUERY, qrels, [], 3, 10)


def test_prf_from_a_first_pass_that_finds_what_dense_misses() -> None:
    """With d3 relevant, feedback from the dense search (d1 on top) sinks it, so dev turns
    feedback off; a first pass with d3 on top (as BM25 might rank it) makes the same
    feedback lift d3, and dev chooses it. The scored run can be a combination (a fusion)."""
    index, grid = _flat(PRF_DOCS), [(0, 0.0), (1, 2.0)]
    qrels = {"q": {"d3": 1}}
    args = (index, PRF_IDS, ["q"], PRF_QUERY, qrels, grid, 3, 10)
    assert choose_prf(*args).k == 0
    first_pass = {"q": {"d3": 1.0, "d1": 0.5}}
    chosen = choose_prf(*args, first_pass=first_pass)
    assert (chosen.k, chosen.beta) == (1, 2.0)
    rows = feedback_rows(first_pass, ["q"], PRF_IDS, 1)
    moved = search(index, PRF_IDS, ["q"], rocchio(index, PRF_QUERY, 1, 2.0, rows), 3)["q"]
    assert list(moved) == ["d3", "d1", "d2"]
    # What is scored is combine(dense run): a combination that drops d3 leaves nothing to gain.
    drop_d3 = choose_prf(
        *args,
        first_pass=first_pass,
        combine=lambda run: {
            q: {d: s for d, s in docs.items() if d != "d3"} for q, docs in run.items()
        },
    )
    assert drop_d3.k == 0 and set(drop_d3.grid.values()) == {0.0}


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retrieve", "key"),
    [
        ({"mode": "sparse"}, "retrieve.mode"),
        ({"fusion": "combsum"}, "retrieve.fusion"),
        ({"fusion_weights": [0.5, 1.5]}, "retrieve.fusion_weights"),
        ({"fusion_weights": []}, "retrieve.fusion_weights"),
        ({"rrf_ks": [0, 60]}, "retrieve.rrf_ks"),
        ({"bm25_b": 1.2}, "retrieve.bm25_b"),
        ({"bm25_k1": -1.0}, "retrieve.bm25_k1"),
        ({"prf_ks": []}, "retrieve.prf_ks"),
        ({"prf_ks": [0, -1]}, "retrieve.prf_ks"),
        ({"prf_ks": [0, 101]}, "retrieve.prf_ks"),
        ({"prf_betas": [0.0]}, "retrieve.prf_betas"),
        ({"prf_betas": "0.5"}, "retrieve.prf_betas"),
    ],
)
def test_bad_retrieve_config_is_rejected(retrieve: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        validate({"retrieve": retrieve})


@pytest.mark.parametrize("retrieve", [{"mode": "hybrid"}, {"prf_ks": [0, 3]}, {"mode": "bm25"}])
def test_dev_must_not_be_test(retrieve: dict) -> None:
    """Fusion and feedback are chosen on dev, and the dev curve is drawn there: a dev split
    that is the test split would leak, whatever the mode, and is rejected."""
    with pytest.raises(ConfigError, match=r"'dataset\.dev_split' and 'dataset\.test_split'"):
        validate({"retrieve": retrieve, "dataset": {"dev_split": "test"}})


def test_feedback_grids_validate() -> None:
    """RRF's grid and a feedback grid in BM25 mode (no dense run: nothing to choose) load."""
    cfg = validate({"retrieve": {"mode": "hybrid", "fusion": "rrf", "rrf_ks": [5, 50]}})
    assert cfg.retrieve.rrf_ks == [5, 50]
    assert validate({"retrieve": {"mode": "bm25", "prf_ks": [0, 3]}}).retrieve.prf
    assert not validate({}).retrieve.prf  # off unless asked for


# --- the stage -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory, tiny_beir: Path, tiny_bi_encoder: Path):
    """A flat index of the tiny corpus built with the tiny bi-encoder."""
    corpus = read_beir(tiny_beir, ["test"]).corpus
    model = load_bi_encoder(str(tiny_bi_encoder))
    out = tmp_path_factory.mktemp("index") / "index"
    write_index(build_index(encode_corpus(model, corpus, 32), IndexConfig()), list(corpus), out)
    return out


def _run_retrieve(tiny_beir: Path, model: Path, index: Path, retrieve_cfg: dict) -> Retrieval:
    """The retrieve stage's recipe, called as the stage calls it."""
    cfg = validate({"retrieve": retrieve_cfg})
    dataset = read_beir(tiny_beir, splits(cfg))
    dense = open_dense_index(index, model, cfg) if uses_dense(cfg) else None
    return retrieve(dataset, cfg, dense)


def test_stage_hybrid_writes_the_dev_choice(
    tiny_beir: Path, tiny_bi_encoder: Path, tiny_index: Path
) -> None:
    """mode=hybrid: the test run is the test runs fused with the parameter chosen on dev, and
    metrics/retrieve.json records that choice and the dev NDCG@10 behind it."""
    top_k = 8
    result = _run_retrieve(
        tiny_beir,
        tiny_bi_encoder,
        tiny_index,
        {"mode": "hybrid", "top_k": top_k, "fusion_weights": [0.2, 0.5, 0.8]},
    )
    metrics = result.choices
    assert metrics["mode"] == "hybrid" and metrics["fusion"] == "wsum"
    assert metrics["dense_weight"] in (0.2, 0.5, 0.8)
    assert set(metrics["dev_ndcg_at_10"]) == {"dense", "bm25", "fused"}
    assert list(metrics["dev_ndcg_at_10_grid"]) == ["0.2", "0.5", "0.8"]

    # Recompute from the library functions: the choice is dev's, the run is test's.
    dataset = read_beir(tiny_beir, ["dev", "test"])
    dev_q, test_q = dataset.split_queries("dev"), dataset.split_queries("test")
    model = load_bi_encoder(str(tiny_bi_encoder))
    from irtune.index import read_index

    index, doc_ids = read_index(tiny_index)
    runs = {
        name: (dense_search(model, index, doc_ids, qs, top_k, 64),
               bm25_search(dataset.corpus, qs, top_k))
        for name, qs in (("dev", dev_q), ("test", test_q))
    }  # fmt: skip
    choice = choose_fusion(*runs["dev"], dataset.qrels["dev"], "wsum", [0.2, 0.5, 0.8], top_k,
                           10)  # fmt: skip
    assert metrics["dense_weight"] == choice.param
    assert metrics["dev_ndcg_at_10"] == choice.dev
    expected = fuse(*runs["test"], "wsum", choice.param, top_k)
    written = result.run
    assert written.keys() == test_q.keys()  # no dev query leaks into the test run
    for qid, docs in written.items():
        assert len(docs) <= top_k
        assert docs == pytest.approx(expected[qid], abs=1e-6)
    # The written run scores as the library's fused run does.
    ndcg = evaluate_run(dataset.qrels["test"], written, EvaluateConfig())[0]["ndcg_at_10"]
    assert ndcg == evaluate_run(dataset.qrels["test"], expected, EvaluateConfig())[0]["ndcg_at_10"]


def test_stage_dense_feedback_is_chosen_on_dev(
    tiny_beir: Path, tiny_bi_encoder: Path, tiny_index: Path
) -> None:
    """mode=dense with a feedback grid: (k, beta) is dev's best, the test run is searched
    with it, and metrics/retrieve.json records the choice and the whole dev grid."""
    top_k, ks, betas = 6, [0, 1, 2], [0.5, 2.0]
    retrieve_cfg = {"mode": "dense", "top_k": top_k, "prf_ks": ks, "prf_betas": betas}
    result = _run_retrieve(tiny_beir, tiny_bi_encoder, tiny_index, retrieve_cfg)
    metrics = result.choices
    assert list(metrics["dev_ndcg_at_10_prf_grid"]) == [
        "k=0", "k=1,beta=0.5", "k=1,beta=2", "k=2,beta=0.5", "k=2,beta=2",
    ]  # fmt: skip

    dataset = read_beir(tiny_beir, ["dev", "test"])
    model = load_bi_encoder(str(tiny_bi_encoder))
    from irtune.index import read_index

    index, doc_ids = read_index(tiny_index)
    dev_q, test_q = dataset.split_queries("dev"), dataset.split_queries("test")
    dev_emb = encode_queries(model, dev_q, 64)
    grid = prf_grid(ks, betas)
    choice = choose_prf(index, doc_ids, list(dev_q), dev_emb, dataset.qrels["dev"], grid, top_k, 10)
    assert (metrics["prf_k"], metrics["prf_beta"]) == (choice.k, choice.beta)
    assert metrics["dev_ndcg_at_10_prf_grid"] == pytest.approx(choice.grid, abs=1e-6)
    emb = rocchio(index, encode_queries(model, test_q, 64), choice.k, choice.beta)
    expected = search(index, doc_ids, list(test_q), emb, top_k)
    written = result.run
    assert written.keys() == test_q.keys()  # no dev query leaks into the test run
    for qid, docs in written.items():
        assert list(docs) == list(expected[qid])
        assert docs == pytest.approx(expected[qid], abs=1e-5)


def test_stage_hybrid_feedback_comes_from_the_fused_first_pass(
    tiny_beir: Path, tiny_bi_encoder: Path, tiny_index: Path
) -> None:
    """mode=hybrid with a feedback grid: the first fusion is chosen on dev, (k, beta) by the
    dev NDCG of the fused run with feedback from that first fusion's top documents, then the
    final fusion on dev; the test run is what the library computes in that order."""
    top_k, ks, betas, weights = 6, [0, 1, 2], [0.5, 2.0], [0.2, 0.5, 0.8]
    retrieve_cfg = {"mode": "hybrid", "top_k": top_k, "prf_ks": ks, "prf_betas": betas,
                    "fusion_weights": weights}  # fmt: skip
    result = _run_retrieve(tiny_beir, tiny_bi_encoder, tiny_index, retrieve_cfg)
    metrics = result.choices

    dataset = read_beir(tiny_beir, ["dev", "test"])
    model = load_bi_encoder(str(tiny_bi_encoder))
    from irtune.index import read_index

    index, doc_ids = read_index(tiny_index)
    queries = {**dataset.split_queries("dev"), **dataset.split_queries("test")}
    qids, dev_qrels, cfg = list(queries), dataset.qrels["dev"], 10
    dev, test = list(dev_qrels), list(dataset.qrels["test"])
    emb = encode_queries(model, queries, 64)
    dense = search(index, doc_ids, qids, emb, top_k)
    sparse = bm25_search(dataset.corpus, queries, top_k)

    def sub(run: Run, keep: list[str]) -> Run:
        return {q: run.get(q, {}) for q in keep}

    first = choose_fusion(sub(dense, dev), sub(sparse, dev), dev_qrels, "wsum", weights, top_k, cfg)
    fused = fuse(dense, sparse, "wsum", first.param, top_k)
    dev_rows = [qids.index(q) for q in dev]
    feedback = choose_prf(
        index, doc_ids, dev, emb[dev_rows], dev_qrels, prf_grid(ks, betas), top_k, cfg,
        first_pass=sub(fused, dev),
        combine=lambda run: fuse(run, sub(sparse, dev), "wsum", first.param, top_k),
    )  # fmt: skip
    assert metrics["prf_first_pass"] == "hybrid"
    assert metrics["prf_first_pass_dense_weight"] == first.param
    assert (metrics["prf_k"], metrics["prf_beta"]) == (feedback.k, feedback.beta)
    assert metrics["dev_ndcg_at_10_prf_grid"] == pytest.approx(feedback.grid, abs=1e-6)

    rows = feedback_rows(fused, qids, doc_ids, feedback.k)
    dense = search(
        index, doc_ids, qids, rocchio(index, emb, feedback.k, feedback.beta, rows), top_k
    )
    final = choose_fusion(sub(dense, dev), sub(sparse, dev), dev_qrels, "wsum", weights, top_k, cfg)
    assert metrics["dense_weight"] == final.param
    expected = fuse(sub(dense, test), sub(sparse, test), "wsum", final.param, top_k)
    written = result.run
    assert written.keys() == set(test)  # no dev query leaks into the test run
    for qid, docs in written.items():
        assert docs == pytest.approx(expected[qid], abs=1e-5)


def test_stage_bm25_mode(tiny_beir: Path, tiny_bi_encoder: Path, tiny_index: Path) -> None:
    """mode=bm25 writes the BM25 run of the test queries and a metrics file naming the mode."""
    result = _run_retrieve(tiny_beir, tiny_bi_encoder, tiny_index, {"mode": "bm25", "top_k": 5})
    metrics = result.choices
    assert metrics == {"mode": "bm25", "top_k": 5}
    dataset = read_beir(tiny_beir, ["test"])
    expected = bm25_search(dataset.corpus, dataset.split_queries("test"), 5)
    written = result.run
    assert {q: list(d) for q, d in written.items()} == {q: list(d) for q, d in expected.items()}
