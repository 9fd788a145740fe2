"""The pieces of ``wav2emo.predict`` that need no model: streamed reading, windows, the energy check, inputs."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from wav2emo.data.audio import AudioError, load_audio
from wav2emo.errors import ConfigError, MissingFileError
from wav2emo.inference.audio import AudioStream
from wav2emo.inference.input_files import collect_inputs
from wav2emo.inference.windows import Window, active_frames, frame_levels_db, plan_windows, speech_windows


@pytest.mark.parametrize(("sr", "channels"), [(8000, 1), (16000, 1), (22050, 2), (44100, 1), (48000, 2)])
def test_any_stretch_is_what_resampling_the_whole_file_gives(tmp_path, sr, channels):
    rng = np.random.default_rng(sr)
    x = (0.3 * rng.standard_normal((sr * 7 + 123, channels))).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    whole = load_audio(path)
    with AudioStream(path) as s:
        assert s.num_samples == len(whole) and s.duration_s == pytest.approx(len(whole) / 16000)
        for a, b in [(0, len(whole)), (0, 16000), (12345, 50000), (len(whole) - 20000, len(whole))]:
            np.testing.assert_allclose(s.read(a, b), whole[a:b], atol=1e-6, rtol=0)
        np.testing.assert_allclose(np.concatenate(list(s.blocks(30000))), whole, atol=1e-6, rtol=0)


def test_unusable_files_are_audio_errors_naming_the_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1), dtype=np.float32), 16000)
    x = np.zeros(32000, dtype=np.float32)
    x[20000] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    for name in ("empty.wav", "zero.wav", "missing.wav"):
        with pytest.raises(AudioError, match=name):
            AudioStream(tmp_path / name)
    with AudioStream(tmp_path / "nan.wav") as s:
        s.read(0, 16000)  # the NaN is later: the first second reads fine
        with pytest.raises(AudioError, match="NaN"):
            s.read(16000, 32000)


def test_windows_cover_every_sample_and_a_short_file_is_one_window():
    assert plan_windows(1600, 16000, 4.0, 2.0) == [Window(0, 1600)]
    assert plan_windows(64000, 16000, 4.0, 2.0) == [Window(0, 64000)]
    w = plan_windows(16000 * 11, 16000, 4.0, 2.0)
    assert [x.start / 16000 for x in w] == [0, 2, 4, 6, 7] and w[-1].end == 16000 * 11
    assert [x.start // 16000 for x in plan_windows(16000 * 12, 16000, 4.0, 4.0)] == [0, 4, 8]
    with pytest.raises(ConfigError, match="hop_s"):
        plan_windows(16000, 16000, 1.0, 2.0)


def test_energy_check_over_blocks_equals_one_pass_and_drops_silent_windows():
    rng = np.random.default_rng(0)
    loud = 0.3 * rng.standard_normal(16000 * 2)
    wave = np.concatenate([loud, np.zeros(16000 * 4), 1e-4 * rng.standard_normal(16000 * 2), loud])
    blocks = [wave[i : i + 4000] for i in range(0, len(wave), 4000)]
    frame = 400
    np.testing.assert_allclose(frame_levels_db(blocks, frame), frame_levels_db([wave], frame))
    active = active_frames(frame_levels_db(blocks, frame))
    kept = speech_windows(active, frame, plan_windows(len(wave), 16000, 2.0, 2.0))
    assert [w.start // 16000 for w in kept] == [0, 8]  # silence and a hum 70 dB down are dropped
    assert not active_frames(frame_levels_db([np.zeros(16000)], frame)).any()


def test_inputs_from_files_folders_and_lists(tmp_path):
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    (audio / ".hidden").mkdir()
    for p in (audio / "b.wav", audio / "sub" / "a.flac", audio / ".hidden" / "c.wav", audio / "._d.wav"):
        p.write_bytes(b"x")
    (audio / "notes.txt").write_text("not a list given as input")
    assert collect_inputs([audio]) == [audio / "b.wav", audio / "sub" / "a.flac"]
    (tmp_path / "list.csv").write_text("speaker,path\n1,audio/b.wav\n2,/abs/missing.wav\n3,audio/sub\n")
    assert collect_inputs([tmp_path / "list.csv"]) == [audio / "b.wav", tmp_path / "/abs/missing.wav",
                                                       audio / "sub" / "a.flac"]
    (tmp_path / "list.txt").write_text("# my files\naudio/b.wav\n\n  audio/sub/a.flac\n")
    other = tmp_path / "x.mp3"
    other.write_bytes(b"x")
    assert collect_inputs([tmp_path / "list.txt", other]) == [audio / "b.wav", audio / "sub" / "a.flac", other]
    with pytest.raises(MissingFileError, match="nope.wav"):
        collect_inputs([tmp_path / "nope.wav"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no audio file"):
        collect_inputs([tmp_path / "empty"])


class _CountingPredictor:
    """Stands in for :class:`~wav2emo.inference.runner.Predictor`: records when each window's eGeMAPS was queued
    and what every batch held; a window's 'probability' is its first sample."""

    def __init__(self, batch_size: int, read_ahead: int) -> None:
        self.batch_size, self.ahead, self.min_samples = batch_size, read_ahead, 1
        self.class_names = ("a",)
        self.queued: list[float] = []
        self.batches: list[list[float]] = []

    def prefetch(self, wave):
        self.queued.append(float(wave[0]))
        return {}

    def reader(self, files, settings):
        from wav2emo.inference.reader import WindowReader

        return WindowReader(files, settings, self.prefetch, self.ahead)

    def probabilities(self, waves, prefetched=None):
        self.batches.append([float(w[0]) for w in waves])
        return np.array([[w[0]] for w in waves])


