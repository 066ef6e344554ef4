"""Terminal consoles that print text as text.

Command lines, comm, paths and symbol names come from users, processes and the kernel:
`[/b]` or `:smile:` in one of them is text, never rich markup or an emoji code (rich
reads both by default, and a stray `[/x]` raises). Styles go through `style=` and
`Text` instead.
"""

from __future__ import annotations

from rich.console import Console


def text_console(**kw) -> Console:
    return Console(markup=False, emoji=False, **kw)
