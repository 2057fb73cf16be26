//! Raw bytes into the proxy's inbound HTTP/1 path, with a mock upstream behind it.
//!
//! One proxy (and one mock) runs for the whole fuzzing session on loopback; each input is
//! written on a fresh connection and whatever comes back is read briefly. Any panic, on any
//! task, aborts the process, so libFuzzer records it as a crash: tokio would otherwise catch a
//! panicking connection task and the proxy would go on.
#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;

static PROXY: OnceLock<SocketAddr> = OnceLock::new();

fn start() -> SocketAddr {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("panic: {info}");
        std::process::abort();
    }));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let upstream_addr = upstream.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = upstream.accept().await else { continue };
                    tokio::spawn(async move {
                        let service = service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                            let _ = request.into_body().collect().await;
                            let mut response = http::Response::new(Full::new(Bytes::from_static(br#"{"ok":true}"#)));
                            response.headers_mut().insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(response)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            let config = memoctopus::Config::from_vars([
                ("OPENAI_API_KEY", "sk-fuzz".to_string()),
                ("OPENAI_BASE_URL", format!("http://{upstream_addr}/v1")),
                ("PROXY_HEADER_READ_TIMEOUT", "1s".to_string()),
                ("PROXY_IDLE_TIMEOUT", "1s".to_string()),
                ("PROXY_FIRST_BYTE_TIMEOUT", "1s".to_string()),
                ("PROXY_MAX_BODY_BYTES", "65536".to_string()),
                ("PROXY_CLIENT_KEYS", "ck-fuzz".to_string()),
                ("PROXY_CORS_ORIGINS", "https://app.example".to_string()),
                ("PROXY_EXTRA_ROUTES", "GET /v1/models/*, POST /v1/embeddings".to_string()),
            ])
            .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let _ = memoctopus::run(listener, config, std::future::pending()).await;
        });
    });
    rx.recv().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let addr = *PROXY.get_or_init(start);
    let Ok(mut stream) = TcpStream::connect(addr) else { return };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    let _ = stream.write_all(data);
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
});
