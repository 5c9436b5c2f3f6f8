"""What does each pipeline stage cost, in peak memory and wall time, on a corpus of half a
million documents, and how far is that from what its data needs?

A synthetic BEIR dataset (default 500,000 documents and 10,000 queries; seeded, so every run
writes the same bytes) and a ``StaticEmbedding`` bi-encoder built offline (so that model
time does not dominate) go through every stage of the real pipeline, in ``dvc.yaml``'s
order, as DVC runs them: each stage's ``dvc.yaml`` command through a shell, in a workspace
holding ``params.yaml``, a copy of ``dvc.yaml`` and links to this checkout's ``stages/``
and ``src/``. Each stage is one child process, run under GNU ``time``: its peak resident
memory is the kernel's ``ru_maxrss`` of that process (:func:`timed`).

The recipe: 512 training pairs for one epoch of MNRL with the dev evaluation (over the whole
corpus) on, a flat index, hybrid retrieval (BM25 over the corpus is a real memory
consumer), no reranking (``rerank.top_k=0``: no cross-encoder offline), no tracking.

Beside each stage's figures stand the sizes that bound its memory from below: the corpus
text (titles and texts, once), the embeddings (docs x dim x 4 bytes), the index, the runs
(:data:`NEEDS`). With ``floor_docs``, the same pipeline first runs on that many documents:
its peaks are what a stage costs without data (interpreter, libraries, model), and the
full run's peak minus that floor is what the data costs.

Run it through the runner::

    PYTHONPATH=src python benchmarks/bench.py --only scale             # 500k docs, 10k queries
    PYTHONPATH=src python benchmarks/bench.py --only scale --quick     # 5k docs, 200 queries
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO

log = logging.getLogger("bench.scale")

SEED = 0
#: The embedding size of the static model.
DIM = 256
#: Words of the synthetic language, by Zipf rank; topics; words per topic.
VOCAB_SIZE = 4_000
TOPICS = 1_000
TOPIC_WORDS = 20
#: Share of a document's words drawn from its topic's words (the rest: the Zipf background).
TOPIC_SHARE = 0.3
ZIPF_EXPONENT = 1.0
#: Document lengths in words: log-normal around the median, clipped to the range.
MEDIAN_WORDS, MIN_WORDS, MAX_WORDS = 80, 30, 200
#: Documents generated (and written) at a time.
CHUNK = 10_000
#: Query splits, in order, and their shares of the queries.
SPLITS = (("train", 0.8), ("dev", 0.1), ("test", 0.1))
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CONSONANTS, VOWELS = "bdfgklmnprstvz", "aeiou"

#: What bounds each stage's memory from below: the data it must hold at once.
NEEDS = {
    "download": ("corpus_text",),
    "prepare": ("corpus_text",),
    "train": ("corpus_text",),
    "encode": ("corpus_text", "embeddings"),
    "index": ("embeddings", "index"),
    "retrieve": ("corpus_text", "index"),
    "train_reranker": ("corpus_text",),  # when rerank.model is "trained"; else a note
    "rerank": ("retrieve_run",),
    "baseline": ("corpus_text", "embeddings"),
    "evaluate": ("runs",),
}

#: The params the run overrides (over the schema's defaults), by section.
RECIPE = {
    "dataset": {"name": "synthetic", "qrels_source": "", "dev_split": "dev"},
    "prepare": {"max_pairs": 512, "negatives": "none"},
    "train": {"epochs": 1, "batch_size": 32, "eval_dev": True},
    "encode": {"batch_size": 256},
    "index": {"type": "flat"},
    "retrieve": {"mode": "hybrid", "top_k": 100, "prf_ks": [0]},
    "rerank": {"top_k": 0},
    "tracking": {"enabled": False},
}

MIB = 2**20

#: GNU time, which reports the user and system CPU seconds and the peak resident memory
#: (``%U %S %M``, the last in KiB) of the command it runs.
GNU_TIME = Path("/usr/bin/time")
#: The same, where GNU time is missing: run ``argv[2:]``, write the figures to ``argv[1]``.
LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode; "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "open(sys.argv[1], 'w').write(f'{u.ru_utime} {u.ru_stime} {u.ru_maxrss}'); sys.exit(code)"
)


@dataclass
class Language:
    """A synthetic language: pseudo-words by Zipf rank, and each topic's words."""

    words: np.ndarray  #: object array of str, most frequent first
    cdf: np.ndarray  #: cumulative Zipf probability of each rank
    topics: np.ndarray  #: (TOPICS, TOPIC_WORDS) word ids

    @classmethod
    def make(cls, rng: np.random.Generator) -> Language:
        """Consonant-vowel pseudo-words of two and three syllables, none an English stopword."""
        import bm25s.stopwords

        syllables = [c + v for c in CONSONANTS for v in VOWELS]
        pool = [a + b for a in syllables for b in syllables]
        pool += [a + b + c for a in syllables[:20] for b in syllables for c in syllables[:20]]
        stop = set(bm25s.stopwords.STOPWORDS_EN)
        words = [w for w in rng.permutation(np.array(pool)).tolist() if w not in stop]
        # Frequent words are short, as in any language.
        words = sorted(words[:VOCAB_SIZE], key=len)
        ranks = np.arange(1, VOCAB_SIZE + 1, dtype=np.float64)
        cdf = np.cumsum(ranks**-ZIPF_EXPONENT)
        # Topic words are content words: outside the few hundred most frequent.
        topics = rng.integers(200, VOCAB_SIZE, size=(TOPICS, TOPIC_WORDS))
        return cls(np.array(words, dtype=object), cdf / cdf[-1], topics)

    def draw(self, topic: np.ndarray, lengths: np.ndarray, rng: np.random.Generator):
        """Word ids of documents of ``topic`` and ``lengths``, concatenated, and which are
        topic words."""
        total = int(lengths.sum())
        ids = np.searchsorted(self.cdf, rng.random(total), side="right")
        topical = rng.random(total) < TOPIC_SHARE
        owner = np.repeat(topic, lengths)[topical]
        ids[topical] = self.topics[owner, rng.integers(TOPIC_WORDS, size=owner.size)]
        return ids, topical


