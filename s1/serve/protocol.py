"""Request bodies of the OpenAI API -> checked `GenRequest`s, and the response bodies.

Pure Python (no torch, no web framework). Every problem is an `APIError` with an OpenAI-style body
    {"error": {"message": ..., "type": ..., "param": <the field>, "code": ...}}
so a client sees which field to fix. Fields:

  both endpoints   model, stream, stream_options.include_usage, n, max_tokens (chat also
                   max_completion_tokens), temperature (default 1.0, OpenAI's; 0 is greedy), top_p,
                   top_k (-1 or 0: off), seed, stop (a string or a list of strings)
  budget forcing   max_thinking_tokens (integer or "auto"), min_thinking_tokens, num_wait, extension,
                   end_thinking, max_answer_tokens (s1/infer/sampling.py: s1's semantics);
                   answer_prefix (the forced end = "\n" + the thinking end + answer_prefix); chat
                   only: thinking_start, chat_template_kwargs.enable_thinking (false: plain
                   generation, Qwen3's switch). The end-of-thinking strings are the server's
                   (s1 serve --thinking-*: they live in the engine's device tables)
  extras           ignore_eos, return_token_ids (choices carry their output token ids); logprobs
                   (chat: bool + top_logprobs; completions: an integer), at most MAX_LOGPROBS
  aliases          thinking_token_budget (vLLM), thinking_budget (SGLang), thinking_budget_tokens
                   (llama.cpp) = max_thinking_tokens (THINKING_BUDGET_ALIASES; conflicting values: 400)
  chat             messages: [system] user, rendered in the s1 format (`Tokenizer.render_prompt`);
                   longer conversations (user/assistant turns, ending with a user turn) with the
                   tokenizer's chat template, then the thinking start
  completions      prompt: a string, a list of token ids, or a list of either (one choice group per
                   prompt); passed raw, so budget forcing is on iff one of its fields is given

`stop` strings are matched on the answer text host-side (s1/serve/text.py); one that is a single
token of the tokenizer also stops the engine on the device. Choice i of a request with `seed` S
samples with seed hash(S, i), as `s1 generate --seed S` gives line i. Fields that this server
cannot honour (echo, suffix, tools, penalties, logit_bias, a non-text response_format)
are refused when set. A field that is not in `KNOWN_FIELDS` (OpenAI's documented request fields,
ours, and a few of vLLM's that we honour) is a 400 naming it and the closest known field: a typo
such as "max_thinking_token" must not silently turn budget forcing off.

Limits (400 beyond them): token counts (max_tokens, max_completion_tokens, max_thinking_tokens,
min_thinking_tokens, max_answer_tokens), num_wait and top_k <= MAX_COUNT (2**31 - 1); seed in
[0, 2**63 - 1]; temperature finite in [0, 100] (below 1e-5: greedy); top_p finite in (0, 1];
n <= 128; prompts per request <= 128; stop <= 16 strings of <= 1024 characters; extension /
end_thinking <= 4096 characters (and <= 32 tokens, checked by the engine).
"""
from __future__ import annotations

import difflib
import math
import re
import time
import uuid
import dataclasses
from dataclasses import dataclass, field

from s1.infer.options import request_seed
from s1.infer.sampling import (AUTO, DEFAULT_END_THINKING, MAX_COUNT, MAX_LOGPROBS, MAX_SEED, MAX_TEMPERATURE,
                               SamplingParams)
from s1.model.tokenizer import THINK_START

MAX_N = 128                # choices per request (n), and prompts per completions request
MAX_STOP = 16              # stop strings
MAX_STOP_CHARS = 1024      # characters per stop string (the stream holds back len(longest) - 1)
MAX_FORCED_CHARS = 4096    # characters of `extension` / `end_thinking` (the engine then allows 32 tokens)
ROLES = ("system", "developer", "user", "assistant")
# The thinking cap under the names other servers give it; each is max_thinking_tokens (same values:
# a non-negative integer or "auto"). Several given with different values -> 400 naming the second.
THINKING_BUDGET_ALIASES = ("thinking_token_budget",     # vLLM
                           "thinking_budget",           # SGLang
                           "thinking_budget_tokens")    # llama.cpp


