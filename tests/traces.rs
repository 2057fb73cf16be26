//! OpenTelemetry traces as a collector sees them: a real OTLP/HTTP receiver decodes every
//! export with the official protobuf messages. Each exchange is a `SERVER` span continued from
//! the client's `traceparent`, with one `CLIENT` span under it named by the GenAI conventions;
//! the upstream gets the `CLIENT` span as its parent; no key, prompt or answer is ever
//! exported; and a collector that does not answer slows nothing, its spans dropped and counted.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::otlp::{Exported, OtlpReceiver};
use support::*;
use tokio::time::Instant;

/// The client's trace: a W3C `traceparent` with its sampled flag, and a `tracestate`.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "vendor=opaque-value";
const PROMPT: &str = "a prompt that must never be exported";
const COLLECTOR_TOKEN: &str = "collector-token-never-logged";
const SPAN_KIND_SERVER: i32 = 2;
const SPAN_KIND_CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;

fn traced(receiver: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "20".into()),
        ("OTEL_SERVICE_NAME", "gateway-under-test".into()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test,team=ml%20platform".into(),
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("authorization=Bearer%20{COLLECTOR_TOKEN}"),
        ),
    ]
}

fn vars<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A receiver, the mock upstream, and the proxy in front of it exporting to the receiver.
async fn traced_proxy() -> (OtlpReceiver, MockUpstream, TestProxy) {
    traced_proxy_with(&[]).await
}

