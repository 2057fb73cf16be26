//! The path every user takes: HTTPS to the upstream, HTTP/2 or HTTP/1.1 by ALPN. Each
//! `PROXY_UPSTREAM_PROTOCOL` is run against a TLS mock that offers both, as OpenAI's edge does.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Version;
use http_body_util::BodyExt;
use support::mock::{MockOptions, CHAT_JSON, TRANSCRIPTION_JSON};
use support::tls::Alpn;
use support::*;
use tokio::time::Instant;

/// Each setting, and what the mock must see on the wire: HTTP version and ALPN.
const PROTOCOLS: [(&str, Version, &str); 3] = [
    ("auto", Version::HTTP_2, "h2"),
    ("http1", Version::HTTP_11, "http/1.1"),
    ("http2", Version::HTTP_2, "h2"),
];

#[tokio::test]
async fn chat_json_reaches_the_tls_upstream_with_sni_and_the_chosen_protocol() {
    for (protocol, version, alpn) in PROTOCOLS {
        let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
        let proxy = ProxyStart::tls(&mock, &ca, protocol).start().await;
        for _ in 0..3 {
            let response = client()
                .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{protocol}");
            assert_eq!(response.headers()["x-request-id"], "req_mock_upstream_1");
            assert_eq!(body_string(response).await, CHAT_JSON, "{protocol}");
        }
        let seen = mock.last_request();
        assert_eq!(seen.version, version, "{protocol}");
        let origin = format!("https://localhost:{}", mock.addr.port());
        let expected_uri = if version == Version::HTTP_2 {
            format!("{origin}/v1/chat/completions")
        } else {
            "/v1/chat/completions".to_owned()
        };
        assert_eq!(seen.uri, expected_uri, "{protocol}");
        assert_eq!(
            seen.headers["authorization"],
            format!("Bearer {SERVER_KEY}"),
            "{protocol}"
        );
        let log = mock.log.lock().unwrap().clone_connections();
        assert!(
            log.sni
                .iter()
                .all(|sni| sni.as_deref() == Some("localhost")),
            "{protocol}: SNI {:?}",
            log.sni
        );
        assert!(
            log.alpn.iter().all(|p| p.as_deref() == Some(alpn)),
            "{protocol}: ALPN {:?}",
            log.alpn
        );
        // Three requests in a row reuse one connection.
        assert_eq!(log.connections_opened, 1, "{protocol}");
        let label = if version == Version::HTTP_2 {
            "http2"
        } else {
            "http1"
        };
        let series =
            format!("memoctopus_upstream_connections_opened_total{{protocol=\"{label}\"}}");
        assert_eq!(metric(&proxy, &series).await, 1.0, "{protocol}");
        let open = format!("memoctopus_upstream_connections_open{{protocol=\"{label}\"}}");
        assert_eq!(metric(&proxy, &open).await, 1.0, "{protocol}");
    }
}

#[tokio::test]
async fn sse_events_arrive_over_tls_before_the_stream_ends() {
    for (protocol, _, _) in PROTOCOLS {
        let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
        let proxy = ProxyStart::tls(&mock, &ca, protocol).start().await;
        let started = Instant::now();
        let response = client()
            .request(stream_request(&proxy.url("/v1/chat/completions"), 5, 150))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.into_body();
        let mut got = Vec::new();
        let mut first_at = None;
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            capture::received(&data);
            first_at.get_or_insert_with(|| started.elapsed());
            got.extend_from_slice(&data);
        }
        let total = started.elapsed();
        let first_at = first_at.unwrap();
        // The last event is sent 5 x 150 ms after the first.
        assert!(total >= Duration::from_millis(700), "{protocol}: {total:?}");
        assert!(
            first_at < Duration::from_millis(400),
            "{protocol}: first event after {first_at:?}"
        );
        assert_eq!(
            String::from_utf8(got).unwrap(),
            mock::expected_chat_sse(5),
            "{protocol}"
        );
    }
}

#[tokio::test]
async fn a_25_mib_transcription_arrives_byte_identical_over_tls() {
    let boundary = "------------------------d74496d66958873e";
    let body = Bytes::from(multipart(25 << 20, boundary));
    for (protocol, version, _) in PROTOCOLS {
        let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
        let proxy = ProxyStart::tls(&mock, &ca, protocol).start().await;
        let request = transcription_request(
            &proxy.url("/v1/audio/transcriptions"),
            boundary,
            body.clone(),
        );
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{protocol}");
        assert_eq!(body_string(response).await, TRANSCRIPTION_JSON);
        let seen = mock.last_request();
        assert_eq!(seen.version, version);
        let received = seen.body.unwrap();
        assert_eq!(received.len(), body.len(), "{protocol}");
        assert!(
            received == body,
            "{protocol}: the upload was altered on the way"
        );
    }
}

#[tokio::test]
async fn streamed_transcription_arrives_as_events_over_tls() {
    for (protocol, _, _) in PROTOCOLS {
        let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
        let proxy = ProxyStart::tls(&mock, &ca, protocol).start().await;
        let boundary = "b0undary";
        let url = proxy.url("/v1/audio/transcriptions");
        let mut request = transcription_request(&url, boundary, multipart(10_000, boundary));
        request.headers_mut().insert("x-mock-events", 3.into());
        request
            .headers_mut()
            .insert("x-mock-interval-ms", 20.into());
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = body_string(response).await;
        assert_eq!(
            text,
            "data: {\"type\":\"transcript.text.delta\",\"delta\":\" word0\"}\n\n\
             data: {\"type\":\"transcript.text.delta\",\"delta\":\" word1\"}\n\n\
             data: {\"type\":\"transcript.text.delta\",\"delta\":\" word2\"}\n\n\
             data: [DONE]\n\n",
            "{protocol}"
        );
    }
}

