"""A server under test started as a subprocess: ``--launch transformers|llamacpp|vllm``.

The server binds to 127.0.0.1 on a free port (or ``--port``, refused when taken), its output
goes to a log file in the run folder, readiness is polled on ``GET /v1/models`` until
``ready_timeout_s``, and :func:`launched` stops it (SIGTERM to its process group, SIGKILL after
a grace period) and reaps it on every way out: the end, an error, Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from e3bench.core.errors import E3Error, MissingExtra

LAUNCHERS = ("transformers", "llamacpp", "vllm")
#: log lines quoted when a server never becomes ready or dies
TAIL_LINES = 8


@dataclass
class Server:
    """A launched server: its process, base URL (``…/v1``), the model name requests carry,
    the command and the log file."""

    proc: subprocess.Popen
    url: str
    model: str
    command: list[str]
    log_path: Path
    port: int

    @property
    def pid(self) -> int:
        """The server's process id (the leader of its own process group)."""
        return self.proc.pid

    def alive(self) -> bool:
        """The process has not exited."""
        return self.proc.poll() is None

    def info(self) -> dict:
        """What the record keeps about the launch."""
        return {"command": self.command, "log": str(self.log_path), "port": self.port, "pid": self.pid}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """True when a server could listen on ``port`` on 127.0.0.1: nothing listens there.
    SO_REUSEADDR as servers set it (uvicorn, llama-server, vLLM), so the TIME_WAIT connections
    a server that just stopped leaves behind do not count as "in use"; a listener still does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tail(path: Path, n: int = TAIL_LINES) -> str:
    """The last ``n`` non-empty lines of ``path`` joined by `` | `` (empty when unreadable)."""
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def _exe(name: str) -> str:
    """``name`` next to this Python (the same environment), else on PATH, else ``name``."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name) or name


def command(kind: str, model: str, port: int, *, device: str = "cpu") -> tuple[list[str], str]:
    """``(argv, model name requests must carry)`` to serve ``model`` (alias, hub id, folder or
    GGUF, resolved by :mod:`e3bench.backends.models`) with launcher ``kind`` on 127.0.0.1:port."""
    import importlib.util

    from e3bench.backends.models import local_dir, resolve

    if kind not in LAUNCHERS:
        from e3bench.core.errors import unknown_name

        raise unknown_name("launcher", kind, LAUNCHERS)
    spec = resolve(model)
    if kind == "llamacpp":
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingExtra("llama_cpp", "llamacpp", "--launch llamacpp")
        if spec.source != "gguf":
            raise E3Error(f"--launch llamacpp serves GGUF files; '{model}' is a {spec.source} model",
                          "pass a .gguf file or an alias with a bundled GGUF (smollm2-135m)")  # fmt: skip
        gguf = str(Path(spec.path) / (spec.gguf_file or ""))
        return [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", model,
                "--host", "127.0.0.1", "--port", str(port)], model  # fmt: skip
    path, _ = local_dir(spec)
    if kind == "vllm":
        return [_exe("vllm"), "serve", str(path), "--host", "127.0.0.1", "--port", str(port),
                "--served-model-name", model], model  # fmt: skip
    if not all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "openai")):
        raise MissingExtra("fastapi, uvicorn, openai", "serve", "--launch transformers (transformers serve)")
    # transformers serve pins the preloaded model and wants its path as the model name
    return [_exe("transformers"), "serve", str(path), "--host", "127.0.0.1", "--port", str(port),
            "--device", device, "--log-level", "info"], str(path)  # fmt: skip


def start(argv: Sequence[str], model: str, port: int, log_path: Path, *, ready_timeout_s: float = 120.0,
          poll_s: float = 0.5, env: dict[str, str] | None = None) -> Server:  # fmt: skip
    """Start ``argv`` (which must serve on 127.0.0.1:``port``) with output to ``log_path`` and
    wait until ``GET /v1/models`` answers 200. :class:`E3Error` with the last log lines when the
    process exits first or ``ready_timeout_s`` passes (the process is stopped then)."""
    import httpx

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)  # fmt: skip
        except OSError as exc:
            raise E3Error(f"cannot start the server ({argv[0]}: {exc.strerror})",
                          "install the server's package into this environment") from None  # fmt: skip
    server = Server(proc, f"http://127.0.0.1:{port}/v1", model, list(argv), log_path, port)
    deadline = time.monotonic() + ready_timeout_s
    try:
        while True:
            if not server.alive():
                raise E3Error(f"the server exited with status {proc.returncode} before it was ready; "
                              f"last log lines: {tail(log_path) or '(none)'}", f"see its log {log_path}")  # fmt: skip
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/models", timeout=2.0).status_code == 200:
                    return server
            if time.monotonic() > deadline:
                raise E3Error(f"the server was not ready after {ready_timeout_s:g} s (GET {server.url}/models); "
                              f"last log lines: {tail(log_path) or '(none)'}",
                              f"raise --ready-timeout, or see its log {log_path}")  # fmt: skip
            time.sleep(poll_s)
    except BaseException:
        stop(server)
        raise


def stop(server: Server, grace_s: float = 10.0) -> int | None:
    """SIGTERM to the server's process group, SIGKILL after ``grace_s``; reaped. Its exit status."""
    if server.alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server.proc.pid, signal.SIGKILL)
    try:
        return server.proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        return None


@contextlib.contextmanager
def launched(argv: Sequence[str], model: str, port: int, log_path: Path, **kw) -> Iterator[Server]:
    """:func:`start` the server, yield it, and :func:`stop` it however the block ends."""
    server = start(argv, model, port, log_path, **kw)
    try:
        yield server
    finally:
        stop(server)


def pick_port(port: int | None) -> int:
    """``port`` when free (:class:`E3Error` when taken), else a free one."""
    if port is None:
        return free_port()
    if not (0 < port < 65536):
        raise E3Error(f"--port {port} is not a TCP port", "pass 1024-65535, or leave --port out for a free one")
    if not port_free(port):
        raise E3Error(f"port {port} on 127.0.0.1 is already in use", "pick another --port, or leave it out for a free one")
    return port