class APIError(Exception):
    """An HTTP error with OpenAI's error body."""

    TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
             405: "invalid_request_error", 413: "invalid_request_error", 500: "server_error",
             503: "server_error"}

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or self.TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(param: str | None, message: str, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


@dataclass
class GenRequest:
    """One checked request: len(prompts) * n choices; choice i runs prompts[i // n] with params[i]."""
    kind: str                               # "chat" | "completion"
    model: str
    prompts: list                           # str (rendered chat prompt / raw text) or list[int]
    params: list[SamplingParams]            # one per choice
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    stop_strings: tuple[str, ...] = ()      # all of `stop`, matched host-side on the answer
    return_token_ids: bool = False
    thinking: bool | None = None            # chat: True (the prompt ends in the thinking start)
    logprobs: int | None = None             # None: off; k: each output token's logprob + top k alternatives
    created: int = field(default_factory=lambda: int(time.time()))
    id: str = ""


# ----------------------------------------------------------------------------- field checks
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _get(body: dict, name: str, default=None):
    v = body.get(name)
    return default if v is None else v


def _int_field(body, name, default=None, minimum=0, maximum=MAX_COUNT):
    if body.get(name) is None:
        return default
    v = body[name]
    if not _is_int(v):
        raise bad(name, f"'{name}' must be an integer, got {type(v).__name__} {v!r}", "invalid_type")
    if v < minimum:
        raise bad(name, f"'{name}' must be >= {minimum}, got {v}", "invalid_value")
    if maximum is not None and v > maximum:
        raise bad(name, f"'{name}' must be <= {maximum}, got {v}", "invalid_value")
    return v


def _num_field(body, name, default):
    v = _get(body, name, default)
    if not _is_num(v):
        raise bad(name, f"'{name}' must be a number, got {type(v).__name__} {v!r}", "invalid_type")
    if not math.isfinite(v):
        raise bad(name, f"'{name}' must be a finite number, got {v!r}", "invalid_value")
    return float(v)


def _bool_field(body, name, default=False):
    v = _get(body, name, default)
    if not isinstance(v, bool):
        raise bad(name, f"'{name}' must be a boolean, got {type(v).__name__} {v!r}", "invalid_type")
    return v


def _str_field(body, name, default, allow_empty=True):
    v = _get(body, name, default)
    if v is None and default is None:
        return None
    if not isinstance(v, str):
        raise bad(name, f"'{name}' must be a string, got {type(v).__name__} {v!r}", "invalid_type")
    if not allow_empty and not v:
        raise bad(name, f"'{name}' must not be empty", "invalid_value")
    return v


UNSUPPORTED = {   # field -> the values that mean "off" (anything else is refused)
    "echo": (None, False), "suffix": (None, ""),
    "logit_bias": (None, {}), "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
    "repetition_penalty": (None, 1, 1.0), "tools": (None, []), "functions": (None, []),
    "tool_choice": (None, "none"), "function_call": (None, "none"), "prompt_logprobs": (None, 0),
    "reasoning_effort": (None,), "audio": (None,), "prediction": (None,), "web_search_options": (None,),
}


def _refuse_unsupported(body: dict) -> None:
    for name, off in UNSUPPORTED.items():
        if name in body and body[name] not in off:
            raise bad(name, f"'{name}' is not supported by this server", "unsupported_parameter")
    rf = body.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
        raise bad("response_format", "'response_format' other than {\"type\": \"text\"} is not supported",
                  "unsupported_parameter")
    bo = body.get("best_of")
    if bo is not None and bo != body.get("n", 1):
        raise bad("best_of", "'best_of' is not supported (use n)", "unsupported_parameter")


# Request fields by endpoint: OpenAI's documented ones (those we cannot honour are refused when set,
# UNSUPPORTED; harmless ones such as `user` or `metadata` are accepted and ignored), ours (budget
# forcing and extras), and vLLM's names we honour (top_k, ignore_eos, best_of == n). Anything else is
# a 400 naming the field and the closest known one.
_COMMON_FIELDS = frozenset({
    "model", "stream", "stream_options", "n", "max_tokens", "temperature", "top_p", "seed", "stop", "user",
    "logprobs", "logit_bias", "presence_penalty", "frequency_penalty", "response_format", "best_of",
    "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier",
    # ours and vLLM's
    "top_k", "ignore_eos", "return_token_ids", "repetition_penalty", "prompt_logprobs",
    "max_thinking_tokens", "min_thinking_tokens", "num_wait", "extension", "end_thinking", "max_answer_tokens",
    *THINKING_BUDGET_ALIASES,
    "answer_prefix",
})
KNOWN_FIELDS = {
    "chat": _COMMON_FIELDS | {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
                              "functions", "function_call", "parallel_tool_calls", "modalities",
                              "reasoning_effort", "audio", "prediction", "web_search_options",
                              "thinking_start", "chat_template_kwargs"},
    "completion": _COMMON_FIELDS | {"prompt", "echo", "suffix"},
}


def refuse_unknown(body: dict, kind: str) -> None:
    known = KNOWN_FIELDS[kind]
    for name in body:
        if name not in known:
            shown = name if isinstance(name, str) and len(name) <= 64 else f"{str(name)[:64]}..."
            close = difflib.get_close_matches(str(name)[:64], sorted(known), n=1, cutoff=0.0)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise bad(shown, f"unrecognized request argument '{shown}'{hint}", "unknown_parameter")


def check_model(body: dict, served: str) -> str:
    m = body.get("model")
    if m is None:
        return served
    if not isinstance(m, str):
        raise bad("model", f"'model' must be a string, got {type(m).__name__}", "invalid_type")
    if m != served:
        raise bad("model", f"The model '{m}' does not exist; this server serves '{served}' (GET /v1/models)",
                  "model_not_found")
    return m


def _stop(body: dict) -> tuple[str, ...]:
    s = body.get("stop")
    if s is None:
        return ()
    if isinstance(s, str):
        s = [s]
    if not isinstance(s, list) or not all(isinstance(x, str) for x in s):
        raise bad("stop", "'stop' must be a string or a list of strings", "invalid_type")
    if len(s) > MAX_STOP:
        raise bad("stop", f"'stop' has {len(s)} entries; at most {MAX_STOP}", "invalid_value")
    if any(not x for x in s):
        raise bad("stop", "'stop' entries must not be empty", "invalid_value")
    if any(len(x) > MAX_STOP_CHARS for x in s):
        raise bad("stop", f"'stop' entries must be at most {MAX_STOP_CHARS} characters", "invalid_value")
    return tuple(dict.fromkeys(s))


def _one_budget(name: str, v):
    if isinstance(v, str) and v.strip().lower() == AUTO:
        return AUTO
    if not _is_int(v):
        raise bad(name, f"'{name}' must be a non-negative integer or \"auto\", got {type(v).__name__} {v!r}",
                  "invalid_type")
    if v < 0:
        raise bad(name, f"'{name}' must be >= 0, got {v}", "invalid_value")
    if v > MAX_COUNT:
        raise bad(name, f"'{name}' must be <= {MAX_COUNT}, got {v}", "invalid_value")
    return v


# ----------------------------------------------------------------------------- other servers' names


def _thinking_budget(body: dict):
    given = [(n, _one_budget(n, body[n])) for n in ("max_thinking_tokens", *THINKING_BUDGET_ALIASES)
             if body.get(n) is not None]
    if not given:
        return None
    for name, v in given[1:]:
        if v != given[0][1]:
            raise bad(name, f"conflicting thinking budgets: '{given[0][0]}' is {given[0][1]!r} but '{name}' is "
                            f"{v!r} (they are the same setting; send one)", "conflicting_parameters")
    return given[0][1]


def _logprobs(body: dict, kind: str) -> int | None:
    """None (off) or the number of alternatives per token. Chat: logprobs (bool) + top_logprobs;
    completions: logprobs (an integer, OpenAI's legacy field; false/absent: off)."""
    if kind == "chat":
        on = _bool_field(body, "logprobs")
        top = _int_field(body, "top_logprobs", None, minimum=0, maximum=MAX_LOGPROBS)
        if top and not on:
            raise bad("top_logprobs", "'top_logprobs' needs \"logprobs\": true", "invalid_value")
        return (top or 0) if on else None
    v = body.get("logprobs")
    if v is None or v is False:        # (0 is on: the sampled token's logprob, no alternatives)
        return None
    return _int_field(body, "logprobs", None, minimum=0, maximum=MAX_LOGPROBS)


_FIELD = re.compile(r"SamplingParams\.(\w+)=")


def _params(body: dict, stop_tokens: tuple[str, ...], n_choices: int, *, max_tokens_names,
            logprobs: int | None = None, tokenizer=None) -> list[SamplingParams]:
    """One SamplingParams per choice; seeds hash(seed, choice index) when `seed` is given."""
    max_tokens = None
    for name in max_tokens_names:
        v = _int_field(body, name, None, minimum=1)
        if v is not None:
            max_tokens = v
    top_k = body.get("top_k")
    if _is_int(top_k) and top_k == -1:   # vLLM's "off"
        top_k = 0
    kw = dict(
        temperature=_num_field(body, "temperature", 1.0),
        top_p=_num_field(body, "top_p", 1.0),
        top_k=_int_field({"top_k": top_k}, "top_k", 0, minimum=0),
        max_thinking_tokens=_thinking_budget(body),
        min_thinking_tokens=_int_field(body, "min_thinking_tokens", 0),
        num_wait=_int_field(body, "num_wait", 0),
        extension=_str_field(body, "extension", "Wait"),
        end_thinking=_forced_end(body, tokenizer),
        max_answer_tokens=_int_field(body, "max_answer_tokens", None),
        max_tokens=max_tokens,
        ignore_eos=_bool_field(body, "ignore_eos"),
        stop=stop_tokens,
        logprobs=logprobs,
    )
    if not 0 <= kw["temperature"] <= MAX_TEMPERATURE:
        raise bad("temperature", f"'temperature' must lie in [0, {MAX_TEMPERATURE:g}], got {kw['temperature']}",
                  "invalid_value")
    if not 0 < kw["top_p"] <= 1:
        raise bad("top_p", f"'top_p' must lie in (0, 1], got {kw['top_p']}", "invalid_value")
    for name in ("extension", "end_thinking"):
        if len(kw[name] or "") > MAX_FORCED_CHARS:
            raise bad(name, f"'{name}' must be at most {MAX_FORCED_CHARS} characters", "invalid_value")
    seed = _int_field(body, "seed", None, minimum=0, maximum=MAX_SEED)
    try:
        if seed is None:
            return [SamplingParams(**kw)] * n_choices
        return [SamplingParams(**kw, seed=request_seed(seed, i)) for i in range(n_choices)]
    except ValueError as e:
        m = _FIELD.search(str(e))
        raise bad(m.group(1) if m else None, _FIELD.sub(lambda x: f"'{x.group(1)}'=", str(e)),
                  "invalid_value") from None


def _forced_end(body: dict, tokenizer) -> str | None:
    """end_thinking, else the thinking format's end + `answer_prefix` when that is given, else None
    (the engine takes the format's forced end: s1/model/thinking.py)."""
    end = _str_field(body, "end_thinking", None, allow_empty=False)
    prefix = _str_field(body, "answer_prefix", None)
    if prefix is not None:
        if end is not None:
            raise bad("answer_prefix", "give 'end_thinking' (the whole forced end) or 'answer_prefix', not both",
                      "invalid_value")
        fmt = getattr(tokenizer, "thinking_format", None)
        end = "\n" + (fmt.end if fmt is not None else DEFAULT_END_THINKING.split("\n")[1]) + prefix
    return end


def thinking_options(body: dict) -> tuple[bool, str | None]:
    """(thinking on?, thinking start) of a chat request: `chat_template_kwargs.enable_thinking`
    false (vLLM's and Qwen3's switch) asks for plain generation; `thinking_start` replaces the
    format's start."""
    kw = body.get("chat_template_kwargs")
    if kw is not None and not isinstance(kw, dict):
        raise bad("chat_template_kwargs", "'chat_template_kwargs' must be an object", "invalid_type")
    on = (kw or {}).get("enable_thinking", True)
    if not isinstance(on, bool):
        raise bad("chat_template_kwargs.enable_thinking", "'enable_thinking' must be true or false", "invalid_type")
    unknown = sorted(set(kw or {}) - {"enable_thinking"})
    if unknown:
        raise bad("chat_template_kwargs", f"unsupported chat_template_kwargs: {', '.join(unknown)} "
                                          "(only enable_thinking)", "invalid_value")
    start = _str_field(body, "thinking_start", None, allow_empty=False)
    if start is not None and len(start) > MAX_FORCED_CHARS:
        raise bad("thinking_start", f"'thinking_start' must be at most {MAX_FORCED_CHARS} characters", "invalid_value")
    return on, start


def engine_stop_tokens(stops: tuple[str, ...], tokenizer) -> tuple[str, ...]:
    """The stop strings that are exactly one token (by name, and that token's text is the string):
    the engine stops on them on the device, at once."""
    out = []
    for s in stops:
        try:
            i = tokenizer.token_id(s)
        except KeyError:
            continue
        if tokenizer.decode([i]) == s:
            out.append(s)
    return tuple(out)


def _common(body: dict, served: str, tokenizer, n_prompts: int, max_tokens_names, kind: str) -> dict:
    if not isinstance(body, dict):
        raise bad(None, "the request body must be a JSON object", "invalid_type")
    model = check_model(body, served)
    _refuse_unsupported(body)
    n = _int_field(body, "n", 1, minimum=1, maximum=MAX_N)
    stream = _bool_field(body, "stream")
    so = body.get("stream_options")
    include_usage = False
    if so is not None:
        if not isinstance(so, dict):
            raise bad("stream_options", "'stream_options' must be an object", "invalid_type")
        if not stream:
            raise bad("stream_options", "'stream_options' is only allowed with stream: true", "invalid_value")
        include_usage = _bool_field(so, "include_usage")
    stops = _stop(body)
    logprobs = _logprobs(body, kind)
    params = _params(body, engine_stop_tokens(stops, tokenizer), n_prompts * n, max_tokens_names=max_tokens_names,
                     logprobs=logprobs, tokenizer=tokenizer)
    return dict(model=model, n=n, stream=stream, include_usage=include_usage, stop_strings=stops, params=params,
                return_token_ids=_bool_field(body, "return_token_ids"), logprobs=logprobs)


# ----------------------------------------------------------------------------- chat
def _content(msg: dict, i: int) -> str:
    c = msg.get("content")
    where = f"messages[{i}].content"
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        parts = []
        for j, p in enumerate(c):
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise bad(f"{where}[{j}]", f"'{where}[{j}]': only text parts ({{\"type\": \"text\", \"text\": ...}}) "
                                           "are supported", "invalid_value")
            parts.append(p["text"])
        return "".join(parts)
    raise bad(where, f"'{where}' must be a string or a list of text parts, got {type(c).__name__}", "invalid_type")


def render_chat(messages, tokenizer, thinking: bool = True, start: str | None = None) -> str:
    """The prompt text of a conversation: [system] user -> the s1 format (render_prompt); more turns
    -> the tokenizer's chat template + the thinking start (the thinking format's, or `start`).
    thinking=False: the template with enable_thinking=False, no thinking start."""
    if messages is None:
        raise bad("messages", "'messages' is required", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "'messages' must be a non-empty list of {role, content} objects", "invalid_value")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise bad(f"messages[{i}]", f"'messages[{i}]' must be an object with role and content", "invalid_type")
        role = m.get("role")
        if role not in ROLES:
            raise bad(f"messages[{i}].role", f"'messages[{i}].role' must be one of {', '.join(ROLES)}, got {role!r}",
                      "invalid_value")
        turns.append(("system" if role == "developer" else role, _content(m, i)))
    if turns[-1][0] != "user":
        raise bad("messages", "the last message must be a user message (the model answers it)", "invalid_value")
    if not turns[-1][1].strip():
        raise bad(f"messages[{len(turns) - 1}].content", "the user message is empty", "invalid_value")
    if len(turns) == 1 or (len(turns) == 2 and turns[0][0] == "system"):
        system = turns[0][1] if len(turns) == 2 else None
        if thinking and start is None:
            return tokenizer.render_prompt(turns[-1][1], system)
        return tokenizer.render_prompt(turns[-1][1], system, thinking=thinking, start=start)
    for i, (role, _) in enumerate(turns):
        if role == "system" and i > 0:
            raise bad(f"messages[{i}].role", "a system message may only come first", "invalid_value")
    if not getattr(tokenizer, "chat_template", None):
        raise bad("messages", "this model's tokenizer has no chat template, so only a [system] + user message "
                              "can be rendered (the s1 format); send one question per request", "invalid_value")
    try:
        text = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in turns],
                                             add_generation_prompt=True, **({} if thinking else {"enable_thinking": False}))
    except Exception as e:   # the template's own raise_exception, or a template error
        raise bad("messages", f"the model's chat template cannot render these messages: {e}",
                  "invalid_value") from None
    if not thinking:
        return text
    fmt = getattr(tokenizer, "thinking_format", None)
    start = start or (fmt.start if fmt is not None else THINK_START)
    return text if text.endswith(start) else text + start


