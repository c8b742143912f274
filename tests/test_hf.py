"""Hugging Face models as teachers and students, their checkpoints, and `progdistill export`.

No network: every model is built from a config or read from a local folder.
"""

import json
import sys

import pytest
import torch

from progdistill.cli import main
from progdistill.config import RecipeError, load_recipe
from progdistill.io import CheckpointError
from progdistill.models import build_model, resolve_architecture
from progdistill.models.convert import ConversionError, bert_to_hf, gpt2_to_gpt_lm, gpt_lm_to_gpt2, hf_to_bert
from progdistill.models.outputs import logits_of
from progdistill.tasks import ParityTask
from progdistill.tasks.pcfg import PCFGARTask, PCFGMLMTask, grammar_from_spec
from progdistill.trajectory import load_checkpoint, save_checkpoint

HF_STUDENT = "students.model={type: hf, class: AutoModelForMaskedLM, config: {model_type: bert, hidden_size: 16}}"


def test_logits_of_reads_every_output_kind():
    x = torch.randn(2, 3)
    assert logits_of(x) is x
    assert logits_of((x, "past")) is x and logits_of({"logits": x}) is x

    class Output:
        logits = x

    assert logits_of(Output()) is x
    with pytest.raises(TypeError, match="cannot read logits"):
        logits_of("text")


