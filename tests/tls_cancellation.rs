//! When the client goes away, the exchange with a TLS upstream is dropped at once, in every
//! phase and with every `PROXY_UPSTREAM_PROTOCOL`: over HTTP/2 the stream is reset, over
//! HTTP/1.1 the connection is closed. No tokens are generated for nobody.

mod support;

use std::time::Duration;

use support::mock::MockOptions;
use support::tls::Alpn;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, Instant};

const PROTOCOLS: [&str; 3] = ["auto", "http1", "http2"];

async fn setup(protocol: &str) -> (MockUpstream, TestProxy) {
    let (mock, ca) = tls_mock(Alpn::Both, MockOptions::default()).await;
    let proxy = spawn_tls_proxy(&mock, &ca, protocol, &[]).await;
    (mock, proxy)
}

#[tokio::test]
async fn leaving_while_waiting_for_the_first_byte_drops_the_tls_upstream() {
    for protocol in PROTOCOLS {
        let (mock, proxy) = setup(protocol).await;
        let stream = send_chat(&proxy, "x-mock-head-delay-ms: 3000\r\n").await;
        while mock.requests().is_empty() {
            sleep(Duration::from_millis(5)).await;
        }
        let aborted = Instant::now();
        drop(stream);
        assert_upstream_dropped(&mock, aborted, protocol).await;
    }
}

#[tokio::test]
async fn leaving_mid_stream_drops_the_tls_upstream_stream() {
    for protocol in PROTOCOLS {
        let (mock, proxy) = setup(protocol).await;
        let mut stream =
            send_chat(&proxy, "x-mock-events: 100\r\nx-mock-interval-ms: 50\r\n").await;
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("tok1") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        let aborted = Instant::now();
        drop(stream);
        assert_upstream_dropped(&mock, aborted, protocol).await;
        assert_eq!(mock.log.lock().unwrap().streams_completed, 0);
        assert_eq!(mock.cancelled_streams().len(), 1, "{protocol}");
    }
}

#[tokio::test]
async fn leaving_during_the_upload_aborts_the_tls_upstream_request() {
    for protocol in PROTOCOLS {
        let (mock, proxy) = setup(protocol).await;
        let mut stream = raw_connect(proxy.addr).await;
        stream
            .write_all(chat_head("", 1_000_000).as_bytes())
            .await
            .unwrap();
        stream.write_all(&vec![b'a'; 100_000]).await.unwrap();
        while mock.connections_opened() == 0 {
            sleep(Duration::from_millis(5)).await;
        }
        sleep(Duration::from_millis(100)).await;
        let aborted = Instant::now();
        drop(stream);
        assert_upstream_dropped(&mock, aborted, protocol).await;
        // Nothing was half-sent as if it were complete.
        assert!(
            mock.requests().iter().all(|s| s.body.is_none()),
            "{protocol}"
        );
    }
}

#[tokio::test]
async fn leaving_while_a_plain_answer_is_read_drops_the_tls_upstream() {
    for protocol in PROTOCOLS {
        let (mock, proxy) = setup(protocol).await;
        let mut stream = send_chat(&proxy, "x-mock-chunks: 5\r\nx-mock-interval-ms: 300\r\n").await;
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let aborted = Instant::now();
        drop(stream);
        assert_upstream_dropped(&mock, aborted, protocol).await;
    }
}
