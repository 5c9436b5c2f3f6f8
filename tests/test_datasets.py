"""Any BEIR dataset, as users bring them: without a dev split (carved out of train, or none
at all), without a train split (zero-shot only), with graded and judged-non-relevant qrels;
and the ``dataset`` config group that names them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from harness import REPO, StageWorkspace, tiny_params

from irtune.beir import BeirDataset, carve_dev, read_beir
from irtune.compose import compose
from irtune.config import load_config, validate
from irtune.errors import ConfigError, DataError
from irtune.evaluate import evaluate_run
from irtune.io import read_jsonl
from irtune.prepare import build_rows


def _variant(tiny_beir: Path, root: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the tiny dataset without the qrels splits ``drop``."""
    data = Path(shutil.copytree(tiny_beir, root))
    for split in drop:
        (data / "qrels" / f"{split}.tsv").unlink()
    return data


# --- the config group ---------------------------------------------------------------------


def test_a_dataset_is_one_override(tmp_path: Path) -> None:
    """`-S dataset=scifact` selects SciFact's hub ids and its carved dev split; a local copy
    is one more override."""
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    cfg = load_config(compose(["dataset=scifact", "dataset.source=/data/scifact"], tmp_path))
    assert (cfg.dataset.name, cfg.dataset.source) == ("scifact", "/data/scifact")
    assert (cfg.dataset.dev_split, cfg.dataset.dev) == ("auto", "dev")
    assert cfg.dataset.qrels_source == "BeIR/scifact-qrels"
    default = load_config(compose([], tmp_path))
    assert (default.dataset.name, default.dataset.dev) == ("nfcorpus", "dev")


@pytest.mark.parametrize(
    ("dataset", "train", "key"),
    [
        ({"name": "../outside"}, {}, "dataset.name"),
        ({"name": "a/b"}, {}, "dataset.name"),
        ({"test_split": "../test"}, {}, "dataset.test_split"),
        ({"dev_split": "test"}, {}, "dataset.dev_split"),
        ({"dev_split": "train"}, {}, "dataset.train_split"),
        ({"train_split": ""}, {"epochs": 1}, "train.epochs"),
        ({"dev_fraction": 1.0}, {}, "dataset.dev_fraction"),
        ({"dev_split": "auto", "dev_fraction": 0.0}, {}, "dataset.dev_fraction"),
    ],
)
def test_dataset_values_that_cannot_make_sense_fail_at_load(
    dataset: dict, train: dict, key: str
) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate({"dataset": dataset, "train": train})


def test_without_a_train_split_only_zero_shot_loads() -> None:
    cfg = validate({"dataset": {"train_split": "", "dev_split": "auto"}, "train": {"epochs": 0}})
    assert cfg.dataset.dev == ""  # nothing to carve from
    assert cfg.dataset.splits == ["test"]


# --- carving a dev split out of train -----------------------------------------------------


def test_carve_dev_moves_a_seeded_fraction_of_train(tiny_beir: Path) -> None:
    """The carved queries leave train with all their judgements, test is untouched, and the
    record names them; the same seed carves the same queries, another seed others."""
    data = read_beir(tiny_beir, ["train", "test"])
    carved, record = carve_dev(data, "train", "dev", 0.25, seed=3)
    train, dev = carved.qrels["train"], carved.qrels["dev"]
    assert len(dev) == round(0.25 * len(data.qrels["train"])) == record["queries"]
    assert dev.keys().isdisjoint(train.keys())
    assert {**train, **dev} == data.qrels["train"]  # every judgement kept, once
    assert carved.qrels["test"] == data.qrels["test"]
    assert record["query_ids"] == list(dev)
    assert record["qrels"] == sum(len(d) for d in dev.values())
    assert (record["from_split"], record["fraction"], record["seed"]) == ("train", 0.25, 3)
    again, _ = carve_dev(data, "train", "dev", 0.25, seed=3)
    other, _ = carve_dev(data, "train", "dev", 0.25, seed=4)
    assert again.qrels["dev"] == dev and other.qrels["dev"] != dev


