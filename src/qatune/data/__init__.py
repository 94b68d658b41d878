"""Reading question-answering data: detect the layout, validate, repair, count.

Plain Python: this package never imports torch.

Offsets are Python `str` indices (code points, not bytes or UTF-16 units) into the
original, unmodified context; a gold answer is the half-open span
`context[start:start + len(text)]`, and it is right when that span equals its text.

Three layouts are read (detected automatically, or forced with `format=`):

- `squad`: `{"version"?, "data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}`
- `paragraphs`: `[{"context", "qas": [{"question", "answers": [...], "id"?}]}]`
- `records`: one question per record, as JSON Lines or a JSON list:
  `{"id", "question", "context", "title"?, "answers": {"text": [...], "answer_start": [...]}}`

What happens to an answer whose text is not at its `answer_start` depends on `on_error`:
`repair` (the default) strips surrounding whitespace (when the stripped text is at the start,
at the start plus the text's leading whitespace, or in between) or moves the answer to the
nearest place where its text occurs, and counts it; `strict` makes it an error; `skip` repairs
what it can and drops (and counts) what cannot be used: a bad answer, and a question whose
question, context or id is bad or whose every answer was dropped (an answerable question never
becomes an unanswerable one). Problems above the questions (an article or paragraph that is not an
object, a missing "qas" list, a title that is not a string) are errors under every policy,
since what they would drop cannot be counted.

A question with no answers, or with `"is_impossible": true`, is unanswerable;
`plausible_answers` are never taken as answers. A missing id is generated from the question
and context (a short sha1, with "-2", "-3", ... for repeats: the same in every run, and
written into the file by `write_fixed`); integer ids become strings.

Where things live: `reading` (file -> JSON -> layout; `read_dataset`, `load_examples`),
`layouts` (walking each layout, one question at a time), `checking` (checks of single
fields, answer repair, generated ids), `messages` (describing values in messages),
`report` (`Problem`, `ValidationReport`), `examples` (`Example`, `GoldAnswer`),
`edits` (what `write_fixed` changes in a parsed file) and `writing` (`write_fixed`,
`write_squad_v2`); everything public is importable from `qatune.data`.

    >>> examples, report = read_dataset("tests/data/data_squad_v2.json")
    >>> report.questions, report.unanswerable, report.ok
    (6, 2, True)
    >>> examples[0].answers
    (GoldAnswer(text='Denver Broncos', start=177),)
"""

from qatune.data.examples import Example, GoldAnswer, PathLike
from qatune.data.reading import FORMATS, POLICIES, load_examples, read_dataset
from qatune.data.report import Problem, ValidationReport
from qatune.data.writing import write_fixed, write_squad_v2

__all__ = [
    "FORMATS",
    "POLICIES",
    "Example",
    "GoldAnswer",
    "PathLike",
    "Problem",
    "ValidationReport",
    "load_examples",
    "read_dataset",
    "write_fixed",
    "write_squad_v2",
]
