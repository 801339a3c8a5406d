"""``lmtune serve``: a real server process answering the official ``openai`` client, and its request checks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmtune.shipping.serve import check_chat_request, check_completion_request

PROMPT = "Add 5 and 1."
NEW_TOKENS = 8
STARTUP_S = 300  # merging the run and loading the engine, on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(lora_run: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmtune", "serve", str(lora_run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("server did not come up")
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)


def client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def lmtune_generate(run: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "lmtune", "generate", "--model", str(run), "--prompt", PROMPT,
         "--max-new-tokens", str(NEW_TOKENS)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_openai_client_gets_the_answer_lmtune_generate_gives(server, lora_run: Path) -> None:
    url, _ = server
    api = client(url)
    assert "run" in [m.id for m in api.models.list()]
    expected = lmtune_generate(lora_run)
    messages = [{"role": "user", "content": PROMPT}]
    reply = api.chat.completions.create(model="run", messages=messages, max_tokens=NEW_TOKENS, temperature=0)
    assert reply.choices[0].message.content.strip() == expected
    stream = api.chat.completions.create(
        model="run", messages=messages, max_tokens=NEW_TOKENS, temperature=0, stream=True
    )
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([c for c in chunks if c]) > 1  # token by token, not one blob
    assert "".join(chunks).strip() == expected
    completion = api.completions.create(model="run", prompt="Add 5 and 1. The answer:", max_tokens=4, temperature=0)
    assert completion.choices[0].text


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_malformed_requests_get_a_json_error_and_the_server_keeps_serving(server) -> None:
    url, proc = server
    bad = [
        b"{not json",
        b'{"messages": "hello"}',
        b'{"messages": [{"role": "wizard", "content": "hi"}]}',
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}',
        b'{"messages": [{"role": "user", "content": "hi"}], "no_such_field": 1}',
    ]
    for body in bad:
        status, payload = post(url, body)
        assert status in (400, 422), (body, status, payload)
        assert payload["error"]["message"] and payload["error"]["type"]
    status, payload = post(url, b'{"model": "other", "messages": [{"role": "user", "content": "hi"}]}')
    assert status == 404 and payload["error"]["param"] == "model"
    ok, payload = post(url, b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}')
    assert ok == 200 and payload["choices"][0]["message"]["content"] is not None
    assert proc.poll() is None


def test_two_concurrent_requests_both_complete(server) -> None:
    url, _ = server
    api = client(url)
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        reply = api.chat.completions.create(
            model="run", messages=[{"role": "user", "content": f"Add {i} and {i}."}], max_tokens=NEW_TOKENS
        )
        answers[i] = reply.choices[0].finish_reason

    threads = [threading.Thread(target=ask, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(answers) == [1, 2] and all(answers.values())


def test_a_busy_port_is_a_one_line_error(server, lora_run: Path) -> None:
    url = server[0]
    port = url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [sys.executable, "-m", "lmtune", "serve", str(lora_run), "--port", port],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--port" in proc.stderr


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ],
)
def test_chat_request_checks_name_the_field(body: dict, param: str) -> None:
    assert check_chat_request(body)[1] == param


def test_completion_request_checks() -> None:
    assert check_completion_request({"prompt": ""})[1] == "prompt"
    assert check_completion_request({"prompt": ["a", "b"]})[1] == "prompt"
    body = {"prompt": ["one"], "max_tokens": 3}
    assert check_completion_request(body) is None and body["prompt"] == "one"
    assert check_chat_request({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}) is None
