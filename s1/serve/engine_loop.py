"""The engine on one dedicated thread, bridged to the server's asyncio loop.

LLMEngine is not thread-safe, so exactly one thread touches it. The asyncio side posts commands to
a thread-safe inbox (`submit`: add requests; `abort`); the engine thread drains the inbox between
steps (requests join and leave the running batch there: continuous batching across clients), runs
`engine.step()`, and hands each step's RequestOutputs back to the loop in one
`loop.call_soon_threadsafe`, which puts each on its request's asyncio queue. When the engine has
nothing to do the thread sleeps on the inbox's condition variable (no polling).

Everything the asyncio side keeps (the stream registry, the count of requests still waiting for
their first token) is touched only on the loop's thread, so it needs no lock.

Failures: a request the engine refuses (ValueError) or fails alone (an "error" output: admission,
a step that failed as a whole, see LLMEngine._fail_step) never stops the thread. The thread dies
only on an exception outside the engine's own isolation, or after MAX_CONSECUTIVE_STEP_FAILURES
failed steps in a row (a device that fails every step is not an engine to keep serving): then
every open stream and every add still in the inbox fails at once with EngineFailure (503), later
submits fail at once, and /health says "engine failed".
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
import traceback

log = logging.getLogger("s1.serve")

MAX_CONSECUTIVE_STEP_FAILURES = 3


class EngineFailure(RuntimeError):
    """The engine thread died; every open request gets this instead of its next output."""


class Stream:
    """One engine request as the server sees it; `queue` may be shared by a request's choices."""
    __slots__ = ("rid", "index", "queue", "started", "finished", "t_submit", "t_first", "t_last")

    def __init__(self, rid: str, index: int, queue: asyncio.Queue):
        self.rid, self.index, self.queue = rid, index, queue
        self.started = False     # produced a token (or finished): no longer waiting
        self.finished = False
        self.t_submit = time.monotonic()     # for the metrics (s1/serve/metrics.py)
        self.t_first = self.t_last = None


