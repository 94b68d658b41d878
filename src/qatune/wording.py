"""Small helpers for the sentences qatune prints: counts with their nouns, articles before names."""

from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """`n` and its noun, plural unless `n` is 1.

        >>> counted(1, "epoch"), counted(3, "epoch"), counted(0, "question")
        ('1 epoch', '3 epochs', '0 questions')
    """
    return f"{n} {noun}{'' if n == 1 else 's'}"


def with_article(word: str) -> str:
    """`word` after "a" or "an", as it is said ("an onnx", "an openvino", "a torch").

        >>> with_article("onnx"), with_article("openvino"), with_article("torch")
        ('an onnx', 'an openvino', 'a torch')
    """
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
