"""``e3bench serve``: latency percentiles, goodput, joules per request and quality against an
OpenAI-compatible server under load (docs/serve.md).

client (one streamed request, timed) · load (closed and open loops, the arrival schedule) ·
levels (per-level statistics, SLOs, goodput) · launch (a server as a subprocess) · quality
(generative tasks through the server) · session (orchestration: levels, energy, the record).
"""
