"""The one typed config schema of irtune.

``params.yaml`` is composed from ``conf/`` by Hydra (DVC does this on ``dvc exp run``;
``make params`` does it for plain ``dvc repro``). Every stage loads it through
:func:`load_config`, which merges it onto the dataclasses below with OmegaConf's structured
configs: an unknown key or a value of the wrong type fails at once, naming the key.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irtune.errors import ConfigError

#: Losses the ``loss`` config group offers, by family. The MNRL family trains on
#: (anchor, positive[, negative]) rows with in-batch negatives; the score family on
#: (sentence1, sentence2, score) rows with a 0..1 label per pair.
MNRL_FAMILY = ("mnrl", "cached_mnrl", "gist", "cached_gist")
SCORE_FAMILY = ("cosent", "cosine")
LOSSES = MNRL_FAMILY + SCORE_FAMILY

#: Inference engines of the bi-encoder (``encode.backend``) and the cross-encoder
#: (``rerank.backend``), and the precisions each offers (``encode.precision``,
#: ``rerank.precision``): int8 is ONNX Runtime's dynamic quantization, bf16 OpenVINO's on a
#: CPU; torch's fp16 and bf16 are half-precision weights on a CUDA GPU.
ENCODE_PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "fp16", "bf16"),
    "onnx": ("fp32", "int8"),
    "openvino": ("fp32", "bf16"),
}


#: ``dataset.dev_split`` value that carves a dev split out of the train queries.
AUTO = "auto"
#: The name a carved dev split gets in the downloaded data.
CARVED_DEV = "dev"


@dataclass
class DatasetConfig:
    """A BEIR dataset: where it comes from, and which qrels splits play which role.

    An option of the ``dataset`` config group (``conf/dataset/<name>.yaml``).
    """

    #: The dataset's name, and its folder under ``data/raw/``: letters, digits, ``. _ -``.
    name: str = "nfcorpus"
    #: A Hugging Face hub id, an http(s) URL of a BEIR zip, or a local BEIR directory.
    source: str = "BeIR/nfcorpus"
    #: Hub id of the qrels dataset, used only when ``source`` is a hub id.
    qrels_source: str = "BeIR/nfcorpus-qrels"
    #: The split the model trains on; "" for a dataset without one (zero-shot only).
    train_split: str = "train"
    #: The split every choice is made on (fusion, feedback, the dev curve): a split name;
    #: ``auto`` to carve one out of the train queries (``dev_fraction`` of them, seeded by
    #: ``dev_seed``; they leave training); "" for none (the choices fall back, and say so).
    dev_split: str = "dev"
    test_split: str = "test"
    dev_fraction: float = 0.2
    dev_seed: int = 42

    @property
    def dev(self) -> str:
        """The dev split's name in the downloaded data ("" when there is none)."""
        if self.dev_split == AUTO:
            return CARVED_DEV if self.train_split else ""
        return self.dev_split

    @property
    def splits(self) -> list[str]:
        """The splits the downloaded data holds: train, dev, test, those that exist."""
        return [s for s in (self.train_split, self.dev, self.test_split) if s]


@dataclass
class ModelConfig:
    """The bi-encoder to start from: a hub id or a local folder."""

    base: str = "sentence-transformers/all-MiniLM-L6-v2"
    trust_remote_code: bool = False
    #: Prepended to every query (training, mining, encoding, the baseline): e.g. E5's
    #: ``"query: "``. "" keeps the model's own ``query`` prompt, if it has one.
    query_prompt: str = ""
    #: Prepended to every document, likewise (E5's ``"passage: "``).
    document_prompt: str = ""


@dataclass
class LossConfig:
    """One option of the ``loss`` config group."""

    name: str = "mnrl"
    #: Inverse temperature of the in-batch softmax (MNRL family) or of CoSENT.
    scale: float = 20.0
    #: Forward/backward chunk size of the cached (GradCache) losses.
    mini_batch_size: int = 32
    #: Guide model of the GIST losses; empty means the base model.
    guide: str = ""
    #: Softmax temperature of the GIST losses.
    temperature: float = 0.01


