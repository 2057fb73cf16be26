"""The official OpenAI Python SDK, pointed at memoctopus by base_url, as a user would."""

import json
import os
import time

import openai
import pytest
from openai import AzureOpenAI, OpenAI

import urllib.request

from conftest import CLIENT_KEY, FAST_KEY, SERVER_KEY

MESSAGES = [
    {"role": "developer", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"},
]


def client(base_url, **kwargs):
    return OpenAI(base_url=base_url, api_key="client-side-placeholder", max_retries=0, **kwargs)


def test_chat_completion(proxy_url):
    completion = client(proxy_url).chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert completion.id == "chatcmpl-123"
    assert completion.choices[0].message.content == "Hello! How can I help you today?"
    assert completion.usage.total_tokens == 29


def test_streamed_chat_arrives_incrementally(proxy_url):
    c = client(proxy_url, default_headers={"x-mock-events": "10", "x-mock-interval-ms": "100"})
    started = time.monotonic()
    arrivals, text = [], ""
    for chunk in c.chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True):
        arrivals.append(time.monotonic() - started)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text.startswith("Hello! How can I help you today?")
    assert len(arrivals) == 10
    # The mock spaces its events 100 ms apart: the first must come long before the last.
    assert arrivals[0] < arrivals[-1] - 0.6, arrivals


def test_transcription_with_a_file(proxy_url, tmp_path):
    audio = tmp_path / "speech.mp3"
    audio.write_bytes(b"ID3" + bytes(range(256)) * 400)
    with audio.open("rb") as f:
        result = client(proxy_url).audio.transcriptions.create(model="gpt-4o-transcribe", file=f)
    assert result.text.startswith("Imagine the wildest idea")


def test_streamed_transcription(proxy_url, tmp_path):
    audio = tmp_path / "speech.mp3"
    audio.write_bytes(b"ID3" + bytes(range(256)) * 40)
    with audio.open("rb") as f:
        events = list(
            client(proxy_url).audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=f, stream=True)
        )
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1].type == "transcript.text.done"
    assert events[0].delta == "I"


def test_upstream_429_is_a_rate_limit_error(proxy_url):
    with pytest.raises(openai.RateLimitError) as caught:
        client(proxy_url).chat.completions.create(
            model="gpt-4", messages=MESSAGES, extra_headers={"x-mock-status": "429"}
        )
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"


def test_unknown_route_is_not_found(proxy_url):
    with pytest.raises(openai.NotFoundError) as caught:
        client(proxy_url).embeddings.create(model="text-embedding-3-small", input="hi")
    assert "Invalid URL (POST /v1/embeddings)" in str(caught.value)


def test_missing_client_key_is_an_authentication_error(keyed_proxy_url):
    with pytest.raises(openai.AuthenticationError) as caught:
        client(keyed_proxy_url).chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert caught.value.code == "invalid_api_key"
    ok = OpenAI(base_url=keyed_proxy_url, api_key=CLIENT_KEY, max_retries=0)
    assert ok.chat.completions.create(model="gpt-4", messages=MESSAGES).id == "chatcmpl-123"


def test_raw_response_headers_come_through(proxy_url):
    raw = client(proxy_url).chat.completions.with_raw_response.create(
        model="gpt-4", messages=MESSAGES, extra_headers={"X-Client-Request-Id": "compat-py-1"}
    )
    assert raw.headers["x-request-id"] == "req_mock_0123456789abcdef"
    assert raw.headers["x-client-request-id"] == "compat-py-1"
    assert raw.parse().choices[0].message.content == "Hello! How can I help you today?"


def _one_a_second_then_the_sdk_backs_off(url, key):
    strict = OpenAI(base_url=url, api_key=key, max_retries=0)
    assert strict.chat.completions.create(model="gpt-4", messages=MESSAGES).id == "chatcmpl-123"
    with pytest.raises(openai.RateLimitError) as caught:
        strict.chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert caught.value.code == "proxy_rate_limit"
    assert caught.value.response.headers["retry-after"] == "1"
    # With its default retries, the SDK waits as Retry-After says and then gets through.
    patient = OpenAI(base_url=url, api_key=key)
    started = time.monotonic()
    assert patient.chat.completions.create(model="gpt-4", messages=MESSAGES).id == "chatcmpl-123"
    assert time.monotonic() - started >= 0.5


def test_a_proxy_rate_limit_is_a_rate_limit_error_and_the_sdk_backs_off(limited_proxy_url):
    _one_a_second_then_the_sdk_backs_off(limited_proxy_url, CLIENT_KEY)


