"""The JSON the server takes and gives, and validation errors in words."""

from __future__ import annotations

from typing import Annotated, Any, Union

from qatune.errors import SettingsError
from qatune.inference import check_text
from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictInt, StrictStr, Tag, field_validator

# The most answers one question may ask for: decoding keeps the n_best (20 by default) best
# starts and ends per window, so more would be mostly empty.
MAX_TOP_K = 20


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: StrictStr = Field(description="the question")
    context: StrictStr = Field(description="the text that holds the answer")
    top_k: StrictInt = Field(1, ge=1, le=MAX_TOP_K, description="how many answers, best first")

    @field_validator("question", "context")
    @classmethod
    def _usable_text(cls, value: str, info) -> str:
        if not value.strip():
            raise ValueError("must not be empty or only whitespace")
        try:  # JSON may escape a lone surrogate (\ud800), which has no UTF-8 form
            check_text(info.field_name, value)
        except SettingsError as error:
            raise ValueError(str(error)) from None
        return value


class Questions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Question] = Field(min_length=1, description="questions answered together, results in this order")


def _shape(body: Any) -> str:
    return "many" if isinstance(body, dict) and "items" in body else "one"


AnswerRequest = Annotated[
    Union[Annotated[Question, Tag("one")], Annotated[Questions, Tag("many")]], Discriminator(_shape)
]


class AnswerSpan(BaseModel):
    text: str = Field(description="context[start:end]")
    start: int = Field(description="first character, a Python (code point) index into the context")
    end: int = Field(description="one past the last character (half-open)")
    score: float = Field(description="probability of this span among the model's candidates")


class Answered(BaseModel):
    answers: list[AnswerSpan] = Field(description="best first; empty means no answer")
    no_answer_probability: float
    question_cut: bool = Field(
        description="the question was longer than the model's max_question_length tokens (GET /v1/model: "
        "settings) and was answered from its first max_question_length tokens"
    )


class AnsweredMany(BaseModel):
    results: list[Answered]