@dataclass
class PrepareConfig:
    """How the training rows are drawn from the train qrels."""

    #: Number of (query, positive) pairs to keep, seeded; 0 keeps them all.
    max_pairs: int = 0
    #: Cap on positives per query (applied before max_pairs); 0 = no cap.
    max_pairs_per_query: int = 0
    seed: int = 42
    #: ``none``, ``random`` or ``mined`` (hard negatives from the base model).
    negatives: str = "none"
    num_negatives: int = 1
    #: Mining: the model ("" = model.base), the rank window and the NV-Retriever margin.
    mine_model: str = ""
    mine_range_min: int = 0
    mine_range_max: int = 50
    mine_relative_margin: float = 0.05
    #: Score-family labels: ``graded`` (qrels grade, negatives 0) or ``cross_encoder``.
    labels: str = "graded"
    #: Cross-encoder for labels ("" = rerank.model) and how many top docs it scores per query.
    label_model: str = ""
    label_top_k: int = 10


@dataclass
class TrainConfig:
    """The one learning-rate schedule the bi-encoder is trained with."""

    #: Full epoch count, always from the base model. 0 passes the base model through.
    epochs: int = 1
    batch_size: int = 32
    lr: float = 2.0e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_seq_length: int = 256
    seed: int = 42
    #: Log the training loss every this many optimizer steps.
    logging_steps: int = 10
    #: Evaluate on the dev split at each epoch end (an extra corpus encode per epoch).
    eval_dev: bool = True
    #: Checkpoint every this many steps so a killed run resumes its schedule; 0 = never.
    checkpoint_steps: int = 0
    #: Training arithmetic: ``fp32``, or the trainer's mixed precision ``bf16`` / ``fp16``
    #: (CUDA only: the train stage refuses them on a machine without a GPU).
    precision: str = "fp32"
    #: Data-parallel processes (DDP, one GPU each; gloo on CPU). ``batch_size`` is the
    #: global batch: each process takes ``batch_size / devices`` rows of every batch.
    devices: int = 1


@dataclass
class EncodeConfig:
    batch_size: int = 64
    #: Truncation when encoding documents and queries; 0 keeps the trained model's
    #: (train.max_seq_length). Training short and encoding long is a cheap CPU recipe.
    max_seq_length: int = 0
    #: Engine that embeds documents (encode) and queries (retrieve): ``torch``, ``onnx``
    #: (ONNX Runtime) or ``openvino``; the model is exported on load (see irtune.backends).
    backend: str = "torch"
    #: ``fp32``; ``int8`` (onnx: dynamic quantization), ``bf16`` (openvino), or ``fp16`` /
    #: ``bf16`` (torch, on a CUDA GPU only: the stage refuses them without one).
    precision: str = "fp32"


@dataclass
class IndexConfig:
    #: ``flat`` (exact inner product), ``hnsw`` or ``ivf``.
    type: str = "flat"
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    ivf_nlist: int = 64
    ivf_nprobe: int = 8


@dataclass
class RetrieveConfig:
    top_k: int = 100
    batch_size: int = 64
    #: ``dense`` (the bi-encoder's index), ``bm25`` or ``hybrid`` (both runs, fused).
    mode: str = "dense"
    #: BM25 (Lucene variant, English stemmer and stopwords); bm25s's defaults.
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    #: Hybrid fusion: ``wsum`` (weighted sum of min-max normalised scores) or ``rrf``.
    fusion: str = "wsum"
    #: wsum's dense weights to try (BM25 gets 1 - w); the best dev NDCG is applied to test.
    fusion_weights: list[float] = field(
        default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    )
    #: RRF's k values to try, chosen on dev like ``fusion_weights``.
    rrf_ks: list[int] = field(default_factory=lambda: [10, 20, 60])
    #: Dense pseudo-relevance feedback (Rocchio): feedback depths ``k`` to try, 0 = none.
    #: With any ``k > 0``, ``(k, beta)`` is chosen on dev like the fusion parameters.
    prf_ks: list[int] = field(default_factory=lambda: [0])
    #: Weights of the feedback documents' mean, tried with every ``k > 0``.
    prf_betas: list[float] = field(default_factory=lambda: [0.5])

    @property
    def prf(self) -> bool:
        """Whether dense retrieval may use feedback (then chosen on dev)."""
        return any(k > 0 for k in self.prf_ks)


