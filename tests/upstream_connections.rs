//! Upstream connections that behave like OpenAI's edge: a stream limit per HTTP/2 connection,
//! GOAWAY every N requests, idle connections dropped. No request is lost or queued behind a
//! full connection, and nothing the upstream may have processed is sent twice.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use support::mock::{MockOptions, CHAT_JSON};
use support::tls::Alpn;
use support::*;
use tokio::time::Instant;

const PROTOCOLS: [&str; 3] = ["auto", "http1", "http2"];

/// A TLS mock that behaves as `options` say, offering h2 and http/1.1, and a proxy in front of
/// it speaking `protocol`. The load tests log dependencies from info up.
async fn edge(options: MockOptions, protocol: &str) -> (MockUpstream, TestProxy) {
    capture::logs_with_quiet_dependencies();
    let (mock, ca) = tls_mock(Alpn::Both, options).await;
    let proxy = ProxyStart::tls(&mock, &ca, protocol).start().await;
    (mock, proxy)
}

async fn retries(proxy: &TestProxy) -> f64 {
    let mut total = 0.0;
    for reason in ["stale_connection", "refused_stream", "goaway", "connect"] {
        total += metric(
            proxy,
            &format!("memoctopus_upstream_retries_total{{reason=\"{reason}\"}}"),
        )
        .await;
    }
    total
}

/// 600 streams of 4 events 400 ms apart against an upstream that allows 100 streams per
/// connection: every stream has its first event before the first stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_slow_streams_all_start_before_the_first_ends() {
    for protocol in PROTOCOLS {
        let (mock, proxy) = edge(
            MockOptions {
                max_streams: Some(100),
                ..MockOptions::default()
            },
            protocol,
        )
        .await;
        let client = client();
        let url = proxy.url("/v1/chat/completions");
        let started = Instant::now();
        let mut streams = tokio::task::JoinSet::new();
        for i in 0..600 {
            let client = client.clone();
            let url = url.clone();
            streams.spawn(async move {
                // Client connections open in steps of 100, 20 ms apart.
                tokio::time::sleep(Duration::from_millis(20 * (i / 100) as u64)).await;
                let response = client.request(stream_request(&url, 4, 400)).await.unwrap();
                assert_eq!(response.status(), 200);
                let mut body = response.into_body();
                let mut first = None;
                let mut bytes = 0;
                while let Some(frame) = body.frame().await {
                    let data = frame.unwrap().into_data().unwrap();
                    first.get_or_insert_with(Instant::now);
                    bytes += data.len();
                }
                (first.unwrap(), Instant::now(), bytes)
            });
        }
        let mut firsts = Vec::new();
        let mut ends = Vec::new();
        while let Some(result) = streams.join_next().await {
            let (first, end, bytes) = result.unwrap();
            assert_eq!(bytes, mock::expected_chat_sse(4).len());
            firsts.push(first);
            ends.push(end);
        }
        assert_eq!(firsts.len(), 600);
        let last_start = *firsts.iter().max().unwrap();
        let first_end = *ends.iter().min().unwrap();
        assert!(
            last_start < first_end,
            "{protocol}: the last stream started {:?} after the start, the first ended at {:?}",
            last_start - started,
            first_end - started
        );
        let log = mock.log.lock().unwrap();
        assert_eq!(log.most_active, 600, "{protocol}");
        if protocol != "http1" {
            // At most 100 streams on each: at least six connections, and not hundreds.
            assert!(
                (6..=12).contains(&log.connections_opened),
                "{protocol}: {} connections",
                log.connections_opened
            );
        }
    }
}

/// The upstream shuts each connection down after 50 requests, as nginx's
/// `keepalive_requests` does. Under load, no client sees an error; requests caught on a
/// closing connection are retried, and `/metrics` counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_every_fifty_requests_loses_no_request() {
    for protocol in PROTOCOLS {
        let (mock, proxy) = edge(
            MockOptions {
                goaway_after: Some(50),
                ..MockOptions::default()
            },
            protocol,
        )
        .await;
        let client = client();
        let url = Arc::new(proxy.url("/v1/chat/completions"));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let client = client.clone();
            let url = url.clone();
            workers.spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..25 {
                    let response = client.request(chat_request(&url, "{}")).await.unwrap();
                    let status = response.status();
                    let body = body_string(response).await;
                    statuses.push((status, body));
                }
                statuses
            });
        }
        let mut answered = 0;
        while let Some(result) = workers.join_next().await {
            for (status, body) in result.unwrap() {
                assert_eq!(status, 200, "{protocol}: {body}");
                assert_eq!(body, CHAT_JSON);
                answered += 1;
            }
        }
        assert_eq!(answered, 800);
        let seen = mock.requests().len();
        assert_eq!(seen, 800, "{protocol}: the upstream processed {seen}");
        // 50 requests each, plus at most the 32 in flight when GOAWAY went out.
        let opened = mock.connections_opened();
        assert!(
            opened >= 800 / (50 + 32),
            "{protocol}: {opened} connections"
        );
        if protocol != "http1" {
            assert!(
                retries(&proxy).await > 0.0,
                "{protocol}: no retry was counted"
            );
        }
    }
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_dropped_while_idle_gets_no_502() {
    for protocol in PROTOCOLS {
        let (mock, proxy) = edge(
            MockOptions {
                idle_close: Some(Duration::from_millis(200)),
                ..MockOptions::default()
            },
            protocol,
        )
        .await;
        for round in 0..3 {
            let response = client()
                .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{protocol}, round {round}");
            assert_eq!(body_string(response).await, CHAT_JSON);
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                mock.closed_connections().len(),
                round + 1,
                "{protocol}: the mock did not drop the idle connection"
            );
        }
        assert_eq!(mock.requests().len(), 3);
    }
}

