"""Making question-answering data: `qatune annotate`, a page and a JSON API that edit one data
file, with a model's suggestions when given one."""

from qatune.annotation.app import create_app
from qatune.annotation.store import AnnotationStore

__all__ = ["AnnotationStore", "create_app"]