class EngineLoop:
    def __init__(self, engine, name: str = "s1-engine", metrics=None):
        self.engine = engine
        self.metrics = metrics                  # s1.serve.metrics.Metrics, fed in _deliver (or None)
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._cv = threading.Condition()
        self._inbox: list = []
        self._stop = False
        self._paused = False
        self._thread: threading.Thread | None = None
        self._active: set = set()               # engine thread: request ids added and not finished
        self._matchers: dict = {}               # engine thread: request id -> stop-string matcher
        self._ids = itertools.count()
        self.error: BaseException | None = None
        self._dead = False                      # the thread has ended (under _cv)
        # loop thread only
        self.streams: dict[str, Stream] = {}
        self.num_waiting = 0                     # submitted requests without a first token yet
        self.counters = collections.Counter()

    # ------------------------------------------------------------------ lifetime
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Abort whatever is still running, then end the thread (idempotent). True when the thread
        has ended (only then may the engine be closed: its last step may still be running)."""
        with self._cv:
            self._stop = True
            self._paused = False
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def pause(self) -> None:
        """Stop stepping (commands are still taken); for tests and maintenance."""
        with self._cv:
            self._paused = True

    def resume(self) -> None:
        with self._cv:
            self._paused = False
            self._cv.notify()

    def _post(self, cmd) -> bool:
        """Queue a command for the engine thread; False when the thread is gone (nobody would
        take it)."""
        with self._cv:
            if self.error is not None or self._dead:
                return False
            self._inbox.append(cmd)
            self._cv.notify()
            return True

    # ------------------------------------------------------------------ asyncio side
    async def submit(self, preps: list, auto_prompt_len: int | None = None,
                     queue: asyncio.Queue | None = None, matchers: list | None = None) -> list[Stream]:
        """Add prepared requests (s1.infer.engine.Prepared) as one group; returns their Streams once the
        engine thread has taken them. ValueError (nothing added) if the engine refuses one.
        matchers: per request None or an object with feed(RequestOutput) and `stopped` (a
        s1.serve.text.ChoiceText with stop strings), fed on the engine thread after each step: once
        it has stopped, the request is aborted before the next step."""
        if self.error is not None or self._stop:
            raise EngineFailure(f"the engine is not running ({self.error!r})" if self.error else "the engine stopped")
        q = queue if queue is not None else asyncio.Queue()
        streams = [Stream(f"r{next(self._ids)}", i, q) for i in range(len(preps))]
        for s in streams:
            self.streams[s.rid] = s
        self.num_waiting += len(streams)
        fut = self.loop.create_future()
        ms = matchers or [None] * len(preps)
        if not self._post(("add", [(s.rid, p, m) for s, p, m in zip(streams, preps, ms)], auto_prompt_len, fut)):
            for s in streams:
                self._forget(s)
            raise EngineFailure(f"the engine is not running ({self.error!r})" if self.error else "the engine stopped")
        try:
            await fut
        except BaseException:
            for s in streams:
                self.abort(s)              # cancelled while queued: undo (an abort after the add)
            raise
        self.counters["requests"] += len(streams)
        return streams

    async def call(self, fn):
        """Run fn() on the engine thread between two steps (the torch profiler only records the
        thread that starts it); returns its result or raises its exception."""
        fut = self.loop.create_future()
        if not self._post(("call", fn, fut)):
            raise EngineFailure(f"the engine is not running ({self.error!r})" if self.error else "the engine stopped")
        return await fut

    def _settle(self, fut: asyncio.Future, value, error) -> None:
        if fut.cancelled():
            return
        if error is None:
            fut.set_result(value)
        else:
            fut.set_exception(error)

    def abort(self, stream: Stream, forget: bool = True) -> None:
        """Abort a request (its pages and slot are freed at the engine's next command drain).
        forget=True: its outputs are dropped from now on (the client is gone); False: the final
        "abort" output still reaches its queue."""
        if stream.finished:
            return
        if forget:
            if self.metrics is not None and stream.rid in self.streams:
                self.metrics.finished["abort"] += 1      # its final output will not reach _deliver
            self._forget(stream)
        self._post(("abort", stream.rid))

    def abort_all(self) -> int:
        """Abort every open request, delivering their final "abort" outputs (shutdown)."""
        open_ = [s for s in self.streams.values() if not s.finished]
        for s in open_:
            self.abort(s, forget=False)
        return len(open_)

    def _forget(self, s: Stream) -> None:
        if self.streams.pop(s.rid, None) is not None and not s.started:
            self.num_waiting -= 1
        s.finished = True

    def _ack(self, fut: asyncio.Future, error) -> None:
        if fut.cancelled():
            return
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)

    def _deliver(self, outs) -> None:
        m, now = self.metrics, time.monotonic()
        for ro in outs:
            s = self.streams.get(ro.request_id)
            if s is None:
                continue
            if m is not None:
                m.on_tokens(s, len(ro.new_token_ids), now)
                if ro.finished and ro.output is not None:
                    m.on_finish(s, ro.output, now)
            if not s.started and (ro.new_token_ids or ro.finished):
                s.started = True
                self.num_waiting -= 1
            if ro.finished:
                s.finished = True
                del self.streams[s.rid]
                self.counters["finished"] += 1
            s.queue.put_nowait(ro)

    def _fail_all(self, err: BaseException) -> None:
        e = EngineFailure(f"the engine failed: {err!r}")
        for s in list(self.streams.values()):
            s.finished = True
            s.queue.put_nowait(e)
        self.streams.clear()
        self.num_waiting = 0

    def _call(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:       # the loop is closed: nobody is listening any more
            pass

    # ------------------------------------------------------------------ engine thread
    def _run(self) -> None:
        eng = self.engine
        try:
            while True:
                with self._cv:
                    while not self._inbox and not self._stop and (self._paused or not eng.has_unfinished()):
                        self._cv.wait()
                    cmds, self._inbox = self._inbox, []
                    stop, paused = self._stop, self._paused
                for cmd in cmds:
                    self._handle(cmd)
                if stop:
                    for rid in list(self._active):
                        eng.abort(rid)
                    while eng.has_unfinished():
                        self._step()
                    self._end(None)
                    return
                if not paused and eng.has_unfinished():
                    self._step()
        except BaseException as e:      # a bug or a device error: fail every request, stay down
            log.error("engine thread failed:\n%s", traceback.format_exc())
            self._end(e)

    def _end(self, error: BaseException | None) -> None:
        """The thread ends: refuse new commands, fail the adds still queued and (on an error)
        every open request."""
        with self._cv:
            if error is not None:
                self.error = error
            self._dead = True
            cmds, self._inbox = self._inbox, []
        gone = error or RuntimeError("the engine stopped")
        for cmd in cmds:
            if cmd[0] == "add":
                self._call(self._ack, cmd[3], EngineFailure(f"the engine is not running ({gone!r})"))
            elif cmd[0] == "call":
                self._call(self._settle, cmd[2], None, EngineFailure(f"the engine is not running ({gone!r})"))
        if error is not None:
            self._call(self._fail_all, error)

    def _step(self) -> None:
        eng = self.engine
        outs = eng.step()
        matchers = self._matchers
        for ro in outs:
            if ro.finished:
                self._active.discard(ro.request_id)
                matchers.pop(ro.request_id, None)
            elif matchers:
                m = matchers.get(ro.request_id)
                if m is not None:
                    try:
                        m.feed(ro)
                    except Exception:       # a matcher bug must not stop the engine: the loop side still matches
                        log.exception("stop-string matcher failed")
                        del matchers[ro.request_id]
                        continue
                    if m.stopped:           # a stop string matched: no further token is generated
                        del matchers[ro.request_id]
                        eng.abort(ro.request_id)
        if outs:
            self._call(self._deliver, outs)
        n = getattr(eng, "consecutive_step_failures", 0)
        if n >= MAX_CONSECUTIVE_STEP_FAILURES:
            raise EngineFailure(f"{n} engine steps failed in a row; the last: {eng.last_step_error}")
        if n:
            log.error("engine step failed (its requests got an error): %s", eng.last_step_error)

    def _handle(self, cmd) -> None:
        eng = self.engine
        if cmd[0] == "add":
            _, items, auto_len, fut = cmd
            added, error = [], None
            try:
                for rid, prep, matcher in items:
                    eng.add_prepared(prep, request_id=rid, auto_prompt_len=auto_len)
                    added.append(rid)
                    if matcher is not None:
                        self._matchers[rid] = matcher
            except Exception as e:      # ValueError: a refusal (400); else a bug, this request's alone
                if not isinstance(e, ValueError):
                    log.error("adding a request failed:\n%s", traceback.format_exc())
                error = e
                for rid in added:       # all or nothing
                    eng.abort(rid)
                    self._matchers.pop(rid, None)
                added = []
            self._active.update(added)
            self._call(self._ack, fut, error)
        elif cmd[0] == "abort":
            eng.abort(cmd[1])
            self._matchers.pop(cmd[1], None)
        elif cmd[0] == "call":
            _, fn, fut = cmd
            try:
                value, error = fn(), None
            except Exception as e:      # the caller's error, not the engine's
                value, error = None, e
            self._call(self._settle, fut, value, error)
