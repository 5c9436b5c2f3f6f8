"""Tiny, offline test assets: a BEIR-layout dataset and two untrained BERT models.

Tests cannot reach the Hugging Face hub, so everything a pipeline stage needs is
built here from scratch in a few seconds. Usable from pytest (see ``conftest.py``)
and as a script::

    python tests/tiny_assets.py /tmp/tiny
"""

from __future__ import annotations

import json
import logging
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

logger = logging.getLogger(__name__)

SEED = 0
DOCS_PER_TOPIC = 10
RELEVANT_PER_QUERY = 4
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Each topic: (title stem, topical fact sentences, six queries). Topics share no content
# words on purpose, so even a freshly fine-tuned tiny model can separate them.
TOPICS: list[tuple[str, list[str], list[str]]] = [
    (
        "Vitamin D and bone health",
        [
            "Vitamin D supplementation increased bone mineral density in older adults.",
            "Low serum vitamin D was associated with more hip fractures.",
            "Sunlight exposure raises vitamin D synthesis in the skin.",
            "Calcium combined with vitamin D reduced osteoporosis progression.",
            "Children with rickets showed vitamin D deficiency and weak bones.",
            "High dose vitamin D did not prevent falls in elderly women.",
            "Bone density scans improved after a year of vitamin D.",
            "Winter months lowered vitamin D levels in northern populations.",
        ],
        [
            "does vitamin d prevent fractures",
            "vitamin d supplements and bone density",
            "sunlight vitamin d deficiency",
            "calcium and vitamin d for osteoporosis",
            "rickets in children caused by low vitamin d",
            "vitamin d falls in the elderly",
        ],
    ),
    (
        "Statins and cholesterol",
        [
            "Statin therapy lowered LDL cholesterol by a third.",
            "Patients taking statins had fewer strokes and heart attacks.",
            "Muscle pain is a common side effect reported with statins.",
            "Atorvastatin reduced triglycerides in hyperlipidemia patients.",
            "High cholesterol in arteries forms atherosclerotic plaque.",
            "Statins slightly increased the risk of new diabetes diagnoses.",
            "Cholesterol lowering drugs were compared against diet changes.",
            "Rosuvastatin improved lipid profiles after twelve weeks.",
        ],
        [
            "do statins lower ldl cholesterol",
            "statin muscle pain side effects",
            "atorvastatin triglycerides",
            "cholesterol plaque in arteries",
            "statins and risk of stroke",
            "rosuvastatin lipid profile",
        ],
    ),
    (
        "Sugar and diabetes",
        [
            "Sugary drinks raised the incidence of type 2 diabetes.",
            "High fructose intake worsened insulin resistance.",
            "Glucose tolerance improved when added sugar was reduced.",
            "Diabetic patients monitored blood glucose after sweet meals.",
            "Insulin sensitivity declined with a high sugar diet.",
            "Sweetened beverages increased HbA1c in prediabetes.",
            "Cutting sugar lowered fasting glucose in obese adults.",
            "Pancreatic beta cells secrete insulin in response to glucose.",
        ],
        [
            "sugary drinks and type 2 diabetes",
            "fructose insulin resistance",
            "added sugar glucose tolerance",
            "sweetened beverages hba1c prediabetes",
            "does sugar cause diabetes",
            "fasting glucose after cutting sugar",
        ],
    ),
    (
        "Soy and cancer",
        [
            "Soy isoflavones were linked to lower breast cancer recurrence.",
            "Tofu consumption was common in the Asian cohort studied.",
            "Genistein from soybeans slowed tumor growth in mice.",
            "Soy protein intake showed no effect on prostate cancer.",
            "Phytoestrogens in soy mimic estrogen weakly.",
            "Women eating soy foods had reduced tumor markers.",
            "Soybean extracts inhibited cancer cell proliferation.",
            "Soy milk was tested as a dietary cancer prevention strategy.",
        ],
        [
            "soy isoflavones breast cancer",
            "does tofu prevent cancer",
            "genistein tumor growth",
            "soy protein prostate cancer",
            "phytoestrogens in soybeans",
            "soy milk cancer prevention",
        ],
    ),
    (
        "Coffee and the heart",
        [
            "Coffee drinkers had lower rates of heart failure.",
            "Caffeine briefly raised blood pressure after an espresso.",
            "Moderate coffee intake was not linked to arrhythmia.",
            "Decaffeinated coffee showed similar cardiovascular benefits.",
            "Heavy caffeine use increased palpitations in some people.",
            "Three cups of coffee daily reduced coronary heart disease.",
            "Coffee polyphenols improved endothelial function of vessels.",
            "Espresso consumption was tracked in a cardiology cohort.",
        ],
        [
            "coffee and heart failure",
            "caffeine blood pressure",
            "does coffee cause arrhythmia",
            "decaf coffee cardiovascular",
            "caffeine palpitations",
            "coffee cups coronary heart disease",
        ],
    ),
    (
        "Fish and mercury",
        [
            "Tuna and swordfish contain high levels of methylmercury.",
            "Pregnant women were advised to limit mercury from fish.",
            "Omega-3 fatty acids in salmon outweighed mercury risks.",
            "Mercury exposure from seafood impaired child neurodevelopment.",
            "Fish oil supplements contained negligible mercury.",
            "Shark meat showed the highest mercury concentration sampled.",
            "Eating sardines twice weekly supplied omega-3 safely.",
            "Hair mercury levels rose with frequent tuna consumption.",
        ],
        [
            "mercury in tuna",
            "fish during pregnancy mercury",
            "salmon omega-3 versus mercury",
            "seafood mercury child development",
            "fish oil supplements mercury",
            "shark swordfish mercury levels",
        ],
    ),
]

