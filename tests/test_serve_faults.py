"""e3bench serve's bad inputs and faults, each against a real server (tests/fakes/openai_server.py):
one clear line, exit status 2, nothing measured lost; launched servers stopped and reaped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from fakes.openai_server import FakeConfig, serve_in_thread

from conftest import ROOT
from e3bench.cli.app import app
from e3bench.core.errors import E3Error
from e3bench.results import store
from e3bench.serve import launch as launcher

FAST = ["--min-requests", "3", "--min-seconds", "0", "--warmup", "1", "--max-tokens", "6", "--idle-seconds", "0",
        "--meter", "none"]  # fmt: skip


def serve(*args: str, out) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["serve", *args, *FAST, "-o", str(out)])
    return res.exit_code, res.output


def one_error(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src")])}


def fake_argv(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fakes.openai_server", "--port", str(port), "--ttft", "0.01", "--itl", "0.002", *extra]


def test_unreachable_url(tmp_path):
    port = launcher.free_port()
    code, out = serve("--url", f"http://127.0.0.1:{port}/v1", "--model", "m", "-c", "1", out=tmp_path)
    assert code == 2 and f"cannot reach the server at http://127.0.0.1:{port}/v1" in one_error(out)


def test_wrong_model_names_what_the_server_serves(tmp_path):
    with serve_in_thread() as (url, _):
        code, out = serve("--url", url, "--model", "nope", "-c", "1", out=tmp_path)
    assert code == 2 and "does not serve model 'nope' (it serves: fake-model)" in one_error(out)


@pytest.mark.parametrize("mode, says", [("error500", "HTTP 500: fake server answers 500"),
                                        ("error400", "HTTP 400: fake server answers 400"),
                                        ("nostream", "instead of a text/event-stream")])  # fmt: skip
def test_server_errors_and_a_server_that_does_not_stream(tmp_path, mode, says):
    with serve_in_thread(FakeConfig(mode=mode)) as (url, _):
        code, out = serve("--url", url, "--model", "fake-model", "-c", "1", out=tmp_path)
    line = one_error(out)
    assert code == 2 and "failed the warm-up request" in line and says in line
    assert not list(tmp_path.rglob("*.json"))  # nothing was measured, nothing half-written


@pytest.mark.parametrize("slo", ["ttft_ms", "ttft_ms=fast", "latency=5"])
def test_malformed_slo(tmp_path, slo):
    code, out = serve("--url", "http://127.0.0.1:9/v1", "--model", "m", "-c", "1", "--slo", slo, out=tmp_path)
    assert code == 2 and one_error(out).startswith(f"error: --slo '{slo}'")


def test_server_pid_that_does_not_exist(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that was just freed
    code, out = serve("--url", "http://127.0.0.1:9/v1", "--model", "m", "-c", "1", "--server-pid", str(proc.pid),
                      out=tmp_path)  # fmt: skip
    assert code == 2 and f"--server-pid {proc.pid}: no such process" in one_error(out)


def test_loglikelihood_task_is_refused_before_any_load(tmp_path):
    code, out = serve("--url", "http://127.0.0.1:9/v1", "--model", "m", "--tasks", "hellaswag", out=tmp_path)
    assert code == 2 and "not supported by this server" in one_error(out)


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, out = serve("--launch", "transformers", "--model", "smollm2-135m", "--port", str(port), "-c", "1",
                          out=tmp_path)  # fmt: skip
    assert code == 2 and f"port {port} on 127.0.0.1 is already in use" in one_error(out)


def test_server_dying_mid_level_keeps_the_completed_levels(tmp_path):
    """1 warm-up + 3 requests at c=1 pass; the server exits while streaming request 6 (in c=2):
    the record keeps c=1 whole and c=2 failed with the error; exit 2 says where it is."""
    port = launcher.free_port()
    proc = subprocess.Popen(fake_argv(port, "--mode", "die_after=5"), env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("READY")
        code, out = serve("--url", f"http://127.0.0.1:{port}/v1", "--model", "fake-model", "-c", "1,2", out=tmp_path)
    finally:
        proc.kill()
        proc.wait()
    line = one_error(out)
    assert code == 2 and "level c=2 failed" in line and "the 1 level(s) before it are kept" in line
    (path, data), = store.scan(tmp_path).others["serve"]
    assert str(path) in line
    assert data["status"] == "failed" and [lv["status"] for lv in data["levels"]] == ["ok", "failed"]
    assert data["levels"][0]["requests_ok"] == 3 and data["levels"][1]["error"]


def test_launch_never_ready_quotes_the_log_and_reaps(tmp_path):
    log = tmp_path / "server.log"
    argv = [sys.executable, "-c", "print('loading weights 1/9', flush=True); import time; time.sleep(60)"]
    t0 = time.monotonic()
    with pytest.raises(E3Error) as err:
        launcher.start(argv, "m", launcher.free_port(), log, ready_timeout_s=1.0, poll_s=0.1)
    assert time.monotonic() - t0 < 15
    assert "not ready after 1 s" in err.value.problem and "loading weights 1/9" in err.value.problem
    assert str(log) in err.value.fix


def test_launch_that_exits_says_so_with_its_log(tmp_path):
    argv = [sys.executable, "-c", "print('CUDA out of memory'); raise SystemExit(3)"]
    with pytest.raises(E3Error, match=r"exited with status 3 before it was ready; last log lines: CUDA out of memory"):
        launcher.start(argv, "m", launcher.free_port(), tmp_path / "s.log", ready_timeout_s=20, poll_s=0.1)


def test_launched_server_is_stopped_and_reaped_on_ctrl_c(tmp_path):
    port = launcher.free_port()
    with pytest.raises(KeyboardInterrupt):
        with launcher.launched(fake_argv(port), "fake-model", port, tmp_path / "s.log", env=env(),
                               ready_timeout_s=30, poll_s=0.1) as server:  # fmt: skip
            assert server.alive()
            raise KeyboardInterrupt
    assert server.proc.returncode is not None  # reaped: no zombie left
    assert launcher.port_free(port)


def test_quality_through_the_server_uses_the_tasks_scorer(tmp_path):
    """jsonl_gen over 4 items, 3 answered right by the server's fixed reply: exact_match 0.75."""
    from e3bench.serve.session import ServeSettings, run_serve

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "answer": a}) + "\n" for i, a in enumerate("42 42 7 42".split())))
    with serve_in_thread(FakeConfig(reply="42")) as (url, server):
        rec, _ = run_serve(ServeSettings(model="fake-model", url=url, tasks=[f"jsonl_gen:path={data}"], idle_s=0,
                                         warmup=0, meter="none", output_dir=tmp_path / "out"))  # fmt: skip
        bodies = server.state.bodies
    (t,) = rec.effectiveness
    assert t.metrics["exact_match"] == 0.75 and t.n_items == 4
    samples = [json.loads(x) for x in open(t.samples_file)]
    assert sorted((x["prompt"], x["generation"], x["exact_match"]) for x in samples) == [
        ("Q0?", "42", 1.0), ("Q1?", "42", 1.0), ("Q2?", "42", 0.0), ("Q3?", "42", 1.0)]
    assert sorted(b["messages"][0]["content"] for b in bodies) == ["Q0?", "Q1?", "Q2?", "Q3?"]  # sent concurrently
    assert all(b["stop"] == ["\n"] and b["stream"] for b in bodies)


