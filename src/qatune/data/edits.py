"""The changes `--write-fixed` makes to a parsed data file: a value set, a list item removed.

The reader records them while it walks the parsed JSON (a repaired answer's text and start,
a generated id, what `--on-error skip` drops); `apply` makes them in place, so every other
field, known to qatune or not, and the layout of the file stay as they were read.

    >>> qas = [{"question": "Which?"}, {"question": " "}]
    >>> edits = _Edits()
    >>> edits.set((qas[0], "id"), "a1b2")
    >>> edits.remove((qas, 1))
    >>> edits.apply()
    >>> qas
    [{'question': 'Which?', 'id': 'a1b2'}]
"""

from __future__ import annotations

from typing import Any

_Slot = tuple[Any, Any]  # (a parsed dict or list, a key or an index in it)


class _Edits:
    def __init__(self) -> None:
        self.values: list[tuple[_Slot, Any]] = []
        self.removals: list[_Slot] = []

    def set(self, slot: _Slot, value: Any) -> None:
        self.values.append((slot, value))

    def remove(self, *slots: _Slot) -> None:
        """Remove the list items at these (list, index) slots (indexes as read)."""
        self.removals.extend(slots)

    def apply(self) -> None:
        for (holder, key), value in self.values:
            holder[key] = value
        indexes: dict[int, tuple[list[Any], set[int]]] = {}  # id(list) -> (list, indexes)
        for holder, index in self.removals:
            indexes.setdefault(id(holder), (holder, set()))[1].add(index)
        for holder, doomed in indexes.values():
            for index in sorted(doomed, reverse=True):  # from the end: the indexes read stay valid
                del holder[index]
