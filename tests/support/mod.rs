//! Test support: the proxy on 127.0.0.1:0 in front of an in-process hyper mock upstream that
//! records what it received, and a few client helpers.
#![allow(dead_code)]

pub mod binary;
pub mod capture;
pub mod connect_proxy;
pub mod faults;
pub mod fleet;
pub mod goaway_upstream;
pub mod h2_frames;
pub mod mock;
pub mod otlp;
pub mod redis;
pub mod tls;
pub mod usage_answers;
pub mod ws_mock;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use memoctopus::{Config, DrainReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use binary::{check_config, check_config_in, run_in, run_once, scratch_dir, Binary};
pub use mock::MockUpstream;

pub const SERVER_KEY: &str = "sk-server-secret-0123456789";

/// A running proxy. Dropping it leaves the server running until the test's runtime ends.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// The admin listener's address, when it was started with one.
    pub admin: Option<SocketAddr>,
    /// A client key the proxy was started with, which `/metrics` on its port then needs.
    pub metrics_key: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<std::io::Result<DrainReport>>,
}

impl TestProxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A proxy started some other way (the real binary), reached at `addr`.
    pub fn external(addr: SocketAddr) -> TestProxy {
        TestProxy {
            addr,
            admin: None,
            metrics_key: None,
            shutdown: None,
            handle: tokio::spawn(async {
                Ok(DrainReport {
                    finished: 0,
                    cut: 0,
                })
            }),
        }
    }

    /// Sends the shutdown signal, as SIGTERM would.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts the proxy in front of `upstream` with extra settings: what most tests need.
pub async fn spawn_proxy(upstream: &MockUpstream, extra: &[(&str, &str)]) -> TestProxy {
    ProxyStart::before(upstream).settings(extra).start().await
}

/// How a test starts the proxy in-process: in front of a mock or any base URL (or from a
/// whole `Config`), with settings, an admin listener, or on a listener the test bound itself.
pub struct ProxyStart {
    config: Settings,
    listener: Option<tokio::net::TcpListener>,
    admin: bool,
}

/// What the proxy is configured from: settings still to add to, or a whole `Config`.
enum Settings {
    Vars(Vec<(String, String)>),
    Whole(Box<Config>),
}

impl ProxyStart {
    /// In front of whatever serves `base_url`, with the server's key, on `127.0.0.1:0`.
    pub fn at(base_url: &str) -> ProxyStart {
        ProxyStart::listening(&[
            ("OPENAI_API_KEY", SERVER_KEY),
            ("OPENAI_BASE_URL", base_url),
        ])
    }

