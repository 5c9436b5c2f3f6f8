"""Fetch a BEIR dataset from the hub, a zip URL or a local folder, validate it, and write
it in plain BEIR layout."""

from __future__ import annotations

import logging
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from irtune.beir import BeirDataset, carve_dev, read_beir, stats, write_beir
from irtune.config import AUTO, DatasetConfig
from irtune.errors import DataError
from irtune.io import atomic_path
from irtune.mirror import resolve

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
        The dataset with the qrels of the splits ``cfg`` names (a carved dev split is not
        made here: see :func:`download`).

    Raises:
        DataError: If the source is missing, not BEIR-shaped or inconsistent.
    """
    # A carved dev split (dev_split: auto) is made from train after reading.
    named_dev = "" if cfg.dev_split == AUTO else cfg.dev_split
    splits = [s for s in (cfg.train_split, named_dev, cfg.test_split) if s]
    source = resolve(cfg.source)  # a hub id's local copy, if IRTUNE_MIRROR holds one
    kind = source_kind(source)
    log.info("Reading %s from %s (%s)", cfg.name, source, kind)
    if kind == "local":
        return read_beir(Path(source).expanduser(), splits)
    if kind == "url":
        return _load_zip_url(source, splits)
    return _load_hub(source, cfg.qrels_source, splits)


def download(cfg: DatasetConfig, out_dir: Path) -> dict[str, Any]:
    """Write the validated dataset to ``out_dir`` in plain BEIR layout, atomically; with
    ``dev_split: auto``, carve its dev split out of train first.

    Returns:
        Counts of docs, queries and qrels per split, and the carve-out (``dev_carve``: seed,
        fraction, counts, query ids) when there is one.
    """
    dataset = load_dataset(cfg)
    carve: dict[str, Any] = {}
    if cfg.dev_split == AUTO and cfg.dev:
        dataset, carve = carve_dev(
            dataset, cfg.train_split, cfg.dev, cfg.dev_fraction, cfg.dev_seed
        )
        log.info(
            "Carved %d of the %s split's queries into a dev split (seed %d)",
            carve["queries"],
            cfg.train_split,
            cfg.dev_seed,
        )
    elif not cfg.dev:
        log.warning(
            "Dataset %s has no dev split: what is chosen on dev falls back to defaults", cfg.name
        )
    with atomic_path(out_dir) as tmp:
        write_beir(dataset, tmp)
    counts: dict[str, Any] = stats(dataset)
    log.info("Wrote %s to %s: %s", cfg.name, out_dir, counts)
    return counts | ({"dev_carve": carve} if carve else {})


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
