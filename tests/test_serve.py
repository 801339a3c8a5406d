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
from typing import Any

import pytest

from lmtune.shipping.serve.request import BadRequest, parse_chat, parse_completion

PROMPT = "Add 5 and 1."
MESSAGES = [{"role": "user", "content": PROMPT}]
NEW_TOKENS = 8
SAMPLED_TOKENS = 24  # at temperature 1 a tiny random model's next token is near uniform over 49k: seeds differ
LONG_ANSWER = 400  # tokens: near the tiny model's 512-token context, ~2 s here
STARTUP_S = 300  # merging the run and loading the model, on a busy 2-core machine


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


@pytest.fixture(scope="module")
def api(server) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0, timeout=120)


def chat(api: Any, model: str, **kwargs: Any) -> Any:
    return api.chat.completions.create(model=model, messages=kwargs.pop("messages", MESSAGES), **kwargs)


def streamed(api: Any, model: str, **kwargs: Any) -> tuple[list[str], str | None]:
    """(text pieces, finish reason) of a streamed chat answer."""
    pieces, finish = [], None
    for chunk in chat(api, model, stream=True, **kwargs):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return pieces, finish


def post(url: str, path: str, body: dict | bytes) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def still_serving(url: str, proc: subprocess.Popen) -> bool:
    status, payload = post(url, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2})
    return proc.poll() is None and status == 200 and payload["choices"][0]["message"]["content"] is not None