/// [`traced_proxy`], with `extra` settings in place of the same-named ones.
async fn traced_proxy_with(
    extra: &[(&'static str, &str)],
) -> (OtlpReceiver, MockUpstream, TestProxy) {
    let receiver = OtlpReceiver::start().await;
    let upstream = MockUpstream::start().await;
    let mut settings = traced(&receiver);
    settings.retain(|(k, _)| !extra.iter().any(|(name, _)| name == k));
    settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let proxy = ProxyStart::before(&upstream)
        .settings(&vars(&settings))
        .start()
        .await;
    (receiver, upstream, proxy)
}

fn request(url: &str, id: &str, headers: &[(&str, &str)], body: String) -> Request<Full<Bytes>> {
    let mut request = chat_request(url, &body);
    let h = request.headers_mut();
    h.insert("x-request-id", id.parse().unwrap());
    for (name, value) in headers {
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request
}

fn chat_body() -> String {
    format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{PROMPT}"}}]}}"#)
}

/// A chat completion through `proxy`, with request id `id` and `headers`.
async fn chat(
    proxy: &TestProxy,
    id: &str,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    client()
        .request(request(
            &proxy.url("/v1/chat/completions"),
            id,
            headers,
            chat_body(),
        ))
        .await
        .unwrap()
}

/// The server and client spans of `id`.
async fn pair(receiver: &OtlpReceiver, id: &str) -> (Exported, Exported) {
    let spans = receiver.spans_of(id, 2).await;
    let server = spans
        .iter()
        .find(|s| s.span.kind == SPAN_KIND_SERVER)
        .expect("a SERVER span")
        .clone();
    let client = spans
        .iter()
        .find(|s| s.span.kind == SPAN_KIND_CLIENT)
        .expect("a CLIENT span")
        .clone();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert_eq!(client.parent_span_id(), server.span_id());
    assert_eq!(client.trace_id(), server.trace_id());
    (server, client)
}

#[tokio::test]
async fn chat_json_continues_the_clients_trace_and_the_upstream_gets_the_client_span() {
    let (receiver, upstream, proxy) = traced_proxy().await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let response = chat(
        &proxy,
        "trace-json",
        &[
            ("traceparent", &traceparent),
            ("tracestate", TRACESTATE),
            ("x-mock-answer", "chat-json"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer = body_string(response).await;
    let (server, call) = pair(&receiver, "trace-json").await;

    assert_eq!(server.trace_id(), CLIENT_TRACE);
    assert_eq!(server.parent_span_id(), CLIENT_SPAN);
    assert_eq!(server.span.name, "POST /v1/chat/completions");
    assert_eq!(server.int("http.response.status_code"), Some(200));
    assert_eq!(server.str("http.route"), Some("/v1/chat/completions"));
    assert_eq!(server.str("memoctopus.outcome"), Some("completed"));
    // The client and the request id are said once in a trace, by the client span.
    assert!(server.attribute("memoctopus.client").is_none());
    assert!(server.attribute("memoctopus.request_id").is_none());

    assert_eq!(call.span.name, "chat gpt-4o-mini-2024-07-18");
    assert_eq!(call.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(call.str("gen_ai.provider.name"), Some("openai"));
    assert_eq!(
        call.str("gen_ai.request.model"),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!(
        call.str("gen_ai.response.model"),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!(call.str("gen_ai.response.id"), Some("chatcmpl-u1"));
    assert_eq!(call.bool("gen_ai.request.stream"), Some(false));
    assert_eq!(call.int("gen_ai.usage.input_tokens"), Some(31));
    assert_eq!(call.int("gen_ai.usage.output_tokens"), Some(17));
    assert_eq!(call.int("gen_ai.usage.cache_read.input_tokens"), Some(8));
    assert_eq!(call.int("gen_ai.usage.reasoning.output_tokens"), Some(5));
    assert_eq!(call.str("server.address"), Some("127.0.0.1"));
    assert_eq!(
        call.int("server.port"),
        Some(i64::from(upstream.addr.port()))
    );
    assert_eq!(call.int("http.response.status_code"), Some(200));
    assert_eq!(call.str("memoctopus.client"), Some("anonymous"));
    assert_eq!(call.str("memoctopus.upstream"), Some("default"));
    // One attempt goes unsaid.
    assert_eq!(call.int("memoctopus.attempts"), None);
    assert_eq!(call.str("memoctopus.usage"), Some("reported"));
    assert!(call.attribute("error.type").is_none());
    assert!(call.double("gen_ai.response.time_to_first_chunk").is_none());

    // The upstream's parent is the CLIENT span; the client's tracestate goes on as it came.
    let seen = upstream.last_request();
    assert_eq!(
        seen.headers.get("traceparent").unwrap(),
        &format!("00-{CLIENT_TRACE}-{}-01", call.span_id())
    );
    assert_eq!(seen.headers.get("tracestate").unwrap(), TRACESTATE);

    // The resource, the scope, and the collector's own header.
    let resource = &server.resource;
    let text = |key: &str| match resource.get(key) {
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("{key}: {other:?}"),
    };
    assert_eq!(text("service.name"), "gateway-under-test");
    assert_eq!(text("deployment.environment.name"), "test");
    assert_eq!(text("team"), "ml platform");
    assert_eq!(
        server.scope_schema_url,
        "https://opentelemetry.io/schemas/1.41.0"
    );
    assert!(receiver
        .headers()
        .iter()
        .all(|h| h.get("authorization").unwrap() == format!("Bearer {COLLECTOR_TOKEN}").as_str()));

    // Neither key, nor prompt, nor answer in any byte exported.
    let raw = receiver.raw();
    for secret in [
        SERVER_KEY,
        "client-key-never-forwarded",
        PROMPT,
        "prompt_tokens",
        "Write \\\"usage\\\"",
        COLLECTOR_TOKEN,
    ] {
        assert!(
            memchr::memmem::find(&raw, secret.as_bytes()).is_none(),
            "{secret:?} was exported"
        );
    }
    assert!(!answer.is_empty());
    let logs = capture::logs().text();
    assert!(
        !logs.contains(COLLECTOR_TOKEN),
        "the collector's token was logged"
    );
}

#[tokio::test]
async fn a_stream_with_usage_has_its_time_to_first_chunk_and_tokens() {
    let (receiver, _upstream, proxy) = traced_proxy().await;
    let started = Instant::now();
    let response = chat(&proxy, "trace-sse", &[("x-mock-answer", "chat-sse")]).await;
    assert_eq!(response.status(), 200);
    let _ = body_string(response).await;
    let whole = started.elapsed();
    let (server, call) = pair(&receiver, "trace-sse").await;
    // Without a client traceparent the trace starts here.
    assert!(server.parent_span_id().is_empty());
    assert_eq!(call.span.name, "chat gpt-4o-2024-08-06");
    assert_eq!(call.bool("gen_ai.request.stream"), Some(true));
    assert_eq!(call.str("gen_ai.response.id"), Some("c"));
    assert_eq!(call.int("gen_ai.usage.input_tokens"), Some(12));
    assert_eq!(call.int("gen_ai.usage.output_tokens"), Some(34));
    assert_eq!(call.int("gen_ai.usage.cache_read.input_tokens"), Some(2));
    // The first event comes at once, the last after four more writes 50 ms apart.
    let first = call.double("gen_ai.response.time_to_first_chunk").unwrap();
    assert!(first > 0.0 && first < 0.15, "time to first chunk {first}");
    assert!(
        whole.as_secs_f64() > first + 0.15,
        "{whole:?} against {first}"
    );
    let span_seconds = (call.span.end_time_unix_nano - call.span.start_time_unix_nano) as f64 / 1e9;
    assert!(
        span_seconds >= 0.19,
        "the CLIENT span ends with the stream: {span_seconds}"
    );
}

#[tokio::test]
async fn a_transcription_is_a_transcription_span() {
    let (receiver, _upstream, proxy) = traced_proxy().await;
    let mut upload = transcription_request(
        &proxy.url("/v1/audio/transcriptions"),
        "b0undary",
        multipart(64 * 1024, "b0undary"),
    );
    upload
        .headers_mut()
        .insert("x-request-id", "trace-transcription".parse().unwrap());
    let response = client().request(upload).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = body_string(response).await;
    let (server, call) = pair(&receiver, "trace-transcription").await;
    assert_eq!(server.span.name, "POST /v1/audio/transcriptions");
    // The answer names no model: the span is named by its operation alone.
    assert_eq!(call.span.name, "transcription");
    assert_eq!(call.str("gen_ai.operation.name"), Some("transcription"));
    assert_eq!(call.int("gen_ai.usage.input_tokens"), Some(14));
    assert_eq!(call.int("gen_ai.usage.output_tokens"), Some(45));
    assert!(call.attribute("gen_ai.request.model").is_none());
}

#[tokio::test]
async fn an_upstream_429_is_an_error_of_its_status() {
    let (receiver, _upstream, proxy) = traced_proxy().await;
    let response = chat(&proxy, "trace-429", &[("x-mock-status", "429")]).await;
    assert_eq!(response.status(), 429);
    let _ = body_string(response).await;
    let (server, call) = pair(&receiver, "trace-429").await;
    assert_eq!(call.str("error.type"), Some("429"));
    assert_eq!(
        call.span.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR)
    );
    assert_eq!(call.int("http.response.status_code"), Some(429));
    assert_eq!(server.int("http.response.status_code"), Some(429));
    assert_eq!(server.str("error.type"), Some("429"));
    assert!(call.attribute("gen_ai.usage.input_tokens").is_none());
}

#[tokio::test]
async fn a_request_refused_before_the_upstream_is_a_server_span_alone_naming_its_client() {
    let (receiver, upstream, proxy) = traced_proxy_with(&[("PROXY_MAX_BODY_BYTES", "64")]).await;
    let response = chat(&proxy, "trace-too-large", &[]).await;
    assert_eq!(response.status(), 413);
    let _ = body_string(response).await;
    // An exchange's spans are exported together: a client span would be here.
    let spans = receiver.spans_of("trace-too-large", 1).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let server = &spans[0];
    assert_eq!(server.span.kind, SPAN_KIND_SERVER);
    assert_eq!(server.str("memoctopus.client"), Some("anonymous"));
    assert_eq!(server.str("memoctopus.request_id"), Some("trace-too-large"));
    assert_eq!(server.int("http.response.status_code"), Some(413));
    assert_eq!(server.str("error.type"), Some("413"));
    assert!(upstream.requests().is_empty());
}

/// An HTTP/2 upstream (h2c) whose first connection answers the first request's HEADERS with
/// GOAWAY(last-stream-id 0): the stream provably was not processed. Every later connection
/// answers the chat JSON.
async fn goaway_once_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use support::h2_frames::{frame, PREFACE};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let counted = answered.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut tcp, _)) = listener.accept().await {
            if std::mem::take(&mut first) {
                tokio::spawn(async move {
                    let mut preface = [0u8; 24];
                    tcp.read_exact(&mut preface).await.unwrap();
                    assert_eq!(&preface, PREFACE);
                    tcp.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
                    loop {
                        let mut head = [0u8; 9];
                        if tcp.read_exact(&mut head).await.is_err() {
                            return;
                        }
                        let len = usize::from(head[0]) << 16
                            | usize::from(head[1]) << 8
                            | usize::from(head[2]);
                        let mut payload = vec![0u8; len];
                        tcp.read_exact(&mut payload).await.unwrap();
                        match head[3] {
                            // SETTINGS (not an ACK): acknowledged.
                            0x4 if head[4] & 1 == 0 => {
                                tcp.write_all(&frame(0x4, 1, 0, &[])).await.unwrap();
                            }
                            // HEADERS: GOAWAY with last-stream-id 0, NO_ERROR.
                            0x1 => {
                                tcp.write_all(&frame(0x7, 0, 0, &[0; 8])).await.unwrap();
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                return;
                            }
                            _ => {}
                        }
                    }
                });
                continue;
            }
            let answered = counted.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    answered.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, hyper::Error>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(CHAT_JSON.as_bytes())))
                                .unwrap(),
                        )
                    }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
            });
        }
    });
    (addr, answered)
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::mock::CHAT_JSON;

