"""`s1 generate` (s1/infer/cli.py) as a user runs it: stdout is JSONL only, a bad --out fails
before the model loads, records are written as requests finish (Ctrl-C keeps them), per-request
seeds, errors that name flags, the chat template and --system-prompt, complete --help; and its
records equal LLM.generate's and naive greedy decoding (--raw included)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from s1.infer import LLM, SamplingParams
from s1.model.loading import load_model
from s1.model.tokenizer import Tokenizer
from tests.conftest import ROOT, require_shared_data
from tests.helpers import QUESTION, naive_greedy, think_end_ids

QUESTIONS = ["What is 2+2?", "Name a prime number.", "What is the capital of France?"]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1")
    env.pop("TRITON_INTERPRET", None)   # not needed: the CLI runs the PyTorch path on CPU
    env.update(extra)
    return env


def s1(*args, timeout=300, **env):
    """`s1 ...` in a subprocess (python -m s1: the console script's code without the install)."""
    return subprocess.run([sys.executable, "-m", "s1", *map(str, args)], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random-weight Qwen2-shaped checkpoint (hidden 32, the real Qwen2.5 tokenizer and its chat
    template), written by our own saver."""
    from tests._tiny import make_tiny_checkpoint
    d = tmp_path_factory.mktemp("tiny_ckpt")
    make_tiny_checkpoint(d, require_shared_data() / "qwen2.5-tokenizer")
    return d


def prompts_file(path, questions):
    path.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    return path


def gen(tiny, out, *args):
    from s1.infer.cli import generate_main
    return generate_main(["--model", str(tiny), "--no-progress", "--out", str(out), *map(str, args)])


# ----------------------------------------------------------------------------- stdout, --out
def test_stdout_is_jsonl_only(tiny, tmp_path):
    q = prompts_file(tmp_path / "q.jsonl", QUESTIONS)
    r = s1("generate", "--model", tiny, "--prompts", q, "--max-thinking-tokens", 6, "--max-answer-tokens", 3)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    recs = [json.loads(line) for line in lines]           # every stdout line is a JSON object
    assert sorted(x["index"] for x in recs) == [0, 1, 2]
    assert {x["prompt"] for x in recs} == set(QUESTIONS)
    assert "s1 generate:" in r.stderr and "output tokens" in r.stderr   # the summary is on stderr


def test_bad_out_fails_fast_before_the_model_loads(tiny, tmp_path, monkeypatch, capsys):
    t0 = time.perf_counter()
    r = s1("generate", "--model", tiny, "--prompt", "hi", "--out", tmp_path / "no" / "such" / "o.jsonl")
    dt = time.perf_counter() - t0
    assert r.returncode == 2 and dt < 10, (dt, r.stderr)
    assert "--out" in r.stderr and "does not exist" in r.stderr and "Traceback" not in r.stderr
    from s1.infer import llm as llm_module     # (`import s1.infer.llm` would hide this file's s1())

    def no_load(*a, **k):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(llm_module, "LLM", no_load)
    assert gen(tiny, tmp_path, "--prompt", "hi") == 2                       # a folder
    assert "--out" in capsys.readouterr().err
    assert gen(tiny, tmp_path / "x" / "o.jsonl", "--prompt", "hi") == 2
    assert gen(tiny, tmp_path / "o.jsonl", "--prompts", tmp_path / "missing.jsonl") == 2
    assert "--prompts" in capsys.readouterr().err


def test_out_file_is_in_prompt_order_with_index_and_id(tiny, tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps({"prompt": p, "id": f"q{i}"}) + "\n" for i, p in enumerate(QUESTIONS)))
    out = tmp_path / "o.jsonl"
    out.write_text("stale\n")                                              # a new run replaces it
    assert gen(tiny, out, "--prompts", q, "--max-tokens", 5, "--max-num-seqs", 1) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["index"] for r in recs] == [0, 1, 2] and [r["id"] for r in recs] == ["q0", "q1", "q2"]
    assert [r["prompt"] for r in recs] == QUESTIONS


def test_sigint_keeps_the_finished_records(tiny, tmp_path):
    """Ctrl-C in the middle of a run: the records of the requests that finished are on disk."""
    q = prompts_file(tmp_path / "q.jsonl", [f"Question {i}: add {i} and {i}." for i in range(40)])
    out = tmp_path / "o.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "s1", "generate", "--model", str(tiny), "--prompts", str(q),
                             "--max-tokens", "200", "--max-num-seqs", "1", "--no-progress", "--out", str(out)],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (out.exists() and len(out.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no record after 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    recs = [json.loads(x) for x in out.read_text().splitlines()]           # complete lines only
    assert 2 <= len(recs) < 40 and "interrupted" in err and f"{len(recs)} of 40" in err
    assert len({r["index"] for r in recs}) == len(recs)
    assert all(r["finish_reason"] in ("stop", "length") and r["output_token_ids"] for r in recs)


# ----------------------------------------------------------------------------- seeds
def test_seed_gives_each_request_its_own_stream_and_reruns_repeat(tiny, tmp_path):
    from s1.infer.options import request_seed
    assert len({request_seed(1, i) for i in range(100)} | {request_seed(2, i) for i in range(100)}) == 200
    same = prompts_file(tmp_path / "same.jsonl", ["Pick a random word."] * 3)
    sampling = ["--temperature", 1.0, "--seed", 1, "--max-tokens", 12]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert gen(tiny, a, "--prompts", same, *sampling) == 0
    assert gen(tiny, b, "--prompts", same, *sampling, "--max-num-seqs", 1) == 0   # other batching too
    ra = [json.loads(x) for x in a.read_text().splitlines()]
    rb = [json.loads(x) for x in b.read_text().splitlines()]
    toks = [r["output_token_ids"] for r in ra]
    assert len({tuple(t) for t in toks}) == 3               # one prompt, three requests, three streams
    assert len({r["seed"] for r in ra}) == 3
    assert toks == [r["output_token_ids"] for r in rb]      # the same file twice: the same tokens
    c = tmp_path / "c.jsonl"
    assert gen(tiny, c, "--prompts", same, "--temperature", 1.0, "--seed", 2, "--max-tokens", 12) == 0
    assert [json.loads(x)["output_token_ids"] for x in c.read_text().splitlines()] != toks


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("args, msg", [
    (["--top-p", "1.5"], "--top-p 1.5: must be a finite number in (0, 1]"),
    (["--num-wait", "-1"], "--num-wait -1: must be an integer in [0, 2147483647]"),
    (["--temperature", "-1"], "--temperature -1.0: must be a finite number in [0, 100]"),
    (["--max-thinking-tokens", "4", "--min-thinking-tokens", "8"], "exceeds --max-thinking-tokens 4"),
    (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization 1.5: must lie in (0, 1]"),
    (["--max-num-seqs", "0"], "--max-num-seqs 0: must be >= 1"),
    (["--threads", "0"], "--threads 0: must be >= 1"),
    (["--device", "tpu"], "--device tpu"),
])
def test_errors_name_flags(tiny, tmp_path, capsys, args, msg):
    assert gen(tiny, tmp_path / "o.jsonl", "--prompt", "hi", *args) == 2
    err = capsys.readouterr().err
    assert msg in err and "SamplingParams" not in err, err


def test_dtype_vocabulary(tiny, tmp_path, capsys):
    from s1.infer.cli import build_parser
    p = build_parser()
    for spelling, name in [("bf16", "bfloat16"), ("torch.float16", "float16"), ("fp32", "float32"), ("auto", "auto")]:
        assert p.parse_args(["--model", "m", "--prompt", "x", "--dtype", spelling]).dtype == name
    with pytest.raises(SystemExit):
        p.parse_args(["--model", "m", "--prompt", "x", "--dtype", "int8"])
    assert "unknown dtype 'int8'" in capsys.readouterr().err
    assert gen(tiny, tmp_path / "o.jsonl", "--prompt", "hi", "--dtype", "bf16", "--max-tokens", 2) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_a_clear_error(tiny, tmp_path):
    r = s1("generate", "--model", tiny, "--prompt", "hi", "--device", "cuda", "--out", tmp_path / "o.jsonl")
    assert r.returncode == 2 and "--device cuda:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_tokenizer_names_the_flag(tiny, tmp_path, capsys):
    import shutil
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny / f, bare / f)
    from s1.infer.cli import generate_main
    assert generate_main(["--model", str(bare), "--prompt", "hi", "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "pass --tokenizer DIR" in err and "Tokenizer.from_pretrained" not in err
    assert gen(bare, tmp_path / "o.jsonl", "--prompt", "hi", "--tokenizer", tiny, "--max-tokens", 2) == 0
    assert generate_main(["--model", str(tmp_path / "nope"), "--prompt", "hi"]) == 2
    assert "--model" in capsys.readouterr().err


# ----------------------------------------------------------------------------- prompts
def test_system_prompt_and_chat_template(tiny, tmp_path):
    """--system-prompt goes through the checkpoint's chat template: the same tokens as the prompt
    rendered by hand and passed --raw with the same thinking rules."""
    from s1.model.tokenizer import Tokenizer
    tok = Tokenizer.from_pretrained(tiny)
    assert tok.chat_template                                 # the tiny checkpoint carries Qwen's template
    q, system = "What is 7*6?", "You are a careful mathematician."
    rendered = tok.render_prompt(q, system=system)
    assert rendered.startswith(f"<|im_start|>system\n{system}<|im_end|>\n")
    flags = ["--max-thinking-tokens", 5, "--max-answer-tokens", 3]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert gen(tiny, a, "--prompt", q, "--system-prompt", system, *flags) == 0
    assert gen(tiny, b, "--prompt", rendered, "--raw", *flags) == 0
    ra, rb = (json.loads(p.read_text()) for p in (a, b))
    assert ra["output_token_ids"] == rb["output_token_ids"] and ra["prompt"] == q
    assert ra["num_thinking_tokens"] == rb["num_thinking_tokens"] == 5


# ----------------------------------------------------------------------------- help
def test_help_shows_every_flag_with_help_and_default():
    from s1.infer.cli import build_parser
    p = build_parser()
    text = p.format_help()
    for a in p._actions:
        if not a.option_strings or a.dest == "help":
            continue
        assert a.help, a.option_strings
        if a.default not in (None, False):
            assert "default" in p._get_formatter()._get_help_string(a), a.option_strings
    for flag in ("--gpu-memory-utilization", "--system-prompt", "--dtype", "--threads", "--seed",
                 "--max-thinking-tokens", "--num-wait", "--extension"):
        assert flag in text
    fmt = p._get_formatter()
    shown = {a.dest: fmt._get_help_string(a) % vars(a) for a in p._actions}
    assert shown["num_wait"].endswith("(default: 0)") and shown["extension"].endswith("(default: Wait)")
    assert shown["gpu_memory_utilization"].endswith("(default: 0.9)")
    # the forced end is the thinking format's (s1's shown); --thinking-format lists its presets
    assert "'\\n<|im_start|>answer\\nFinal Answer:'" in shown["end_thinking"]
    assert shown["thinking_format"].endswith("(default: auto)")


# ----------------------------------------------------------------------------- against the API
# conftest.py's tiny checkpoint written by transformers (ckpt), its model and tokenizer (tok):
# the CLI's records equal LLM.generate's outputs and the naive greedy reference
@pytest.mark.usefixtures("torch_backend")
def test_cli_generate(ckpt, tmp_path, capsys):
    from s1.infer.cli import generate_main
    _, d = ckpt
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(json.dumps({"prompt": "Add 2 and 3."}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
    out = tmp_path / "out.jsonl"
    rc = generate_main(["--model", str(d), "--prompts", str(qfile), "--max-thinking-tokens", "6",
                        "--num-wait", "1", "--max-answer-tokens", "4", "--dtype", "float32",
                        "--page-size", "4", "--out", str(out)])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        for k in ("prompt", "thinking", "answer", "text", "output_token_ids", "num_thinking_tokens",
                  "num_waits_used", "finish_reason"):
            assert k in r
        assert r["num_thinking_tokens"] == 6
    assert rows[0]["prompt"] == "Add 2 and 3."
    # the same through the API
    tok = Tokenizer.from_pretrained(d)
    m = load_model(d, dtype=torch.float32)
    api = LLM(model=m, tokenizer=tok, page_size=4).generate(
        ["Add 2 and 3."], SamplingParams(max_thinking_tokens=6, num_wait=1, max_answer_tokens=4), use_tqdm=False)
    assert api[0].output_token_ids == rows[0]["output_token_ids"]
    # bad input: clear message, non-zero exit
    rc = generate_main(["--model", str(d), "--prompt", "x", "--num-wait", "-1", "--out", str(tmp_path / "o2.jsonl")])
    assert rc != 0
    assert "--num-wait" in capsys.readouterr().err   # the flag, not the internal field


@pytest.mark.usefixtures("torch_backend")
def test_cli_generate_raw(ckpt, model, tok, tmp_path):
    """`s1 generate --raw`: the rendered prompt is passed unchanged (== the question without
    --raw, == the naive reference), and without thinking flags it is plain generation."""
    from s1.infer.cli import generate_main
    _, d = ckpt
    rendered = tok.render_prompt(QUESTION)
    ids = tok.encode(rendered)

    def run(name, *args):
        out = tmp_path / f"{name}.jsonl"
        rc = generate_main(["--model", str(d), "--dtype", "float32", "--device", "cpu", "--page-size", "4",
                            "--max-num-seqs", "4", "--no-progress", "--out", str(out), *args])
        assert rc == 0
        (row,) = [json.loads(line) for line in out.read_text().splitlines()]
        return row

    think_flags = ["--max-thinking-tokens", "4", "--max-answer-tokens", "3"]
    question = run("question", "--prompt", QUESTION, *think_flags)
    raw = run("raw", "--prompt", rendered, "--raw", *think_flags)
    plain = run("plain", "--prompt", rendered, "--raw", "--max-tokens", "6")

    V = tok.vocab_size
    think = naive_greedy(model, ids, 4, V)
    expected = think + tok.encode(tok.thinking_format.forced_end)
    expected += naive_greedy(model, ids + expected, 3, V)
    assert question["output_token_ids"] == raw["output_token_ids"] == expected
    assert raw["prompt"] == rendered and raw["num_thinking_tokens"] == question["num_thinking_tokens"] == 4
    ref = naive_greedy(model, ids, 6, V)
    assert not think_end_ids(tok) & set(ref)
    assert plain["output_token_ids"] == ref and plain["finish_reason"] == "length"
    assert plain["num_thinking_tokens"] == 0 and plain["thinking"] == ""
    assert plain["answer"] == plain["text"] == tok.decode(ref)


@pytest.mark.usefixtures("torch_backend")
def test_cli_generate_no_think(ckpt, model, tok, tmp_path, capsys):
    """`s1 generate --no-think`: the chat template's prompt without the thinking start, generated
    with no thinking phase (== naive greedy of that prompt); budget flags and --raw are refused."""
    from s1.infer.cli import generate_main, render_chat_prompt
    _, d = ckpt
    out = tmp_path / "plain.jsonl"
    base = ["--model", str(d), "--dtype", "float32", "--device", "cpu", "--page-size", "4", "--no-progress"]
    assert generate_main(base + ["--prompt", QUESTION, "--no-think", "--max-tokens", "5", "--out", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    plain = render_chat_prompt(tok, QUESTION)
    assert plain.endswith("<|im_start|>assistant\n") and tok.render_prompt(QUESTION) == plain + "<|im_start|>think"
    assert row["output_token_ids"] == naive_greedy(model, tok.encode(plain), 5, tok.vocab_size)
    assert (row["num_thinking_tokens"], row["thinking"]) == (0, "") and row["answer"] == row["text"]
    for bad in (["--max-thinking-tokens", "4"], ["--num-wait", "1"], ["--raw"]):
        assert generate_main(base + ["--prompt", QUESTION, "--no-think", *bad, "--out", str(out)]) == 2
        assert bad[0] in capsys.readouterr().err
