"""Stage train: fine-tune the bi-encoder from the base model for the full epoch count.

With ``train.checkpoint_steps`` the trainer checkpoints under ``.irtune/checkpoints/<key>``
at the repository root, where ``key`` hashes the training rows and every param the stage
depends on: rerunning the same experiment after a crash resumes its schedule, and an
experiment with other params never resumes from another's checkpoint.

With ``train.devices`` > 1 this script starts itself again as that many data-parallel
processes under torchrun (:mod:`irtune.launch`), and rank 0 writes the outputs.
"""

import contextlib
from pathlib import Path

from irtune.beir import read_beir
from irtune.devices import claim_devices
from irtune.io import read_jsonl, write_json
from irtune.launch import in_launch, is_main_process, run_under_torchrun, setup_worker
from irtune.pipeline import repo_root
from irtune.stage import run_stage, stage_parser
from irtune.train import check_precision, checkpoint_dir, train


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (dev split)")
    parser.add_argument("--rows", type=Path, required=True, help="training rows (JSON lines)")
    parser.add_argument("--out", type=Path, required=True, help="trained model folder")
    parser.add_argument(
        "--history",
        type=Path,
        required=True,
        help="summary, device, loss curve and per-epoch dev curve (JSON)",
    )
    parser.add_argument("--loss-plot", type=Path, required=True, help="loss curve (DVC plot)")
    parser.add_argument("--dev-plot", type=Path, required=True, help="dev curve (DVC plot)")
    return parser


def main(args, cfg):
    if in_launch():
        setup_worker()  # one of train.devices processes: the launcher holds the devices
    elif cfg.train.devices > 1 and cfg.train.epochs:
        check_precision(cfg.train.precision)  # once, before starting the processes
        run_under_torchrun(Path(__file__), args, cfg.train.devices, "train")
        return
    with contextlib.nullcontext() if in_launch() else claim_devices(1, "train"):
        dev = [cfg.dataset.dev] if cfg.dataset.dev else []  # for the per-epoch dev curve
        # The corpus feeds only the dev evaluator, which holds each document's text: read as
        # those texts, the evaluator's are the corpus' own strings, not a second copy.
        dataset = read_beir(args.data, dev, fold_titles=True)
        work_dir = checkpoint_dir(repo_root(), args.rows, cfg)
        result = train(read_jsonl(args.rows), dataset, cfg, args.out, work_dir)
    if is_main_process():
        write_json(args.history, result.history())
        write_json(args.loss_plot, result.loss_curve)
        write_json(args.dev_plot, result.dev_curve)


if __name__ == "__main__":
    run_stage("train", build_parser(), main)
