"""Local copies of hub sources: the same params, and so the same ``dvc.lock``, online and
offline.

The params name datasets and models by their Hugging Face hub ids (``BeIR/nfcorpus``,
``sentence-transformers/all-MiniLM-L6-v2``). A machine that cannot reach the hub points
``IRTUNE_MIRROR`` at a folder laid out like the hub, ``<mirror>/<owner>/<name>/``: a BEIR
folder for a dataset, a saved model for a model (links will do). A hub id with a copy there
loads from it, as Hugging Face's own offline cache serves a model; paths, URLs and ids
without a copy are left alone. Nothing else changes, so a run made offline records the same
params as one made online, and DVC sees the same experiment. The copy must hold what the
hub holds: irtune cannot check that it does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

#: The environment variable naming the mirror folder.
ENV = "IRTUNE_MIRROR"


def is_hub_id(source: str) -> bool:
    """Whether ``source`` reads as a hub id (``owner/name``), not a path or a URL."""
    if source.startswith(("http://", "https://", ".", "/", "~")):
        return False
    return source.count("/") == 1 and not Path(source).expanduser().exists()


def resolve(source: str) -> str:
    """The mirrored copy of hub id ``source`` when ``IRTUNE_MIRROR`` holds one, else
    ``source`` itself."""
    mirror = os.environ.get(ENV)
    if not mirror or not is_hub_id(source):
        return source
    copy = Path(mirror).expanduser() / source
    if not copy.is_dir():
        return source
    log.info("%s: the copy in %s=%s", source, ENV, mirror)
    return str(copy)