def test_carve_dev_takes_only_queries_it_can_score() -> None:
    """A train query judged only non-relevant stays in train: a dev query must have a
    relevant document to be scored."""
    qrels = {f"q{i}": {"d": 1} for i in range(9)} | {"zero": {"d": 0}}
    data = BeirDataset(corpus={"d": {"title": "", "text": "x"}}, queries={}, qrels={"t": qrels})
    for seed in range(20):
        carved, _ = carve_dev(data, "t", "dev", 0.5, seed)
        assert "zero" in carved.qrels["t"] and "zero" not in carved.qrels["dev"]


def test_carve_dev_refuses_too_few_queries() -> None:
    data = BeirDataset(corpus={}, queries={}, qrels={"t": {"q": {"d": 1}}})
    with pytest.raises(DataError, match=r"cannot carve 0\.2 of its 1 queries"):
        carve_dev(data, "t", "dev", 0.2, 0)


# --- whole pipelines on datasets that lack a split ----------------------------------------


def _run(root: Path, assets: dict[str, Path], data: Path, **sections: dict) -> StageWorkspace:
    sections["dataset"] = {"source": str(data)} | sections.get("dataset", {})
    ws = StageWorkspace(root, tiny_params(assets, tracking={"enabled": False}, **sections))
    ws.run_all()
    return ws


HYBRID_FEEDBACK = {"mode": "hybrid", "prf_ks": [0, 2], "prf_betas": [0.5], "top_k": 20}


def test_a_dataset_without_dev_gets_a_carved_one(
    tmp_path: Path, tiny_assets: dict[str, Path]
) -> None:
    """dev_split=auto: download writes the carved dev split and records it; the carved
    queries never reach training; the hybrid's choices are made on them."""
    data = _variant(tiny_assets["beir"], tmp_path / "data", drop=("dev",))
    ws = _run(
        tmp_path / "ws",
        tiny_assets,
        data,
        dataset={"dev_split": "auto", "dev_fraction": 0.25, "dev_seed": 1},
        retrieve=HYBRID_FEEDBACK,
    )
    counts = json.loads(ws.path("metrics/download.json").read_text())
    carve = counts["dev_carve"]
    raw = read_beir(ws.path("data/raw/${dataset.name}"), ["train", "dev", "test"])
    assert carve["query_ids"] == list(raw.qrels["dev"]) and len(carve["query_ids"]) == 4
    assert counts["dev_queries"] == 4 and counts["train_queries"] == 18 - 4
    dev_texts = {raw.queries[q] for q in raw.qrels["dev"]}
    rows = read_jsonl(ws.path("data/prepared/train.jsonl"))
    assert rows and not dev_texts & {r["anchor"] for r in rows}
    choices = json.loads(ws.path("metrics/retrieve.json").read_text())
    assert "dense_weight" in choices and "fusion_fallback" not in choices
    assert set(choices["dev_ndcg_at_10"]) == {"dense", "bm25", "fused"}
    history = json.loads(ws.path("metrics/train.json").read_text())
    assert history["dev_curve"], "no dev curve on the carved dev split"


def test_a_dataset_without_dev_falls_back_and_says_so(
    tmp_path: Path, tiny_assets: dict[str, Path]
) -> None:
    """dev_split="": nothing is chosen; the hybrid fuses with equal weights, feedback is
    off, there is no dev curve, and metrics/retrieve.json says why."""
    data = _variant(tiny_assets["beir"], tmp_path / "data", drop=("dev",))
    ws = _run(
        tmp_path / "ws", tiny_assets, data, dataset={"dev_split": ""}, retrieve=HYBRID_FEEDBACK
    )
    choices = json.loads(ws.path("metrics/retrieve.json").read_text())
    assert choices["dense_weight"] == 0.5 and choices["prf_k"] == 0
    assert choices["fusion_fallback"] == choices["prf_fallback"] == "no dev split: not chosen"
    assert json.loads(ws.path("metrics/train.json").read_text())["dev_curve"] == []
    assert "dev_carve" not in json.loads(ws.path("metrics/download.json").read_text())


