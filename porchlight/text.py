"""Showing text from a server on a terminal: shown, never obeyed.

A terminal acts on control characters (ESC sequences move the cursor, erase lines and the
screen; CR returns to the line's start) and bidi controls reorder what it draws, so a server's
text printed raw (a request's fields, an error message) could forge a line or overwrite one the
CLI wrote. The server refuses such characters in the text people enter; this guards against text
stored before that rule and against a server that lies. The age commands import this module
through the CLI's error line, so it imports nothing but `unicodedata`.
"""

from __future__ import annotations

import unicodedata


def shown(value: object) -> str:
    """`value` as text with every non-printable character written as an escape (`\\x1b`).

    Letters, marks and symbols of every script print as they are, and so do spaces (a no-break
    space is not printable to Python, but moves no cursor). The result is printable, so showing
    it again changes nothing."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(
        c
        if c.isprintable() or unicodedata.category(c) == "Zs"
        else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
