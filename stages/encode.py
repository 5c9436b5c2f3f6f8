"""Stage encode: embed every corpus document with the trained bi-encoder."""

from pathlib import Path

from irtune.beir import find_file, read_corpus
from irtune.devices import claim_devices
from irtune.encode import encode_corpus, write_embeddings
from irtune.models import load_encoder
from irtune.stage import run_stage, stage_parser


def build_parser():
    parser = stage_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR folder (corpus)")
    parser.add_argument("--model", type=Path, required=True, help="trained model folder")
    parser.add_argument("--out", type=Path, required=True, help="embeddings folder")
    return parser


def main(args, cfg):
    corpus = read_corpus(find_file(args.data, "corpus.jsonl"))
    with claim_devices(1, "encode"):
        model = load_encoder(
            str(args.model),
            backend=cfg.encode.backend,
            precision=cfg.encode.precision,
            trust_remote_code=cfg.model.trust_remote_code,
            max_seq_length=cfg.encode.max_seq_length,
        )
        embeddings = encode_corpus(model, corpus, cfg.encode.batch_size)
    write_embeddings(embeddings, list(corpus), args.out)


if __name__ == "__main__":
    run_stage("encode", build_parser(), main)