def parse_chat(body, served: str, tokenizer) -> GenRequest:
    if not isinstance(body, dict):
        raise bad(None, "the request body must be a JSON object", "invalid_type")
    refuse_unknown(body, "chat")
    c = _common(body, served, tokenizer, 1, ("max_tokens", "max_completion_tokens"), "chat")
    on, start = thinking_options(body)
    prompt = render_chat(body.get("messages"), tokenizer, on, start)
    if not on:   # plain generation: the raw prompt, no thinking phase
        c["params"] = [dataclasses.replace(p, thinking=False) for p in c["params"]]
    return GenRequest(kind="chat", prompts=[prompt], thinking=on, id=f"chatcmpl-{uuid.uuid4().hex}", **c)


# ----------------------------------------------------------------------------- completions
def _prompts(p) -> list:
    if p is None:
        raise bad("prompt", "'prompt' is required", "missing_required_parameter")
    if isinstance(p, str):
        return [p]
    if isinstance(p, list) and p:
        if all(_is_int(x) for x in p):
            return [list(p)]
        if all(isinstance(x, str) for x in p):
            return list(p)
        if all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in p):
            return [list(x) for x in p]
    raise bad("prompt", "'prompt' must be a string, a list of token ids, or a non-empty list of either",
              "invalid_type")


