"""results.yaml, the checked results: every row composes, RESULTS.md's tables are what the
rows give, and the history labels of RESULTS.md are named configs. ``make regress`` itself
runs on the tiny fixture in the end-to-end test (tests/e2e/test_pipeline.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from harness import REPO

from irtune.compose import compose_params
from irtune.errors import ConfigError
from irtune.results import BEGIN, END, load_results, render, table

RESULTS = load_results(REPO / "results.yaml")


def test_committed_results_md_is_generated_from_results_yaml() -> None:
    """RESULTS.md's tables are exactly what `make results` writes from results.yaml."""
    current = (REPO / "RESULTS.md").read_text(encoding="utf-8")
    datasets = [m[1] for m in BEGIN.finditer(current)]
    assert datasets == ["nfcorpus", "scifact"], datasets
    assert render(current, RESULTS) == current, (
        "RESULTS.md differs from results.yaml: run `make results` and commit the result"
    )


@pytest.fixture(scope="module")
def conf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("conf")
    shutil.copytree(REPO / "conf", root / "conf")
    return root


@pytest.mark.parametrize("row", RESULTS.rows, ids=lambda r: r.name)
def test_every_row_composes(row, conf_root: Path) -> None:
    """Each row's overrides compose and validate, exactly as `make regress` runs them, and
    the dataset is the row's."""
    params = compose_params(
        [f"dataset={row.dataset}", *RESULTS.overrides, *row.overrides], conf_root
    )
    assert params["dataset"]["name"] == row.dataset
    # The figures are the retrieval run's, unless the row checks the reranked run.
    assert (params["rerank"]["top_k"] > 0) == (row.run == "rerank"), (row.run, params["rerank"])


def test_rows_carry_the_recipe_only() -> None:
    """Where the data and models are is the environment's (make regress OVERRIDES=...)."""
    for row in RESULTS.rows:
        for override in row.overrides:
            key = override.split("=", 1)[0]
            assert key not in ("dataset.source", "dataset.qrels_source", "model.base"), row.name


def test_history_labels_are_named_configs(conf_root: Path) -> None:
    """RESULTS.md's `$V8` (cpu_best of stop 8) and `$PRF` (the feedback grid, on the seed
    recipe that was the default then) are conf/experiment options that compose to what the
    labels spelled out."""
    assert compose_params(["experiment=cpu_best_v8"], conf_root) == compose_params(
        ["experiment=cpu_best", "train.lr=5e-5", "retrieve.prf_ks=[0]"], conf_root
    )
    grid = ["retrieve.prf_ks=[0,1,2,3,5]", "retrieve.prf_betas=[0.25,0.5,1.0]"]
    assert compose_params(["train.epochs=0", "experiment=prf"], conf_root) == compose_params(
        ["train.epochs=0", "experiment=full", *grid], conf_root
    )
    assert compose_params(["experiment=cpu_best_v8", "loss=mnrl"], conf_root)["loss"]["name"] == (
        "mnrl"
    )


def test_the_headline_rows_are_checked() -> None:
    """The rows README and RESULTS.md quote are there, checked (not superseded)."""
    expected = {
        "nfcorpus-zero-shot": 0.3159,
        "nfcorpus-bm25": 0.3210,
        "nfcorpus-hybrid": 0.3586,
        "nfcorpus-cpu-best": 0.3324,
        "nfcorpus-cpu-best-hybrid": 0.3670,
    }
    for name, ndcg in expected.items():
        row = RESULTS.by_name[name]
        assert row.expected and row.expected["ndcg_at_10"] == ndcg and not row.superseded


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "results.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rows: []\nextra: 1\n", r"the file: unknown keys \['extra'\]"),
        (
            "rows:\n  - {name: a, dataset: d, expect: {x: 1}}\n",
            r"row 'a': unknown keys \['expect'\]",
        ),
        ("rows:\n  - {name: 'a b', dataset: d}\n", r"'name' names its DVC experiment"),
        ("rows:\n  - {name: a}\n", r"row 'a': 'dataset' .* is required"),
        ("rows:\n  - {name: a, dataset: d, expected: {x: high}}\n", r"'expected' must map"),
        ("rows:\n  - {name: a, dataset: d, run: dense}\n", r"'run' must be 'retrieve' or"),
        ("rows:\n  - {name: a, dataset: d, overrides: x=1}\n", r"'overrides' must be a list"),
        ("rows:\n  - {name: a, dataset: d}\n  - {name: a, dataset: e}\n", r"repeated: a"),
        ("rows: [\n", r"not valid YAML"),
    ],
)
def test_a_bad_results_file_is_refused_naming_the_row(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_results(_write(tmp_path, text))


def test_rows_are_selected_by_name(tmp_path: Path) -> None:
    results = load_results(
        _write(tmp_path, "rows:\n  - {name: a, dataset: d}\n  - {name: b, dataset: d}\n")
    )
    assert [r.name for r in results.select([])] == ["a", "b"]
    assert [r.name for r in results.select(["b"])] == ["b"]
    with pytest.raises(ConfigError, match=r"no row 'c'; rows: a, b"):
        results.select(["c"])


def test_render_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    results = load_results(
        _write(
            tmp_path,
            "rows:\n"
            "  - {name: a, dataset: d, recipe: A, overrides: [x=1], expected: {ndcg_at_10: 0.5},"
            " bold: [ndcg_at_10], p: '0.01 (better)'}\n"
            "  - {name: b, dataset: e, superseded: before stop 2}\n",
        )
    )
    begin = "<!-- results.yaml dataset=d: generated by `make results`; edit results.yaml -->\n"
    markdown = f"# R\n\nprose\n{begin}| stale |\n{END}\nmore prose\n"
    out = render(markdown, results)
    assert out == f"# R\n\nprose\n{begin}{table([results.by_name['a']])}{END}\nmore prose\n"
    assert "| A | `a` | `-S x=1` | **0.5000** |  |  |  | 0.01 (better) |  |" in out
    assert render(out, results) == out
    assert "(before stop 2; not checked)" in table([results.by_name["b"]])

    with pytest.raises(ConfigError, match="no end marker"):
        render(f"{begin}| stale |\n", results)
    with pytest.raises(ConfigError, match="no row of dataset 'e2'"):
        render(begin.replace("=d:", "=e2:") + END, results)
