"""The README's Trainer-folder example (section "Your own model and data") runs as written."""

import re
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

README = Path(__file__).resolve().parent.parent / "README.md"
HEADING = "### A Trainer checkpoint folder as the teacher trajectory of a Hugging Face student"


def example_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index(HEADING):]
    section = section[:re.search(r"\n##+ ", section[len(HEADING):]).start() + len(HEADING)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_trainer_folder_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    blocks = example_blocks()
    assert len(blocks) == 1
    exec(compile(blocks[0], str(README), "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "teacher phases: {'drop_start'" in out
    assert all(f"{m:>12}: final accuracy" in out for m in ("ce", "one-shot", "progressive", "two-shot", "adaptive", "auto"))
    assert (tmp_path / "runs/hf-example/trainer/checkpoint-200/model.safetensors").is_file()
    assert (tmp_path / "runs/hf-example/distill/students/auto/budget-60/seed-0/checkpoint-60/config.json").is_file()