def test_without_the_extra_type_hf_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    with pytest.raises(RecipeError, match=r'students\.model.*pip install -e "\.\[hf\]"') as info:
        load_recipe("pcfg-mlm-small", [HF_STUDENT])
    assert "\n" not in str(info.value)
    assert main(["run", "pcfg-mlm-small", HF_STUDENT, "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and '.[hf]' in err


transformers = pytest.importorskip("transformers")


def _mlm_task(**kw):
    return PCFGMLMTask(grammar_from_spec(None, {"levels": 2, "seed": 0}, None), eval_size=64, **kw)


def _ar_task():
    return PCFGARTask(grammar_from_spec(None, {"levels": 2, "seed": 0}, None), level=2, eval_size=64)


def _perturb(model, scale=0.1):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def test_hf_config_gets_the_task_io_filled_in_or_checked():
    io = _mlm_task().model_io()
    arch = resolve_architecture({"type": "hf", "class": "AutoModelForCausalLM",
                                 "config": {"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2}}, io)
    config = arch["config"]
    assert config["vocab_size"] == 8 and config["max_position_embeddings"] == 24 and config["pad_token_id"] == 5
    assert config["bos_token_id"] is None  # GPT-2's default 50256 lies outside an 8-token vocabulary
    model = build_model(arch)
    assert model.hf.config.n_positions == 24 and model(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 8)
    parity = resolve_architecture({"type": "hf", "class": "AutoModelForSequenceClassification",
                                   "config": {"model_type": "bert", "hidden_size": 16}},
                                  ParityTask(d=8, k=2, eval_size=16).model_io())["config"]
    assert (parity["vocab_size"], parity["num_labels"], parity["max_position_embeddings"]) == (2, 2, 8)
    assert parity["pad_token_id"] is None  # BERT's default 0 is the token of x = +1 here
    with pytest.raises(ValueError, match=r"vocab_size 100 \(the task needs 8\)"):
        resolve_architecture({"type": "hf", "class": "AutoModelForMaskedLM",
                              "config": {"model_type": "bert", "vocab_size": 100}}, io)
    with pytest.raises(ValueError, match=r"max_position_embeddings 10 \(the task's sequences have 24"):
        resolve_architecture({"type": "hf", "class": "AutoModelForMaskedLM",
                              "config": {"model_type": "bert", "max_position_embeddings": 10}}, io)
    with pytest.raises(ValueError, match="does not fit this task's inputs"):
        resolve_architecture({"type": "hf", "class": "AutoModelForMaskedLM", "config": {"model_type": "bert"}},
                             {"input_dim": 8, "num_classes": 2})


def test_a_student_that_does_not_fit_is_refused_before_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    bad = "students.model={type: hf, class: AutoModelForMaskedLM, config: {model_type: bert, vocab_size: 100}}"
    assert main(["run", "pcfg-mlm-small", bad, "task.eval_size=16", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "students.model: config does not fit the task: vocab_size 100 (the task needs 8)" in err
    assert err.count("\n") == 0 and not out.exists()


def test_bare_transformers_classifier_trains_on_parity(tmp_path):
    """The issue's crash: a config-built BertForSequenceClassification passed to `train`."""
    from progdistill.trainer import TrainConfig, train

    task = ParityTask(d=8, k=2, eval_size=64)
    config = transformers.BertConfig(vocab_size=2, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=8, num_labels=2, pad_token_id=None)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    record = train(model, task, TrainConfig(steps=6, batch_size=16, eval_every=3), tmp_path / "run", {}, progress=False)
    assert [p["step"] for p in record["curve"]] == [0, 3, 6]
    folder = tmp_path / "run" / "checkpoint-6"
    assert {"config.json", "model.safetensors", "meta.json"} <= {f.name for f in folder.iterdir()}
    x = task.eval_x[:16]
    reloaded = load_checkpoint(folder)(x)
    pretrained = transformers.BertForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    assert torch.allclose(pretrained(input_ids=((1 - x) / 2).long()).logits, reloaded, atol=1e-6)
    assert torch.allclose(model.eval()(input_ids=((1 - x) / 2).long()).logits, reloaded, atol=1e-6)


def test_hf_checkpoint_loads_with_from_pretrained(tmp_path):
    task = _mlm_task()
    arch = resolve_architecture({"type": "hf", "class": "AutoModelForMaskedLM", "config": {
        "model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32}}, task.model_io())
    torch.manual_seed(0)
    model = _perturb(build_model(arch))
    save_checkpoint(tmp_path / "ck", model, {"model": arch})
    batch = task.eval_batches()[0]
    hf_model, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "ck", local_files_only=True,
                                                                       output_loading_info=True)
    assert not any(info.values())  # nothing missing, unexpected or mismatched
    mask = (batch.inputs != task.pad_id).long()
    expected = model(batch.inputs)
    assert torch.allclose(hf_model.eval()(input_ids=batch.inputs, attention_mask=mask).logits, expected, atol=1e-6)
    assert torch.equal(load_checkpoint(tmp_path / "ck")(batch.inputs), expected)
    assert task.evaluate(load_checkpoint(tmp_path / "ck")) == task.evaluate(model)


@pytest.mark.parametrize("cls", ["BertForMaskedLM", "GPT2LMHeadModel", "AutoModelForMaskedLM", "AutoModel"])
def test_native_checkpoints_are_refused_loudly_by_from_pretrained(tmp_path, cls):
    arch = resolve_architecture({"type": "bert", "layers": 1, "heads": 2, "head_dim": 8}, _mlm_task().model_io())
    save_checkpoint(tmp_path / "ck", build_model(arch), {"model": arch})
    with pytest.raises(Exception, match="progdistill") as info:
        getattr(transformers, cls).from_pretrained(tmp_path / "ck", local_files_only=True)
    assert "export" in str(info.value) or cls.startswith("Auto")


# --- export ----------------------------------------------------------------------------------
def _exported_logits(folder, cls, inputs, pad_id):
    model = getattr(transformers, cls).from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        return model(input_ids=inputs, attention_mask=(inputs != pad_id).long()).logits


@pytest.mark.parametrize("kind", ["gpt-lm", "bert"])
def test_export_reproduces_the_logits(tmp_path, kind):
    task = _ar_task() if kind == "gpt-lm" else _mlm_task()
    spec = {"type": kind, "layers": 2, "heads": 2, "head_dim": 8} | ({"layout": "hf"} if kind == "bert" else {})
    arch = resolve_architecture(spec, task.model_io())
    torch.manual_seed(0)
    model = _perturb(build_model(arch))  # a non-zero output bias, as after training
    assert model.bias.abs().min() > 0
    save_checkpoint(tmp_path / "ck", model, {"model": arch})
    assert main(["export", str(tmp_path / "ck"), str(tmp_path / "hf")]) == 0
    assert {f.name for f in (tmp_path / "hf").iterdir()} == {"config.json", "model.safetensors"}
    inputs = task.eval_batches()[0].inputs  # 64 held-out sequences
    cls = "GPT2LMHeadModel" if kind == "gpt-lm" else "BertForMaskedLM"
    with torch.no_grad():
        diff = (_exported_logits(tmp_path / "hf", cls, inputs, task.pad_id) - model(inputs)).abs().max()
    assert diff < 1e-5, diff


def test_export_refuses_a_folder_of_other_files_and_overwrites_an_earlier_export(tmp_path, capsys):
    task = _mlm_task()
    arch = resolve_architecture({"type": "bert", "layers": 1, "heads": 2, "head_dim": 8, "layout": "hf"},
                                task.model_io())
    save_checkpoint(tmp_path / "ck", build_model(arch), {"model": arch})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["export", str(tmp_path / "ck"), str(mine)]) == 2
    assert capsys.readouterr().err == (f"error: {mine} holds files an export does not write (notes.txt); choose a new "
                                       "or empty folder\n")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert main(["export", str(tmp_path / "ck"), str(tmp_path / "hf")]) == 0
    assert main(["export", str(tmp_path / "ck"), str(tmp_path / "hf")]) == 0  # an earlier export: overwritten
    long = tmp_path / "x" / ("a" * 300)
    assert main(["export", str(tmp_path / "ck"), str(long)]) == 2
    assert capsys.readouterr().err.endswith(": File name too long\n") and not (tmp_path / "x").exists()


def test_key_maps_go_both_ways():
    io = _mlm_task().model_io()
    torch.manual_seed(0)
    for spec, there, back in [({"type": "gpt-lm"}, gpt_lm_to_gpt2, gpt2_to_gpt_lm),
                              ({"type": "bert", "layout": "hf"}, bert_to_hf, hf_to_bert)]:
        arch = resolve_architecture({**spec, "layers": 2, "heads": 2, "head_dim": 4}, io)
        model = _perturb(build_model(arch))
        config, state = there(model.state_dict(), arch)
        arch2, state2 = back(state, config)
        again = build_model(arch2).eval()
        again.load_state_dict(state2)
        x = _mlm_task().eval_batches()[0].inputs[:8]
        assert (again(x) - model(x)).abs().max() < 1e-5


def test_export_refuses_what_has_no_exact_equivalent(tmp_path, capsys):
    io = _mlm_task().model_io()
    for name, spec, reason in [
        ("bert", {"type": "bert", "layers": 1, "heads": 2, "head_dim": 8}, "the default BERT layout"),
        ("mlp", {"type": "mlp", "width": 4}, "an MLP has no transformers equivalent"),
    ]:
        arch = resolve_architecture(spec, {**io, "input_dim": 3} if name == "mlp" else io)
        save_checkpoint(tmp_path / name, build_model(arch), {"model": arch})
        assert main(["export", str(tmp_path / name), str(tmp_path / f"{name}-hf")]) == 2
        err = capsys.readouterr().err.strip()
        assert reason in err and err.count("\n") == 0 and not (tmp_path / f"{name}-hf").exists()
    # an output bias that GPT-2's final LayerNorm cannot absorb: vocabulary 8 > hidden 4
    arch = resolve_architecture({"type": "gpt-lm", "layers": 1, "heads": 1, "head_dim": 4}, io)
    model = _perturb(build_model(arch))
    with pytest.raises(ConversionError, match="cannot be folded"):
        gpt_lm_to_gpt2(model.state_dict(), arch)
    save_checkpoint(tmp_path / "narrow", model, {"model": arch})
    with pytest.raises(CheckpointError, match="cannot export: the output bias"):
        from progdistill.export import export
        export(tmp_path / "narrow", tmp_path / "narrow-hf")


def test_default_bert_layout_is_unchanged():
    """`layout: hf` adds modules only to its own models: the default layout draws the same weights."""
    io = _mlm_task().model_io()
    torch.manual_seed(0)
    default = build_model(resolve_architecture({"type": "bert", "layers": 1, "heads": 2, "head_dim": 8}, io))
    torch.manual_seed(0)
    explicit = build_model(resolve_architecture({"type": "bert", "layers": 1, "heads": 2, "head_dim": 8,
                                                 "layout": "default"}, io))
    torch.manual_seed(0)
    hf_layout = build_model(resolve_architecture({"type": "bert", "layers": 1, "heads": 2, "head_dim": 8,
                                                  "layout": "hf"}, io))
    assert default.state_dict().keys() == explicit.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), explicit.state_dict().values()))
    assert set(hf_layout.state_dict()) - set(default.state_dict()) == {f"head.{i}.{p}" for i in (0, 2)
                                                                      for p in ("weight", "bias")}
    x = _mlm_task().eval_batches()[0].inputs[:4]
    assert not default.backbone.embed_ln
    assert torch.equal(default(x), default.hidden_states(x) @ default.backbone.tok.weight.T + default.bias)


def test_hf_config_recipe_round_trip_keeps_the_class_key():
    recipe = load_recipe("pcfg-mlm-small", [HF_STUDENT])
    dumped = recipe.model_dump(mode="json")["students"]["model"]
    assert dumped["class"] == "AutoModelForMaskedLM" and "model_class" not in dumped
    assert json.loads(json.dumps(dumped))["config"] == {"model_type": "bert", "hidden_size": 16}


def test_hf_student_with_dropout_resumes_bit_identically(tmp_path):
    """BERT's default dropout (0.1) draws from torch's global stream: the resumable state keeps it."""
    from progdistill.trainer import OptimConfig, TrainConfig, train

    task = _mlm_task()
    arch = resolve_architecture({"type": "hf", "class": "AutoModelForMaskedLM", "config": {
        "model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32}}, task.model_io())
    assert "hidden_dropout_prob" not in arch["config"]  # the default, 0.1

    def fresh(seed):
        torch.manual_seed(seed)
        return build_model(arch)

    cfg = TrainConfig(steps=12, batch_size=8, eval_every=4, optim=OptimConfig(name="adamw", lr=3e-3))
    full_model = fresh(0)
    full = train(full_model, task, cfg, tmp_path / "full", {"model": arch}, progress=False)
    train(fresh(0), task, cfg, tmp_path / "part", {"model": arch}, progress=False, stop_at=8)
    torch.manual_seed(123)  # a new process: another random state, another init
    resumed_model = fresh(99)
    resumed = train(resumed_model, task, cfg, tmp_path / "part", {"model": arch}, progress=False)
    assert resumed["curve"] == full["curve"]
    assert all(torch.equal(a, b) for a, b in zip(full_model.parameters(), resumed_model.parameters()))


def test_hf_teacher_trained_by_progdistill(tmp_path):
    """A recipe whose teacher is a Hugging Face model: checkpoints, probes (hidden states) and a built-in student."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("""
name: hf-teacher
threads: 1
task: {name: pcfg-ar, grammar: {generate: {levels: 2, seed: 0}}, eval_size: 64, level: 2}
teacher:
  model: {type: hf, class: AutoModelForCausalLM, config: {model_type: gpt2, n_embd: 16, n_layer: 1, n_head: 2}}
  steps: 40
  batch_size: 16
  optim: {name: adamw, lr: 3.0e-3}
  eval_every: 10
  checkpoint_every: 10
phases: {sharpness: 0, noise: 0}  # a tiny teacher: no sharp drop, its steepest stretch stands in
probe:
  nonterminal: {train_sentences: 32, test_sentences: 16, steps: 10}
students:
  model: {type: gpt-lm, layers: 1, heads: 1, head_dim: 8}
  steps: 10
  batch_size: 16
  eval_every: 5
  seeds: [0]
  methods: [one-shot, auto]
""")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    ckpt = out / "teacher" / "checkpoint-40"
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "gpt2"
    assert transformers.AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True).config.n_layer == 1
    rows = json.loads((out / "probes" / "teacher_nonterminal.json").read_text())
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40] and rows[-1]["result"]["levels"]
    assert main(["export", str(ckpt), str(tmp_path / "hf")]) == 0  # already a transformers folder: copied
    assert (tmp_path / "hf" / "config.json").read_text() == (ckpt / "config.json").read_text()
