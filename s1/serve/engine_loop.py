"""The engine on one dedicated thread, bridged to the server's asyncio loop.

LLMEngine is not thread-safe, so exactly one thread touches it. The asyncio side posts commands to
a thread-safe inbox (`submit`: add requests; `abort`); the engine thread drains the inbox between
steps (requests join and leave the running batch there: continuous batching across clients), runs
`engine.step()`, and hands each step's RequestOutputs back to the loop in one
`loop.call_soon_threadsafe`, which puts each on its request's asyncio queue. When the engine has
nothing to do the thread sleeps on the inbox's condition variable (no polling).

Everything the asyncio side keeps (the stream registry, the count of requests still waiting for
their first token) is touched only on the loop's thread, so it needs no lock.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import traceback

log = logging.getLogger("s1.serve")


class EngineFailure(RuntimeError):
    """The engine thread died; every open request gets this instead of its next output."""


class Stream:
    """One engine request as the server sees it; `queue` may be shared by a request's choices."""
    __slots__ = ("rid", "index", "queue", "started", "finished")

    def __init__(self, rid: str, index: int, queue: asyncio.Queue):
        self.rid, self.index, self.queue = rid, index, queue
        self.started = False     # produced a token (or finished): no longer waiting
        self.finished = False


class EngineLoop:
    def __init__(self, engine, name: str = "s1-engine"):
        self.engine = engine
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._cv = threading.Condition()
        self._inbox: list = []
        self._stop = False
        self._paused = False
        self._thread: threading.Thread | None = None
        self._active: set = set()               # engine thread: request ids added and not finished
        self._ids = itertools.count()
        self.error: BaseException | None = None
        # loop thread only
        self.streams: dict[str, Stream] = {}
        self.num_waiting = 0                     # submitted requests without a first token yet
        self.counters = collections.Counter()

    # ------------------------------------------------------------------ lifetime
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Abort whatever is still running, then end the thread (idempotent)."""
        with self._cv:
            self._stop = True
            self._paused = False
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)

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

    def _post(self, cmd) -> None:
        with self._cv:
            self._inbox.append(cmd)
            self._cv.notify()

    # ------------------------------------------------------------------ asyncio side
    async def submit(self, preps: list, auto_prompt_len: int | None = None,
                     queue: asyncio.Queue | None = None) -> list[Stream]:
        """Add prepared requests (s1.infer.engine.Prepared) as one group; returns their Streams once the
        engine thread has taken them. ValueError (nothing added) if the engine refuses one."""
        if self.error is not None or self._stop:
            raise EngineFailure(f"the engine is not running ({self.error!r})" if self.error else "the engine stopped")
        q = queue if queue is not None else asyncio.Queue()
        streams = [Stream(f"r{next(self._ids)}", i, q) for i in range(len(preps))]
        for s in streams:
            self.streams[s.rid] = s
        self.num_waiting += len(streams)
        fut = self.loop.create_future()
        self._post(("add", [(s.rid, p) for s, p in zip(streams, preps)], auto_prompt_len, fut))
        try:
            await fut
        except BaseException:
            for s in streams:
                self.abort(s)              # cancelled while queued: undo (an abort after the add)
            raise
        self.counters["requests"] += len(streams)
        return streams

    def abort(self, stream: Stream, forget: bool = True) -> None:
        """Abort a request (its pages and slot are freed at the engine's next command drain).
        forget=True: its outputs are dropped from now on (the client is gone); False: the final
        "abort" output still reaches its queue."""
        if stream.finished:
            return
        if forget:
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
        for ro in outs:
            s = self.streams.get(ro.request_id)
            if s is None:
                continue
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
                    return
                if not paused and eng.has_unfinished():
                    self._step()
        except BaseException as e:      # a bug or a device error: fail every request, stay down
            self.error = e
            log.error("engine thread failed:\n%s", traceback.format_exc())
            self._call(self._fail_all, e)

    def _step(self) -> None:
        outs = self.engine.step()
        for ro in outs:
            if ro.finished:
                self._active.discard(ro.request_id)
        if outs:
            self._call(self._deliver, outs)

    def _handle(self, cmd) -> None:
        eng = self.engine
        if cmd[0] == "add":
            _, items, auto_len, fut = cmd
            added, error = [], None
            try:
                for rid, prep in items:
                    eng.add_prepared(prep, request_id=rid, auto_prompt_len=auto_len)
                    added.append(rid)
            except ValueError as e:
                error = e
                for rid in added:       # all or nothing
                    eng.abort(rid)
                added = []
            self._active.update(added)
            self._call(self._ack, fut, error)
        elif cmd[0] == "abort":
            eng.abort(cmd[1])
