"""`s1 serve`: an OpenAI-compatible HTTP server with budget forcing per request.

    s1 serve --model DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--served-model-name NAME]

Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (both with "stream": true
for server-sent events), GET /health, GET /metrics (Prometheus), POST /tokenize and /detokenize. Chat requests are rendered in the s1 format and answer with
the thinking in message.reasoning_content and the answer in message.content; budget forcing is per
request, as extra body fields: max_thinking_tokens (integer or "auto"), min_thinking_tokens,
num_wait, extension (see s1/serve/protocol.py for every field). Requests from all clients share one
running batch (continuous batching).

Needs the serve extra: pip install -e ".[serve]". Binds to 127.0.0.1 unless --host says otherwise.
With --api-key (or S1_API_KEY), requests without "Authorization: Bearer KEY" get 401 (/health stays
open). SIGTERM or Ctrl-C: new requests get 503, open ones finish (after --shutdown-timeout seconds
they are aborted), then the server exits 0; a second signal aborts at once. Once listening it prints
"s1 serve: listening on http://HOST:PORT" to stderr (--port 0 picks a free port).
Exit status: 0 after a shutdown; 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import os
import sys

from s1.common import dtypes, profiling
from s1.common.cli import HelpFormatter
from s1.common.threads import add_threads_argument
from s1.infer.options import (UsageError, add_thinking_format_args, apply_thinking_format, resolve_device,
                              resolve_inputs)

PROG = "s1 serve"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    sv = ap.add_argument_group("server")
    sv.add_argument("--model", required=True,
                    help="HF-format checkpoint folder, or a Hugging Face Hub id already in the local HF cache")
    sv.add_argument("--tokenizer", default=None,
                    help="folder (or cached Hub id) with tokenizer.json; default: the --model folder")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to bind (0.0.0.0 exposes the server to the network)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one")
    sv.add_argument("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' on /v1/* (default: $S1_API_KEY if set, "
                         "else no key)")
    sv.add_argument("--served-model-name", default=None,
                    help="the model name clients send and /v1/models lists; default: --model as given")
    sv.add_argument("--max-queue", type=int, default=1024,
                    help="requests waiting for their first token beyond which new ones get 503 + Retry-After")
    sv.add_argument("--max-body-bytes", type=int, default=4 << 20,
                    help="largest request body accepted; larger ones get 413")
    sv.add_argument("--shutdown-timeout", type=float, default=30.0,
                    help="on SIGTERM, seconds open requests may run before they are aborted")
    sv.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                    help="uvicorn's log level (info logs every request)")
    en = ap.add_argument_group("engine")
    en.add_argument("--device", default="auto", help="cpu, cuda or cuda:N; auto: cuda when available, else cpu")
    en.add_argument("--dtype", type=dtypes.arg_type(), default="auto", metavar="{" + ",".join(dtypes.CHOICES) + "}",
                    help="weights and KV cache dtype (also fp32/bf16/fp16); auto: the checkpoint's torch_dtype")
    en.add_argument("--max-num-seqs", type=int, default=256, help="most requests decoded at once (one batch)")
    en.add_argument("--max-model-len", type=int, default=None,
                    help="context limit (prompt + output); default: the model's max_position_embeddings")
    en.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                    help="fraction of GPU memory for weights, activations and KV cache (vLLM's flag)")
    en.add_argument("--page-size", type=int, default=16, help="tokens per KV-cache page")
    en.add_argument("--num-pages", type=int, default=None,
                    help="KV-cache pages; default: from --gpu-memory-utilization on CUDA, <= 1 GiB on CPU")
    en.add_argument("--no-prefix-caching", action="store_true", help="do not share KV pages of common prefixes")
    en.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs for decoding")
    profiling.add_arguments(ap, note="--profile DIR enables POST /start_profile and POST /stop_profile, which trace "
                                     "the engine thread into DIR (without it they answer 404)")
    add_threads_argument(en)
    add_thinking_format_args(ap)
    return ap


def check_args(a: argparse.Namespace) -> None:
    def need(ok, flag, value, why):
        if not ok:
            raise UsageError(f"{flag} {value}: {why}")

    need(0 <= a.port <= 65535, "--port", a.port, "must lie in [0, 65535]")
    for name in ("max_queue", "max_body_bytes", "max_num_seqs", "page_size"):
        v = getattr(a, name)
        need(v >= 1, "--" + name.replace("_", "-"), v, "must be >= 1")
    for name in ("max_model_len", "num_pages", "threads"):
        v = getattr(a, name)
        need(v is None or v >= 1, "--" + name.replace("_", "-"), v, "must be >= 1")
    need(0 < a.gpu_memory_utilization <= 1, "--gpu-memory-utilization", a.gpu_memory_utilization,
         "must lie in (0, 1]")
    try:
        profiling.check_arguments(a)
    except ValueError as e:
        raise UsageError(str(e)) from None
    need(a.shutdown_timeout >= 0, "--shutdown-timeout", a.shutdown_timeout, "must be >= 0")
    need(a.served_model_name is None or a.served_model_name.strip() != "", "--served-model-name",
         repr(a.served_model_name), "must not be empty")


def _need_extra() -> str | None:
    import importlib.util
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"{' and '.join(missing)} missing: `s1 serve` needs the serve extra "
                f"(pip install -e \".[serve]\")")
    return None


def bind_socket(host: str, port: int):
    """A listening-ready TCP socket (port 0: a free one), so the real port is known before serving."""
    import socket
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def make_server(app, sock, log_level: str = "info", access_log: bool = True):
    """A uvicorn Server whose SIGTERM / SIGINT drain the app (ServerState.drain) and then stop it,
    without re-raising the signal afterwards (uvicorn's default), so the process exits 0."""
    import asyncio
    import signal

    import uvicorn

    state = app.state.s1

    class DrainingServer(uvicorn.Server):
        signals = 0

        async def serve(self, sockets=None):
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets=sockets)

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started:
                h, p = sock.getsockname()[:2]
                h = f"[{h}]" if ":" in h else h
                print(f"{PROG}: listening on http://{h}:{p} (model {state.settings.served_model_name!r})",
                      file=sys.stderr, flush=True)

        def handle_exit(self, sig, frame):
            self.signals += 1
            if getattr(self, "_loop", None) is None:      # not serving yet
                self.should_exit = True
                return
            if self.signals == 1:
                print(f"{PROG}: {signal.Signals(sig).name}: draining (new requests get 503; open ones get "
                      f"{state.settings.shutdown_timeout:g}s)", file=sys.stderr, flush=True)
                self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))
            else:
                print(f"{PROG}: {signal.Signals(sig).name} again: aborting open requests", file=sys.stderr,
                      flush=True)
                self._loop.call_soon_threadsafe(state.loop.abort_all)
                self.should_exit = True
                if self.signals > 2:
                    self.force_exit = True

        async def _drain(self):
            clean = await state.drain()
            print(f"{PROG}: {'all requests finished' if clean else 'open requests aborted'}; shutting down",
                  file=sys.stderr, flush=True)
            self.should_exit = True

    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, timeout_graceful_shutdown=10,
                            lifespan="on")
    return DrainingServer(config)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_args(a)
        missing = _need_extra()
        if missing:
            raise UsageError(missing)
        model_dir, tok_dir, cfg = resolve_inputs(a.model, a.tokenizer)
        from s1.model.tokenizer import Tokenizer
        tokenizer = Tokenizer.from_pretrained(tok_dir)
        apply_thinking_format(tokenizer, a)       # reasoning_content splits at its thinking end
        from s1.common.threads import configure_threads
        device = resolve_device(a.device)
        configure_threads(a.threads, work_hint=cfg, device=device)
        try:
            sock = bind_socket(a.host, a.port)
        except OSError as e:
            raise UsageError(f"--host {a.host} --port {a.port}: cannot listen there ({e.strerror or e})") from None
    except (UsageError, ValueError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    import signal

    class _Terminated(Exception):
        pass

    def on_term(signum, frame):          # SIGTERM while loading: stop cleanly, exit 0
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_term)
    from s1.infer.config import EngineConfig
    from s1.infer.engine import LLMEngine
    from s1.serve.app import ServerSettings, build_app
    try:
        engine = LLMEngine(EngineConfig(
            model=model_dir, tokenizer=tok_dir, device=device, dtype=None if a.dtype == "auto" else a.dtype,
            page_size=a.page_size, max_num_seqs=a.max_num_seqs, gpu_memory_utilization=a.gpu_memory_utilization,
            num_pages=a.num_pages, enable_prefix_caching=not a.no_prefix_caching, max_model_len=a.max_model_len,
            enforce_eager=a.enforce_eager), tokenizer=tokenizer)
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sock.close()
        return 2
    except _Terminated:
        print(f"{PROG}: SIGTERM during start-up; stopped", file=sys.stderr)
        sock.close()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    settings = ServerSettings(served_model_name=a.served_model_name or a.model,
                              api_key=a.api_key or os.environ.get("S1_API_KEY") or None,
                              max_queue=a.max_queue, max_body_bytes=a.max_body_bytes,
                              shutdown_timeout=a.shutdown_timeout, profile_dir=a.profile,
                              profile_steps=profiling.check_arguments(a), timeline=a.timeline)
    app = build_app(engine, settings)
    server = make_server(app, sock, log_level=a.log_level)
    try:
        server.run(sockets=[sock])
    finally:
        # (already stopped by the app's shutdown, unless forced); the engine is closed only once its
        # thread has ended: a last step still running must not find its cache freed under it
        if app.state.s1.loop.stop(timeout=10):
            engine.close()
        else:
            print(f"{PROG}: the engine thread is still in a step; exiting without closing the engine",
                  file=sys.stderr, flush=True)
        sock.close()
    print(f"{PROG}: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