def plain_greedy(folder: Path, messages: list[dict], max_new_tokens: int) -> str:
    """The answer of plain transformers' greedy ``model.generate`` on the exported folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def lmtune_generate(run: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "lmtune", "generate", "--model", str(run), "--prompt", PROMPT,
         "--max-new-tokens", str(NEW_TOKENS)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# --------------------------------------------------------------------------- answers


def test_the_openai_client_gets_the_answer_lmtune_generate_gives(api, lora_run: Path) -> None:
    name = lora_run.name
    assert [m.id for m in api.models.list()] == [name]
    expected = lmtune_generate(lora_run)
    reply = chat(api, name, max_tokens=NEW_TOKENS, temperature=0)
    assert reply.model == name and reply.object == "chat.completion" and reply.id
    assert reply.choices[0].message.content.strip() == expected
    pieces, _ = streamed(api, name, max_tokens=NEW_TOKENS, temperature=0)
    assert len([p for p in pieces if p]) > 1  # token by token, not one blob
    assert "".join(pieces).strip() == expected
    completion = api.completions.create(model=name, prompt="Add 5 and 1. The answer:", max_tokens=4, temperature=0)
    assert completion.model == name and completion.choices[0].text
    # the path given on the command line names the model too, and so does leaving it out (raw HTTP)
    assert chat(api, str(lora_run), max_tokens=2, temperature=0).model == name


def test_temperature_0_is_plain_greedy_generate(api, lora_run: Path) -> None:
    messages = [{"role": "user", "content": "Add 2 and 7."}]
    reply = chat(api, "run", messages=messages, max_tokens=NEW_TOKENS, temperature=0)
    assert reply.choices[0].message.content == plain_greedy(lora_run / "export", messages, NEW_TOKENS)


def test_the_seed_decides_the_sampled_text(api) -> None:
    def text(seed: int, **kwargs: Any) -> str:
        reply = chat(api, "run", max_tokens=SAMPLED_TOKENS, temperature=1.0, seed=seed, **kwargs)
        return reply.choices[0].message.content

    assert text(1) == text(1)
    assert text(1) != text(2)
    greedy = chat(api, "run", max_tokens=SAMPLED_TOKENS, temperature=0).choices[0].message.content
    assert text(1) != greedy
    # top_k=1 and a tiny top_p keep only the most likely token: sampling then is greedy, whatever the seed
    assert text(1, extra_body={"top_k": 1}) == text(2, extra_body={"top_k": 1}) == greedy
    assert text(3, top_p=1e-6) == greedy


def test_streaming_gives_the_text_of_the_same_request_unstreamed(api) -> None:
    settings = {"max_tokens": SAMPLED_TOKENS, "temperature": 1.0, "seed": 7}
    whole = chat(api, "run", **settings).choices[0]
    pieces, finish = streamed(api, "run", **settings)
    assert "".join(pieces) == whole.message.content and finish == whole.finish_reason
    text = api.completions.create(model="run", prompt=PROMPT, **settings).choices[0].text
    chunks = api.completions.create(model="run", prompt=PROMPT, stream=True, **settings)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text


def test_max_tokens_ends_with_length_and_usage_counts_tokens(api) -> None:
    for limit in ("max_tokens", "max_completion_tokens"):
        reply = chat(api, "run", temperature=1.0, seed=0, **{limit: 5})
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage.completion_tokens == 5
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5 and reply.usage.prompt_tokens > 5
    chunks = list(chat(api, "run", max_tokens=3, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 3 and not chunks[-1].choices


def test_stop_cuts_the_text_before_the_stop_string(api) -> None:
    settings = {"max_tokens": SAMPLED_TOKENS, "temperature": 0}
    full = chat(api, "run", **settings).choices[0].message.content
    middle = len(full) // 2
    stop = full[middle : middle + 2]
    for given in (stop, ["never appears 1", stop]):
        reply = chat(api, "run", stop=given, **settings).choices[0]
        assert reply.message.content == full[: full.index(stop)] and reply.finish_reason == "stop"
        pieces, finish = streamed(api, "run", stop=given, **settings)
        assert "".join(pieces) == full[: full.index(stop)] and finish == "stop"


def test_a_client_that_goes_away_frees_the_model(server, api) -> None:
    url, _ = server
    start = time.monotonic()
    chat(api, "run", max_tokens=LONG_ANSWER, temperature=1.0, seed=0)
    whole_answer_s = time.monotonic() - start
    body = {"messages": MESSAGES, "max_tokens": LONG_ANSWER, "temperature": 1.0, "stream": True}
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as r:
        assert r.readline().startswith(b"data: ")  # the server took the request; then the client hangs up
    start = time.monotonic()
    assert chat(api, "run", max_tokens=2).choices[0].finish_reason
    assert time.monotonic() - start < whole_answer_s / 2  # did not wait for the abandoned answer


# --------------------------------------------------------------------------- refusals


def test_a_prompt_beyond_the_context_is_a_400_giving_both_numbers(server) -> None:
    url, proc = server
    status, payload = post(url, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 100_000})
    error = payload["error"]
    assert status == 400 and error["param"] == "messages" and error["code"] == "context_length_exceeded"
    assert "512" in error["message"] and "100000" in error["message"]  # the tiny model's context, the ask
    long_prompt = " ".join(f"word{i}" for i in range(600))
    status, payload = post(url, "/v1/completions", {"prompt": long_prompt})
    assert status == 400 and payload["error"]["param"] == "prompt" and "512" in payload["error"]["message"]
    assert still_serving(url, proc)


def test_the_openai_client_raises_on_a_too_long_prompt(api) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        chat(api, "run", max_tokens=100_000)
    assert caught.value.status_code == 400 and "maximum context length" in caught.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("logit_bias", {"42": 5}),
        ("response_format", {"type": "json_object"}),
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("no_such_field", 1),
    ],
)
def test_a_parameter_the_server_does_not_honour_is_a_400_naming_it(server, field: str, value: Any) -> None:
    url, proc = server
    status, payload = post(url, "/v1/chat/completions", {"messages": MESSAGES, field: value})
    assert status == 400 and payload["error"]["param"] == field and field in payload["error"]["message"]
    assert payload["error"]["type"] == "invalid_request_error"
    assert still_serving(url, proc)


def test_neutral_values_and_metadata_are_accepted(server) -> None:
    url, _ = server
    body = {"messages": MESSAGES, "max_tokens": 2, "n": 1, "presence_penalty": 0, "logprobs": False,
            "user": "someone", "top_logprobs": None}  # fmt: skip
    status, payload = post(url, "/v1/chat/completions", body)
    assert status == 200 and payload["choices"][0]["finish_reason"] in ("stop", "length")


def test_malformed_requests_get_a_json_error_and_the_server_keeps_serving(server) -> None:
    url, proc = server
    bad = [
        b"{not json",
        b"[1, 2]",
        b'{"messages": "hello"}',
        b'{"messages": [{"role": "wizard", "content": "hi"}]}',
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}',
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 3}',
        b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}',
    ]
    for body in bad:
        status, payload = post(url, "/v1/chat/completions", body)
        assert status == 400, (body, status, payload)
        assert payload["error"]["message"] and payload["error"]["type"] == "invalid_request_error"
    status, payload = post(url, "/v1/chat/completions", {"model": "other", "messages": MESSAGES})
    assert status == 404 and payload["error"]["param"] == "model" and "other" in payload["error"]["message"]
    status, payload = post(url, "/v1/nowhere", {})
    assert status == 404 and payload["error"]["message"]
    assert still_serving(url, proc)


def test_two_concurrent_requests_both_complete(api) -> None:
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        messages = [{"role": "user", "content": f"Add {i} and {i}."}]
        answers[i] = chat(api, "run", messages=messages, max_tokens=NEW_TOKENS).choices[0].finish_reason

    threads = [threading.Thread(target=ask, args=(i,)) for i in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(answers) == [1, 2, 3] and all(answers.values())


def test_a_busy_port_is_a_one_line_error(server, lora_run: Path) -> None:
    url = server[0]
    port = url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [sys.executable, "-m", "lmtune", "serve", str(lora_run), "--port", port],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--port" in proc.stderr


# --------------------------------------------------------------------------- request checks, no server


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "assistant", "content": "x", "tool_calls": []}]}, "messages[0].tool_calls"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p"),
        ({"messages": [{"role": "user", "content": "x"}], "top_k": -1}, "top_k"),
        ({"messages": [{"role": "user", "content": "x"}], "seed": 1.5}, "seed"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": ""}, "stop"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "max_completion_tokens": 4}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "echo": True}, "echo"),  # a completions-only field
    ],
)
def test_chat_request_checks_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_chat(body)
    assert caught.value.param == param and caught.value.status == 400


def test_a_chat_request_becomes_what_generation_needs() -> None:
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": "hi", "name": "ann"},
    ]
    body = {"model": "m", "messages": messages, "temperature": 0.5, "top_k": 5, "seed": 3, "stop": "\n",
            "max_completion_tokens": 9, "stream": True, "user": "ann", "presence_penalty": None}  # fmt: skip
    request = parse_chat(body)
    assert request.text_or_messages == ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"})
    s = request.sampling
    assert (s.temperature, s.top_p, s.top_k, s.seed, s.stop, s.max_tokens) == (0.5, None, 5, 3, ("\n",), 9)
    assert request.stream and request.model == "m" and request.prompt_param == "messages"


def test_completion_request_checks() -> None:
    for prompt in ("", ["a", "b"], [1, 2, 3], None):
        with pytest.raises(BadRequest, match="prompt"):
            parse_completion({"prompt": prompt})
    request = parse_completion({"prompt": ["one"], "max_tokens": 3, "echo": False, "best_of": 1})
    assert request.text_or_messages == "one" and request.sampling.max_tokens == 3
    with pytest.raises(BadRequest) as caught:
        parse_completion({"prompt": "x", "max_completion_tokens": 3})  # a chat-only field
    assert caught.value.param == "max_completion_tokens"


def test_the_context_check_counts_the_prompt_and_max_tokens(tiny_llama: Any, tokenizer: Any) -> None:
    from lmtune.shipping.serve.engine import Engine

    engine = Engine(tiny_llama, tokenizer)
    try:
        request = parse_completion({"prompt": "one two three"})
        job = engine.prepare(request)
        assert job.max_new_tokens == 512 - len(job.prompt_ids)  # no max_tokens: up to the end of the context
        fits = parse_completion({"prompt": "one two three", "max_tokens": 512 - len(job.prompt_ids)})
        assert engine.prepare(fits).max_new_tokens == 512 - len(job.prompt_ids)
        too_many = parse_completion({"prompt": "one two three", "max_tokens": 513 - len(job.prompt_ids)})
        with pytest.raises(BadRequest) as caught:
            engine.prepare(too_many)
        assert caught.value.param == "prompt" and "512" in caught.value.message and "513" in caught.value.message
    finally:
        engine.close()


def test_streamed_text_is_cut_before_a_stop_string_split_across_tokens(tokenizer: Any) -> None:
    import torch

    from lmtune.shipping.serve.engine import AnswerText

    text = "The answer is 6.\nDone here."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces: list[str] = []
    answer = AnswerText(tokenizer, ("6.\nDo", "zzz"), pieces.append)
    answer.put(torch.tensor([[1, 2, 3]]))  # the prompt, which generate passes first
    for token in ids:
        answer.put(torch.tensor([token]))
    answer.end()
    assert "".join(pieces) == answer.text == "The answer is " and answer.stopped
    unstopped: list[str] = []
    whole = AnswerText(tokenizer, (), unstopped.append)
    whole.put(torch.tensor([[1]]))
    for token in ids:
        whole.put(torch.tensor([token]))
    whole.end()
    assert "".join(unstopped) == text and len(unstopped) > 1 and not whole.stopped


def test_a_model_without_a_chat_template_answers_completions_only(tiny_gpt2_dir: Path) -> None:
    from lmtune.config import ModelConfig
    from lmtune.models import load_model
    from lmtune.shipping.serve.engine import Engine

    model, tokenizer, _ = load_model(ModelConfig(name=str(tiny_gpt2_dir)))
    engine = Engine(model.eval(), tokenizer)
    try:
        with pytest.raises(BadRequest, match="no chat template") as caught:
            engine.prepare(parse_chat({"messages": MESSAGES}))
        assert caught.value.param == "messages"
        assert engine.prepare(parse_completion({"prompt": PROMPT})).prompt_ids == tokenizer(PROMPT)["input_ids"]
    finally:
        engine.close()


def test_knobs_a_request_leaves_out_come_from_a_sampling_generation_config() -> None:
    from transformers import GenerationConfig

    from lmtune.shipping.serve.engine import sampling_kwargs
    from lmtune.shipping.serve.request import Sampling

    greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    samples = GenerationConfig(do_sample=True, temperature=0.6, top_p=0.9, top_k=20)
    assert sampling_kwargs(Sampling(), GenerationConfig()) == greedy  # lmtune's exports: greedy unless asked
    assert sampling_kwargs(Sampling(), samples) == {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "top_k": 20}
    assert sampling_kwargs(Sampling(temperature=0, top_p=0.5), samples) == greedy
    asked = Sampling(temperature=1.2, top_p=0.5, top_k=0)  # top_k 0: off, not the config's 20
    assert sampling_kwargs(asked, samples) == {"do_sample": True, "temperature": 1.2, "top_p": 0.5, "top_k": None}
    assert sampling_kwargs(Sampling(temperature=0.7), GenerationConfig())["top_k"] is None