def parse_completion(body, served: str, tokenizer) -> GenRequest:
    if not isinstance(body, dict):
        raise bad(None, "the request body must be a JSON object", "invalid_type")
    refuse_unknown(body, "completion")
    prompts = _prompts(body.get("prompt"))
    if len(prompts) > MAX_N:
        raise bad("prompt", f"'prompt' has {len(prompts)} prompts; at most {MAX_N} per request", "invalid_value")
    c = _common(body, served, tokenizer, len(prompts), ("max_tokens",), "completion")
    return GenRequest(kind="completion", prompts=prompts, id=f"cmpl-{uuid.uuid4().hex}", **c)


# ----------------------------------------------------------------------------- responses
def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens}}


def model_list(served: str, created: int, max_model_len: int) -> dict:
    return {"object": "list", "data": [{"id": served, "object": "model", "created": created, "owned_by": "s1",
                                        "max_model_len": max_model_len}]}


def chunk(req: GenRequest, choices: list[dict], usage_: dict | None = None) -> dict:
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    d = {"id": req.id, "object": obj, "created": req.created, "model": req.model, "choices": choices}
    if usage_ is not None:
        d["usage"] = usage_
    return d


def response(req: GenRequest, choices: list[dict], usage_: dict) -> dict:
    obj = "chat.completion" if req.kind == "chat" else "text_completion"
    return {"id": req.id, "object": obj, "created": req.created, "model": req.model, "choices": choices,
            "usage": usage_}