def _stepped_files(tmp_path):
    """Two files whose samples say where they are (file * 100 + second, / 1000): 8 s and 4 s."""
    files = []
    for f, seconds in enumerate((8, 4)):
        x = np.repeat(np.arange(seconds, dtype=np.float32) + 100 * f, 16000)
        files.append(tmp_path / f"{f}.wav")
        sf.write(files[-1], x / 1000, 16000, subtype="FLOAT")
    return files


STARTS = [0, 2, 4, 6, 100, 102]  # the 2 s windows (hop 2 s) of the two files, in reading order


@pytest.mark.parametrize("read_ahead", [1, 3, 50])
def test_windows_are_batched_in_reading_order_whatever_the_read_ahead(tmp_path, read_ahead):
    from wav2emo.inference.reader import WindowSettings
    from wav2emo.inference.runner import predict_files

    files = _stepped_files(tmp_path)
    predictor = _CountingPredictor(batch_size=4, read_ahead=read_ahead)
    results = list(predict_files(files, predictor, WindowSettings(window_s=2.0, hop_s=2.0)))
    assert predictor.queued == pytest.approx([s / 1000 for s in STARTS], abs=1e-6)
    assert [len(b) for b in predictor.batches] == [4, 2]
    assert [v for b in predictor.batches for v in b] == pytest.approx([s / 1000 for s in STARTS], abs=1e-6)
    assert [r.path for r in results] == files and all(r.error is None for r in results)
    assert [len(r.probs) for r in results] == [4, 2] and results[1].probs[1][0] == pytest.approx(0.102, abs=1e-6)


def test_the_reader_queues_windows_ahead_before_anything_consumes_them_and_stops_when_closed(tmp_path):
    """Started before the models exist, the reader reads and queues eGeMAPS for as many windows as it may hold
    (its queue of 3 events plus the window in hand), then waits; closing it stops its thread."""
    import threading
    import time

    from wav2emo.inference.reader import FileOpened, FileRead, WindowRead, WindowReader, WindowSettings

    files = _stepped_files(tmp_path)
    queued: list[float] = []
    reader = WindowReader(files, WindowSettings(window_s=2.0, hop_s=2.0), lambda w: queued.append(float(w[0])), 3)
    deadline = time.monotonic() + 10
    while len(queued) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # it would go on here if nothing held it back
    assert queued == pytest.approx([0.0, 0.002, 0.004], abs=1e-6)  # FileOpened + 2 windows queued, the 3rd in hand
    events = list(reader)
    assert [type(e) for e in events] == [FileOpened, *[WindowRead] * 4, FileRead, FileOpened, *[WindowRead] * 2, FileRead]
    assert [e.index for e in events if isinstance(e, WindowRead)] == [0, 1, 2, 3, 0, 1]
    assert queued == pytest.approx([s / 1000 for s in STARTS], abs=1e-6)
    reader.close()

    blocked = WindowReader(files, WindowSettings(window_s=2.0, hop_s=2.0), lambda w: None, 1)
    time.sleep(0.2)
    blocked.close()  # never consumed: its thread waits on a full queue until closed
    assert not any(t.name == "wav2emo-window-reader" and t.is_alive() for t in threading.enumerate())


def test_a_file_that_cannot_be_read_is_handed_on_failed_between_good_ones(tmp_path):
    from wav2emo.inference.reader import WindowSettings
    from wav2emo.inference.runner import predict_files

    good = _stepped_files(tmp_path)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEnot audio")
    predictor = _CountingPredictor(batch_size=4, read_ahead=2)
    results = list(predict_files([good[0], bad, good[1]], predictor, WindowSettings(window_s=2.0, hop_s=2.0)))
    assert [r.path for r in results] == [good[0], bad, good[1]]
    assert results[0].error is None and results[2].error is None and results[1].error
    assert [len(r.probs) for r in results] == [4, 0, 2]
    assert [v for b in predictor.batches for v in b] == pytest.approx([s / 1000 for s in STARTS], abs=1e-6)