# Study-design boilerplate shared by all topics: noise a retriever must learn to ignore.
STUDY_TITLES = ["review", "cohort study", "randomized trial", "meta-analysis", "report"]
FILLER = [
    "Participants were followed for five years.",
    "The results were adjusted for age and sex.",
    "Further research is needed to confirm these findings.",
    "Data came from a national health survey.",
]


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_tiny_beir(root: Path) -> Path:
    """Write a deterministic BEIR-layout dataset (60 docs, 36 queries, 3 qrels splits).

    Per topic: 10 docs, 3 train queries, then the 3 remaining queries are spread
    so that dev gets 8 and test 10 in total. Each query is relevant to 4 docs of
    its own topic; train scores are all 1, dev/test graded 2 (first two) and 1.

    Args:
        root: Folder to write ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/`` into.

    Returns:
        ``root``.
    """
    rng = random.Random(SEED)
    root.mkdir(parents=True, exist_ok=True)
    corpus: list[dict[str, str]] = []
    queries: list[dict[str, str]] = []
    qrels: dict[str, list[tuple[str, str, int]]] = {"train": [], "dev": [], "test": []}

    for t, (stem, facts, topic_queries) in enumerate(TOPICS):
        doc_ids = []
        for k in range(DOCS_PER_TOPIC):
            doc_id = f"D{len(corpus) + 1}"
            doc_ids.append(doc_id)
            text = " ".join([*rng.sample(facts, 2), rng.choice(FILLER)])
            title = f"{stem}: {STUDY_TITLES[k % len(STUDY_TITLES)]}"
            corpus.append({"_id": doc_id, "title": title, "text": text})

        for j, text in enumerate(topic_queries):
            query_id = f"Q{len(queries) + 1}"
            queries.append({"_id": query_id, "text": text})
            # Queries 0-2 train, 3 dev, 5 test; query 4 is dev for the first two topics
            # and test otherwise -> 18 / 8 / 10 queries.
            if j < 3:
                split = "train"
            elif j == 3 or (j == 4 and t < 2):
                split = "dev"
            else:
                split = "test"
            relevant = rng.sample(doc_ids, RELEVANT_PER_QUERY)
            for rank, doc_id in enumerate(relevant):
                score = 1 if split == "train" or rank >= 2 else 2
                qrels[split].append((query_id, doc_id, score))

    _write_jsonl(root / "corpus.jsonl", corpus)
    _write_jsonl(root / "queries.jsonl", queries)
    (root / "qrels").mkdir(exist_ok=True)
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t{s}" for q, d, s in rows)]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def train_tokenizer(texts: list[str], vocab_size: int = 1000) -> BertTokenizerFast:
    """Build a lowercase BERT WordPiece tokenizer whose vocabulary comes from ``texts``.

    ``tokenizers.trainers.WordPieceTrainer`` breaks merge ties in hash-map order, so
    its vocabulary changes from run to run. Instead the vocabulary is counted here with
    the same normalizer and pre-tokenizer: every character (bare and as a ``##``
    continuation, so any word over the corpus alphabet is tokenizable) plus the most
    frequent whole words.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words_per_text = (pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(t)) for t in texts)
    counts = Counter(word for words in words_per_text for word, _ in words)
    chars = sorted({c for word in counts for c in word})
    vocab = SPECIAL_TOKENS + chars + [f"##{c}" for c in chars]
    # Frequency first, then alphabetical, so ties never depend on iteration order.
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab += words[: vocab_size - len(vocab)]

    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    # model_max_length must not exceed max_position_embeddings, or long inputs crash.
    return BertTokenizerFast(tokenizer_object=tok, model_max_length=128)


def _tiny_config(vocab_size: int, **kwargs: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **kwargs,
    )


def build_tiny_bi_encoder(out_dir: Path, texts: list[str]) -> Path:
    """Build and save a random-init SentenceTransformer (BERT, mean pooling, normalize).

    Args:
        out_dir: Folder to save into; loads with ``SentenceTransformer(str(out_dir))``.
        texts: Texts to train the WordPiece vocabulary on.

    Returns:
        ``out_dir``.
    """
    tokenizer = train_tokenizer(texts)
    torch.manual_seed(SEED)
    model = BertModel(_tiny_config(len(tokenizer)))
    # Transformer() only loads from a path, so stage the HF checkpoint in a temp folder.
    with tempfile.TemporaryDirectory() as hf_dir:
        model.save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        transformer = Transformer(hf_dir, max_seq_length=64)
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
        model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
        model.save(str(out_dir))
    return out_dir


def build_tiny_cross_encoder(out_dir: Path, texts: list[str]) -> Path:
    """Build and save a random-init single-logit BERT reranker.

    Args:
        out_dir: Folder to save into; loadable with ``CrossEncoder(str(out_dir))``.
        texts: Texts to train the WordPiece vocabulary on.

    Returns:
        ``out_dir``.
    """
    tokenizer = train_tokenizer(texts)
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(_tiny_config(len(tokenizer), num_labels=1))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_all(root: Path) -> dict[str, Path]:
    """Build the dataset and both models under ``root``.

    Args:
        root: Parent folder; gets ``beir/``, ``bi_encoder/`` and ``cross_encoder/``.

    Returns:
        Mapping ``{"beir", "bi_encoder", "cross_encoder"}`` to their folders.
    """
    beir = write_tiny_beir(root / "beir")
    docs = [
        json.loads(line)
        for line in (beir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    queries = [
        json.loads(line)
        for line in (beir / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    texts = [f"{d['title']} {d['text']}" for d in docs] + [q["text"] for q in queries]
    return {
        "beir": beir,
        "bi_encoder": build_tiny_bi_encoder(root / "bi_encoder", texts),
        "cross_encoder": build_tiny_cross_encoder(root / "cross_encoder", texts),
    }


def tiny_config(assets: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The config sections that point the pipeline at ``assets`` and shrink what costs time.

    The one tiny config: tests write it into ``params.yaml`` (over the schema defaults) or
    into ``conf/config.yaml`` (:func:`write_tiny_conf`) for DVC to compose.
    """
    return {
        "dataset": {"name": "tiny", "source": str(assets["beir"])},
        "model": {"base": str(assets["bi_encoder"])},
        # 36-72 train pairs / batch 8 = 5-9 steps an epoch: log the loss every 2, a curve.
        # The dev curve on, as the e2e scenarios check it (the default recipe turns it off).
        "train": {
            "max_seq_length": 64,
            "batch_size": 8,
            "epochs": 1,
            "logging_steps": 2,
            "eval_dev": True,
        },
        "encode": {"batch_size": 16},
        "retrieve": {"top_k": 20},
        "rerank": {
            "model": str(assets["cross_encoder"]),
            "max_length": 128,
            "batch_size": 16,
            "top_k": 20,
        },
    }