# ----------------------------------------------------------------------------- logprobs in responses
def _token_text(tokenizer, i: int) -> str:
    return tokenizer.decode([i])


def _entry(tokenizer, i: int, lp: float) -> dict:
    t = _token_text(tokenizer, i)
    return {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}


def chat_logprobs(tokenizer, ids: list[int], lps: list) -> dict:
    """OpenAI's chat shape: {"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]} for the
    tokens `ids` with their (logprob, top ids, top logprobs) entries (LLMEngine: GenerationOutput.logprobs)."""
    content = []
    for i, (lp, top_ids, top_lps) in zip(ids, lps):
        e = _entry(tokenizer, i, lp)
        e["top_logprobs"] = [_entry(tokenizer, j, v) for j, v in zip(top_ids, top_lps)]
        content.append(e)
    return {"content": content, "refusal": None}


def completion_logprobs(tokenizer, ids: list[int], lps: list, offset: int = 0) -> dict:
    """OpenAI's legacy completions shape: tokens, token_logprobs, top_logprobs (one {token: logprob}
    per position) and text_offset (each token's start in the text, from `offset`)."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for i, (lp, top_ids, top_lps) in zip(ids, lps):
        t = _token_text(tokenizer, i)
        out["tokens"].append(t)
        out["token_logprobs"].append(lp)
        out["top_logprobs"].append({_token_text(tokenizer, j): v for j, v in zip(top_ids, top_lps)})
        out["text_offset"].append(offset)
        offset += len(t)
    return out


# ----------------------------------------------------------------------------- /tokenize, /detokenize
def parse_tokenize(body, served: str, tokenizer) -> tuple[list[int], bool]:
    """vLLM's /tokenize request: {"model"?, "prompt": str} (the text as is) or {"model"?, "messages": [...]}
    (rendered as /v1/chat/completions renders it); "add_special_tokens" (Qwen2.5 adds none) and
    "return_token_strs" (default false). Returns (token ids, return_token_strs)."""
    if not isinstance(body, dict):
        raise bad(None, "the request body must be a JSON object", "invalid_type")
    known = {"model", "prompt", "messages", "add_special_tokens", "return_token_strs", "add_generation_prompt"}
    for name in body:
        if name not in known:
            close = difflib.get_close_matches(str(name)[:64], sorted(known), n=1, cutoff=0.0)
            raise bad(str(name)[:64], f"unrecognized request argument '{str(name)[:64]}'"
                                      + (f"; did you mean '{close[0]}'?" if close else ""), "unknown_parameter")
    check_model(body, served)
    _bool_field(body, "add_special_tokens", True)
    _bool_field(body, "add_generation_prompt", True)
    strs = _bool_field(body, "return_token_strs", False)
    if ("prompt" in body) == ("messages" in body):
        raise bad("prompt", "send exactly one of 'prompt' (a string) and 'messages'", "invalid_value")
    if "prompt" in body:
        text = _str_field(body, "prompt", "")
    else:
        text = render_chat(body.get("messages"), tokenizer)
    return tokenizer.encode(text), strs


def tokenize_response(tokenizer, ids: list[int], strs: bool, max_model_len: int) -> dict:
    return {"count": len(ids), "max_model_len": max_model_len, "tokens": ids,
            "token_strs": [_token_text(tokenizer, i) for i in ids] if strs else None}


def parse_detokenize(body, served: str, vocab_size: int) -> list[int]:
    """vLLM's /detokenize request: {"model"?, "tokens": [ids]} -> the ids (checked)."""
    if not isinstance(body, dict):
        raise bad(None, "the request body must be a JSON object", "invalid_type")
    for name in body:
        if name not in ("model", "tokens"):
            raise bad(str(name)[:64], f"unrecognized request argument '{str(name)[:64]}'; did you mean 'tokens'?",
                      "unknown_parameter")
    check_model(body, served)
    ids = body.get("tokens")
    if ids is None:
        raise bad("tokens", "'tokens' is required", "missing_required_parameter")
    if not isinstance(ids, list) or not all(_is_int(i) for i in ids):
        raise bad("tokens", "'tokens' must be a list of token ids", "invalid_type")
    badids = [i for i in ids if not 0 <= i < vocab_size]
    if badids:
        raise bad("tokens", f"'tokens' holds ids outside the vocabulary [0, {vocab_size}): {badids[:5]}",
                  "invalid_value")
    return ids
