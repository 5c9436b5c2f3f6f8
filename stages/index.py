"""Stage index: build a Faiss index of the corpus embeddings, with a doc-id sidecar."""

from pathlib import Path

from irtune.encode import read_embeddings
from irtune.index import build_index, write_index
from irtune.stage import run_stage, stage_parser


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--embeddings", type=Path, required=True, help="embeddings folder")
    parser.add_argument("--out", type=Path, required=True, help="index folder")
    return parser


def main(args, cfg):
    embeddings, doc_ids = read_embeddings(args.embeddings)
    write_index(build_index(embeddings, cfg.index), doc_ids, args.out)


if __name__ == "__main__":
    run_stage("index", build_parser(), main)