@dataclass
class RerankConfig:
    model: str = "cross-encoder/ms-marco-MiniLM-L6-v2"
    #: Candidates per query to rescore; 0 passes the retrieval run through.
    top_k: int = 100
    batch_size: int = 32
    max_length: int = 512
    trust_remote_code: bool = False
    #: The engine that runs the cross-encoder and its arithmetic, as ``encode.backend`` /
    #: ``encode.precision`` for the bi-encoder: ``torch`` (fp32; fp16 or bf16 on a CUDA
    #: GPU), ``onnx`` (fp32 or int8) or ``openvino`` (fp32 or bf16).
    backend: str = "torch"
    precision: str = "fp32"
    #: How the cross-encoder's score meets the first stage's, chosen on dev like
    #: ``retrieve.fusion``: ``wsum`` (the cross-encoder's weight from ``fusion_weights``;
    #: 1 = pure reranking, 0 = the first stage's order) or ``rrf`` (``k`` from ``rrf_ks``).
    fusion: str = "wsum"
    fusion_weights: list[float] = field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    )
    rrf_ks: list[int] = field(default_factory=lambda: [10, 20, 60])
    #: Rerank depths to try on dev with every fusion value; those above ``top_k`` are left
    #: out and ``top_k`` itself is always tried. Documents below the chosen depth keep the
    #: first stage's order.
    depths: list[int] = field(default_factory=lambda: [10, 20, 50, 100])


@dataclass
class RerankerConfig:
    """The in-domain cross-encoder the ``train_reranker`` stage trains on the train split
    (``rerank.model: trained`` reranks with it): a reranker used at inference, never the
    bi-encoder's teacher. Like the bi-encoder, it trains from its base for its full
    schedule in every experiment."""

    #: The starting encoder ("" = ``model.base``: its transformer with a new one-logit head).
    base: str = ""
    epochs: int = 1
    batch_size: int = 16
    lr: float = 2.0e-5
    warmup_ratio: float = 0.1
    max_length: int = 256
    seed: int = 42
    #: Train (query, positive) pairs used, seeded, after capping positives per query.
    max_pairs: int = 2000
    max_pairs_per_query: int = 3
    #: Hard negatives per positive, mined with ``model.base`` (binary cross-entropy:
    #: positives 1, negatives 0, positives weighted by this count).
    num_negatives: int = 3
    #: The miner's NV-Retriever margin, as ``prepare.mine_relative_margin``: a candidate
    #: scoring above (1 - margin) x its positive's score may be an unjudged positive.
    mine_relative_margin: float = 0.05


@dataclass
class EvaluateConfig:
    #: Cut-offs of the reported metrics (trec_eval semantics).
    ndcg_k: int = 10
    recall_k: int = 100
    mrr_k: int = 10
    map_k: int = 100
    #: Compare both runs per query with the zero-shot base model (``evaluate.test``).
    baseline: bool = True
    #: Significance level of the verdicts.
    alpha: float = 0.05
    #: The paired two-sided test behind every verdict (:mod:`irtune.significance`):
    #: ``permutation`` (randomization: random sign flips of the per-query differences) or
    #: ``ttest`` (Student's paired t-test).
    test: str = "permutation"
    #: Random sign flips of the permutation test (the smallest two-sided p it can give is
    #: 2/(n+1)).
    permutations: int = 10000
    #: Resamples of queries behind each delta's 95% bootstrap confidence interval.
    bootstrap_resamples: int = 10000
    #: Seed of both resamplings: the same params give the same p-values and intervals.
    resample_seed: int = 42


