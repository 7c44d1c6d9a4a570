"""The ASGI app (FastAPI): OpenAI's /v1/models, /v1/completions and /v1/chat/completions, plus
/health, /metrics (Prometheus text, s1/serve/metrics.py), /tokenize and /detokenize (vLLM's
shapes), over one engine running on its own thread (s1/serve/engine_loop.py).

    app = build_app(engine, ServerSettings(served_model_name="s1"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

A request: auth (with an API key) -> refused with 503 while draining -> body read with a size limit
(413) -> JSON (400) -> fields checked (s1/serve/protocol.py, 400 naming the field; an unknown field
is a 400 naming the closest known one) -> each choice's prompt tokenized and checked against the
context (400) -> 503 + Retry-After when the requests still waiting for their first token would
exceed `max_queue` -> the choices join the engine together. Parsing and tokenization (a body may
carry 128 prompts in 4 MiB) run on a worker thread, never on the event loop, so open streams do not
stall behind them.

Errors: 400 (a bad field, named in `param`), 401 (API key), 404, 413 (body too large), 499 (logged
only: the client went away), 503 + Retry-After (draining, queue full, engine failed). A request
that fails inside the engine alone (e.g. its step failed) ends with finish_reason "error" (our
extension of OpenAI's set, documented in README's serving section), the others go on. 500 means a
bug in the server.
Streaming answers are server-sent events (`data: {chunk}` ... `data: [DONE]`); a client that goes
away (stream or not) has its engine requests aborted at once, which frees their KV pages.

Shutdown (`ServerState.drain`): new requests get 503, open ones finish; after `shutdown_timeout`
seconds whatever is still open is aborted (streams end with finish_reason "length": the output is
incomplete; then [DONE]). finish_reason is always one of OpenAI's: "stop" or "length".
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from s1.infer.engine import Prepared
from s1.serve import protocol as P
from s1.serve.engine_loop import EngineFailure, EngineLoop
from s1.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from s1.serve.metrics import Metrics, engine_gauges
from s1.serve.text import ChoiceText

log = logging.getLogger("s1.serve")


@dataclass
class ServerSettings:
    served_model_name: str = "s1"
    api_key: str | None = None
    max_queue: int = 1024              # requests waiting for their first token before 503
    max_body_bytes: int = 4 << 20      # larger request bodies get 413
    shutdown_timeout: float = 30.0     # SIGTERM: seconds open requests may take before they are aborted
    retry_after_s: int = 1             # the Retry-After of a 503
    profile_dir: str | None = None     # --profile DIR: /start_profile and /stop_profile write traces there
    profile_steps: tuple[int, int] | None = None   # --profile-steps A:B: trace engine steps A..B by itself
    timeline: str | None = None        # --timeline FILE: one JSON line per engine step


class ServerState:
    """What the handlers share: the engine loop, the settings, the draining flag."""

    def __init__(self, engine, settings: ServerSettings):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.settings = settings
        self.metrics = Metrics(settings.served_model_name)
        self.loop = EngineLoop(engine, metrics=self.metrics)
        self.draining = False
        self.open_requests = 0             # HTTP requests generating right now
        self.created = int(time.time())
        # ids that end an answer (and so are dropped from a completion's text when last)
        self.answer_stop_ids = tuple(engine.special.answer_stop_ids)
        # parsing + tokenization: off the event loop
        self.cpu_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="s1-tokenize")

    async def drain(self, timeout: float | None = None) -> bool:
        """Refuse new requests, wait for the open ones; after `timeout` abort them. True when
        everything finished by itself."""
        self.draining = True
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        t_end = time.monotonic() + timeout
        while self.open_requests and self.loop.alive and time.monotonic() < t_end:
            await asyncio.sleep(0.02)
        if not self.open_requests:
            return True
        if not self.loop.alive:         # the engine is gone: its requests fail at once; nothing to wait for
            return False
        n = self.loop.abort_all()
        log.warning("shutdown: %d request(s) still open after %.0fs: aborted", n, timeout)
        t_end = time.monotonic() + 10
        while self.open_requests and time.monotonic() < t_end:
            await asyncio.sleep(0.02)
        return False


# ----------------------------------------------------------------------------- helpers
def _error_response(e: P.APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _check_auth(state: ServerState, request: Request) -> None:
    key = state.settings.api_key
    if not key:
        return
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise P.APIError(401, "Incorrect or missing API key: send the header 'Authorization: Bearer <key>'",
                         code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def _unavailable(state: ServerState, message: str, code: str) -> P.APIError:
    return P.APIError(503, message, code=code, headers={"Retry-After": str(state.settings.retry_after_s)})


async def _read_body(state: ServerState, request: Request) -> bytes:
    limit = state.settings.max_body_bytes
    cl = request.headers.get("content-length")
    too_big = P.APIError(413, f"request body larger than the limit of {limit} bytes (--max-body-bytes)",
                         code="request_too_large")
    if cl is not None and cl.isdigit() and int(cl) > limit:
        raise too_big
    buf = bytearray()
    async for part in request.stream():
        buf += part
        if len(buf) > limit:
            raise too_big
    return bytes(buf)


def _json(raw: bytes):
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise P.bad(None, f"malformed JSON in the request body: {e}", "invalid_json") from None


_PARAM_WORDS = ("extension", "end_thinking", "stop", "max_thinking_tokens", "min_thinking_tokens", "num_wait",
                "max_tokens", "max_answer_tokens")


def _engine_refusal(e: ValueError, prompt_param: str) -> P.APIError:
    """A ValueError from the engine's checks -> 400 naming the field."""
    msg = str(e)
    if re.search(r"prompt has \d+ tokens", msg):
        return P.bad(prompt_param, f"'{prompt_param}': {msg}", "context_length_exceeded")
    if "prompt" in msg:
        return P.bad(prompt_param, f"'{prompt_param}': {msg}", "invalid_value")
    param = next((w for w in _PARAM_WORDS if w in msg), None)
    return P.bad(param, msg, "invalid_value")


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _wait_disconnect(request: Request) -> None:
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return