def _query(ids: np.ndarray, topical: np.ndarray, lang: Language, rng: np.random.Generator) -> str:
    """A query of 2 to 5 distinct words of a document, its topic words when it has some."""
    pool = np.unique(ids[topical]) if topical.any() else np.unique(ids)
    picked = rng.choice(pool, size=min(int(rng.integers(2, 6)), pool.size), replace=False)
    return " ".join(lang.words[picked].tolist())


def _spans(lengths: np.ndarray) -> list[tuple[int, int]]:
    """``(begin, end)`` of each run of ``lengths`` items, laid end to end."""
    ends = np.cumsum(lengths).tolist()
    return list(zip([0, *ends[:-1]], ends, strict=True))


def _chunk(start: int, topic: np.ndarray, lang: Language, sources: set[int], rng):
    """The JSON lines of documents ``start..start + len(topic)``, their text's size in bytes,
    and the query drawn from each of them that is in ``sources``."""
    lengths = np.clip(rng.lognormal(np.log(MEDIAN_WORDS), 0.5, topic.size), MIN_WORDS, MAX_WORDS)
    lengths = lengths.astype(np.int64)
    title_lengths = rng.integers(3, 9, topic.size)
    ids, topical = lang.draw(topic, lengths, rng)
    title_ids, _ = lang.draw(topic, title_lengths, rng)
    words, title_words = lang.words[ids].tolist(), lang.words[title_ids].tolist()
    lines, size, queries = [], 0, {}
    spans = zip(_spans(lengths), _spans(title_lengths), strict=True)
    for i, ((begin, end), (t_begin, t_end)) in enumerate(spans):
        title, text = " ".join(title_words[t_begin:t_end]), " ".join(words[begin:end])
        size += len(title) + 1 + len(text)
        lines.append(json.dumps({"_id": f"D{start + i}", "title": title, "text": text}))
        if start + i in sources:
            queries[start + i] = _query(ids[begin:end], topical[begin:end], lang, rng)
    return lines, size, queries


def _qrels(sources: np.ndarray, doc_topic: np.ndarray, rng) -> list[dict[int, int]]:
    """Each query's judgements: its source document (2) and 0 to 2 of its topic's (1)."""
    order = np.argsort(doc_topic, kind="stable")
    bounds = np.searchsorted(doc_topic[order], np.arange(TOPICS + 1))
    judged = []
    for did in sources.tolist():
        topic = doc_topic[did]
        same = order[bounds[topic] : bounds[topic + 1]]
        others = rng.choice(same, size=min(int(rng.integers(0, 3)), same.size), replace=False)
        judged.append({int(d): 1 for d in others.tolist() if d != did} | {did: 2})
    return judged