def write_tiny_conf(config: Path, assets: dict[str, Path], **sections: dict[str, Any]) -> None:
    """Point the Hydra config ``config`` (a copy's ``conf/config.yaml``) at the tiny assets.

    The tiny dataset becomes an option of the ``dataset`` group (``conf/dataset/tiny.yaml``,
    selected in the defaults list), as a user adds their own; the other sections of
    :func:`tiny_config`, then ``sections``, update ``config`` itself.
    """
    import dataclasses

    import yaml

    from irtune.config import DatasetConfig

    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    if "defaults" not in cfg:
        raise ValueError(f"{config} has no Hydra defaults list: {cfg}")
    overrides = tiny_config(assets)
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    dataset = dataclasses.asdict(DatasetConfig()) | overrides.pop("dataset")
    option = config.parent / "dataset" / f"{dataset['name']}.yaml"
    option.write_text(yaml.safe_dump(dataset, sort_keys=False), encoding="utf-8")
    cfg["defaults"] = [
        {"dataset": dataset["name"]} if isinstance(d, dict) and "dataset" in d else d
        for d in cfg["defaults"]
    ]
    for name, values in overrides.items():
        cfg.setdefault(name, {}).update(values)
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name, path in build_all(Path(sys.argv[1])).items():
        logger.info("%s: %s", name, path)
