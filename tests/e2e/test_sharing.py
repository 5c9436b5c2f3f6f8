"""End-to-end: two machines share the pipeline's data, models and experiments through a git
remote and a DVC remote, with the real git and DVC.

The phases run in file order on one repository (the harness's, module-scoped) as machine A:

1. Without a DVC remote, every sharing target stops at once with one message saying how to
   configure one.
2. A configures ``origin`` (a bare git repository) and a local-directory DVC remote,
   reproduces the pipeline and commits it, ``make push`` uploads its data and model, and
   ``make exp-push`` shares an experiment (its git refs to ``origin``, its outputs to the DVC
   remote).
3. Machine B is a ``git clone`` of ``origin``: ``make pull`` brings every output, after which
   ``dvc repro`` and ``dvc status`` find nothing to recompute.
4. B's ``make exp-pull`` brings A's experiment and its outputs into B's cache: ``dvc exp
   show`` lists it, ``make compare`` tests it against an experiment B ran itself, and with it
   applied ``dvc repro`` recomputes nothing either.

A phase is skipped when the one before it failed, so a failure is reported once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from e2e_repo import OUTPUT_TAIL, VENV_BIN, E2ERepo, compare_rows

from irtune.workspace import run_captured

pytestmark = pytest.mark.e2e

#: A's experiment: a shallower rerank, so only rerank and evaluate rerun, on a rerank run
#: that differs from main's.
EXP_A = "shared-rerank-5"
#: B's own experiment: another rerank depth, so again only rerank and evaluate rerun.
EXP_B = "b-rerank-10"
SHARING_TARGETS = ("push", "pull", "exp-push", "exp-pull")
#: Outputs B's pull must reproduce byte for byte, and their bytes in A at main's commit.
COMPARED_OUTS = ("data/model", "data/index", "data/eval/per_query.json")
A_MAIN: dict[str, dict[str, bytes]] = {}


def make(repo: E2ERepo, target: str, *args: str, check: bool = True) -> str:
    """``make <target>`` in ``repo``, as a user types it, on this environment's venv."""
    return repo.run(
        "make", "--no-print-directory", target, *args, f"BIN={VENV_BIN}", "STAMP=", check=check
    )


def stage_names(repo: E2ERepo) -> list[str]:
    dvc_yaml = yaml.safe_load((repo.root / "dvc.yaml").read_text(encoding="utf-8"))
    return list(dvc_yaml["stages"])


def assert_nothing_recomputed(repo: E2ERepo) -> None:
    """``dvc repro`` skips every stage of dvc.yaml and ``dvc status`` is clean."""
    out = repo.dvc("repro")
    assert "Running stage" not in out, f"`dvc repro` recomputed in {repo.root}:\n{out}"
    unskipped = [s for s in stage_names(repo) if f"Stage '{s}' didn't change, skipping" not in out]
    assert not unskipped, f"`dvc repro` did not skip {unskipped}:\n{out}"
    assert "Data and pipelines are up to date" in out, out
    status = repo.dvc("status")
    assert status.strip() == "Data and pipelines are up to date.", status


def uncached(repo: E2ERepo) -> set[str]:
    """The outputs dvc.yaml keeps in git (``cache: false``): metrics and plots."""
    dvc_yaml = yaml.safe_load((repo.root / "dvc.yaml").read_text(encoding="utf-8"))
    return {
        path
        for stage in dvc_yaml["stages"].values()
        for kind in ("outs", "metrics", "plots")
        for entry in stage.get(kind, [])
        if isinstance(entry, dict)
        for path, options in entry.items()
        if (options or {}).get("cache") is False
    }


