"""Moving answers with their text when a paragraph's text is edited.

    >>> reanchor("The bridge opened in 1932.", "The old bridge opened in 1932.", [(21, 25)])
    [(25, 29)]
"""

from __future__ import annotations

import difflib
from typing import Sequence


class LostAnswer(Exception):
    """Answers whose text is not in the new paragraph text: `lost` holds (index, text) of each."""

    def __init__(self, lost: list[tuple[int, str]]) -> None:
        super().__init__(", ".join(repr(text) for _, text in lost))
        self.lost = lost


def reanchor(old: str, new: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each [start, end) span of `old` as a span of `new` holding the same text: shifted when the
    edit left it untouched, otherwise the occurrence of its text nearest to where it was.
    Raises LostAnswer naming every span whose text `new` no longer holds."""
    blocks = _opcodes(old, new)
    moved, lost = [], []
    for index, (start, end) in enumerate(spans):
        text = old[start:end]
        shifted = _shift_if_untouched(blocks, start, end)
        if shifted is not None:
            moved.append(shifted)
            continue
        # only where the edit put the answer's characters: a typo in the answer must not send it
        # to another occurrence of its text elsewhere in the paragraph
        low, high = _new_range(blocks, start, end)
        found = _nearest_occurrence(new[low:high], text, _mapped_position(blocks, start) - low)
        found = None if found is None else found + low
        if found is None:
            lost.append((index, text))
            continue
        moved.append((found, found + len(text)))
    if lost:
        raise LostAnswer(lost)
    return moved


def _opcodes(old: str, new: str) -> list[tuple[str, int, int, int, int]]:
    """difflib's opcodes from `old` to `new`. Most edits are local: the common start and end are
    one unchanged block each, and only the middle is diffed (difflib is quadratic in its length)."""
    shortest = min(len(old), len(new))
    prefix = next((i for i in range(shortest) if old[i] != new[i]), shortest)
    suffix = next((i for i in range(shortest - prefix) if old[-1 - i] != new[-1 - i]), shortest - prefix)
    old_end, new_end = len(old) - suffix, len(new) - suffix
    middle = difflib.SequenceMatcher(None, old[prefix:old_end], new[prefix:new_end], autojunk=False).get_opcodes()
    blocks = [("equal", 0, prefix, 0, prefix)] if prefix else []
    blocks += [(tag, i1 + prefix, i2 + prefix, j1 + prefix, j2 + prefix) for tag, i1, i2, j1, j2 in middle]
    if suffix:
        blocks.append(("equal", old_end, len(old), new_end, len(new)))
    return blocks


def _shift_if_untouched(blocks, start: int, end: int) -> tuple[int, int] | None:
    for tag, old_start, old_end, new_start, _ in blocks:
        if tag == "equal" and old_start <= start and end <= old_end:
            return start - old_start + new_start, end - old_start + new_start
    return None


def _new_range(blocks, start: int, end: int) -> tuple[int, int]:
    """The part of the new text that the old [start, end) became: the mapped overlap of each
    unchanged block, and the whole new side of each changed block it touches."""
    low, high = None, None
    for tag, old_start, old_end, new_start, new_end in blocks:
        touches = old_start < end and start < old_end or (old_start == old_end and start <= old_start <= end)
        if not touches:
            continue
        if tag == "equal":
            lo, hi = new_start + max(start, old_start) - old_start, new_start + min(end, old_end) - old_start
        else:
            lo, hi = new_start, new_end
        low, high = lo if low is None else min(low, lo), hi if high is None else max(high, hi)
    return (0, 0) if low is None else (low, high)


def _mapped_position(blocks, position: int) -> int:
    """Where `position` of the old text lies in the new one (the start of its changed block)."""
    for _, old_start, old_end, new_start, new_end in blocks:
        if old_start <= position < old_end or (position == old_end == old_start):
            return new_start + min(position - old_start, new_end - new_start)
    return blocks[-1][4] if blocks else 0


def _nearest_occurrence(text: str, needle: str, near: int) -> int | None:
    best, position = None, text.find(needle)
    while position != -1:
        if best is None or abs(position - near) < abs(best - near):
            best = position
        position = text.find(needle, position + 1)
    return best
