"""What a text shows: whether it has a visible character, and its code points for messages."""

from __future__ import annotations

import unicodedata

# Unicode categories of characters that show nothing alone: separators (Z*), controls, format
# characters such as the zero-width space, surrogates (Cc, Cf, Cs) and combining marks (M*).
# Unassigned code points (Cn) count as visible: a newer emoji than this Python knows is one.
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Mn", "Mc", "Me"})


def has_visible_character(text: str) -> bool:
    """Whether `text` shows anything: a question of zero-width spaces or combining marks alone
    is as blank as one of spaces.

        >>> has_visible_character("\u200b\u0301 "), has_visible_character("Who?")
        (False, True)
    """
    return any(unicodedata.category(character) not in _INVISIBLE_CATEGORIES for character in text)


def code_points(text: str, limit: int = 8) -> str:
    """The first code points of `text` by number: what a message can show of invisible text.

        >>> code_points("\u200b\u0301")
        'U+200B U+0301'
    """
    shown = " ".join(f"U+{ord(character):04X}" for character in text[:limit])
    return shown + (f" and {len(text) - limit} more" if len(text) > limit else "")