def exp_refs(git_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """The experiments a git repository holds (``refs/exps/``): name -> ref."""
    result = run_captured(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps/"],
        cwd=git_dir,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.output
    return {ref.rsplit("/", 1)[-1]: ref for ref in result.output.split()}


def lock_outs(repo: E2ERepo, rev: str) -> dict[str, str]:
    """Every cached output in dvc.lock at ``rev`` (a git revision or an experiment's name):
    its path -> its md5 (``.dir`` for a folder), the objects a DVC remote or cache must hold
    for that revision."""
    rev = exp_refs(repo.root, repo.env).get(rev, rev)
    lock = yaml.safe_load(repo.run("git", "show", f"{rev}:dvc.lock"))
    in_git = uncached(repo)
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if out["path"] not in in_git
    }


def files(path: Path) -> dict[str, bytes]:
    """The bytes of the file ``path``, or of every file under the folder ``path``."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def cache_file(root: Path, md5: str) -> Path:
    """Where DVC 3 keeps object ``md5`` in ``root``'s local cache (or in a local remote)."""
    return root / "files" / "md5" / md5[:2] / md5[2:]


@pytest.fixture(scope="module")
def shared(repo: E2ERepo) -> dict[str, Path]:
    """The two shared places beside A: ``origin`` (a bare git repository) and ``storage`` (a
    folder used as the DVC remote, as a shared mount would be), and where B is cloned."""
    base = repo.root.parent
    places = {"origin": base / "origin.git", "storage": base / "dvc-storage", "b": base / "b"}
    result = run_captured(
        ["git", "init", "--bare", "-q", "--initial-branch=main", str(places["origin"])],
        env=repo.env,
        timeout=60,
    )
    assert result.returncode == 0, result.output
    places["storage"].mkdir()
    return places


def test_sharing_targets_say_how_to_configure_a_remote(repo: E2ERepo) -> None:
    """Before any DVC remote exists, each sharing target fails with one clear message, and
    so does a REMOTE= naming one that does not exist."""
    assert not repo.dvc("remote", "list").strip(), "the checkout already configures a remote"
    for target in SHARING_TARGETS:
        out = make(repo, target, check=False)
        assert "error: no DVC remote configured" in out, f"make {target}:\n{out}"
        assert "dvc remote add -d" in out, f"make {target}:\n{out}"
        assert "dvc push" not in out and "dvc exp" not in out, f"make {target} ran DVC:\n{out}"
    out = make(repo, "push", "REMOTE=nowhere", check=False)
    assert "error: no DVC remote named 'nowhere'" in out, out
    repo.passed.add("no_remote")


def test_a_pushes_its_pipeline_and_an_experiment(repo: E2ERepo, shared: dict[str, Path]) -> None:
    """A reproduces and commits the pipeline, pushes data and models to the DVC remote and
    the commit to origin, then runs an experiment and shares it with `make exp-push`."""
    repo.run("git", "branch", "-M", "main")
    repo.run("git", "remote", "add", "origin", str(shared["origin"]))
    repo.dvc("remote", "add", "-d", "storage", str(shared["storage"]))
    out = repo.dvc("repro")
    missing = [s for s in stage_names(repo) if f"Running stage '{s}'" not in out]
    assert not missing, f"stages not run: {missing}\n{out[-OUTPUT_TAIL:]}"
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-q", "-m", "e2e: reproduced, DVC remote configured")

    out = make(repo, "push")
    main_outs = lock_outs(repo, "main")
    assert {"data/model", "data/raw/tiny", "data/eval/per_query.json"} <= set(main_outs), main_outs
    assert not any(p.startswith(("metrics/", "plots/")) for p in main_outs), main_outs
    absent = [p for p, md5 in main_outs.items() if not cache_file(shared["storage"], md5).is_file()]
    assert not absent, f"`make push` left these outputs out of the remote: {absent}\n{out}"
    repo.run("git", "push", "-q", "origin", "main")
    A_MAIN.update({rel: files(repo.root / rel) for rel in COMPARED_OUTS})

    out = repo.dvc("exp", "run", "-n", EXP_A, "-S", "rerank.top_k=5")
    ran = sorted(s for s in stage_names(repo) if f"Running stage '{s}'" in out)
    assert ran == ["evaluate", "rerank"], f"A's experiment ran {ran}:\n{out[-OUTPUT_TAIL:]}"
    exp_outs = lock_outs(repo, EXP_A)
    rerank_run = "data/runs/rerank.trec"
    assert exp_outs[rerank_run] != main_outs[rerank_run], "top_k=5 kept main's rerank run"

    out = make(repo, "exp-push", f"EXP={EXP_A}")
    assert f"Pushed experiment {EXP_A} to Git remote 'origin'" in out, out
    on_origin = exp_refs(shared["origin"], repo.env)
    assert list(on_origin) == [EXP_A], f"origin's experiments: {on_origin}"
    assert on_origin == {EXP_A: exp_refs(repo.root, repo.env)[EXP_A]}, on_origin
    absent = [p for p, md5 in exp_outs.items() if not cache_file(shared["storage"], md5).is_file()]
    assert not absent, f"`make exp-push` left these outputs out of the remote: {absent}\n{out}"
    repo.passed.add("a_pushed")


@pytest.fixture(scope="module")
def clone_b(repo: E2ERepo, shared: dict[str, Path]) -> E2ERepo:
    """Machine B: a fresh ``git clone`` of origin, with its own git identity."""
    repo.require("a_pushed")
    result = run_captured(
        ["git", "clone", "-q", str(shared["origin"]), str(shared["b"])], env=repo.env, timeout=120
    )
    assert result.returncode == 0, result.output
    b = E2ERepo(root=shared["b"], env=repo.env, assets=repo.assets)
    b.run("git", "config", "user.name", "irtune e2e B")
    b.run("git", "config", "user.email", "irtune-e2e-b@irtune.invalid")
    b.run("git", "config", "commit.gpgsign", "false")
    return b


def test_b_pulls_and_recomputes_nothing(repo: E2ERepo, clone_b: E2ERepo) -> None:
    """B's clone has the code and the DVC remote's config but none of the data; `make pull`
    brings every output, and then nothing needs recomputing."""
    b = clone_b
    assert b.dvc("remote", "default").strip() == "storage"
    assert not (b.root / "data" / "model").exists(), "the clone already holds the model"
    before = b.dvc("status")
    assert "not in cache" in before, f"`dvc status` before the pull:\n{before}"

    out = make(b, "pull")
    assert (b.root / "data" / "model").is_dir(), out
    for rel in COMPARED_OUTS:
        assert A_MAIN[rel] and files(b.root / rel) == A_MAIN[rel], f"{rel}: B's is not A's"
    a_eval = json.loads(repo.run("git", "show", "main:metrics/eval.json"))
    b_eval = json.loads((b.root / "metrics" / "eval.json").read_text(encoding="utf-8"))
    assert a_eval == b_eval
    assert_nothing_recomputed(b)
    repo.passed.add("b_pulled")


def test_b_pulls_the_experiment_and_compares_its_own(repo: E2ERepo, clone_b: E2ERepo) -> None:
    """`make exp-pull` brings A's experiment and its outputs (B's cache holds every one, so
    B never reads A's data from the remote); B runs its own experiment and tests it against
    A's with `make compare`; with A's applied, `dvc repro` recomputes nothing."""
    repo.require("b_pulled")
    b = clone_b
    assert EXP_A not in b.exp_names()
    out = make(b, "exp-pull", f"EXP={EXP_A}")
    assert EXP_A in b.exp_names(), out
    shown = b.exp_data()
    assert shown[EXP_A]["rerank"]["top_k"] == 5, shown[EXP_A]
    metrics = b.exp_data("metrics/eval.json")
    assert metrics[EXP_A] == repo.exp_data("metrics/eval.json")[EXP_A]
    exp_outs = lock_outs(b, EXP_A)
    cache = b.root / ".dvc" / "cache"
    absent = [p for p, md5 in exp_outs.items() if not cache_file(cache, md5).is_file()]
    assert not absent, f"`make exp-pull` left these outputs out of B's cache: {absent}\n{out}"

    out = b.dvc("exp", "run", "-n", EXP_B, "-S", "rerank.top_k=10")
    ran = sorted(s for s in stage_names(b) if f"Running stage '{s}'" in out)
    assert ran == ["evaluate", "rerank"], f"B's experiment ran {ran}:\n{out[-OUTPUT_TAIL:]}"
    assert EXP_B in b.exp_names()

    out = make(b, "compare", f"A={EXP_A}", f"B={EXP_B}", "RUN=rerank")
    rows = compare_rows(out)
    b_metrics = b.exp_data("metrics/eval.json")
    assert rows and set(rows) == set(b_metrics[EXP_A]["rerank"]), out
    for metric, (value, base, *_) in rows.items():
        assert float(value) == pytest.approx(b_metrics[EXP_A]["rerank"][metric], abs=5e-5), out
        assert float(base) == pytest.approx(b_metrics[EXP_B]["rerank"][metric], abs=5e-5), out

    b.dvc("exp", "apply", EXP_A)
    applied = yaml.safe_load((b.root / "params.yaml").read_text(encoding="utf-8"))
    assert applied["rerank"]["top_k"] == 5, applied["rerank"]
    assert_nothing_recomputed(b)
