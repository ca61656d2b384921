"""``whylearn-sample``: print text sampled from a trained language model's checkpoint.

    whylearn-sample outputs/shakespeare_char_cpu/runs/<date>/ --prompt "ROMEO:" --max-new-tokens 300
    whylearn-sample path/to/last.ckpt --temperature 0.8 --top-k 200 --seed 1 --num-samples 3
    whylearn-sample path/to/run --prompt FILE:prompt.txt

The run directory (or the checkpoint's ``checkpoints/..``) holds ``config.yaml``, from which the
datamodule (for its cached tokenizer) and the model are rebuilt; the weights come from the checkpoint.

The prompt is taken literally: a backslash is a backslash and any Unicode character is itself
(a newline in the prompt comes from the shell, e.g. ``$'ROMEO:\\n'``, or from a file). As in
nanoGPT's ``sample.py``, ``--prompt FILE:path`` reads the prompt from a UTF-8 file. Characters a
character-level model has never seen are named in the error, with their code points.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def find_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(checkpoint file, run directory) from a run directory or a checkpoint path.

    Raises:
        FileNotFoundError: no checkpoint or no config.yaml where expected.
    """
    p = Path(path)
    if p.is_dir():
        ckpt = p / "checkpoints" / "last.ckpt"
        run = p
    else:
        ckpt = p
        run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt} (give a run directory holding checkpoints/last.ckpt, or a .ckpt file)")
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"no config.yaml in the run directory {run}; it is written by whylearn-train")
    return ckpt, run


def load_model(path: str | Path, device: str = "cpu"):
    """(model in eval mode, tokenizer) rebuilt from a whylearn-train run of a language model."""
    from omegaconf import OmegaConf

    # start-up: Lightning is imported once a run starts (not for --help, --cfg or a multirun's launching process)
    from whylearn import build
    from whylearn.runs.checkpoints import load_checkpoint

    ckpt, run = find_checkpoint(path)
    state = load_checkpoint(ckpt, map_location=device)["state_dict"]  # weights only; a clear error naming the file
    cfg = OmegaConf.load(run / "config.yaml")
    dm = build.build_datamodule(cfg)
    tokenizer = getattr(dm, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(
            f"the run in {run} has no text tokenizer (data: {cfg.data._target_}); whylearn-sample needs a language model"
        )
    model = build.build_model(cfg, dm)
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    return model.to(device).eval(), tokenizer


def sample(model, tokenizer, prompt: str = "\n", max_new_tokens: int = 500, temperature: float = 0.8,
           top_k: int | None = 200, seed: int = 0, num_samples: int = 1) -> list[str]:
    """``num_samples`` continuations of ``prompt`` (each including the prompt), seeded."""
    device = next(model.parameters()).device
    ids = tokenizer.encode(prompt) or [0]
    g = torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=g)
    return [tokenizer.decode(row.tolist()) for row in out]


def read_prompt(prompt: str) -> str:
    """The prompt as given, or the content of ``path`` for ``FILE:path`` (UTF-8), as nanoGPT's sample.py.

    Raises:
        FileNotFoundError / UnicodeDecodeError: the ``FILE:`` path is missing or not UTF-8 (named in the message).
    """
    if not prompt.startswith("FILE:"):
        return prompt
    path = Path(prompt[len("FILE:"):]).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--prompt FILE:{path}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--prompt FILE:{path} is not UTF-8 text ({e})") from None


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="whylearn-sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a whylearn-train run directory or a .ckpt file inside it")
    parser.add_argument("--prompt", default="\n",
                        help="text to continue, taken literally (default: a newline); FILE:path reads it from a file")
    parser.add_argument("--max-new-tokens", type=int, default=500)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=200, help="keep the k most likely tokens; 0 = all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=_positive, default=1, help="independent samples, one after another")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        prompt = read_prompt(args.prompt)
    except (OSError, ValueError) as e:
        parser.error(str(e))
    model, tokenizer = load_model(args.checkpoint, args.device)
    try:
        tokenizer.encode(prompt)
    except KeyError as e:  # UnknownCharacterError: the characters, their code points and positions
        parser.error(f"the prompt cannot be encoded: {e}")
    texts = sample(model, tokenizer, prompt, args.max_new_tokens,
                   args.temperature, args.top_k or None, args.seed, args.num_samples)
    for i, text in enumerate(texts):
        if i:
            sys.stdout.write("\n---------------\n")
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