@pytest.mark.parametrize("args, says", [
    (("-c", "1", "--rate", "inf"), "--rate 'inf': inf must be a finite number above 0"),
    (("-c", "1", "--tasks", "gsm8k", "--limit", "0"), "--limit 0 must be 1 or more"),
    (("-c", "1", "--min-seconds", "-1"), "--min-seconds -1 must be a finite number of seconds of 0 or more"),
    (("-c", "1", "--request-timeout", "0"), "--request-timeout 0 must be a finite number of seconds above 0"),
    (("-c", "1", "--warmup", "-1"), "--warmup -1 must be 0 or more"),
    (("-c", "1", "--device", "tpu"), "--device 'tpu' is not a device"),
    (("-c", "1.5",), "--concurrency '1.5': '1.5' is not a whole number"),  # was "is not a number"
    (("-c", "1", "--port", "8000"), "--port 8000 is for a server e3bench launches"),  # was silently ignored
    (("-c", "1", "--limit", "5"), "--limit 5 limits --tasks, and no task was given"),  # was silently ignored
    (("-c", "1", "--meter", "nvm"), "unknown meter 'nvm'"),  # was found only after a --launch server loaded
    (("-c", "1", "--slo", "TTFT_MS=5"), "unknown SLO 'TTFT_MS' (did you mean 'ttft_ms'?)"),  # was "is not name=value"
])  # fmt: skip
def test_bad_numbers_and_device_are_refused_before_the_server_is_asked(tmp_path, args, says):
    """Port 9 refuses connections: the settings' error comes first, not 'cannot reach'."""
    res = CliRunner().invoke(app, ["serve", "--url", "http://127.0.0.1:9/v1", "--model", "m", *FAST, *args,
                                   "-o", str(tmp_path)])  # after FAST: these flags win  # fmt: skip
    assert res.exit_code == 2 and says in one_error(res.output)