def _metric(proxy_url, series):
    request = urllib.request.Request(
        proxy_url.removesuffix("/v1") + "/metrics", headers={"authorization": f"Bearer {CLIENT_KEY}"}
    )
    text = urllib.request.urlopen(request, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def _seconds_left_in_minute():
    return 60 - time.time() % 60


def test_a_spent_token_budget_is_a_429_the_sdk_waits_out(budget_proxy_url):
    # Late in a UTC minute, so that the window ends within the SDK's wait, and not so late that
    # it ends before the budget is spent.
    while not 5 < _seconds_left_in_minute() <= 12:
        time.sleep(0.5)
    strict = OpenAI(base_url=budget_proxy_url, api_key=CLIENT_KEY, max_retries=0)
    # A stream that asks for usage: 39 tokens, under the 60.
    usage = None
    for chunk in strict.chat.completions.create(
        model="gpt-4", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ):
        usage = chunk.usage or usage
    assert usage.total_tokens == 39
    # 39 + 29 crosses 60, and this answer still comes whole.
    assert strict.chat.completions.create(model="gpt-4", messages=MESSAGES).usage.total_tokens == 29
    with pytest.raises(openai.RateLimitError) as caught:
        strict.chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert caught.value.code == "proxy_token_budget"
    assert caught.value.type == "tokens"
    retry_after = int(caught.value.response.headers["retry-after"])
    assert abs(retry_after - _seconds_left_in_minute()) <= 1.5, retry_after
    assert _metric(budget_proxy_url, 'memoctopus_tokens_total{client="team",model="gpt-4",upstream="default",type="input"}') == 19 + 20
    assert _metric(budget_proxy_url, 'memoctopus_tokens_total{client="team",model="gpt-4",upstream="default",type="output"}') == 20 + 9
    assert (
        _metric(budget_proxy_url, 'memoctopus_client_limit_rejections_total{client="team",limit="token_budget"}')
        == 1
    )
    # With its default retries, the SDK waits out Retry-After, and the next window lets it in.
    patient = OpenAI(base_url=budget_proxy_url, api_key=CLIENT_KEY)
    started = time.monotonic()
    assert patient.chat.completions.create(model="gpt-4", messages=MESSAGES).id == "chatcmpl-123"
    assert time.monotonic() - started >= retry_after - 1


def test_a_rate_set_in_a_key_entry_is_a_429_the_sdk_backs_off(budget_proxy_url):
    _one_a_second_then_the_sdk_backs_off(budget_proxy_url, FAST_KEY)


def test_azure_openai_sdk_in_the_deployment_style(azure_proxy_url):
    azure = AzureOpenAI(
        base_url=f"{azure_proxy_url}/deployments/gpt-4o-prod",
        api_key=CLIENT_KEY,
        api_version="2024-10-21",
        max_retries=0,
    )
    completion = azure.chat.completions.create(model="gpt-4o-prod", messages=MESSAGES)
    assert completion.choices[0].message.content == "Hello! How can I help you today?"
    text = ""
    for chunk in azure.chat.completions.create(model="gpt-4o-prod", messages=MESSAGES, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    assert text.startswith("Hello!")
    wrong = AzureOpenAI(
        base_url=f"{azure_proxy_url}/deployments/gpt-4o-prod",
        api_key="ck-compat-wrong-key-444555",
        api_version="2024-10-21",
        max_retries=0,
    )
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="gpt-4o-prod", messages=MESSAGES)


def test_realtime_connect_through_the_proxy(realtime_proxy_url):
    c = OpenAI(base_url=realtime_proxy_url, api_key=CLIENT_KEY, max_retries=0)
    with c.realtime.connect(model="gpt-realtime") as connection:
        created = json.loads(connection.recv_bytes())
        assert created["type"] == "session.created"
        # What the upstream saw: the server's key, never the client's, and the SDK's URL.
        assert created["mock"]["authorization"] == f"Bearer {SERVER_KEY}"
        assert created["mock"]["target"] == "/v1/realtime?model=gpt-realtime"
        connection.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        updated = connection.recv()
        assert updated.type == "session.updated"
        assert updated.session.output_modalities == ["text"]


def test_realtime_with_a_wrong_client_key_is_refused(realtime_proxy_url):
    c = OpenAI(base_url=realtime_proxy_url, api_key="ck-compat-wrong-key-444555", max_retries=0)
    with pytest.raises(Exception) as caught:
        with c.realtime.connect(model="gpt-realtime", max_retries=0) as connection:
            connection.recv()
    assert "401" in str(caught.value)


def test_two_upstreams_one_refusing_the_sdk_sees_only_successes(two_upstreams):
    if os.environ.get("COMPAT_PROTOCOL") == "http2":
        pytest.skip("the refusing upstream speaks HTTP/1 only, and http2 would reach it by h2c")
    url, refused = two_upstreams
    # No SDK retries: every success is the proxy's failover, not the SDK trying again.
    c = client(url)
    started = time.monotonic()
    answers = 0
    while time.monotonic() - started < 2.6:
        completion = c.chat.completions.create(model="gpt-4", messages=MESSAGES)
        assert completion.choices[0].message.content == "Hello! How can I help you today?"
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in c.chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True)
            if chunk.choices
        )
        assert text.startswith("Hello!")
        answers += 2
        time.sleep(0.1)
    # The refusing one was asked, with its own key, again after each 1 s rest, never the client's.
    assert len(refused) >= 2, refused
    assert set(refused) == {"Bearer sk-refusing-key"}
    failovers = _metric(
        url, 'memoctopus_upstream_failovers_total{from="refusing",to="mock",reason="rate_limited"}'
    )
    assert failovers == len(refused), (failovers, refused)
    assert _metric(url, 'memoctopus_upstream_attempts_total{upstream="mock",result="answered"}') == answers
