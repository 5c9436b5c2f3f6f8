"""Stage train: fine-tune the bi-encoder from the base model for the full epoch count.

With ``train.checkpoint_steps`` the trainer checkpoints under ``.irtune/checkpoints/<key>``
at the repository root, where ``key`` hashes the training rows and every param the stage
depends on: rerunning the same experiment after a crash resumes its schedule, and an
experiment with other params never resumes from another's checkpoint.
"""

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from irtune.beir import read_beir
from irtune.config import flatten
from irtune.io import write_json
from irtune.prepare import read_rows
from irtune.stage import run_stage, stage_parser
from irtune.tracking import repo_root
from irtune.train import train

#: The params that shape training (dvc.yaml lists the same for this stage).
TRAIN_PARAMS = ("dataset.dev_split", "model.", "loss.", "train.", "encode.batch_size", "evaluate.")


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (dev split)")
    parser.add_argument("--rows", type=Path, required=True, help="training rows (JSON lines)")
    parser.add_argument("--out", type=Path, required=True, help="trained model folder")
    parser.add_argument(
        "--history",
        type=Path,
        required=True,
        help="summary, loss curve and per-epoch dev curve (JSON)",
    )
    return parser


def checkpoint_key(rows_path: Path, cfg) -> str:
    """A digest of the training rows and every training param."""
    digest = hashlib.sha256(rows_path.read_bytes())
    params = {k: v for k, v in flatten(cfg).items() if k.startswith(TRAIN_PARAMS)}
    digest.update(json.dumps(params, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def main(args, cfg):
    dataset = read_beir(args.data, [cfg.dataset.train_split, cfg.dataset.dev_split])
    rows = read_rows(args.rows)
    work_dir = repo_root() / ".irtune" / "checkpoints" / checkpoint_key(args.rows, cfg)
    result = train(rows, dataset, cfg, args.out, work_dir)
    write_json(args.history, asdict(result))
    shutil.rmtree(work_dir, ignore_errors=True)  # finished: nothing left to resume


if __name__ == "__main__":
    run_stage("train", build_parser(), main)
