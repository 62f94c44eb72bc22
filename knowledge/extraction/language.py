"""A cheap guess at a text's language from the scripts it is written in."""

from __future__ import annotations

import re

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_KANA_HANGUL = re.compile(r"[\u3040-\u30ff\u1100-\u11ff\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_SAMPLE_CHARS = 200_000


def detect_language(text: str) -> str:
    """ "zh" when the text is mostly Chinese, "en" when mostly Latin script, "" when it cannot tell.

    A Chinese character carries about as much as a four-letter Latin word piece, so Latin letters are
    weighed at a quarter; Chinese documents full of English terms still come out "zh". Only the first
    200,000 characters are looked at. Any Latin-script language is reported as "en".
    """
    sample = text[:_SAMPLE_CHARS]
    han = len(_HAN.findall(sample))
    other_cjk = len(_KANA_HANGUL.findall(sample))
    latin = len(_LATIN.findall(sample)) / 4
    total = han + other_cjk + latin
    if total < 1:
        return ""
    if han / total >= 0.5:
        return "zh"
    if latin / total >= 0.5:
        return "en"
    return ""