def test_a_dataset_without_train_runs_zero_shot(
    tmp_path: Path, tiny_assets: dict[str, Path]
) -> None:
    """train_split="": no training rows, the base model passed through, and the test run
    evaluated against zero-shot (the same model, so no significant difference)."""
    data = _variant(tiny_assets["beir"], tmp_path / "data", drop=("train", "dev"))
    ws = _run(
        tmp_path / "ws",
        tiny_assets,
        data,
        dataset={"train_split": "", "dev_split": ""},
        train={"epochs": 0},
    )
    assert json.loads(ws.path("metrics/prepare.json").read_text()) == {"rows": 0, "columns": []}
    sig = json.loads(ws.path("metrics/significance.json").read_text())
    assert sig["retrieve"]["ndcg_at_10"]["verdict"] == "no significant difference"
    assert sorted(p.name for p in ws.path("data/raw/${dataset.name}/qrels").iterdir()) == [
        "test.tsv"
    ]


# --- qrels as BEIR has them: graded beyond 2, judged non-relevant rows ----------------------


@pytest.fixture
def graded(tiny_beir: Path, tmp_path: Path) -> BeirDataset:
    """The tiny dataset on a 0-3 scale: each train and test query's first relevant doc
    graded 3, one unjudged doc of each judged non-relevant (0), and the last test query
    judged only non-relevant."""
    data = Path(shutil.copytree(tiny_beir, tmp_path / "graded"))
    corpus_ids = [json.loads(line)["_id"] for line in (data / "corpus.jsonl").open()]
    for split in ("train", "test"):
        path = data / "qrels" / f"{split}.tsv"
        header, *rows = path.read_text().splitlines()
        by_query: dict[str, list[list[str]]] = {}
        for row in rows:
            by_query.setdefault(row.split("\t")[0], []).append(row.split("\t"))
        out = [header]
        for i, (qid, judged) in enumerate(by_query.items()):
            judged[0][2] = "3"
            docs = {d for _, d, _ in judged}
            judged.append([qid, next(d for d in corpus_ids if d not in docs), "0"])
            if split == "test" and i == len(by_query) - 1:
                judged = [[q, d, "0"] for q, d, _ in judged]
            out += ["\t".join(r) for r in judged]
        path.write_text("\n".join(out) + "\n")
    return read_beir(data, ["train", "test"])


def test_non_relevant_rows_are_never_positives(graded: BeirDataset) -> None:
    """A judged non-relevant document is never a training positive, and a score label scales
    by the highest grade."""
    mnrl = build_rows(graded, validate({"dataset": {"dev_split": ""}}))
    zero = {
        (graded.queries[q], d)
        for q, docs in graded.qrels["train"].items()
        for d, g in docs.items()
        if g <= 0
    }
    texts = {d: f"{doc['title']} {doc['text']}".strip() for d, doc in graded.corpus.items()}
    assert not {(r["anchor"], r["positive"]) for r in mnrl} & {(q, texts[d]) for q, d in zero}
    positives = sum(g > 0 for docs in graded.qrels["train"].values() for g in docs.values())
    assert len(mnrl) == positives
    cfg = validate(
        {
            "dataset": {"dev_split": ""},
            "loss": {"name": "cosent"},
            "prepare": {"negatives": "random"},
        }
    )
    labels = {r["score"] for r in build_rows(graded, cfg)}
    assert {1.0, 1 / 3, 0.0} <= labels <= {0.0, 1 / 3, 2 / 3, 1.0}


def test_non_relevant_rows_never_count_as_relevant(graded: BeirDataset) -> None:
    """Ranking a judged non-relevant document first scores as ranking any irrelevant one;
    a query judged only non-relevant is not scored at all."""
    cfg = validate({}).evaluate
    qrels = graded.qrels["test"]
    zero = {q: next(d for d, g in docs.items() if g == 0) for q, docs in qrels.items()}
    relevant = {q: [d for d, g in docs.items() if g > 0] for q, docs in qrels.items()}
    with_zero = {q: {zero[q]: 2.0} | {d: 1.0 for d in relevant[q]} for q in qrels}
    with_other = {q: {"D_unjudged": 2.0} | {d: 1.0 for d in relevant[q]} for q in qrels}
    means, per_query = evaluate_run(qrels, with_zero, cfg)
    assert means == evaluate_run(qrels, with_other, cfg)[0]
    assert all(any(g > 0 for g in qrels[q].values()) for q in per_query)