#[tokio::test]
async fn a_request_retried_after_goaway_is_one_client_span_with_a_retry_event() {
    let receiver = OtlpReceiver::start().await;
    let (addr, answered) = goaway_once_upstream().await;
    let mut settings = traced(&receiver);
    settings.push(("PROXY_UPSTREAM_PROTOCOL", "http2".into()));
    let proxy = ProxyStart::at(&format!("http://{addr}/v1"))
        .settings(&vars(&settings))
        .start()
        .await;
    let response = chat(&proxy, "trace-goaway", &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_string(response).await, CHAT_JSON);
    assert_eq!(answered.load(Ordering::SeqCst), 1, "processed once");
    let (_, call) = pair(&receiver, "trace-goaway").await;
    let retries: Vec<_> = call
        .span
        .events
        .iter()
        .filter(|e| e.name == "memoctopus.retry")
        .collect();
    assert_eq!(retries.len(), 1, "{:#?}", call.span.events);
    assert_eq!(
        support::otlp::find(&retries[0].attributes, "memoctopus.reason"),
        Some(
            &opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("goaway".into())
        )
    );
    assert!(retries[0].time_unix_nano >= call.span.start_time_unix_nano);
    // One attempt goes unsaid.
    assert_eq!(call.int("memoctopus.attempts"), None);
    assert_eq!(call.str("gen_ai.response.model"), Some("gpt-4"));
}

