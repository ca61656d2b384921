"""whylearn-sample's prompts (issue 14, finding 10): literal text, FILE:path, unknown characters named, --num-samples."""

from __future__ import annotations

import pytest

# a training text with a backslash, quotes and an accented letter in its vocabulary
TEXT = ("To be, or not to be: that is the question.\\n is a backslash and an n, \"quoted\", 'single'.\n"
        "Le café est chaud; the cafe is hot. ") * 40


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A tiny character-level GPT trained for a few steps by whylearn-train (its run directory)."""
    from omegaconf import open_dict

    from conftest import compose
    from whylearn.experiment import run

    tmp = tmp_path_factory.mktemp("lm")
    (tmp / "input.txt").write_text(TEXT, encoding="utf-8")
    cfg = compose([
        "experiment=shakespeare_char_cpu", f"data.path={tmp / 'input.txt'}", f"data.cache_dir={tmp / 'cache'}",
        "data.block_size=16", "data.batch_size=4", "data.steps_per_epoch=4", "data.steps_per_chunk=4",
        "model.n_layer=1", "model.n_embd=16", "model.n_head=2", "trainer.max_steps=4", "scheduler.warmup_steps=1",
        "task.sample_tokens=0",
        "logger=csv", "callbacks=none",
    ], tmp)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp / "run")
    assert run(cfg)["status"] == "completed"
    return tmp / "run"


def _sample(capsys, args: list[str]) -> str:
    from whylearn.cli.sample import main

    main(args)
    return capsys.readouterr().out


def _refused(capsys, args: list[str]) -> str:
    from whylearn.cli.sample import main

    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_a_backslash_in_the_prompt_stays_a_backslash(lm_run, capsys):
    prompt = "the\\n is"  # the two characters backslash and n, as a shell passes '\n' inside quotes
    out = _sample(capsys, [str(lm_run), "--prompt", prompt, "--max-new-tokens", "5"])
    assert out.startswith(prompt) and out[len(prompt) + 5] == "\n"  # the prompt as given, then 5 new characters


def test_non_ascii_prompts_are_the_characters_they_are(lm_run, capsys):
    out = _sample(capsys, [str(lm_run), "--prompt", "Le café", "--max-new-tokens", "3"])
    assert out.startswith("Le café")
    err = _refused(capsys, [str(lm_run), "--prompt", "naïve → café", "--max-new-tokens", "3"])
    assert "'ï' (U+00EF) at position 2" in err and "'→' (U+2192) at position 6" in err
    assert "vocabulary of" in err and "Ã" not in err


def test_prompt_from_a_file(lm_run, tmp_path, capsys):
    prompt = "To be, or not to be:\nthat is the \"question\".\n"
    f = tmp_path / "prompt.txt"
    f.write_text(prompt, encoding="utf-8")
    out = _sample(capsys, [str(lm_run), "--prompt", f"FILE:{f}", "--max-new-tokens", "4"])
    assert out.startswith(prompt) and len(out) == len(prompt) + 4 + 1
    err = _refused(capsys, [str(lm_run), "--prompt", f"FILE:{tmp_path / 'missing.txt'}"])
    assert str(tmp_path / "missing.txt") in err and "no such file" in err


def test_num_samples_are_independent_and_seeded(lm_run, capsys):
    args = [str(lm_run), "--prompt", "To be", "--max-new-tokens", "30", "--temperature", "1.5", "--top-k", "0",
            "--num-samples", "3", "--seed", "7"]
    out = _sample(capsys, args)
    assert out.endswith("\n")
    samples = out[:-1].split("\n\n---------------\n")  # each sample ends with a newline, then the separator
    assert len(samples) == 3 and all(s.startswith("To be") and len(s) == 35 for s in samples)
    assert len(set(samples)) == 3  # three different continuations of a near-random model
    assert _sample(capsys, args) == out  # the same seed gives the same samples
    assert "must be at least 1" in _refused(capsys, [str(lm_run), "--num-samples", "0"])