def test_results_folder_that_cannot_be_made_is_refused_before_any_load(tmp_path):
    (tmp_path / "file").write_text("x")
    code, out = serve("--url", "http://127.0.0.1:9/v1", "--model", "m", "-c", "1", out=tmp_path / "file" / "sub")
    assert code == 2 and "is a file" in one_error(out) and "cannot reach" not in out


def test_server_args_reach_the_launched_server(tmp_path, monkeypatch):
    """--server-arg is appended to the launch command: the fake server launched through the
    session's own path gets --ttft 0.2 from it, and the measured TTFT shows it."""
    from e3bench.serve.session import ServeSettings, run_serve

    monkeypatch.setattr(launcher, "command", lambda kind, model, port, device="cpu": (fake_argv(port), "fake-model"))
    monkeypatch.setenv("PYTHONPATH", env()["PYTHONPATH"])
    s = ServeSettings(model="fake-model", launch="transformers", concurrency=[1], min_requests=2, min_seconds=0,
                      warmup=0, max_tokens=3, idle_s=0, meter="none", server_args=["--ttft", "0.2"],
                      output_dir=tmp_path)  # fmt: skip
    rec, _ = run_serve(s)
    assert rec.launch["command"][-2:] == ["--ttft", "0.2"]
    assert rec.levels[0].ttft_ms.p50 >= 200


def test_server_args_without_launch_are_refused(tmp_path):
    code, out = serve("--url", "http://127.0.0.1:9/v1", "--model", "m", "-c", "1", "--server-arg=--x", out=tmp_path)
    assert code == 2 and "--server-arg is for a server e3bench launches" in one_error(out)


TOKEN = '{"choices": [{"delta": {"content": "a"}}]}'