#[tokio::test]
async fn an_upstream_500_is_not_retried() {
    for protocol in PROTOCOLS {
        let (mock, proxy) = edge(MockOptions::default(), protocol).await;
        let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
        request
            .headers_mut()
            .insert("x-mock-status", "500".parse().unwrap());
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), 500, "{protocol}");
        let _ = body_string(response).await;
        assert_eq!(mock.requests().len(), 1, "{protocol}");
        assert_eq!(retries(&proxy).await, 0.0);
    }
}

#[tokio::test]
async fn a_reset_after_the_head_is_not_retried() {
    for protocol in PROTOCOLS {
        let (mock, proxy) = edge(MockOptions::default(), protocol).await;
        let mut request = chat_request(&proxy.url("/v1/chat/completions"), "{}");
        request
            .headers_mut()
            .insert("x-mock-reset-after-head", "1".parse().unwrap());
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{protocol}");
        let (got, clean) = read_all(response).await;
        assert!(!clean, "{protocol}: a broken answer must not end cleanly");
        assert_eq!(got, b"data: {\"partial\":true}\n\n");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(mock.requests().len(), 1, "{protocol}");
        assert_eq!(retries(&proxy).await, 0.0);
    }
}

/// A connect failure (nothing listening) is tried once more, then answered 502.
#[tokio::test]
async fn a_refused_connect_is_tried_twice_then_answered() {
    for protocol in PROTOCOLS {
        capture::logs_with_quiet_dependencies();
        let ca = support::tls::TestCa::new("closed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mock = MockUpstream::start().await;
        let base = format!("https://127.0.0.1:{port}/v1");
        let ca_path = ca.ca_pem_path();
        let proxy = spawn_proxy(
            &mock,
            &[
                ("OPENAI_BASE_URL", &base),
                ("PROXY_UPSTREAM_CA", &ca_path),
                ("PROXY_UPSTREAM_PROTOCOL", protocol),
            ],
        )
        .await;
        let response = client()
            .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
            .await
            .unwrap();
        assert_eq!(response.status(), 502, "{protocol}");
        let (code, _) = error_fields(&body_string(response).await);
        assert_eq!(code, "upstream_unreachable");
        assert_eq!(
            metric(
                &proxy,
                "memoctopus_upstream_retries_total{reason=\"connect\"}"
            )
            .await,
            1.0,
            "{protocol}"
        );
    }
}

/// An HTTP/2 upstream, written on the h2 crate directly because hyper's server cannot refuse a
/// stream: it answers every other stream with `RST_STREAM(REFUSED_STREAM)`, which
/// proves they were not processed, and the stream after each refused one with the chat
/// JSON: every request is refused once, and its one retry is answered. Returns its port
/// and how many requests it processed.
async fn refusing_h2_upstream(
    ca: &support::tls::TestCa,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(Alpn::Http2Only));
    let processed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = processed.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, processed, seen) = (acceptor.clone(), counted.clone(), seen.clone());
            tokio::spawn(async move {
                let tls = acceptor.accept(tcp).await.unwrap();
                let mut connection = h2::server::handshake(tls).await.unwrap();
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    if seen.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let mut body = request.into_body();
                    let mut received = 0;
                    while let Some(Ok(data)) = body.data().await {
                        received += data.len();
                        let _ = body.flow_control().release_capacity(data.len());
                    }
                    // Counted only if the whole body arrived: a replay that lost the frames
                    // sent before the refusal would not count.
                    if received == REFUSED_TEST_BODY {
                        processed.fetch_add(1, Ordering::SeqCst);
                    }
                    let head = http::Response::builder()
                        .header("content-type", "application/json")
                        .body(())
                        .unwrap();
                    let mut send = respond.send_response(head, false).unwrap();
                    let _ = send.send_data(bytes::Bytes::from_static(CHAT_JSON.as_bytes()), true);
                }
            });
        }
    });
    (port, processed)
}

const REFUSED_TEST_BODY: usize = 40_000;

#[tokio::test]
async fn a_refused_stream_is_sent_again_with_its_body() {
    capture::logs_with_quiet_dependencies();
    let ca = support::tls::TestCa::new("refusing");
    let (port, processed) = refusing_h2_upstream(&ca).await;
    let mock = MockUpstream::start().await;
    let base = format!("https://localhost:{port}/v1");
    let ca_path = ca.ca_pem_path();
    let proxy = spawn_proxy(
        &mock,
        &[
            ("OPENAI_BASE_URL", &base),
            ("PROXY_UPSTREAM_CA", &ca_path),
            ("PROXY_UPSTREAM_PROTOCOL", "auto"),
        ],
    )
    .await;
    // A body of several frames, so that what was sent before the refusal must be replayed.
    let body = "x".repeat(REFUSED_TEST_BODY);
    for _ in 0..3 {
        let response = client()
            .request(chat_request(&proxy.url("/v1/chat/completions"), &body))
            .await
            .unwrap();
        let status = response.status();
        let text = body_string(response).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(text, CHAT_JSON);
    }
    assert_eq!(processed.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(
        metric(
            &proxy,
            "memoctopus_upstream_retries_total{reason=\"refused_stream\"}"
        )
        .await,
        3.0
    );
}