    /// These settings, on `127.0.0.1:0`.
    fn listening(vars: &[(&str, &str)]) -> ProxyStart {
        let port = [("HOST", "127.0.0.1"), ("PORT", "0")];
        ProxyStart {
            config: Settings::Vars(
                vars.iter()
                    .chain(&port)
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            listener: None,
            admin: false,
        }
    }

    /// In front of the upstreams `PROXY_UPSTREAMS_FILE` names, on `127.0.0.1:0`.
    pub fn upstreams_file(path: &std::path::Path) -> ProxyStart {
        ProxyStart::listening(&[("PROXY_UPSTREAMS_FILE", path.to_str().unwrap())])
    }

    /// In front of a plain `upstream`.
    pub fn before(upstream: &MockUpstream) -> ProxyStart {
        ProxyStart::at(&format!("http://{}/v1", upstream.addr))
    }

    /// In front of a TLS `upstream` at `https://localhost:PORT/v1`, trusting `ca` through
    /// `PROXY_UPSTREAM_CA`, speaking `protocol` (`auto`, `http1`, `http2`).
    pub fn tls(upstream: &MockUpstream, ca: &tls::TestCa, protocol: &str) -> ProxyStart {
        ProxyStart::at(&format!("https://localhost:{}/v1", upstream.addr.port())).settings(&[
            ("PROXY_UPSTREAM_CA", &ca.ca_pem_path()),
            ("PROXY_UPSTREAM_PROTOCOL", protocol),
        ])
    }

    /// A proxy whose upstream port is closed.
    pub fn without_upstream() -> ProxyStart {
        ProxyStart::at(&closed_upstream_url())
    }

    /// From a whole configuration the test made.
    pub fn config(config: Config) -> ProxyStart {
        ProxyStart {
            config: Settings::Whole(Box::new(config)),
            listener: None,
            admin: false,
        }
    }

    /// More settings, over those so far. A whole `Config` takes none: the test made it.
    pub fn settings(mut self, extra: &[(&str, &str)]) -> ProxyStart {
        match &mut self.config {
            Settings::Vars(vars) => {
                vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            }
            Settings::Whole(_) => panic!("settings added to a whole Config would be lost"),
        }
        self
    }

    /// With the admin listener (`PROXY_METRICS_ADDR`) on `127.0.0.1:0`: [`TestProxy::admin`].
    pub fn with_admin(mut self) -> ProxyStart {
        self.admin = true;
        self.settings(&[("PROXY_METRICS_ADDR", "127.0.0.1:0")])
    }

    /// On a listener the test bound itself, to know its address first.
    pub fn on(mut self, listener: tokio::net::TcpListener) -> ProxyStart {
        self.listener = Some(listener);
        self
    }

    pub async fn start(self) -> TestProxy {
        capture::logs();
        let config = match self.config {
            Settings::Vars(vars) => Config::from_vars(vars).expect("test configuration"),
            Settings::Whole(config) => *config,
        };
        let listener = self.listener.unwrap_or_else(|| {
            memoctopus::inbound::listener::bind(
                "127.0.0.1:0".parse().unwrap(),
                config.listen_backlog,
            )
            .unwrap()
        });
        let admin = match self.admin {
            true => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            false => None,
        };
        let addr = listener.local_addr().unwrap();
        let admin_addr = admin.as_ref().map(|a| a.local_addr().unwrap());
        let metrics_key = config
            .a_client_key()
            .map(|key| String::from_utf8_lossy(key).into_owned());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(memoctopus::run_with_admin_listener(
            listener,
            admin,
            config,
            async {
                let _ = rx.await;
            },
        ));
        TestProxy {
            addr,
            admin: admin_addr,
            metrics_key,
            shutdown: Some(tx),
            handle,
        }
    }
}

/// A TLS mock upstream with its own test CA, offering `alpn`.
pub async fn tls_mock(
    alpn: tls::Alpn,
    mut options: mock::MockOptions,
) -> (MockUpstream, tls::TestCa) {
    let ca = tls::TestCa::new("mock");
    options.tls = Some(ca.server_config(alpn));
    (MockUpstream::start_with(options).await, ca)
}

/// The proxy's `/metrics` text, fetched with its client key if it has client keys.
pub async fn metrics_text(proxy: &TestProxy) -> String {
    let mut request = Request::get(proxy.url("/metrics"));
    if let Some(key) = &proxy.metrics_key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = client()
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET /metrics");
    body_string(response).await
}

/// The value of one series in the proxy's `/metrics`, or 0 if it is absent: a labelled series
/// appears with its first count. A test that needs the series to exist uses [`series`].
/// Waits up to `limit` for `series` to read `value`, and fails showing `/metrics` if it never
/// does.
pub async fn wait_for_metric(proxy: &TestProxy, series: &str, value: f64, limit: Duration) {
    let reached = eventually(limit, || async { metric(proxy, series).await == value }).await;
    assert!(
        reached.is_some(),
        "{series} never became {value}:\n{}",
        metrics_text(proxy).await
    );
}

pub async fn metric(proxy: &TestProxy, series_name: &str) -> f64 {
    series(&metrics_text(proxy).await, series_name).unwrap_or(0.0)
}

/// The value of the series whose line starts with `series` (name and labels, exactly), in a
/// `/metrics` text.
pub fn series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A JSON POST with a client Authorization that must never reach the upstream.
pub fn chat_request(url: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer client-key-never-forwarded")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}

/// A multipart transcription upload, `body` made by [`multipart`] with `boundary`.
pub fn transcription_request(
    url: &str,
    boundary: &str,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    Request::post(url)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Full::new(body.into()))
        .unwrap()
}

/// A streamed chat request; the mock answers `events` SSE events `interval_ms` apart.
pub fn stream_request(url: &str, events: u32, interval_ms: u32) -> Request<Full<Bytes>> {
    let mut request = chat_request(url, r#"{"stream":true}"#);
    request.headers_mut().insert("x-mock-events", events.into());
    request
        .headers_mut()
        .insert("x-mock-interval-ms", interval_ms.into());
    request
}

pub async fn body_bytes(response: Response<Incoming>) -> Bytes {
    capture::received(format!("{:?}", response.headers()).as_bytes());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    capture::received(&bytes);
    bytes
}

pub async fn body_string(response: Response<Incoming>) -> String {
    String::from_utf8(body_bytes(response).await.to_vec()).unwrap()
}

/// Parses an OpenAI-style error body and returns `error.code` and `error.message`.
pub fn error_fields(body: &str) -> (serde_json::Value, String) {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    let error = &v["error"];
    assert!(error.is_object(), "no error object: {body}");
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "error.{field} missing: {body}");
    }
    (
        error["code"].clone(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A base URL where nothing listens: a port bound and released at once.
pub fn closed_upstream_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/v1")
}

/// Reads a body to its end: what arrived, and whether it ended cleanly rather than abnormally.
pub async fn read_all(response: Response<Incoming>) -> (Vec<u8>, bool) {
    let mut body = response.into_body();
    let mut got = Vec::new();
    loop {
        match body.frame().await {
            None => return (got, true),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    capture::received(&data);
                    got.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return (got, false),
        }
    }
}

/// Writes raw bytes on a fresh connection and reads until the server closes or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_until_closed(&mut stream, wait).await.0
}

/// What the server sends on `stream` until it closes the connection (cleanly or by a reset) or
/// `wait` passes, and whether it closed.
pub async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, stream.read_to_end(&mut out))
        .await
        .is_ok();
    capture::received(&out);
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// A field of `/proc/PID/status` in KiB, such as `VmRSS:` (memory now) or `VmHWM:` (its peak).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