@dataclass
class TrackingConfig:
    enabled: bool = True
    #: MLflow tracking URI. Empty: ``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` at the repo root.
    #: Never with credentials in it (it is a param): MLflow reads them from
    #: ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``.
    uri: str = ""
    experiment: str = "irtune"
    #: Log the trained bi-encoder with the run (MLflow's ``sentence_transformers`` flavor),
    #: for ``make register``. Off: metrics only, no model files in the artifact store.
    log_model: bool = True


@dataclass
class SweepConfig:
    """Set by a ``conf/sweep/`` file and ``make sweep``; empty for a single experiment."""

    #: The sweep's name (its file in ``conf/sweep/``); becomes the MLflow tag ``sweep``.
    name: str = ""
    #: One invocation of the sweep (set by ``make sweep``); the MLflow tag ``sweep_id``.
    id: str = ""
    #: ``key=value`` of the recipe the others are tested against; "" = the zero-shot model.
    baseline: str = ""
    #: Training seeds every member is repeated with (the axis ``train.seed``); the
    #: replicates of one member form one recipe in the report. [] = one run per member.
    seeds: list[int] = field(default_factory=list)


@dataclass
class Config:
    """Everything ``params.yaml`` may hold."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    reranker: RerankerConfig = field(default_factory=RerankerConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


#: ``train.precision``: the trainer's own mixed-precision modes, and full precision.
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")

_CHOICES = {
    "loss.name": LOSSES,
    "train.precision": TRAIN_PRECISIONS,
    "index.type": ("flat", "hnsw", "ivf"),
    "prepare.negatives": ("none", "random", "mined"),
    "prepare.labels": ("graded", "cross_encoder"),
    "retrieve.mode": ("dense", "bm25", "hybrid"),
    "retrieve.fusion": ("wsum", "rrf"),
    "rerank.fusion": ("wsum", "rrf"),
    "evaluate.test": ("permutation", "ttest"),
}
_NON_NEGATIVE = (
    "encode.max_seq_length",
    "train.checkpoint_steps",
    "train.weight_decay",
    "prepare.max_pairs",
    "prepare.max_pairs_per_query",
    "prepare.mine_range_min",
    "prepare.mine_relative_margin",
    "train.epochs",
    "rerank.top_k",
    "retrieve.bm25_k1",
    "reranker.epochs",
    "reranker.max_pairs",
    "reranker.max_pairs_per_query",
    "reranker.mine_relative_margin",
)
_POSITIVE = (
    "train.batch_size",
    "train.devices",
    "train.lr",
    "train.max_seq_length",
    "train.logging_steps",
    "loss.scale",
    "loss.mini_batch_size",
    "loss.temperature",
    "retrieve.top_k",
    "retrieve.batch_size",
    "reranker.batch_size",
    "reranker.lr",
    "reranker.max_length",
    "reranker.num_negatives",
    "encode.batch_size",
    "index.hnsw_m",
    "index.hnsw_ef_search",
    "index.ivf_nlist",
    "index.ivf_nprobe",
    "prepare.num_negatives",
    "prepare.label_top_k",
    "rerank.batch_size",
    "rerank.max_length",
    "evaluate.ndcg_k",
    "evaluate.recall_k",
    "evaluate.mrr_k",
    "evaluate.map_k",
    "evaluate.permutations",
    "evaluate.bootstrap_resamples",
)
#: Keys whose value must lie in an interval: (low, high, low included, high included).
_INTERVALS = {
    "train.warmup_ratio": (0.0, 1.0, True, False),
    "reranker.warmup_ratio": (0.0, 1.0, True, False),
    "retrieve.bm25_b": (0.0, 1.0, True, True),
    "evaluate.alpha": (0.0, 1.0, False, False),
    "dataset.dev_fraction": (0.0, 1.0, False, False),
}
#: What a dataset name or a split name may hold: each becomes a path (``data/raw/<name>``,
#: ``qrels/<split>.tsv``), which must stay where it belongs.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def validate(raw: dict[str, Any], source: str = "params") -> Config:
    """Validate a raw params mapping against the schema.

    Args:
        raw: The mapping read from ``params.yaml`` (or composed by Hydra).
        source: Where ``raw`` came from, for error messages.

    Returns:
        The typed config, with defaults for keys ``raw`` leaves out.

    Raises:
        ConfigError: On an unknown key, a wrong type or an out-of-range value; the message
            names the key.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw)
        cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"{source}: bad config key '{key}': {reason}") from None

    for key, choices in _CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(f"{source}: '{key}' is {value!r}; expected one of {list(choices)}")
    for key in _NON_NEGATIVE:
        if _get(cfg, key) < 0:
            raise ConfigError(f"{source}: '{key}' must be >= 0, got {_get(cfg, key)}")
    for key in _POSITIVE:
        if _get(cfg, key) <= 0:
            raise ConfigError(f"{source}: '{key}' must be > 0, got {_get(cfg, key)}")
    for key, (low, high, with_low, with_high) in _INTERVALS.items():
        value = _get(cfg, key)
        if not ((low <= value if with_low else low < value) and
                (value <= high if with_high else value < high)):  # fmt: skip
            interval = f"{'[' if with_low else '('}{low:g}, {high:g}{']' if with_high else ')'}"
            raise ConfigError(f"{source}: '{key}' must be in {interval}, got {value}")
    _validate_dataset(cfg, source)
    if cfg.loss.name in SCORE_FAMILY and cfg.prepare.negatives == "none":
        # With positives alone every label is equal and a score loss has nothing to learn.
        raise ConfigError(
            f"{source}: loss '{cfg.loss.name}' needs negatives: set 'prepare.negatives' to "
            "random or mined"
        )
    if cfg.prepare.mine_range_max <= cfg.prepare.mine_range_min:
        raise ConfigError(
            f"{source}: 'prepare.mine_range_max' ({cfg.prepare.mine_range_max}) must be greater "
            f"than 'prepare.mine_range_min' ({cfg.prepare.mine_range_min})"
        )
    if (
        cfg.prepare.labels == "cross_encoder"
        and (cfg.prepare.label_model or cfg.rerank.model) == "trained"
    ):
        # The in-domain cross-encoder reranks at inference; it never teaches the bi-encoder.
        raise ConfigError(
            f"{source}: 'prepare.label_model' (\"\" = rerank.model) names the trained "
            "cross-encoder, which reranks only and never labels the bi-encoder's training "
            "pairs: name another cross-encoder in 'prepare.label_model'"
        )
    if cfg.train.batch_size % cfg.train.devices:
        raise ConfigError(
            f"{source}: 'train.batch_size' ({cfg.train.batch_size}) is the global batch, split "
            f"evenly over train.devices={cfg.train.devices} processes: it must be a multiple of it"
        )
    check_backend(cfg.encode.backend, cfg.encode.precision, source)
    check_backend(cfg.rerank.backend, cfg.rerank.precision, source, section="rerank")
    _validate_retrieve(cfg, source)
    _validate_rerank(cfg, source)
    _validate_significance(cfg, source)
    check_tracking_uri(cfg.tracking.uri, f"{source}: 'tracking.uri'")
    return cfg


