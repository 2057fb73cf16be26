//! Server-Sent Events: each event reaches the client as the upstream sends it.

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use support::mock::expected_chat_sse;
use support::*;
use tokio::time::Instant;

const STREAM_BODY: &str =
    r#"{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"Hello!"}]}"#;

#[tokio::test]
async fn sse_events_arrive_before_the_stream_ends_and_byte_identical() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let request = stream_request(&proxy.url("/v1/chat/completions"), 10, 100);

    let sent = Instant::now();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");

    let mut body = response.into_body();
    let mut received = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received.extend_from_slice(&data);
            arrivals.push(sent.elapsed());
        }
    }
    // The mock sends the last of 11 frames (10 events and [DONE]) 1000 ms after the first.
    assert!(
        arrivals[0] < Duration::from_millis(500),
        "first event after {:?}",
        arrivals[0]
    );
    assert!(
        arrivals.len() >= 10,
        "events were merged: {} frames",
        arrivals.len()
    );
    assert!(*arrivals.last().unwrap() >= Duration::from_millis(900));
    assert_eq!(String::from_utf8(received).unwrap(), expected_chat_sse(10));
    assert_eq!(mock.log.lock().unwrap().streams_completed, 1);
}

#[tokio::test]
async fn each_event_is_forwarded_within_a_few_milliseconds() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let request = stream_request(&proxy.url("/v1/chat/completions"), 5, 200);
    let response = client().request(request).await.unwrap();
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if frame.unwrap().is_data() {
            arrivals.push(Instant::now());
        }
    }
    // Frames are 200 ms apart at the mock; a buffering proxy would bunch them together.
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap > Duration::from_millis(150),
            "events bunched: gap {gap:?}"
        );
    }
}

#[tokio::test]
async fn streamed_transcription_comes_back_as_sse() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let boundary = "----memoctopus";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\nID3fakeaudio\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o-mini-transcribe\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"stream\"\r\n\r\ntrue\r\n--{boundary}--\r\n"
    );
    let url = proxy.url("/v1/audio/transcriptions");
    let mut request = transcription_request(&url, boundary, form.clone());
    request.headers_mut().insert("x-mock-events", 3.into());
    request
        .headers_mut()
        .insert("x-mock-interval-ms", 20.into());
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = body_string(response).await;
    assert!(
        body.starts_with("data: {\"type\":\"transcript.text.delta\",\"delta\":\" word0\"}\n\n"),
        "{body}"
    );
    assert!(body.ends_with("data: [DONE]\n\n"));
    let seen = mock.last_request();
    assert_eq!(seen.uri, "/v1/audio/transcriptions");
    assert_eq!(
        seen.headers["content-type"],
        format!("multipart/form-data; boundary={boundary}")
    );
    assert_eq!(seen.body.unwrap(), form.as_bytes());
}

#[tokio::test]
async fn sse_streams_through_h2c_too() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    let request = stream_request(&proxy.url("/v1/chat/completions"), 4, 10);
    let response = h2c_client().request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(body_string(response).await, expected_chat_sse(4));
}

#[tokio::test]
async fn upstream_connections_are_reused_after_streams() {
    let mock = MockUpstream::start().await;
    let proxy = spawn_proxy(&mock, &[]).await;
    for _ in 0..4 {
        let mut request = chat_request(&proxy.url("/v1/chat/completions"), STREAM_BODY);
        request
            .headers_mut()
            .insert("x-mock-events", "3".parse().unwrap());
        let response = client().request(request).await.unwrap();
        assert_eq!(body_string(response).await, expected_chat_sse(3));
    }
    assert_eq!(mock.log.lock().unwrap().connections_opened, 1);
}
