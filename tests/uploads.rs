//! Multipart uploads stream through untouched, and the body limit holds.

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::mock::TRANSCRIPTION_JSON;
use support::*;

/// A body sent in fixed-size chunks without a Content-Length, so it goes chunked.
struct Chunked {
    data: Bytes,
    chunk: usize,
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.chunk.min(self.data.len());
        let piece = self.data.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }
}

#[tokio::test]
async fn a_25_mib_transcription_upload_arrives_byte_identical() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let boundary = "------------------------d74496d66958873e";
    let body = multipart(25 << 20, boundary);
    let request = transcription_request(
        &proxy.url("/v1/audio/transcriptions"),
        boundary,
        body.clone(),
    );
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(body_string(response).await, TRANSCRIPTION_JSON);
    let seen = mock.last_request();
    assert_eq!(
        seen.headers["content-type"],
        format!("multipart/form-data; boundary={boundary}")
    );
    assert_eq!(seen.headers["content-length"], body.len().to_string());
    let received = seen.body.unwrap();
    assert_eq!(received.len(), body.len());
    assert!(received == body, "the upload was altered on the way");
}

#[tokio::test]
async fn a_chunked_upload_arrives_byte_identical() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let body = Bytes::from(multipart(3 << 20, "b"));
    let client: Client<_, Chunked> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(proxy.url("/v1/audio/transcriptions"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(Chunked {
            data: body.clone(),
            chunk: 64 * 1024,
        })
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.last_request().body.unwrap(), body);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_gets_413_without_contacting_the_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_MAX_BODY_BYTES", "1000")]).await;
    let request = Request::post(proxy.url("/v1/audio/transcriptions"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(Full::from(vec![b'x'; 1001]))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 413);
    let (code, message) = error_fields(&body_string(response).await);
    assert_eq!(code, "request_too_large");
    assert!(message.contains("1000"), "{message}");
    assert_eq!(mock.log.lock().unwrap().connections_opened, 0);
}

#[tokio::test]
async fn a_chunked_body_crossing_the_limit_is_stopped_with_413() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[("PROXY_MAX_BODY_BYTES", "100000")]).await;
    let client: Client<_, Chunked> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(proxy.url("/v1/audio/transcriptions"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(Chunked {
            data: Bytes::from(vec![b'x'; 300_000]),
            chunk: 10_000,
        })
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 413);
    let (code, _) = error_fields(&body_string(response).await);
    assert_eq!(code, "request_too_large");
    // The upstream never received a complete body.
    for seen in mock.requests() {
        assert!(
            seen.body.is_none(),
            "the upstream got a whole body of {} bytes",
            seen.body.unwrap().len()
        );
    }
    // And the proxy keeps serving.
    let ok = client_ok(&proxy).await;
    assert_eq!(ok, 200);
}

async fn client_ok(proxy: &TestProxy) -> u16 {
    let response = client()
        .request(chat_request(&proxy.url("/v1/chat/completions"), "{}"))
        .await
        .unwrap();
    response.status().as_u16()
}