def check_tracking_uri(uri: str, where: str) -> None:
    """Refuse a tracking URI that embeds credentials (``http://user:pass@host``).

    Args:
        uri: The URI.
        where: What holds it, for the message (``params.yaml: 'tracking.uri'``).

    Raises:
        ConfigError: If ``uri`` names a user or a password; the message shows the URI with
            them masked.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return
    masked = parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
    raise ConfigError(
        f"{where} embeds credentials ({masked}): a URI is recorded in params, dvc.lock, logs and "
        "the MLflow run. Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the "
        "environment instead"
    )


def check_backend(
    backend: str, precision: str, source: str = "params", section: str = "encode"
) -> None:
    """Fail, naming the key, unless ``backend``/``precision`` is a pair :data:`ENCODE_PRECISIONS`
    offers.

    Args:
        backend: The engine.
        precision: Its arithmetic.
        source: What holds the values, for the message.
        section: Whose keys they are: ``encode`` (the bi-encoder) or ``rerank``.

    Raises:
        ConfigError: On an unknown backend, or a precision the backend does not offer.
    """
    if backend not in ENCODE_PRECISIONS:
        raise ConfigError(
            f"{source}: '{section}.backend' is {backend!r}; "
            f"expected one of {list(ENCODE_PRECISIONS)}"
        )
    allowed = ENCODE_PRECISIONS[backend]
    if precision not in allowed:
        owners = [b for b, p in ENCODE_PRECISIONS.items() if precision in p]
        hint = f" ({precision} needs {section}.backend={' or '.join(owners)})" if owners else ""
        raise ConfigError(
            f"{source}: '{section}.precision' is {precision!r}, which "
            f"{section}.backend={backend!r} does not offer; expected one of {list(allowed)}{hint}"
        )


def _validate_dataset(cfg: Config, source: str) -> None:
    ds = cfg.dataset
    names = {"dataset.name": ds.name, "dataset.test_split": ds.test_split}
    names |= {"dataset.train_split": ds.train_split} if ds.train_split else {}
    names |= {"dataset.dev_split": ds.dev_split} if ds.dev_split else {}
    for key, value in names.items():
        if not _SAFE_NAME.fullmatch(value) or ".." in value:
            raise ConfigError(
                f"{source}: '{key}' is {value!r}; it names a file or folder, so it may only "
                "hold letters, digits, '.', '_' and '-' (not starting with '.' or '-', no '..')"
            )
    roles = {"train_split": ds.train_split, "dev_split": ds.dev, "test_split": ds.test_split}
    given = [(key, value) for key, value in roles.items() if value]
    for i, (key, value) in enumerate(given):
        for other, other_value in given[i + 1 :]:
            if value == other_value:
                why = {
                    ("train_split", "dev_split"): "choices made on dev would be made on "
                    "training queries, which flatter the model (dev_split=auto carves a dev "
                    "split out of train instead)",
                    ("train_split", "test_split"): "the model would be tested on its "
                    "training queries",
                    ("dev_split", "test_split"): "every choice made on dev would be made on test",
                }[(key, other)]
                raise ConfigError(
                    f"{source}: 'dataset.{key}' and 'dataset.{other}' are both {value!r}: {why}"
                )
    if cfg.train.epochs and not ds.train_split:
        raise ConfigError(
            f"{source}: 'train.epochs' is {cfg.train.epochs} but dataset {ds.name!r} has no "
            "train split ('dataset.train_split' is empty): set train.epochs=0 to evaluate "
            "the base model zero-shot"
        )


def _validate_retrieve(cfg: Config, source: str) -> None:
    rc = cfg.retrieve
    grids = (
        ("fusion_weights", rc.fusion_weights, lambda w: 0 <= w <= 1, "weights in [0, 1]"),
        ("rrf_ks", rc.rrf_ks, lambda k: k > 0, "ints > 0"),
        ("prf_ks", rc.prf_ks, lambda k: k >= 0, "ints >= 0 (0 = no feedback)"),
        ("prf_betas", rc.prf_betas, lambda b: b > 0, "weights > 0"),
    )
    for key, values, ok, expected in grids:
        if not values or not all(ok(v) for v in values):
            raise ConfigError(
                f"{source}: 'retrieve.{key}' must be a non-empty list of {expected}, got {values}"
            )
    if max(rc.prf_ks) > rc.top_k:
        raise ConfigError(
            f"{source}: 'retrieve.prf_ks' asks for {max(rc.prf_ks)} feedback documents, more "
            f"than retrieve.top_k={rc.top_k}"
        )


def _validate_rerank(cfg: Config, source: str) -> None:
    rr = cfg.rerank
    grids = (
        ("fusion_weights", rr.fusion_weights, lambda w: 0 <= w <= 1, "weights in [0, 1]"),
        ("rrf_ks", rr.rrf_ks, lambda k: k > 0, "ints > 0"),
        ("depths", rr.depths, lambda d: d > 0, "ints > 0"),
    )
    for key, values, ok, expected in grids:
        if not values or not all(ok(v) for v in values):
            raise ConfigError(
                f"{source}: 'rerank.{key}' must be a non-empty list of {expected}, got {values}"
            )


def _validate_significance(cfg: Config, source: str) -> None:
    ev = cfg.evaluate
    if ev.test == "permutation" and 2 / (ev.permutations + 1) >= ev.alpha:
        raise ConfigError(
            f"{source}: 'evaluate.permutations' is {ev.permutations}: the smallest two-sided "
            f"p-value it can give, 2/{ev.permutations + 1}, is not below "
            f"evaluate.alpha={ev.alpha}"
        )
    seeds = cfg.sweep.seeds
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: 'sweep.seeds' repeats a seed: {seeds}")


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read and validate ``params.yaml``.

    Args:
        path: The composed params file.

    Returns:
        The typed config.

    Raises:
        ConfigError: If the file is missing, is not a YAML mapping, or fails validation.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run `make params` to compose it)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return validate(raw, source=str(path))


def flatten(cfg: Config | ScopedConfig) -> dict[str, Any]:
    """Flatten the config to ``{"train.lr": 2e-05, ...}``, as logged to MLflow.

    A :class:`ScopedConfig` flattens to the params it lets its stage read.
    """
    from dataclasses import asdict

    full, allows = (cfg._cfg, cfg.allows) if isinstance(cfg, ScopedConfig) else (cfg, None)
    out: dict[str, Any] = {}
    for section, values in asdict(full).items():
        for key, value in values.items():
            if allows is None or allows(f"{section}.{key}"):
                out[f"{section}.{key}"] = value
    return out


class ScopedConfig:
    """A read-only view of a :class:`Config` through which a stage reads only the params that
    ``dvc.yaml`` lists for it.

    DVC reruns a stage when one of its listed params changes, and only then: a stage reading
    a param it does not list would keep a stale output when that param changed. Each stage
    reads its config through this view (:func:`irtune.pipeline.stage_config`), so such a
    read fails at once with a :class:`ConfigError` naming the key and the stage, in tests
    and in real runs alike.

    Args:
        cfg: The whole config.
        keys: The listed params: sections (``"train"``) or keys (``"train.lr"``).
        stage: The stage's name, for messages.
    """

    def __init__(self, cfg: Config, keys: list[str], stage: str):
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "_keys", tuple(keys))
        object.__setattr__(self, "_stage", stage)

    def allows(self, key: str) -> bool:
        """Whether the stage may read ``key`` (``"section.name"``)."""
        return any(key == k or key.startswith(f"{k}.") for k in self._keys)

    def __getattr__(self, section: str) -> Any:
        values = getattr(object.__getattribute__(self, "_cfg"), section)  # AttributeError
        return _SectionView(values, section, self)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the config is read-only")

    def _refuse(self, key: str) -> ConfigError:
        return ConfigError(
            f"stage '{self._stage}' reads param '{key}', which dvc.yaml does not list in its "
            "params: DVC would not rerun the stage when it changes"
        )


class _SectionView:
    """One section of a :class:`ScopedConfig`: a field read checks the scope; a property or
    method of the section runs against the view, so what it reads is checked too."""

    def __init__(self, values: Any, name: str, scope: ScopedConfig):
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_scope", scope)

    def __getattr__(self, key: str) -> Any:
        from dataclasses import fields

        values = object.__getattribute__(self, "_values")
        if key in {f.name for f in fields(values)}:
            scope = object.__getattribute__(self, "_scope")
            dotted = f"{object.__getattribute__(self, '_name')}.{key}"
            if not scope.allows(dotted):
                raise scope._refuse(dotted)
            return getattr(values, key)
        attr = getattr(type(values), key)  # AttributeError for an unknown name
        if isinstance(attr, property):
            return attr.fget(self)
        return attr.__get__(self) if hasattr(attr, "__get__") else attr

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the config is read-only")


def _get(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)
