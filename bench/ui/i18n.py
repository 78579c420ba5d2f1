"""The browser station's languages: one JSON catalogue per language, key -> text.

Every string the station's own page shows comes from a catalogue (bench/ui/i18n/<lang>.json);
the page's script fills ``data-i18n`` elements and formats the messages of the server, which
answers with a key and its arguments, never with English text of its own. What the engine and
the sequences write (titles, step names, prompt texts, one-line errors of a parameter) stays as
written. The language is chosen per browser: the ``lang`` cookie when the operator picked one,
else the Accept-Language header (the page asks navigator.language when it has no cookie).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent / "i18n"
LANGUAGES = ("en", "zh-Hans")
DEFAULT = "en"


@functools.cache
def catalogue(lang: str) -> dict[str, str]:
    """The catalogue of ``lang`` (one of LANGUAGES); read once."""
    if lang not in LANGUAGES:
        raise ValueError(f"no catalogue for language {lang!r} (known: {', '.join(LANGUAGES)})")
    data: Any = json.loads((FOLDER / f"{lang}.json").read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in data.items()}


def choose(tag: str | None) -> str | None:
    """The catalogue for one language tag (``zh-CN``, ``zh-Hans-CN``, ``en-GB``), or None."""
    t = (tag or "").strip().lower().replace("_", "-")
    if not t:
        return None
    if t.startswith("zh"):
        # Simplified Chinese is what we have; Traditional readers (zh-Hant, zh-TW, zh-HK) read it
        # more easily than English, and can switch.
        return "zh-Hans"
    if t == "en" or t.startswith("en-"):
        return "en"
    return None


def negotiate(accept_language: str | None) -> str:
    """The language of an Accept-Language header: the first of our catalogues by weight."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        lang = choose(tag)
        if lang is not None and q > 0:
            ranked.append((-q, i, lang))
    return sorted(ranked)[0][2] if ranked else DEFAULT


def missing(lang: str) -> list[str]:
    """Keys of the English catalogue that ``lang``'s lacks (empty for a complete catalogue)."""
    return sorted(set(catalogue(DEFAULT)) - set(catalogue(lang)))
