"""Fetch a BEIR dataset from the hub, a zip URL or a local folder, validate it, and write
it in plain BEIR layout."""

from __future__ import annotations

import logging
import tempfile
import zipfile
from pathlib import Path

from irtune.beir import BeirDataset, read_beir, stats, write_beir
from irtune.config import DatasetConfig
from irtune.errors import DataError
from irtune.io import atomic_path

log = logging.getLogger(__name__)

#: BEIR's qrels split names on the hub differ from its file names.
_HUB_SPLITS = {"dev": "validation"}


def source_kind(source: str) -> str:
    """Classify ``dataset.source``: ``local`` (an existing path), ``url`` or ``hub``."""
    if source.startswith(("http://", "https://")):
        return "url"
    if Path(source).expanduser().exists() or source.startswith((".", "/", "~")):
        return "local"
    return "hub"


def load_dataset(cfg: DatasetConfig) -> BeirDataset:
    """Load and validate the dataset ``cfg.source`` names.

    Args:
        cfg: The ``dataset`` config section.

    Returns:
        The dataset with the train, dev and test qrels.

    Raises:
        DataError: If the source is missing, not BEIR-shaped or inconsistent.
    """
    splits = [cfg.train_split, cfg.dev_split, cfg.test_split]
    kind = source_kind(cfg.source)
    log.info("Reading %s from %s (%s)", cfg.name, cfg.source, kind)
    if kind == "local":
        return read_beir(Path(cfg.source).expanduser(), splits)
    if kind == "url":
        return _load_zip_url(cfg.source, splits)
    return _load_hub(cfg.source, cfg.qrels_source, splits)


def download(cfg: DatasetConfig, out_dir: Path) -> dict[str, int]:
    """Write the validated dataset to ``out_dir`` in plain BEIR layout, atomically.

    Returns:
        Counts of docs, queries and qrels per split.
    """
    dataset = load_dataset(cfg)
    with atomic_path(out_dir) as tmp:
        write_beir(dataset, tmp)
    counts = stats(dataset)
    log.info("Wrote %s to %s: %s", cfg.name, out_dir, counts)
    return counts


def _load_zip_url(url: str, splits: list[str]) -> BeirDataset:
    import urllib.request

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "dataset.zip"
        log.info("Downloading %s", url)
        urllib.request.urlretrieve(url, archive)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        # BEIR zips hold one folder named after the dataset.
        roots = [p.parent for p in Path(tmp).rglob("corpus.jsonl*")]
        if not roots:
            raise DataError(f"{url}: the zip holds no corpus.jsonl")
        return read_beir(roots[0], splits)


def _load_hub(repo_id: str, qrels_repo_id: str, splits: list[str]) -> BeirDataset:
    """Load BEIR's hub layout: ``<repo>`` with configs corpus/queries, ``<repo>-qrels``."""
    import datasets

    def rows(name: str) -> datasets.Dataset:
        return datasets.load_dataset(repo_id, name, split=name)

    corpus = {r["_id"]: {"title": r["title"] or "", "text": r["text"]} for r in rows("corpus")}
    queries = {r["_id"]: r["text"] for r in rows("queries")}
    qrels = {}
    for split in splits:
        table = datasets.load_dataset(qrels_repo_id, split=_HUB_SPLITS.get(split, split))
        split_qrels: dict[str, dict[str, int]] = {}
        for r in table:
            split_qrels.setdefault(str(r["query-id"]), {})[str(r["corpus-id"])] = int(r["score"])
        qrels[split] = split_qrels
    # Validate exactly as a local folder would be: write it out and read it back.
    with tempfile.TemporaryDirectory() as tmp:
        write_beir(BeirDataset(corpus, queries, qrels), Path(tmp) / "beir")
        return read_beir(Path(tmp) / "beir", splits)