# ----------------------------------------------------------------------------- one generation request
class Generation:
    """The choices of one request in the engine: their Streams, texts and final outputs."""

    def __init__(self, state: ServerState, req: P.GenRequest, preps: list):
        self.state, self.req, self.preps = state, req, preps
        stop_ids = () if req.params[0].ignore_eos else state.answer_stop_ids
        tok = state.tokenizer
        stop_ids = tuple(stop_ids) + tuple(tok.token_id(s) for s in req.params[0].stop)
        self.texts = [ChoiceText(tok, req.kind, req.stop_strings, stop_ids, thinking=p.thinking) for p in preps]
        # the same matching on the engine thread, which aborts a choice right after the step whose
        # token completed a stop string (EngineLoop: no further token is generated or counted)
        self.matchers = ([ChoiceText(tok, req.kind, req.stop_strings, stop_ids, thinking=p.thinking) for p in preps]
                         if req.stop_strings else None)
        self.outputs = [None] * len(preps)
        self.pending_ids = [[] for _ in preps]
        self.pending_lps = [([], []) for _ in preps]     # (ids, logprob entries) not yet sent (streaming)
        self.streams: list = []
        self.queue: asyncio.Queue = asyncio.Queue()
        self.prompt_tokens = sum(len(preps[i * req.n].ids) for i in range(len(req.prompts)))
        self.stop_aborted: set[int] = set()
        self.streamed_chars = [0] * len(preps)          # completions: text sent so far (text_offset)
        self.closed = False

    async def start(self) -> None:
        loop = self.state.loop
        auto = max(len(p.ids) for p in self.preps)
        self.streams = await loop.submit(self.preps, auto_prompt_len=auto, queue=self.queue,
                                         matchers=self.matchers)

    def abort_open(self) -> None:
        for s in self.streams:
            self.state.loop.abort(s)

    def close(self) -> None:
        """The HTTP request is over (answered, failed or gone): abort what is still running, which
        frees its KV pages at once (idempotent)."""
        if not self.closed:
            self.closed = True
            self.abort_open()
            self.state.open_requests -= 1

    async def events(self):
        """Yields (choice index, deltas, finished) as outputs arrive, until every choice finished."""
        remaining = len(self.streams)
        by_rid = {s.rid: s for s in self.streams}
        while remaining:
            ro = await self.queue.get()
            if isinstance(ro, BaseException):
                raise ro
            s = by_rid[ro.request_id]
            i, txt = s.index, self.texts[s.index]
            if ro.finished and ro.output is not None and ro.output.finish_reason == "error":
                raise EngineFailure(ro.output.error or "the request failed in the engine")
            if not txt.stopped:                     # tokens after a stop string are not delivered
                self.pending_ids[i] += ro.new_token_ids
                if ro.new_logprobs:
                    self.pending_lps[i][0].extend(ro.new_token_ids)
                    self.pending_lps[i][1].extend(ro.new_logprobs)
            deltas = txt.feed(ro)
            if txt.stopped and not ro.finished and i not in self.stop_aborted:
                self.stop_aborted.add(i)
                self.state.loop.abort(s, forget=False)      # a stop string matched: end it now
            if ro.finished:
                self.outputs[i] = ro.output
                deltas += txt.finish(ro.output)
                remaining -= 1
            yield i, deltas, ro.finished

    def delivered_ids(self, i: int) -> list[int]:
        """Choice i's output token ids that reached the client: after a stop string matched, the
        tokens up to the one that completed it (any the engine produced later are not counted)."""
        ids, txt = self.outputs[i].output_token_ids, self.texts[i]
        return list(ids[:len(txt.ids)]) if txt.stopped else list(ids)

    def usage(self) -> dict:
        done = [i for i, o in enumerate(self.outputs) if o is not None]
        return P.usage(self.prompt_tokens, sum(len(self.delivered_ids(i)) for i in done),
                       sum(self.outputs[i].num_thinking_tokens for i in done))

    def finish_reason(self, i: int) -> str:
        """Within OpenAI's set: "stop" (end token or stop string), "length" (max_tokens, the
        context, or cut short by the server's shutdown: the output is incomplete)."""
        r = self.texts[i].finish_reason(self.outputs[i])
        return "stop" if r == "stop" else "length"

    def _logprobs(self, ids: list[int], lps: list, offset: int = 0):
        """The choice's `logprobs` object for these tokens (None when the request did not ask)."""
        if self.req.logprobs is None:
            return None
        tok = self.state.tokenizer
        if self.req.kind == "chat":
            return P.chat_logprobs(tok, ids, lps)
        return P.completion_logprobs(tok, ids, lps, offset)

    # ---------------------------------------------------------------- non-streaming
    def response(self) -> dict:
        choices = []
        for i, (txt, out) in enumerate(zip(self.texts, self.outputs)):
            final = txt.final_texts(out)
            lp = None
            if self.req.logprobs is not None:
                ids = self.delivered_ids(i)
                lp = self._logprobs(ids, (out.logprobs or [])[:len(ids)])
            if self.req.kind == "chat":
                # the thinking under both names: vLLM's current "reasoning" and the older "reasoning_content"
                c = {"index": i, "message": {"role": "assistant", "content": final["content"],
                                             "reasoning_content": final["reasoning"], "reasoning": final["reasoning"]},
                     "logprobs": lp, "finish_reason": self.finish_reason(i)}
            else:
                c = {"index": i, "text": final["text"], "logprobs": lp, "finish_reason": self.finish_reason(i)}
            if self.req.return_token_ids:
                c["token_ids"] = self.delivered_ids(i)
            choices.append(c)
        return P.response(self.req, choices, self.usage())

    # ---------------------------------------------------------------- streaming
    def _choice(self, i: int, kind: str | None, text: str, finish_reason=None) -> dict:
        lp = None
        if self.req.logprobs is not None:      # the tokens received since the last chunk of this choice
            ids, lps = self.pending_lps[i]
            lp = self._logprobs(ids, lps, self.streamed_chars[i])
            self.pending_lps[i] = ([], [])
        if self.req.kind == "chat":
            if kind is None:
                delta = {}
            elif kind == "reasoning":
                delta = {"reasoning_content": text, "reasoning": text}
            else:
                delta = {"content": text}
            c = {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish_reason}
        else:
            c = {"index": i, "text": text, "logprobs": lp, "finish_reason": finish_reason}
            self.streamed_chars[i] += len(text)
        if self.req.return_token_ids:
            c["token_ids"], self.pending_ids[i] = self.pending_ids[i], []
        return c

    async def sse(self):
        req = self.req
        try:
            if req.kind == "chat":
                for i in range(len(self.streams)):
                    c = {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None}
                    yield _sse(P.chunk(req, [c]))
            try:
                async for i, deltas, finished in self.events():
                    for kind, text in deltas:
                        yield _sse(P.chunk(req, [self._choice(i, kind, text)]))
                    if finished:
                        yield _sse(P.chunk(req, [self._choice(i, None, "", self.finish_reason(i))]))
            except EngineFailure as e:
                yield _sse(P.APIError(503, str(e), code="engine_failure").body())
                yield "data: [DONE]\n\n"
                return
            if req.include_usage:
                yield _sse(P.chunk(req, [], self.usage()))
            yield "data: [DONE]\n\n"
        finally:
            self.close()                # the client went away (or we failed): free the pages now


