"""Loading a backbone: transformers' load report is kept to debug when it lists only harmless rows."""

from __future__ import annotations

import logging

import pytest
import torch

from wav2emo.backbones.load_report import is_harmless, quiet_transformers, report_rows


def _save(tmp_path, drop=(), add=None):
    import safetensors.torch as st
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                         conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2)
    model = Wav2Vec2Model(cfg)
    model.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k not in drop}
    state.update(add or {})
    st.save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    return tmp_path


def _load(path, capfd):
    """What loading prints, read from a handler of our own on transformers' logger (at its default verbosity),
    plus the process's stdout/stderr (progress bars): other tests may leave the library's own handler writing to
    a stream pytest no longer captures."""
    import io

    import transformers.utils.logging as tlog
    from transformers import AutoModel

    seen, handler = io.StringIO(), None
    level = tlog.get_verbosity()
    tlog.set_verbosity_warning()
    handler = logging.StreamHandler(seen)
    tlog.get_logger().addHandler(handler)
    try:
        with quiet_transformers():
            AutoModel.from_pretrained(path)
    finally:
        tlog.get_logger().removeHandler(handler)
        tlog.set_verbosity(level)
    return seen.getvalue() + "".join(capfd.readouterr())


def test_a_checkpoint_without_the_mask_vector_and_with_pretraining_heads_loads_quietly(tmp_path, capfd):
    path = _save(tmp_path, drop=("masked_spec_embed",), add={"quantizer.codevectors": torch.zeros(1, 4, 2)})
    out = _load(path, capfd)
    assert "LOAD REPORT" not in out and "Loading weights" not in out


def test_a_missing_encoder_weight_is_still_reported(tmp_path, capfd):
    path = _save(tmp_path, drop=("masked_spec_embed", "encoder.layers.0.attention.k_proj.weight"))
    out = _load(path, capfd)
    assert "LOAD REPORT" in out and "k_proj" in out


@pytest.mark.parametrize("rows, harmless", [
    ([("masked_spec_embed", "MISSING")], True),
    ([("quantizer.weight_proj.weight", "UNEXPECTED"), ("project_q.bias", "UNEXPECTED")], True),
    ([("masked_spec_embed", "MISSING"), ("encoder.layer_norm.weight", "MISSING")], False),
    ([("feature_projection.projection.weight", "MISMATCH")], False),
    ([], False),
])
def test_which_reports_are_harmless(rows, harmless):
    table = "Key | Status | \n----+----+-\n" + "\n".join(f"\x1b[1m{k}\x1b[0m | \x1b[31m{s}\x1b[0m | " for k, s in rows)
    message = "Wav2Vec2Model LOAD REPORT from: x\n" + table
    assert report_rows(message) == rows
    assert is_harmless(message) is harmless


def test_the_filter_is_removed_after_loading():
    import transformers.utils.logging as tlog

    handlers = list(tlog.get_logger().handlers) + list(logging.getLogger().handlers)
    before = [list(h.filters) for h in handlers]
    with quiet_transformers():
        pass
    assert [list(h.filters) for h in handlers] == before
