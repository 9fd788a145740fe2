"""One way to extend the corpus layer: a corpus recipe and a fold protocol of your own, registered from outside
the package (nothing in wav2emo edited) and run through the same entries the training code uses."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tests.corpus_trees import tone
from wav2emo.data import registry
from wav2emo.data.corpora import load_corpus
from wav2emo.data.errors import CorpusError, FoldError
from wav2emo.data.folds import assemble_fold, build_folds, fold_count
from wav2emo.data.manifest_builder import Entry, audio_files, build_manifest, check_options_from
from wav2emo.data.problems import Problems
from wav2emo.data.registry import FoldProtocol, Recipe, Totals
from wav2emo.data.splits import SpeakerFolds

TOY_MODULE = '''
"""A corpus of one's own: <root>/<speaker>/<emotion>_<n>.wav, and a protocol that tests odd against even speakers."""
from wav2emo.data.manifest_builder import Entry, audio_files, build_manifest, check_options_from
from wav2emo.data.problems import Problems
from wav2emo.data.registry import FoldProtocol, Recipe, Totals, register_protocol, register_recipe
from wav2emo.data.splits import SpeakerFolds


def prepare_toy(source, *, corpus_name="toy_corpus", **options):
    opts = check_options_from(options)
    problems, entries = Problems(), []
    for path in audio_files(source, "toy files"):
        emotion, _ = path.stem.split("_")
        entries.append(Entry(path=path, clip_id=f"{path.parent.name}-{path.stem}", speaker=path.parent.name,
                             emotion=emotion))
    return build_manifest(source, corpus_name, entries, problems, opts,
                          totals=Totals(files=8, speakers=("s1", "s2", "s3", "s4")))


def odd_even(cfg, manifest):
    odd = [a for a in manifest.actors if a % 2]
    even = [a for a in manifest.actors if not a % 2]
    return SpeakerFolds([odd, even], manifest.genders(), n_dev_actors=0, name="toy_odd_even")


register_recipe(Recipe("toy_corpus", prepare_toy, "a toy folder", "Make one.", default_folds="toy_odd_even"))
register_protocol(FoldProtocol("toy_odd_even", odd_even, lambda cfg, corpus: 2))
'''


@pytest.fixture
def isolated_registry():
    """Registrations made by a test disappear with it."""
    recipes, protocols = dict(registry.RECIPES), dict(registry.PROTOCOLS)
    yield
    for table, saved in ((registry.RECIPES, recipes), (registry.PROTOCOLS, protocols)):
        table.clear()
        table.update(saved)


def toy_tree(root: Path) -> Path:
    for i, spk in enumerate(("s1", "s2", "s3", "s4")):
        for j, emotion in enumerate(("angry", "sad")):
            tone(root / spk / f"{emotion}_{j}.wav", seed=10 * i + j)
    return root


def test_a_recipe_and_a_protocol_module_of_ones_own_run_through_the_usual_entries(tmp_path, monkeypatch,
                                                                                  isolated_registry):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "my_toy_corpus.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    monkeypatch.delitem(sys.modules, "my_toy_corpus", raising=False)
    cfg = {"name": "toy_corpus", "module": "my_toy_corpus", "root": str(toy_tree(tmp_path / "toy"))}
    m = load_corpus(cfg, cache_dir=tmp_path / "cache")  # data.corpus.module imports (and registers) it
    assert len(m) == 8 and m.class_names == ("sad", "angry") and m.name == "toy_corpus"
    assert fold_count({"name": "default"}, {"corpus": cfg}) == 2  # its usual protocol, from the configs alone
    folds = build_folds({"name": "default"}, m)
    assert folds.num_folds == 2 and folds.name == "toy_odd_even"
    fold = assemble_fold(m, {"name": "toy_odd_even"}, 1)
    assert {c.speaker for c in fold.parts["test"]} == {"s2", "s4"} and len(fold.parts["train"]) == 4


def test_registering_in_the_test_itself(tmp_path, isolated_registry):
    def prepare(source, *, corpus_name="inline", **options):
        entries = [Entry(path=p, clip_id=f"{p.parent.name}-{p.stem}", speaker=p.parent.name,
                         emotion=p.stem.split("_")[0]) for p in audio_files(source, "toy files")]
        return build_manifest(Path(source), corpus_name, entries, Problems(), check_options_from(options),
                              totals=Totals(speakers=("s1", "s2", "s3", "s4")))

    def first_two(cfg, manifest):
        return SpeakerFolds([manifest.actors[:2], manifest.actors[2:]], manifest.genders(), n_dev_actors=1)

    registry.register_recipe(Recipe("inline", prepare, "a toy folder", "Make one."))
    registry.register_protocol(FoldProtocol("first_two", first_two))
    m = load_corpus({"name": "inline", "root": str(toy_tree(tmp_path / "toy"))})
    a = assemble_fold(m, {"name": "first_two"}, 0)
    assert len(a.parts["test"]) == 4 and len(a.parts["dev"]) == 2 and len(a.parts["train"]) == 2
    assert build_folds({"name": "default"}, m).num_folds == 4  # the default default: leave-one-speaker-out
    with pytest.raises(CorpusError, match="registered already"):
        registry.register_recipe(Recipe("inline", prepare, "x", "y"))
    with pytest.raises(FoldError, match="registered already"):
        registry.register_protocol(FoldProtocol("loso", first_two))


def test_an_unknown_corpus_or_module_is_named(tmp_path):
    with pytest.raises(CorpusError, match=r"data.corpus.name='nope'.*data.corpus.module"):
        load_corpus({"name": "nope", "root": str(tmp_path)})
    with pytest.raises(Exception, match="data.corpus.module='no_such_module_xyz' cannot be imported"):
        load_corpus({"name": "nope", "module": "no_such_module_xyz", "root": str(tmp_path)})