/// A chat request's head for a raw connection, with `extra` header lines (each ending in CRLF).
pub fn chat_head(extra: &str, length: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    )
}

/// A chat request on a raw connection, with the mock's script in `mock_headers`, so the test
/// can leave at an exact moment.
pub async fn send_chat(proxy: &TestProxy, mock_headers: &str) -> TcpStream {
    let mut stream = raw_connect(proxy.addr).await;
    stream
        .write_all(format!("{}{{}}", chat_head(mock_headers, 2)).as_bytes())
        .await
        .unwrap();
    stream
}

/// How soon after the client left the upstream must see its exchange dropped.
pub const DROP_LIMIT: Duration = Duration::from_millis(100);

/// Asserts that the upstream saw a connection close, a stream reset or an upload break off
/// within [`DROP_LIMIT`] of `aborted`.
pub async fn assert_upstream_dropped(
    mock: &MockUpstream,
    aborted: tokio::time::Instant,
    what: &str,
) {
    let dropped = mock.wait_for_drop(aborted, Duration::from_secs(2)).await;
    let dropped = dropped.unwrap_or_else(|| panic!("{what}: the upstream never saw the drop"));
    let after = dropped - aborted;
    assert!(
        after <= DROP_LIMIT,
        "{what}: the upstream saw the drop {after:?} after the client left"
    );
}

/// A multipart transcription upload with `audio_len` bytes of audio that are not constant, so
/// that a dropped or reordered chunk shows up as a difference.
pub fn multipart(audio_len: usize, boundary: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(audio_len + 512);
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\n").as_bytes(),
    );
    body.extend((0..audio_len).map(|i| (i % 251) as u8));
    body.extend_from_slice(
        format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o-transcribe\r\n--{boundary}--\r\n").as_bytes(),
    );
    body
}

/// Opens a raw HTTP/1.1 connection for tests that need to abort at an exact moment.
pub async fn raw_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

pub fn io(stream: TcpStream) -> TokioIo<TcpStream> {
    TokioIo::new(stream)
}

/// Polls `check` every 100 ms until it holds or `limit` passes; returns how long it took.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
