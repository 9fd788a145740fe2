"""The 535 utterances of EmoDB as its authors publish them (http://emodb.bilderbar.info/download/download.zip).

audEERING's ``emodb`` 2.0.0 (audb) adds 281 utterances that fewer than 80 % of the listeners recognised, under
the same naming scheme, and a ``laryngo/`` folder of laryngograms under the same names
(github.com/audeering/emodb, 2.0.0/README.md and 2.0.0/update.py).  Results
on EmoDB in the literature are on these 535, so the recipe sets the others aside by default and lists them.
The list is the authors' download checked against EmoBox's ``data/emodb/emodb.jsonl`` (535 identical stems).
Each speaker's line (continued on indented lines): speaker, then text+emotion+version of its utterances.
"""

from __future__ import annotations

_BY_SPEAKER = """
03: a01Fa a01Nc a01Wa a02Fc a02Nc a02Ta a02Wb a02Wc a04Ad a04Fd a04Lc a04Nc a04Ta a04Wc a05Aa a05Fc a05Nd a05Tc
    a05Wa a05Wb a07Fa a07Fb a07La a07Nc a07Wc b01Fa b01Lb b01Nb b01Td b01Wa b01Wc b02Aa b02La b02Na b02Tb b02Wb
    b03Nb b03Tc b03Wc b09La b09Nc b09Tc b09Wa b10Ab b10Ec b10Na b10Nc b10Wb b10Wc
08: a01Ab a01Fd a01Lc a01Na a01Wa a01Wc a02Ab a02Ac a02Fe a02La a02Na a02Tb a02Wc a04Ff a04La a04Nc a04Tb a04Wc
    a05Fe a05Lc a05Nb a05Ta a05Wa a07Fd a07La a07Na a07Ta a07Tb a07Wc b01Aa b01Fd b01Fe b01Lb b01Na b01Wa b02Ff
    b02La b02Nb b02Tc b02Wd b03Fe b03Lc b03Nb b03Tc b03Wd b09Ab b09Fd b09Lc b09Nb b09Tb b09Wa b09Wc b10Aa b10Fd
    b10La b10Nc b10Tc b10Wa
09: a01Ea a01Fa a01Nb a01Wb a02Ea a02Eb a02La a02Wb a04Fd a04La a04Nb a04Wa a05Ed a05Lc a05Nb a05Tb a05Wb a05Wc
    a07Eb a07Na a07Ta a07Wb a07Wd b01Ea b01Na b01Wb b02Na b02Tb b02Wc b02Wd b03Ed b03Fa b03Fd b03Lb b03Nb b03Ta
    b03Wb b09Ea b09Nd b09Wa b10Aa b10Nd b10Wa
10: a01Ac a01Nb a01Wa a02Ab a02Fa a02Lb a02Na a02Wa a04Fd a04Nb a04Wa a04Wb a05Aa a05Ld a05Tb a05Wb a07Aa a07Ad
    a07La a07Ta a07Wb b01Aa b01Ea b01Fa b01Lb b02Aa b02La b02Na b02Wb b03La b03Tb b03Wb b09Ad b09Lb b09Wb b10Fc
    b10Lc b10Wa
11: a01Aa a01Ab a01Ld a01Nd a01Wc a02Ec a02Fb a02Ld a02Nc a02Tc a02Wc a04Ac a04Fd a04Nd a04Wc a05Ad a05Fb a05Fc
    a05Lc a05Na a05Td a05Wd a07Ac a07Ld a07Ta a07Wc b01Ab b01Eb b01Fc b01Lb b01Nc b01Wd b02Ab b02Fd b02Na b02Td
    b02Wb b03Fc b03Lc b03Nb b03Td b03Wa b03Wb b09Ad b09Fd b09Ld b09Na b09Td b09Wa b10Ad b10Ae b10Ld b10Nc b10Td
    b10Wa
12: a01Fb a01Lb a01Nb a01Wc a02Ac a02Ec a02Nb a02Wa a02Wc a04Wc a05Ab a05Lb a05Nd a05Ta a05Wb a07Ac a07La a07Wa
    b01Ta b01Wa b02Ad b02Ea b02Fb b02Na b02Wa b02Wb b02Wd b03La b03Ta b09Ac b09Td b09Wc b10Ac b10Ld b10Wa
13: a01Ac a01Ea a01Ec a01Fd a01Lb a01Nb a01Wb a02Ad a02Ec a02Fa a02Lc a02Nc a02Ta a02Wa a04Ac a04Fc a04Lb a04Ta
    a04Wc a05Aa a05Ea a05Lc a05Nb a05Tc a05Wa a05Wc a07Fd a07Lb a07Na a07Tc a07Wb b01Ab b01Ec b01Fc b01Ld b01Nc
    b01Wa b02Fb b02Lc b02Nb b02Wa b03Ac b03Ed b03Fd b03Lb b03Na b03Td b03Wc b09Ab b09Ec b09Fb b09Fc b09La b09Na
    b09Wa b10Ec b10Fa b10La b10Nc b10Wa b10Wc
14: a01Aa a01Ac a01Ea a01Na a01Wa a01Wc a02Ab a02Ea a02Fd a02La a02Nc a02Tb a02Wa a02Wc a04Aa a04Ed a04Lb a04Tb
    a04Tc a04Wb a04Wc a05Aa a05Ac a05Fa a05Fb a05Lb a05Na a05Ta a05Tc a05Wa a05Wb a07Aa a07Eb a07Fd a07Lc a07Ld
    a07Na a07Tc a07Wc b01Ac b01Eb b01Fa b01Fc b01Na b01Wc b02Aa b02Fb b02Na b02Tc b02Wb b02Wd b03Ad b03Ed b03Lb
    b03Ta b03Wb b09Ac b09Ea b09Fc b09Lb b09Td b09Wa b09Wc b10Ad b10Eb b10Lb b10Nb b10Tc b10Wc
15: a01Ea a01Fb a01La a01Nb a01Wa a02Ac a02Ea a02La a02Na a02Ta a02Wb a02Wd a04Ab a04Ac a04Fd a04Nc a04Wa a04Wb
    a05Eb a05Fb a05Lb a05Na a05Wa a07Ac a07Eb a07Fa a07Fb a07Ld a07Nc b01Ec b01Lb b01Na b01Wc b02Aa b02Lb b02Nd
    b02Tc b02Wa b02Wc b03Aa b03Lc b03Nb b03Tc b03Wa b03Wb b09Ac b09Fa b09La b09Nb b09Ta b09Wb b10Ac b10Lc b10Nb
    b10Nc b10Wa
16: a01Ec a01Fc a01Lb a01Nc a01Tb a01Wb a02Ea a02Ec a02Lb a02Nb a02Tc a02Wb a04Ab a04Ea a04Fa a04La a04Lc a04Nc
    a04Tc a04Wb a04Wc a05Ab a05Ea a05Fc a05La a05Tb a05Wb a05Wc a07Ea a07Fa a07Fb a07La a07Lb a07Nb a07Td a07Wa
    b01Aa b01Eb b01Fa b01La b01Lc b01Tb b01Wa b01Wb b02Aa b02Eb b02Fd b02Lb b02Wb b03Ad b03Ea b03Fa b03Fd b03La
    b03Nb b03Ta b03Wb b09Ab b09Eb b09Fb b09La b09Lb b09Wb b10Aa b10Eb b10Fb b10Lb b10Tb b10Td b10Wa b10Wb
"""


def _stems() -> frozenset[str]:
    stems, speaker = set(), ""
    for line in _BY_SPEAKER.strip().split("\n"):
        if ":" in line:  # a speaker's first line; indented lines continue it
            speaker, line = line.split(":", 1)
        stems.update(speaker.strip() + s for s in line.split())
    return frozenset(stems)


EMODB_RELEASE_STEMS = _stems()  # 535 (tests/test_release_layouts.py)
