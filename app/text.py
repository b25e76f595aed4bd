"""Free text people type for others to read: one rule for what it may contain.

The text reaches other people in web pages (escaped) and on the Pi's terminal (`porchlight
device asks`, which escapes it too), so characters that could redraw a terminal or reorder what
it shows are refused where the text comes in, with a 422 naming the field.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

# A requester's text reaches residents: in web pages (escaped) and printed on the Pi's terminal
# by `porchlight device asks`. Control characters (C0, C1: ESC sequences, CR, tab), format
# characters (bidi overrides and isolates, zero-width characters, the BOM), line and paragraph
# separators and lone surrogates could redraw that terminal or reorder what it shows: forge a
# line, overwrite the agency's name (DESIGN promise 5: requesters cannot message residents).
# Letters, marks and spaces of every script pass; a line feed only where a form has a textarea.
# The same rule holds for the other text people enter that others read: a reviewer's reason, an
# agency's name and jurisdiction (app/agencies/schemas.py), a device's name (app/devices).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _first_hidden(text: str, allow_newline: bool) -> str | None:
    for character in text:
        if character == "\n" and allow_newline:
            continue
        if unicodedata.category(character) in _HIDDEN_CATEGORIES:
            return character
    return None


def _refuse_hidden(text: str, allow_newline: bool) -> str:
    hidden = _first_hidden(text, allow_newline)
    if hidden is not None:
        raise PydanticCustomError(
            "hidden_character",
            "must not contain control or formatting characters (found U+{code})",
            {"code": f"{ord(hidden):04X}"},
        )
    return text


def _one_line(text: str) -> str:
    return _refuse_hidden(text, allow_newline=False)


def _lines(text: str) -> str:
    return _refuse_hidden(text, allow_newline=True)


OneLineText = Annotated[str, AfterValidator(_one_line)]
# Line feeds only (a browser sends a textarea's line breaks as CR LF: the form turns them into
# LF before this check).
MultiLineText = Annotated[str, AfterValidator(_lines)]
