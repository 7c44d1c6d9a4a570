"""Where a run's time goes: named phase ranges, a torch.profiler trace, NVTX ranges, a step timeline.

The engine and the trainer mark their phases and their steps through the *active recorder*:

    from s1.common import profiling
    rec = profiling.active()
    rec.step_begin()
    try:
        with rec.phase("schedule"):
            ...
        rec.device_begin(device); ...device work...; rec.device_end(device)
        rec.note(kind="decode", batch=8, tokens=8)
    finally:
        rec.step_end()

Off (the default) the active recorder is `OFF`: `phase()` returns one shared do-nothing context
manager and every other method is an empty function -- no allocation, no clock read, no branch on
a flag at the call sites. Turning profiling on swaps the active recorder once (`install`, or the
`session` context manager that the command-line flags open), so a run pays only for what it asked:

- `--profile DIR`: a torch.profiler trace (Chrome/Perfetto JSON, gzipped) written to DIR, where
  every phase is a named range (a `user_annotation` event) around the PyTorch ops it ran;
  `--profile-steps A:B` traces only steps A..B (1-based, inclusive) so a long run's trace stays
  small. On CUDA every phase is also an NVTX range (Nsight Systems shows the same names); with
  `S1_NVTX=1` in the environment the NVTX ranges are emitted without the torch profiler (for
  `nsys profile`).
- `--timeline FILE`: one JSON line per step without the profiler: host milliseconds per phase,
  the device milliseconds of the step's device work (CUDA events, read back without stalling the
  GPU: resolved once they have completed), the step's kind, batch size and tokens. `s1 bench
  timeline FILE` plots it and writes a summary table.

Steps are counted per recorder (engine steps for generate/eval/serve/bench, optimizer steps for
train). The torch profiler only sees the thread that started it, so a trace is started and stopped
on the thread that runs the steps (`start_trace` / `stop_trace`: the server calls them on its
engine thread).

Pure Python at import time; torch is imported only when a recorder is turned on.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time

ENGINE_PHASES = ("schedule", "page_flush", "prepare_inputs", "prefill_forward", "decode_forward",
                 "sample_and_force", "read_back", "wait_device", "postprocess")
TRAIN_PHASES = ("data", "forward", "backward", "optimizer_step", "checkpoint")
TIMELINE_VERSION = 1

_NULL = contextlib.nullcontext()


class _Off:
    """The recorder when profiling is off: every call does nothing and allocates nothing."""
    enabled = False

    def phase(self, name: str):
        return _NULL

    def step_begin(self) -> None:
        pass

    def step_end(self) -> None:
        pass

    def note(self, **info) -> None:
        pass

    def device_begin(self, device) -> None:
        pass

    def device_end(self, device) -> None:
        pass


OFF = _Off()
_active = OFF


def active():
    """The recorder the engine and the trainer report to (OFF unless a session is open)."""
    return _active


def install(recorder) -> object:
    """Make `recorder` the active one (OFF turns profiling off); returns the previous one."""
    global _active
    prev, _active = _active, recorder
    return prev


def parse_steps(text: str | None) -> tuple[int, int] | None:
    """'A:B' -> (A, B), 1-based inclusive; ValueError naming the problem."""
    if text is None:
        return None
    a, sep, b = text.partition(":")
    try:
        lo, hi = int(a), int(b)
    except ValueError:
        raise ValueError(f"--profile-steps {text!r}: expected A:B, two step numbers (e.g. 5:20)") from None
    if not sep or lo < 1 or hi < lo:
        raise ValueError(f"--profile-steps {text!r}: expected A:B with 1 <= A <= B (steps count from 1)")
    return lo, hi


class _Range:
    __slots__ = ("rec", "name", "rf", "t0")

    def __init__(self, rec: "Recorder", name: str):
        self.rec, self.name, self.rf = rec, name, None

    def __enter__(self):
        rec = self.rec
        if rec._tracing:
            self.rf = rec._record_function(self.name)
            self.rf.__enter__()
        if rec._nvtx:
            rec._nvtx.range_push(self.name)
        self.t0 = time.perf_counter_ns()
        return self

    def __exit__(self, *exc):
        rec = self.rec
        dt = time.perf_counter_ns() - self.t0
        if rec._nvtx:
            rec._nvtx.range_pop()
        if self.rf is not None:
            self.rf.__exit__(*exc)
        ph = rec._phases
        ph[self.name] = ph.get(self.name, 0) + dt
        return False


class Recorder:
    """Profiling on: phase ranges in the trace / NVTX / the timeline, as asked.

    profile_dir: where traces go (None: no torch profiler). steps: (A, B) window or None (trace
    from `start_trace`, by default at once, until `stop_trace`/`close`). manual: the trace starts
    only on `start_trace` (the server's /start_profile). timeline: a JSONL path or None. nvtx:
    emit NVTX ranges when CUDA is available. label: names the trace files."""
    enabled = True

    def __init__(self, profile_dir: str | None = None, steps: tuple[int, int] | None = None,
                 timeline: str | None = None, nvtx: bool = True, label: str = "s1", manual: bool = False,
                 say=print):
        import torch
        self._torch = torch
        self.profile_dir, self.steps, self.label, self.say = profile_dir, steps, label, say
        self._record_function = torch.autograd.profiler.record_function
        self._nvtx = torch.cuda.nvtx if (nvtx and torch.cuda.is_available()) else None
        self._prof = None
        self._tracing = False
        self.traces: list[str] = []
        self.step = 0                # steps begun so far
        self._phases: dict[str, int] = {}
        self._info: dict = {}
        self._t_step = 0
        self._dev: tuple | None = None
        self._pending: list = []     # timeline records waiting for their CUDA events
        self._t0 = time.perf_counter_ns()
        self.timeline_path = timeline
        self._tl = None
        if timeline:
            d = os.path.dirname(os.path.abspath(timeline))
            os.makedirs(d, exist_ok=True)
            self._tl = open(timeline, "w", encoding="utf-8")
            self._tl.write(json.dumps(self._header()) + "\n")
        if profile_dir:
            os.makedirs(profile_dir, exist_ok=True)
            if steps is None and not manual:
                self.start_trace()

    def _header(self) -> dict:
        torch = self._torch
        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        from s1.common.env import environment
        try:
            env = environment()
        except Exception:                    # provenance is best effort here
            env = {}
        return {"timeline": TIMELINE_VERSION, "label": self.label, "device": dev, "provenance": env,
                "units": "ms", "engine_phases": list(ENGINE_PHASES), "train_phases": list(TRAIN_PHASES),
                "fields": {"step": "1-based step", "t_ms": "host time of the step's start since the recorder opened",
                           "wall_ms": "host wall time of the step", "phases_ms": "host ms per phase",
                           "device_ms": "ms between CUDA events recorded before and after the step's device work "
                                        "(on the stream: includes gaps where the GPU waited for launches; null on CPU)",
                           "kind": "prefill | decode (engine; absent: a step that only applied a result), train", "batch": "sequences in the step",
                           "tokens": "tokens the step's forward processed"}}

    # ---------------------------------------------------------------- trace
    def start_trace(self) -> bool:
        """Start the torch profiler on this thread (False when already tracing or no profile dir)."""
        if self._prof is not None or not self.profile_dir:
            return False
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU]
        if self._torch.cuda.is_available():
            acts.append(ProfilerActivity.CUDA)
        self._prof = profile(activities=acts, record_shapes=False, with_stack=False)
        self._prof.start()
        self._tracing = True
        self._trace_from = self.step + 1
        self._trace_thread = threading.get_ident()
        return True

    def stop_trace(self) -> str | None:
        """Stop the profiler and write its trace; returns the file (None when not tracing)."""
        if self._prof is None:
            return None
        prof, self._prof, self._tracing = self._prof, None, False
        if threading.get_ident() != self._trace_thread:   # kineto cannot stop another thread's session
            self.say("[profile] the trace started on another thread (now gone?) cannot be stopped here: dropped")
            return None
        prof.stop()
        last = self.step
        span = f"steps{self._trace_from}-{last}" if last >= self._trace_from else "nosteps"
        path = os.path.join(self.profile_dir, f"{self.label}-{os.getpid()}-{len(self.traces) + 1}-{span}.trace.json.gz")
        prof.export_chrome_trace(path)
        self.traces.append(path)
        self.say(f"[profile] trace of {span.replace('steps', 'steps ')} written to {path} "
                 f"(open in https://ui.perfetto.dev or chrome://tracing)")
        return path

    @property
    def tracing(self) -> bool:
        return self._tracing

    # ---------------------------------------------------------------- steps
    def phase(self, name: str):
        return _Range(self, name)

    def step_begin(self) -> None:
        if self.steps is not None and self.step + 1 == self.steps[0]:
            self.start_trace()
        self.step += 1
        self._phases = {}
        self._info = {}
        self._dev = None
        self._t_step = time.perf_counter_ns()
        if self._tracing:
            self._step_rf = self._record_function(f"step {self.step}")
            self._step_rf.__enter__()
        else:
            self._step_rf = None

    def note(self, **info) -> None:
        self._info.update(info)

    def device_begin(self, device) -> None:
        if self._tl is not None and getattr(device, "type", None) == "cuda":
            ev = self._torch.cuda.Event(enable_timing=True)
            ev.record()
            self._dev = (ev, None)

    def device_end(self, device) -> None:
        if self._dev is not None and self._dev[1] is None:
            ev = self._torch.cuda.Event(enable_timing=True)
            ev.record()
            self._dev = (self._dev[0], ev)

    def step_end(self) -> None:
        t1 = time.perf_counter_ns()
        if self._step_rf is not None:
            self._step_rf.__exit__(None, None, None)
            self._step_rf = None
        if self._tl is not None:
            rec = {"step": self.step, "t_ms": (self._t_step - self._t0) / 1e6, "wall_ms": (t1 - self._t_step) / 1e6,
                   "phases_ms": {k: v / 1e6 for k, v in self._phases.items()}, "device_ms": None, **self._info}
            self._pending.append((rec, self._dev if self._dev and self._dev[1] is not None else None))
            self._flush_timeline(wait=False)
        if self.steps is not None and self.step == self.steps[1]:
            self.stop_trace()

    def _flush_timeline(self, wait: bool) -> None:
        """Write the records whose CUDA events have completed (all of them when wait), in order."""
        n = 0
        for rec, dev in self._pending:
            if dev is not None:
                if not wait and not dev[1].query():
                    break
                dev[1].synchronize()
                rec["device_ms"] = dev[0].elapsed_time(dev[1])
            self._tl.write(json.dumps(rec) + "\n")
            n += 1
        if n:
            del self._pending[:n]
            self._tl.flush()

    def close(self) -> None:
        """Stop a trace still running and finish the timeline (idempotent)."""
        self.stop_trace()
        if self.steps is not None and self.profile_dir and not self.traces and not getattr(self, "_warned", False):
            self._warned = True
            self.say(f"[profile] no trace written: --profile-steps {self.steps[0]}:{self.steps[1]} but the run "
                     f"took {self.step} step(s)")
        if self._tl is not None:
            self._flush_timeline(wait=True)
            self._tl.close()
            self._tl = None
            self.say(f"[profile] timeline of {self.step} steps written to {self.timeline_path} "
                     f"(plot: s1 bench timeline {self.timeline_path})")


@contextlib.contextmanager
def session(profile_dir: str | None = None, steps: tuple[int, int] | None = None, timeline: str | None = None,
            label: str = "s1", say=print, manual: bool = False):
    """Profiling on for the `with` block (when any output is asked, or S1_NVTX=1): yields the
    Recorder (or OFF), restores the previous recorder and writes the files at the end."""
    nvtx_only = os.environ.get("S1_NVTX") == "1"
    if not (profile_dir or timeline or nvtx_only):
        yield OFF
        return
    if steps is not None and not profile_dir:
        raise ValueError("--profile-steps needs --profile DIR")
    rank = int(os.environ.get("RANK", "0") or 0)
    if timeline and rank:       # torchrun: one timeline per rank (traces carry the process id)
        stem, ext = os.path.splitext(timeline)
        timeline = f"{stem}.rank{rank}{ext}"
        label = f"{label}-rank{rank}"
    rec = Recorder(profile_dir, steps, timeline, nvtx=True, label=label, say=say, manual=manual)
    prev = install(rec)
    try:
        yield rec
    finally:
        install(prev)
        rec.close()


# ---------------------------------------------------------------------- command-line flags
def add_arguments(parser, timeline: bool = True, note: str | None = None) -> None:
    """--profile DIR, --profile-steps A:B (and --timeline FILE) on a command's parser."""
    g = parser.add_argument_group("profiling (off by default; costs nothing when off)", note)
    g.add_argument("--profile", metavar="DIR", default=None,
                   help="write a torch.profiler trace (gzipped Chrome/Perfetto JSON) with named phase ranges to DIR")
    g.add_argument("--profile-steps", metavar="A:B", default=None,
                   help="trace only steps A..B (1-based, inclusive) so a long run's trace stays small; "
                        "default: the whole run")
    if timeline:
        g.add_argument("--timeline", metavar="FILE", default=None,
                       help="write one JSON line per step: host ms per phase, device ms (CUDA events), batch, "
                            "tokens (plot: s1 bench timeline FILE)")


def check_arguments(a) -> tuple[int, int] | None:
    """The parsed window; ValueError naming the flag on bad input."""
    steps = parse_steps(getattr(a, "profile_steps", None))
    if steps is not None and not getattr(a, "profile", None):
        raise ValueError("--profile-steps needs --profile DIR")
    return steps


def session_from_args(a, label: str, say=print):
    """`session` for a command's parsed flags (see add_arguments; check_arguments first)."""
    return session(getattr(a, "profile", None), check_arguments(a), getattr(a, "timeline", None), label=label, say=say)