#[tokio::test]
async fn an_http1_only_upstream_works_under_auto_and_http2_names_the_problem() {
    let (mock, ca) = tls_mock(Alpn::Http1Only, MockOptions::default()).await;
    let proxy = ProxyStart::tls(&mock, &ca, "auto").start().await;
    for _ in 0..2 {
        let response = client()
            .request(stream_request(&proxy.url("/v1/chat/completions"), 2, 0))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(body_string(response).await, mock::expected_chat_sse(2));
    }
    assert_eq!(mock.last_request().version, Version::HTTP_11);
    assert_eq!(mock.connections_opened(), 1);

    let forced = ProxyStart::tls(&mock, &ca, "http2").start().await;
    let response = client()
        .request(chat_request(&forced.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let (code, message) = error_fields(&body_string(response).await);
    assert_eq!(code, "upstream_unreachable");
    assert!(message.contains("HTTP/2"), "{message}");
}

#[tokio::test]
async fn http1_offers_only_http11_even_to_an_upstream_that_prefers_h2() {
    let (mock, ca) = tls_mock(Alpn::Http2Only, MockOptions::default()).await;
    let proxy = ProxyStart::tls(&mock, &ca, "http1").start().await;
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    // rustls refuses a handshake whose ALPN lists share nothing: the upstream never sees h2
    // from an http1 proxy, and the client hears why.
    assert_eq!(response.status(), 502);
    let _ = body_string(response).await;
    assert!(mock.requests().is_empty());
    assert!(mock.log.lock().unwrap().alpn.is_empty());
}

/// A second connection resumes the first one's TLS session instead of a full handshake.
#[tokio::test]
async fn new_upstream_connections_resume_the_tls_session() {
    let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
    let proxy = ProxyStart::tls(&mock, &ca, "http1").start().await;
    // One request opens a connection; then two at once over HTTP/1.1 need a second one.
    let url = proxy.url("/v1/chat/completions");
    let first = client().request(stream_request(&url, 2, 0)).await.unwrap();
    assert_eq!(body_string(first).await, mock::expected_chat_sse(2));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (a, b) = tokio::join!(
        client().request(stream_request(&url, 2, 100)),
        client().request(stream_request(&url, 2, 100)),
    );
    assert_eq!(body_string(a.unwrap()).await, mock::expected_chat_sse(2));
    assert_eq!(body_string(b.unwrap()).await, mock::expected_chat_sse(2));
    let log = mock.log.lock().unwrap().clone_connections();
    assert_eq!(log.resumed.len(), 2, "{:?}", log.resumed);
    assert!(
        !log.resumed[0],
        "the first connection had nothing to resume"
    );
    assert!(log.resumed[1], "the second connection did a full handshake");
}

/// Uploads and chat requests at once share one HTTP/2 connection, whose writes the proxy
/// gathers into batches: each request's body must still arrive whole and unmixed, and the
/// small requests must not wait for the uploads.
#[tokio::test]
async fn uploads_and_chat_requests_multiplexed_on_one_http2_connection_arrive_intact() {
    let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
    let proxy = ProxyStart::tls(&mock, &ca, "auto").start().await;
    let boundary = "------------------------5d2b5c7a9e0f1a3c";
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..4u8 {
        // Each upload's bytes differ, so a frame sent on the wrong stream shows.
        let mut body = multipart(3 << 20, boundary);
        let at = body.len() / 2;
        body[at..at + 64].fill(b'a' + i);
        let body = Bytes::from(body);
        let url = proxy.url("/v1/audio/transcriptions");
        tasks.spawn(async move {
            let request = transcription_request(&url, boundary, body.clone());
            let response = client().request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(body_string(response).await, TRANSCRIPTION_JSON);
            (body, Duration::ZERO)
        });
    }
    for i in 0..16 {
        // Bodies of 6 KB, and small ones.
        let padding = if i % 2 == 0 { 6000 } else { 10 };
        let body = Bytes::from(format!(
            r#"{{"model":"gpt-4","messages":[{{"role":"user","content":"{}{i}"}}]}}"#,
            "x".repeat(padding)
        ));
        let url = proxy.url("/v1/chat/completions");
        tasks.spawn(async move {
            let started = Instant::now();
            let request = chat_request(&url, std::str::from_utf8(&body).unwrap());
            let response = client().request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(body_string(response).await, CHAT_JSON);
            (body, started.elapsed())
        });
    }
    let mut sent = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (body, took) = done.unwrap();
        assert!(
            took < Duration::from_secs(5),
            "a chat request took {took:?}"
        );
        sent.push(body);
    }
    let mut received: Vec<Bytes> = mock
        .requests()
        .into_iter()
        .map(|seen| {
            assert_eq!(seen.version, Version::HTTP_2);
            seen.body.expect("a body did not arrive whole")
        })
        .collect();
    sent.sort();
    received.sort();
    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "a body was altered or mixed with another");
    assert_eq!(mock.connections_opened(), 1, "all of it on one connection");
}