class _SSEResponse(StreamingResponse):
    """Server-sent events of a Generation; whatever ends the response (done, client gone before or
    during the stream) closes the Generation."""

    def __init__(self, gen: Generation):
        super().__init__(gen.sse(), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.gen = gen

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.gen.close()


def _health(state: ServerState) -> tuple[dict, int]:
    """The truth: "ok" only while the engine thread runs and takes requests."""
    loop, engine = state.loop, state.engine
    body = {"status": "ok", "num_running": engine.num_running if loop.alive else 0,
            "num_waiting": loop.num_waiting, "open_requests": state.open_requests,
            "step_failures": engine.counters["step_failures"] if loop.alive else None,
            "consecutive_step_failures": engine.consecutive_step_failures if loop.alive else None,
            "kv_pages": engine.num_pages, "kv_pages_free": engine.block_manager.num_free if loop.alive else None}
    if not loop.alive:
        body["status"] = "engine failed" if loop.error else "engine stopped"
        if loop.error is not None:
            body["error"] = repr(loop.error)
    elif state.draining:
        body["status"] = "draining"
    return body, 200 if body["status"] == "ok" else 503


# ----------------------------------------------------------------------------- the app
def build_app(engine, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app over `engine` (an s1.infer.engine.LLMEngine, used only by the engine thread that
    the app's lifespan starts and stops). `app.state.s1` is the ServerState."""
    state = ServerState(engine, settings or ServerSettings())

    st = state.settings
    profiler = None          # --profile / --timeline: the engine's phase recorder (s1/common/profiling.py)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        nonlocal profiler
        if st.profile_dir or st.timeline:
            from s1.common import profiling
            profiler = profiling.Recorder(st.profile_dir, st.profile_steps, st.timeline, label="serve",
                                          manual=True, say=log.info)
            if st.timeline or st.profile_steps:   # else installed only while a trace runs: free until then
                profiling.install(profiler)
        state.loop.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            if profiler is not None and profiler.tracing and state.loop.alive:
                try:    # a trace still running is written by the thread that started it
                    await asyncio.wait_for(state.loop.call(profiler.stop_trace), 60)
                except Exception:
                    log.exception("writing the running trace at shutdown failed")
            state.loop.stop()
            state.cpu_pool.shutdown(wait=False, cancel_futures=True)
            if profiler is not None:
                from s1.common import profiling
                if profiling.active() is profiler:
                    profiling.install(profiling.OFF)
                profiler.close()

    def _profiler(request: Request):
        _check_auth(state, request)
        if not st.profile_dir:
            raise P.APIError(404, "profiling is off: start the server with --profile DIR to enable "
                                  "/start_profile and /stop_profile", code="not_found")
        return profiler

    app = FastAPI(title="s1 serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.s1 = state

    @app.exception_handler(P.APIError)
    async def _api_error(request: Request, e: P.APIError):
        return _error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return _error_response(P.APIError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404
                                          else None, headers=getattr(e, "headers", None)))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        log.exception("internal error")
        return _error_response(P.APIError(500, f"internal error: {e!r}", code="internal_error"))

    @app.get("/health")
    async def health():
        body, status = _health(state)
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    async def metrics():
        gauges, counters = engine_gauges(engine, state.loop)
        return Response(state.metrics.render(gauges, counters), media_type=METRICS_CONTENT_TYPE)

    @app.post("/tokenize")
    async def tokenize(request: Request):
        _check_auth(state, request)
        raw = await _read_body(state, request)

        def work():
            ids, strs = P.parse_tokenize(_json(raw), state.settings.served_model_name, state.tokenizer)
            return P.tokenize_response(state.tokenizer, ids, strs, engine.max_model_len)
        return JSONResponse(await asyncio.get_running_loop().run_in_executor(state.cpu_pool, work))

    @app.post("/detokenize")
    async def detokenize(request: Request):
        _check_auth(state, request)
        raw = await _read_body(state, request)

        def work():
            ids = P.parse_detokenize(_json(raw), state.settings.served_model_name, engine.special.vocab_size)
            return {"prompt": state.tokenizer.decode(ids)}
        return JSONResponse(await asyncio.get_running_loop().run_in_executor(state.cpu_pool, work))

    @app.get("/v1/models")
    async def models(request: Request):
        _check_auth(state, request)
        return P.model_list(state.settings.served_model_name, state.created, engine.max_model_len)

    @app.post("/start_profile")
    async def start_profile(request: Request):
        rec = _profiler(request)

        def start():                     # on the engine thread, between two steps
            from s1.common import profiling
            profiling.install(rec)
            return rec.start_trace()
        started = await state.loop.call(start)
        return {"profiling": True, "started": started, "step": rec.step,
                "message": "trace started" if started else "a trace is already running"}

    @app.post("/stop_profile")
    async def stop_profile(request: Request):
        rec = _profiler(request)

        def stop():
            path = rec.stop_trace()
            if not (st.timeline or st.profile_steps):
                from s1.common import profiling
                profiling.install(profiling.OFF)
            return path
        path = await state.loop.call(stop)
        if path is None:
            raise P.APIError(409, "no trace is running: POST /start_profile first", code="not_profiling")
        return {"profiling": False, "trace": path, "step": rec.step}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _generate(state, request, "completion")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await _generate(state, request, "chat")

    return app


def _parse_and_prepare(state: ServerState, raw: bytes, kind: str):
    """JSON decoded, fields checked, prompts rendered and tokenized (on a worker thread)."""
    parse = P.parse_chat if kind == "chat" else P.parse_completion
    req = parse(_json(raw), state.settings.served_model_name, state.tokenizer)
    return req, _prepare(state, req)


def _prepare(state: ServerState, req: P.GenRequest) -> list:
    """One Prepared per choice (each prompt tokenized once)."""
    eng, param = state.engine, "messages" if req.kind == "chat" else "prompt"
    preps = []
    for j, prompt in enumerate(req.prompts):
        p0 = req.params[j * req.n]
        try:
            base = eng.prepare(prompt, p0, raw=True)
        except ValueError as e:
            err = _engine_refusal(e, param if len(req.prompts) == 1 else f"{param}[{j}]")
            raise err from None
        thinking = True if req.thinking else base.thinking
        for k in range(req.n):
            preps.append(Prepared(base.text, base.ids, req.params[j * req.n + k], thinking))
    return preps


async def _generate(state: ServerState, request: Request, kind: str):
    _check_auth(state, request)
    if state.draining:
        raise _unavailable(state, "the server is shutting down", "server_shutting_down")
    if not state.loop.alive:
        raise _unavailable(state, "the engine is not running", "engine_failure")
    state.open_requests += 1
    gen, handed_off = None, False
    try:
        raw = await _read_body(state, request)
        req, preps = await asyncio.get_running_loop().run_in_executor(state.cpu_pool, _parse_and_prepare,
                                                                      state, raw, kind)
        limit = state.settings.max_queue
        if len(preps) > limit:
            raise P.bad("n", f"{len(preps)} choices exceed the server's queue of {limit} (--max-queue)",
                        "invalid_value")
        if state.loop.num_waiting + len(preps) > limit:
            raise _unavailable(state, f"the server is busy: {state.loop.num_waiting} requests are waiting "
                                      f"(--max-queue {limit}); retry later", "queue_full")
        gen = Generation(state, req, preps)
        try:
            await gen.start()
        except ValueError as e:
            raise _engine_refusal(e, "messages" if kind == "chat" else "prompt") from None
        except EngineFailure as e:
            raise _unavailable(state, str(e), "engine_failure") from None
        if req.stream:
            handed_off = True
            return _SSEResponse(gen)
        collect = asyncio.ensure_future(_drain_events(gen))
        gone = asyncio.ensure_future(_wait_disconnect(request))
        done, _ = await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        if collect not in done:             # the client went away: abort, answer nobody
            collect.cancel()
            return Response(status_code=499)
        gone.cancel()
        try:
            collect.result()
        except EngineFailure as e:
            raise _unavailable(state, str(e), "engine_failure") from None
        return JSONResponse(gen.response())
    finally:
        if not handed_off:
            if gen is not None:
                gen.close()
            else:
                state.open_requests -= 1


async def _drain_events(gen: Generation) -> None:
    async for _ in gen.events():
        pass
