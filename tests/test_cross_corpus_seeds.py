"""Cross-corpus evaluation of a sweep over seeds: every seed's fold models are tested (not the first seed's only),
each seed reported under ``seed=<s>/`` with the spread over seeds beside them (reports/seeds.py), the matrix says
how many seeds; a sweep without seeds gives the files and numbers it gave before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.corpus_trees import emodb_tree
from tests.helpers import compose_cfg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SYN = ["data=synthetic", "data.corpus.clips_per_actor=8", "features=tiny"]
EMODB = ["data=emodb", "data.corpus.require_complete=false"]
# a random forest: its random_state is seed + fold, so two seeds give two different models of each fold
FOREST = ["model=random_forest", "model.estimator.n_estimators=8"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("xcorpus_seeds")
    emodb_tree(root / "emodb")
    return root / "data", root / "cache", root / "emodb"


def _job(job: Path, dirs, *overrides: str) -> Path:
    """One job of a Hydra multirun: a baseline run in ``job`` and the overrides it records."""
    from wav2emo.baselines.runner import command_line_overrides, run_baselines

    data_dir, cache_dir, _ = dirs
    job.mkdir(parents=True)
    run_baselines(compose_cfg(command_line_overrides(list(overrides)), job, data_dir, cache_dir,
                              config_name="baselines"))
    (job / ".hydra").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    return job


def _sweep(root: Path, dirs, seeds, folds=(0, 1), model=FOREST, corpus=SYN) -> Path:
    """``-m fold=0,1 seed=...``: one job per (seed, fold), numbered as Hydra numbers them."""
    jobs = [(s, f) for s in seeds for f in folds]
    for n, (s, f) in enumerate(jobs):
        _job(root / str(n), dirs, *model, *corpus, f"fold={f}", *([f"seed={s}"] if s is not None else []))
    return root


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory, dirs):
    return _sweep(tmp_path_factory.mktemp("seed_sweep"), dirs, seeds=(0, 1))


def _eval_cfg(out: Path, dirs, ckpt, *extra: str):
    data_dir, cache_dir, emodb = dirs
    return compose_cfg([f"ckpt_path={ckpt}", *EMODB, f"data.corpus.root={emodb}", *extra], out, data_dir, cache_dir,
                       config_name="eval")


def test_every_seed_of_a_seed_sweep_is_evaluated_and_reported_per_seed(seed_sweep, dirs, tmp_path):
    from wav2emo.crosscorpus.evaluate import cross_evaluate
    from wav2emo.reports.fold_results import read_fold_result

    out = tmp_path / "ev"
    rep = cross_evaluate(_eval_cfg(out, dirs, seed_sweep))
    assert rep["seeds"] == ["0", "1"] and rep["folds"] == [0, 1]
    assert sorted((m["seed"], m["fold"]) for m in rep["models"]) == [("0", 0), ("0", 1), ("1", 0), ("1", 1)]
    assert not (out / "fold_0").exists()  # no fold_<k> of one seed that another seed would overwrite
    # each seed's results come from that seed's own fold models (jobs 0-1: seed 0, jobs 2-3: seed 1)
    for seed, jobs in (("0", (0, 1)), ("1", (2, 3))):
        for fold, job in zip((0, 1), jobs, strict=True):
            r = read_fold_result(out / f"seed={seed}" / f"fold_{fold}", filename="eval_result.json")
            assert Path(r["checkpoint"]) == seed_sweep / str(job) / f"fold_{fold}"
        assert (out / f"seed={seed}" / "cross_corpus.md").is_file()
    # the seed=1 report is what evaluating seed 1's jobs alone gives
    alone = tmp_path / "seed1_jobs"
    for job in (2, 3):
        shutil.copytree(seed_sweep / str(job), alone / str(job))
    seed1 = cross_evaluate(_eval_cfg(tmp_path / "ev1", dirs, alone))
    per_seed = json.loads((out / "seed=1" / "cross_corpus.json").read_text())
    assert per_seed["summary"]["ua"]["per_model"] == pytest.approx(seed1["summary"]["ua"]["per_model"])
    assert rep["per_seed"]["1"]["summary"]["ua"] == pytest.approx(seed1["summary"]["ua"]["mean"])
    # beside them: reports/seeds.py's spread over seeds and the interval with every seed pooled
    assert rep["seed_spread"]["ua"]["repeats"] == 2
    assert rep["intervals"]["clips"] == 2 * 2 * 60 and rep["intervals"]["ua"]["estimate"] is not None
    ua = [rep["per_seed"][s]["summary"]["ua"] for s in ("0", "1")]
    assert rep["summary"]["ua"]["mean"] == pytest.approx(sum(ua) / 2)
    md = (out / "cross_corpus.md").read_text()
    for text in ("over 2 seeds", "Spread over seeds", "seed=1/cross_corpus.md", "scored (shared) classes"):
        assert text in md, text


def test_a_sweep_without_seeds_writes_what_it_wrote_before(dirs, tmp_path):
    from wav2emo.crosscorpus.evaluate import cross_evaluate

    run = _job(tmp_path / "run", dirs, *FOREST, *SYN, "fold=[0,1]")  # one job, both folds: fold_0, fold_1
    sweep = _sweep(tmp_path / "sweep", dirs, seeds=(None,))  # one job per fold, no seed override
    one_seed = _sweep(tmp_path / "one_seed", dirs, seeds=(3,))  # seed=3 only: one repeat, not a seed sweep
    reports = {}
    for name, path in (("run", run), ("sweep", sweep), ("one_seed", one_seed)):
        reports[name] = cross_evaluate(_eval_cfg(tmp_path / f"ev_{name}", dirs, path))
        files = sorted(str(p.relative_to(tmp_path / f"ev_{name}")) for p in (tmp_path / f"ev_{name}").rglob("*")
                       if p.is_file())
        assert files == ["confusion_matrix.png", "cross_corpus.json", "cross_corpus.md", "fold_0/eval_result.json",
                         "fold_0/predictions.csv", "fold_1/eval_result.json", "fold_1/predictions.csv"], name
        assert reports[name]["kind"] == "cross_corpus" and "seeds" not in reports[name]
    assert reports["sweep"]["summary"]["ua"]["per_model"] == pytest.approx(reports["run"]["summary"]["ua"]["per_model"])
    assert [m["fold"] for m in reports["one_seed"]["models"]] == [0, 1]


def test_seeds_with_different_folds_are_refused_with_what_to_run(seed_sweep, dirs, tmp_path):
    from wav2emo.crosscorpus.evaluate import cross_evaluate
    from wav2emo.errors import ConfigError

    partial = tmp_path / "partial"
    for job in (0, 1, 2):  # seed 1's fold 1 (job 3) never ran
        shutil.copytree(seed_sweep / str(job), partial / str(job))
    with pytest.raises(ConfigError, match=r"seed 1 has folds \[0\], lacks \[1\].*\(fold=1 seed=1\)"):
        cross_evaluate(_eval_cfg(tmp_path / "ev", dirs, partial))
    assert not (tmp_path / "ev").exists()


def test_the_matrix_cell_of_a_seed_sweep_is_over_its_seeds(seed_sweep, dirs, tmp_path):
    from wav2emo.crosscorpus.matrix import cross_corpus_matrix
    from wav2emo.errors import ConfigError

    emodb_sweep = _sweep(tmp_path / "emodb_sweep", dirs, seeds=(None,), folds=(0, 1), model=["model=logreg"],
                         corpus=[*EMODB, f"data.corpus.root={dirs[2]}", "features=tiny", "folds=loso"])
    out = tmp_path / "matrix"
    m = cross_corpus_matrix([seed_sweep, emodb_sweep], out, cache_dir=str(dirs[1]))
    cell = {(c["train"], c["test"]): c for c in m["cells"]}
    pair = json.loads((out / "pairs" / "synthetic__to__emodb" / "cross_corpus.json").read_text())
    assert pair["seeds"] == ["0", "1"] and (out / "pairs" / "synthetic__to__emodb" / "seed=1" / "fold_1").is_dir()
    across = cell["synthetic", "emodb"]
    assert across["seeds"] == 2 and across["n"] == 2 and across["ua"] == pytest.approx(pair["summary"]["ua"]["mean"])
    assert across["seed_spread"]["repeats"] == 2
    assert cell["synthetic", "synthetic"]["seeds"] == 2 and cell["synthetic", "synthetic"]["seed_spread"]["repeats"] == 2
    # the sweep without seeds: one job per fold, and both fold models tested (not the first job's only)
    back = cell["emodb", "synthetic"]
    assert "seeds" not in back and back["n"] == 2 and cell["emodb", "emodb"]["n"] == 2
    assert m["runs"]["emodb"] == str(emodb_sweep)
    md = (out / "cross_corpus_matrix.md").read_text()
    assert "(2 seeds)" in md and "synthetic -> emodb: 2 seeds" in md
    again = cross_corpus_matrix([seed_sweep, emodb_sweep], out, cache_dir=str(dirs[1]))  # pair reports reused
    assert again["ua"] == m["ua"]
    seed0 = tmp_path / "seed0_jobs"  # seed 0 alone: the stored pair report over two seeds is not its report
    for job in (0, 1):
        shutil.copytree(seed_sweep / str(job), seed0 / str(job))
    with pytest.raises(ConfigError, match=r"made from seeds \['0', '1'\].*now has seeds \(one\).*--force"):
        cross_corpus_matrix([seed0, emodb_sweep], out, cache_dir=str(dirs[1]))