def write_synthetic_beir(root: Path, n_docs: int, n_queries: int, seed: int) -> dict[str, Any]:
    """Write a seeded synthetic BEIR dataset under ``root``.

    Documents: a title of 3 to 8 words and a text of 30 to 200 (log-normal, median 80) from
    a Zipfian language of :data:`VOCAB_SIZE` pseudo-words, a share of them from the
    document's topic. Queries: 2 to 5 words of one document, relevant to it (grade 2) and
    to 0 to 2 other documents of its topic (grade 1), split into train, dev and test.

    Returns:
        The counts and the corpus text's size in bytes (titles and texts, as encoded).
    """
    rng = np.random.default_rng(seed)
    lang = Language.make(rng)
    doc_topic = rng.integers(TOPICS, size=n_docs)
    sources = np.sort(rng.choice(n_docs, size=n_queries, replace=False))
    source_set = set(sources.tolist())
    root.mkdir(parents=True)
    text_bytes, texts = 0, {}
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for start in range(0, n_docs, CHUNK):
            topic = doc_topic[start : start + CHUNK]
            lines, size, queries = _chunk(start, topic, lang, source_set, rng)
            fh.write("\n".join(lines) + "\n")
            text_bytes += size
            texts |= queries
    with (root / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, did in enumerate(sources.tolist()):
            fh.write(json.dumps({"_id": f"Q{qid}", "text": texts[did]}) + "\n")
    _write_qrels(root / "qrels", _qrels(sources, doc_topic, rng), rng)
    return {"docs": n_docs, "queries": n_queries, "corpus_text_bytes": text_bytes}


def _write_qrels(folder: Path, judged: list[dict[int, int]], rng) -> None:
    """Split the queries (seeded) by :data:`SPLITS` and write ``<split>.tsv`` for each."""
    folder.mkdir()
    order = rng.permutation(len(judged)).tolist()
    begin = 0
    for i, (split, share) in enumerate(SPLITS):
        end = len(order) if i == len(SPLITS) - 1 else begin + round(share * len(order))
        rows = [f"Q{q}\tD{d}\t{g}" for q in sorted(order[begin:end]) for d, g in judged[q].items()]
        (folder / f"{split}.tsv").write_text(
            "\n".join(["query-id\tcorpus-id\tscore", *rows]) + "\n", encoding="utf-8"
        )
        begin = end


def build_static_model(out_dir: Path, corpus: Path, dim: int, seed: int) -> Path:
    """Save a ``StaticEmbedding`` SentenceTransformer (random token vectors, normalised).

    Its WordPiece vocabulary is counted from the corpus' first :data:`CHUNK` documents
    (``tests/tiny_assets.py``'s deterministic tokenizer): every pseudo-word is one token.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

    if str(REPO / "tests") not in sys.path:  # tests/ is not a package
        sys.path.insert(0, str(REPO / "tests"))
    from tiny_assets import train_tokenizer

    texts = []
    with corpus.open(encoding="utf-8") as fh:
        for _, line in zip(range(CHUNK), fh, strict=False):
            doc = json.loads(line)
            texts.append(f"{doc['title']} {doc['text']}")
    tokenizer = train_tokenizer(texts, vocab_size=VOCAB_SIZE + 200)
    weights = np.random.default_rng(seed).standard_normal((len(tokenizer), dim), dtype=np.float32)
    static = StaticEmbedding(tokenizer, embedding_weights=weights)
    SentenceTransformer(modules=[static, Normalize()], device="cpu").save(str(out_dir))
    return out_dir


def scale_params(beir: Path, model: Path) -> dict[str, Any]:
    """params.yaml for the run: the schema's defaults, then :data:`RECIPE` and the paths."""
    from irtune.config import Config

    params = asdict(Config())
    for section, values in RECIPE.items():
        params[section].update(values)
    params["dataset"]["source"] = str(beir)
    params["model"]["base"] = str(model)
    return params


def timed(cmd: list[str], peak_file: Path) -> list[str]:
    """``cmd`` under GNU time (or, without it, :data:`LAUNCHER`), writing its CPU seconds and
    peak resident memory as the last line of ``peak_file``.

    The command is forked from that small process, not from this one: a child forked from a
    process holding torch keeps that process's resident size in its own ``ru_maxrss``.
    """
    if GNU_TIME.is_file():
        return [str(GNU_TIME), "-f", "%U %S %M", "-o", str(peak_file), *cmd]
    return [sys.executable, "-c", LAUNCHER, str(peak_file), *cmd]


def measure(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> dict[str, float]:
    """Run ``cmd`` to its end: its wall seconds, CPU seconds (user and system: what other jobs
    on the machine change least) and peak resident memory in MiB (:func:`timed`).

    Raises:
        RuntimeError: If the command fails; the message ends with its output.
    """
    peak_file = log_path.with_suffix(".peak")
    start = time.perf_counter()
    with log_path.open("wb") as out:
        returncode = subprocess.run(
            timed(cmd, peak_file),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    wall = time.perf_counter() - start
    if returncode:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise RuntimeError(f"`{' '.join(cmd)}` exited {returncode}:\n{tail}")
    # GNU time writes a line before the figures when the command fails: the last line counts.
    user, system, peak_kib = peak_file.read_text(encoding="utf-8").splitlines()[-1].split()
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(float(user) + float(system), 1),
        "peak_rss_mib": round(int(peak_kib) / 1024, 1),
    }


def run_pipeline(root: Path, params: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every stage of ``dvc.yaml``, in its order, as DVC runs it, in workspace ``root``.

    Returns:
        Each stage's wall seconds and peak memory.
    """
    import yaml

    from irtune.pipeline import DVC_YAML, interpolate, load_stages
    from irtune.workspace import clean_env

    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (root / DVC_YAML).write_bytes((REPO / DVC_YAML).read_bytes())
    for name in ("stages", "src"):
        (root / name).symlink_to(REPO / name, target_is_directory=True)
    # DVC runs every stage with the `python` first on PATH: the one running this.
    env = clean_env(Path(sys.executable).parent)
    (root / "logs").mkdir()
    figures = {}
    for name, stage in load_stages(REPO / DVC_YAML).items():
        cmd = ["sh", "-c", interpolate(stage["cmd"], params)]
        figures[name] = measure(cmd, root, env, root / "logs" / f"{name}.log")
        log.info("%s: %.1f s (%.1f s CPU), peak %.0f MiB", name, *figures[name].values())
    return figures


def data_sizes(root: Path, corpus_text_bytes: int) -> dict[str, int]:
    """The sizes, in bytes, of what the stages hold: see :data:`NEEDS`."""
    embeddings = np.load(root / "data" / "embeddings" / "embeddings.npy", mmap_mode="r")
    runs = root / "data" / "runs"
    return {
        "corpus_text": corpus_text_bytes,
        "embeddings": embeddings.size * embeddings.itemsize,
        "index": (root / "data" / "index" / "index.faiss").stat().st_size,
        "retrieve_run": (runs / "retrieve.trec").stat().st_size,
        "runs": sum(p.stat().st_size for p in runs.glob("*.trec")),
    }


def _scaled_run(work: Path, n_docs: int, n_queries: int, seed: int, dim: int):
    """Data, model and the whole pipeline at one size: (dataset facts, sizes, stage figures)."""
    start = time.perf_counter()
    facts = write_synthetic_beir(work / "beir", n_docs, n_queries, seed)
    build_static_model(work / "model", work / "beir" / "corpus.jsonl", dim, seed)
    facts["generate_s"] = round(time.perf_counter() - start, 1)
    log.info("%d docs, %d queries written in %.1f s", n_docs, n_queries, facts["generate_s"])
    figures = run_pipeline(work / "ws", scale_params(work / "beir", work / "model"))
    return facts, data_sizes(work / "ws", facts["corpus_text_bytes"]), figures


def bench_scale(
    n_docs: int, n_queries: int, floor_docs: int = 0, seed: int = SEED, dim: int = DIM
) -> dict[str, Any]:
    """Each stage's wall time and peak memory on ``n_docs`` synthetic documents, beside the
    data sizes that bound it (:data:`NEEDS`); with ``floor_docs``, the same first on that
    many documents (and proportionally fewer queries), whose peaks are the stages' floor."""
    with tempfile.TemporaryDirectory(prefix="irtune-bench-scale-") as tmp:
        floors = {}
        if floor_docs:
            floor_queries = max(100, n_queries * floor_docs // n_docs)
            _, _, floors = _scaled_run(Path(tmp) / "floor", floor_docs, floor_queries, seed, dim)
        facts, sizes, figures = _scaled_run(Path(tmp) / "full", n_docs, n_queries, seed, dim)
    stages = {}
    for name, fig in figures.items():
        needs = {key: round(sizes[key] / MIB, 1) for key in NEEDS[name]}
        entry = fig | {"needs_mib": needs, "needs_total_mib": round(sum(needs.values()), 1)}
        if name in floors:
            entry["floor_mib"] = floors[name]["peak_rss_mib"]
            entry["data_mib"] = round(fig["peak_rss_mib"] - entry["floor_mib"], 1)
        stages[name] = entry
    return {
        **facts,
        "dim": dim,
        "seed": seed,
        "floor_docs": floor_docs,
        "recipe": RECIPE,
        "sizes_mib": {key: round(value / MIB, 1) for key, value in sizes.items()},
        "stages": stages,
        "pipeline_wall_s": round(sum(f["wall_s"] for f in figures.values()), 1),
        "pipeline_cpu_s": round(sum(f["cpu_s"] for f in figures.values()), 1),
        "max_peak_rss_mib": max(f["peak_rss_mib"] for f in figures.values()),
    }
