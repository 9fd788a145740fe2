"""The built-in corpus recipes and fold protocols, registered the way a recipe or protocol of your own is.

To add one: write its module (a :class:`~wav2emo.data.registry.Recipe` or
:class:`~wav2emo.data.registry.FoldProtocol`) and its config, and call ``register_recipe`` /
``register_protocol`` - from your own package (``data.corpus.module`` / ``folds.module`` import it), or
here for one that ships with wav2emo.
"""

from __future__ import annotations

from . import (
    byo,
    combined_folds,
    crema_d,
    emobox,
    emodb,
    emovo,
    iemocap,
    multi,
    protocols,
    ravdess,
    savee,
    synthetic,
    tess,
)
from .registry import register_protocol, register_recipe

for _recipe in (ravdess.RECIPE, synthetic.RECIPE, emodb.RECIPE, crema_d.RECIPE, tess.RECIPE, savee.RECIPE,
                emovo.RECIPE, iemocap.RECIPE, byo.FOLDER_RECIPE, byo.CSV_RECIPE, multi.RECIPE):
    register_recipe(_recipe)
for _protocol in (*protocols.PROTOCOLS, emobox.PROTOCOL, combined_folds.PROTOCOL):
    register_protocol(_protocol)