#[tokio::test]
async fn an_unsampled_client_trace_is_not_exported_but_still_propagated() {
    let (receiver, upstream, proxy) = traced_proxy().await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    for (id, parent) in [
        ("trace-unsampled", Some(&traceparent)),
        ("trace-next", None),
    ] {
        let mut headers = vec![];
        if let Some(parent) = parent {
            headers.push(("traceparent", parent.as_str()));
        }
        let response = chat(&proxy, id, &headers).await;
        assert_eq!(response.status(), 200);
        let _ = body_string(response).await;
        if parent.is_some() {
            let sent = upstream.last_request();
            let sent = sent.headers.get("traceparent").unwrap().to_str().unwrap();
            assert!(sent.starts_with(&format!("00-{CLIENT_TRACE}-")), "{sent}");
            assert!(sent.ends_with("-00"), "{sent}");
            assert!(!sent.contains(CLIENT_SPAN), "{sent}");
        }
    }
    // The sampled request after it is exported; the unsampled one never is.
    receiver.spans_of("trace-next", 2).await;
    assert!(receiver
        .spans()
        .iter()
        .all(|s| s.str("memoctopus.request_id") != Some("trace-unsampled")));
}

#[tokio::test]
async fn without_an_endpoint_the_clients_traceparent_passes_untouched() {
    let upstream = MockUpstream::start().await;
    let proxy = spawn_proxy(&upstream, &[]).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let response = chat(&proxy, "untraced", &[("traceparent", &traceparent)]).await;
    assert_eq!(response.status(), 200);
    let _ = body_string(response).await;
    assert_eq!(
        upstream.last_request().headers.get("traceparent").unwrap(),
        traceparent.as_str()
    );
}

