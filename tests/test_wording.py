"""qatune.wording: counts and articles in the sentences qatune prints."""

from __future__ import annotations

import pytest

from qatune.wording import counted, with_article


@pytest.mark.parametrize("n, expected", [(0, "0 epochs"), (1, "1 epoch"), (2, "2 epochs")])
def test_a_count_has_the_plural_unless_it_is_one(n, expected):
    assert counted(n, "epoch") == expected


@pytest.mark.parametrize("word, expected", [("onnx", "an onnx"), ("openvino", "an openvino"), ("torch", "a torch")])
def test_the_article_follows_the_sound_of_the_engine_name(word, expected):
    assert with_article(word) == expected
