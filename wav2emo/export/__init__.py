"""Trained models that leave wav2emo: ``python -m wav2emo.export ckpt_path=<checkpoint or run> output=<file.onnx>``.

- :mod:`~wav2emo.export.graph`: restored checkpoints as one traceable module (waveform [+ eGeMAPS] -> probabilities);
- :mod:`~wav2emo.export.writer`: tracing to ONNX with a dynamic length axis, metadata, the onnxruntime check;
- :mod:`~wav2emo.export.cli`: the command (Hydra, conf/export.yaml).

The file format (inputs, outputs, metadata) is described in :mod:`wav2emo.inference.onnx_model`, which reads it.

May import: backbones, models, inference (restoring checkpoints), and the package root's errors, cli and
compat. Nothing imports it: it is its own command.
"""