/// A collector that accepts connections and never answers.
async fn silent_collector() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_collector_that_never_answers_slows_nothing_and_its_spans_are_dropped_and_counted() {
    let (collector, _held) = silent_collector().await;
    let upstream = MockUpstream::start().await;
    let endpoint = format!("http://{collector}");
    let proxy = spawn_proxy(
        &upstream,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "1"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4"),
        ],
    )
    .await;
    let client = client();
    let url = proxy.url("/v1/chat/completions");
    const REQUESTS: usize = 100;
    let mut slowest = Duration::ZERO;
    for i in 0..REQUESTS {
        let started = Instant::now();
        let response = client
            .request(request(&url, &format!("stuck-{i}"), &[], chat_body()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let _ = body_string(response).await;
        slowest = slowest.max(started.elapsed());
    }
    // The export in flight waits up to 60 s for the collector; no request waited for it.
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request {slowest:?}"
    );
    // Two spans a request; at most one batch in flight and a full queue are not dropped.
    let dropped = metric(&proxy, "memoctopus_trace_spans_dropped_total").await;
    let spans = (2 * REQUESTS) as f64;
    assert!(
        dropped >= spans - 4.0 - 8.0 && dropped < spans,
        "{dropped} of {spans} spans dropped"
    );
    assert_eq!(
        metric(&proxy, "memoctopus_trace_spans_exported_total").await,
        0.0
    );
}

#[test]
fn a_bad_trace_setting_stops_start_up_naming_it_and_headers_are_never_shown() {
    let base = [
        ("OPENAI_API_KEY", SERVER_KEY),
        ("HOST", "127.0.0.1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
    ];
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
    ] {
        let mut vars = base.to_vec();
        vars.push((name, value));
        let (status, _, stderr) = check_config(&vars);
        assert_eq!(status, Some(64), "{name}={value}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
    let mut vars = base.to_vec();
    let headers = format!("authorization=Bearer%20{COLLECTOR_TOKEN},x-tenant=t1");
    vars.push(("OTEL_EXPORTER_OTLP_HEADERS", &headers));
    let (status, stdout, stderr) = check_config(&vars);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        stdout.contains("authorization, x-tenant (values hidden)"),
        "{stdout}"
    );
    assert!(!stdout.contains(COLLECTOR_TOKEN) && !stderr.contains(COLLECTOR_TOKEN));
    // OTEL_SDK_DISABLED turns them off whatever the endpoint.
    vars.push(("OTEL_SDK_DISABLED", "true"));
    let (_, stdout, _) = check_config(&vars);
    assert!(stdout.contains("traces=(off"), "{stdout}");
}

#[tokio::test]
async fn the_drain_exports_the_spans_still_queued() {
    // A batch would wait a minute: only the drain's flush sends it in time.
    let (receiver, _upstream, mut proxy) =
        traced_proxy_with(&[("OTEL_BSP_SCHEDULE_DELAY", "60000")]).await;
    let response = chat(&proxy, "trace-drained", &[]).await;
    assert_eq!(response.status(), 200);
    let _ = body_string(response).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.spans().is_empty(), "exported before the drain");
    proxy.shutdown();
    tokio::time::timeout(Duration::from_secs(10), &mut proxy.handle)
        .await
        .expect("the drain ended")
        .unwrap()
        .unwrap();
    // Exported by the time the drain returned, not a moment later.
    assert_eq!(receiver.spans().len(), 2, "{:#?}", receiver.spans());
    pair(&receiver, "trace-drained").await;
}
