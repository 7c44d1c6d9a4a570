"""`s1 serve`: an OpenAI-compatible HTTP server over the online engine (s1/infer/engine.py), with
budget forcing per request, streaming and continuous batching across clients.

    s1/serve/protocol.py     request bodies -> checked GenRequests (OpenAI-style 400s naming the field),
                          response bodies and stream chunks (pure Python)
    s1/serve/text.py         incremental detokenization; the s1 split into reasoning and answer while
                          streaming; stop strings cut host-side
    s1/serve/engine_loop.py  the engine on one dedicated thread; asyncio queues per request
    s1/serve/app.py          the FastAPI app: /v1/models, /v1/completions, /v1/chat/completions, /health,
                          /metrics, /tokenize, /detokenize
    s1/serve/metrics.py      Prometheus text exposition of the server's metrics (pure Python)
    s1/serve/cli.py          `s1 serve` (uvicorn; SIGTERM drains and exits 0)

Needs the `serve` extra (`pip install -e ".[serve]"`: fastapi + uvicorn); nothing here imports them
until a server is built, so `s1 serve --help` answers without them (and without torch).
"""