@pytest.mark.parametrize("events, says", [
    (["5", "[DONE]"], "a stream chunk is a JSON int, not an object"),
    (['{"choices": ["x"]}', "[DONE]"], "choices is not a list of objects"),
    (['{"choices": {"a": 1}}', "[DONE]"], "choices is not a list of objects"),
    ([TOKEN, '{"choices": [], "usage": {"completion_tokens": {"a": 1}}}', "[DONE]"], "usage.completion_tokens is {"),
    ([TOKEN, '{"choices": [], "usage": {"completion_tokens": "abc"}}', "[DONE]"], 'usage.completion_tokens is "abc"'),
    ([TOKEN, '{"choices": [], "usage": {"completion_tokens": 2, "prompt_tokens": "x"}}', "[DONE]"], "usage.prompt_tokens"),
    ([TOKEN, '{"choices": [], "usage": {"completion_tokens": -5}}', "[DONE]"], "usage.completion_tokens is -5"),
    ([TOKEN, '{"choices": [], "usage": {"completion_tokens": 1e400}}', "[DONE]"], "usage.completion_tokens is Infinity"),
    (["hello", "[DONE]"], "a stream chunk is not JSON"),
    (['{"choices": [{"delta": ["a"]}]}', "[DONE]"], "the server streamed no text"),
])  # fmt: skip
def test_garbage_stream_chunks_fail_the_level_in_one_line(tmp_path, events, says):
    """A server streaming chunks that are JSON but not OpenAI chunks (a number, choices of
    strings, a usage count that is a dict, a string, negative or infinite) used to end in a
    traceback (AttributeError / TypeError / OverflowError); now the level fails with one line."""
    with serve_in_thread(FakeConfig(mode="raw", raw_events=tuple(events))) as (url, _):
        code, out = serve("--url", url, "--model", "fake-model", "-c", "1", out=tmp_path)
    assert code == 2 and "Traceback" not in out, out
    line = one_error(out)
    assert ("failed the warm-up request" in line or "level c=1 failed" in line) and says in line, line


@pytest.mark.parametrize("url, says", [
    ("https://[::1", "is not a valid URL"),
    ("http://", "names no host"),
    ("http://:8000/v1", "names no host"),
    ("http://127.0.0.1:99999999/v1", "port 99999999 is not between 1 and 65535"),
])  # fmt: skip
def test_malformed_url_is_one_line_before_any_request(tmp_path, url, says):
    """httpx.InvalidURL is no httpx.HTTPError: 'https://[::1' used to end in a traceback."""
    code, out = serve("--url", url, "--model", "m", "-c", "1", out=tmp_path)
    assert code == 2 and says in one_error(out) and "cannot reach" not in out, out


def test_a_port_left_in_time_wait_by_a_stopped_server_is_free_but_a_listener_is_not():
    """A server that stopped (it closed its connections first) leaves TIME_WAIT sockets on its
    port; servers bind with SO_REUSEADDR so the port is usable, and --port must not call it
    'in use' (it did: rerunning --launch --port N right after a session was refused)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    assert not launcher.port_free(port)  # listening: in use
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = srv.accept()
    accepted.close()  # the server side closes first: TIME_WAIT on the server's port
    client.close()
    srv.close()
    assert launcher.port_free(port) and launcher.pick_port(port) == port


@pytest.mark.parametrize("args, says", [
    (("--rate", "1e9"), "--rate 1e+09/s over --min-seconds 10 asks one level for 1e+10 requests (at most 100000)"),
    (("-c", "200000"), "--concurrency 200000 asks one level for 2e+05 requests"),
    (("-c", "1", "--min-requests", "1000000"), "--min-requests 1000000 asks one level for 1e+06 requests"),
])  # fmt: skip
def test_a_level_of_millions_of_requests_is_refused_before_the_server_is_asked(tmp_path, args, says):
    """--rate 1e9 used to build a schedule of 10^10 start times: the command hung (killed at 30 s)."""
    res = CliRunner().invoke(app, ["serve", "--url", "http://127.0.0.1:9/v1", "--model", "m", *FAST,
                                   "--min-seconds", "10", *args, "-o", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 2 and says in one_error(res.output) and "cannot reach" not in res.output, res.output


def test_a_closed_loop_level_sends_at_least_one_request_per_worker(tmp_path):
    """c=4 with --min-requests 1 --min-seconds 0 ran ONE request and was labelled c=4."""
    from e3bench.serve.session import ServeSettings, run_serve

    with serve_in_thread() as (url, server):
        s = ServeSettings(model="fake-model", url=url, concurrency=[4], min_requests=1, min_seconds=0, warmup=0,
                          max_tokens=3, idle_s=0, meter="none", output_dir=tmp_path)  # fmt: skip
        rec, _ = run_serve(s)
    assert rec.levels[0].requests_sent == 4 and rec.levels[0].requests_ok == 4
