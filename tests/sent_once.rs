//! Sent once: an HTTP/2 upstream that shuts its connections down gracefully (GOAWAY(2^31-1),
//! a window, PING, GOAWAY(last-stream-id)) while bursts of requests race it never processes
//! a request twice, and no request fails except with the 502 that says it may have been
//! processed. The race is made by the upstream itself, on every connection: its first GOAWAY
//! goes out at the connection's first HEADERS, while the rest of a burst of 32 is being sent.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use support::goaway_upstream::GoawayUpstream;
use support::tls::{Alpn, TestCa};
use support::*;

const ROUNDS: usize = 200;
const BURST: usize = 32;
/// The code of a request whose fate the proxy cannot know.
const MAY_HAVE_BEEN_PROCESSED: &str = "upstream_request_may_have_been_processed";

/// Two threads that keep both cores busy until dropped, so that the proxy's tasks are
/// scheduled late and often interleaved, as on a loaded machine.
struct Burners(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Burners {
    fn start() -> Burners {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        Burners(stop, threads)
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for thread in self.1.drain(..) {
            let _ = thread.join();
        }
    }
}

fn request(url: &str, id: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(url)
        .header("content-type", "application/json")
        .header("x-request-id", id)
        .body(Full::new(Bytes::from(id.to_owned())))
        .unwrap()
}

/// What a client waiting for ever would want to know: how far it got, what the proxy holds,
/// what the upstream holds, and the proxy's log lines of that request.
async fn stuck(
    id: &str,
    headed: bool,
    proxy: std::net::SocketAddr,
    upstream: &std::sync::Mutex<support::goaway_upstream::GoawayLog>,
) -> String {
    let metrics = metrics_text(&TestProxy::external(proxy)).await;
    let gauges: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("memoctopus_in_flight")
                || l.starts_with("memoctopus_upstream_connections_open")
        })
        .collect();
    let (live, waiting) = {
        let log = upstream.lock().unwrap();
        (log.live_connections, log.waiting_streams)
    };
    let logs = capture::logs().text();
    let quoted = format!("\"{id}\"");
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&quoted)).collect();
    format!(
        "{}; proxy {gauges:?}; upstream: {live} connections, {waiting} streams waiting for a body; {lines:#?}",
        if headed { "its head came" } else { "no head came" }
    )
}

async fn race(tls: bool) {
    capture::logs_with_quiet_dependencies();
    let ca = TestCa::new("goaway");
    let upstream = GoawayUpstream::start(
        tls.then(|| ca.server_config(Alpn::Http2Only)),
        Duration::from_millis(100),
    )
    .await;
    let port = upstream.addr.port();
    let base_url = if tls {
        format!("https://localhost:{port}/v1")
    } else {
        format!("http://127.0.0.1:{port}/v1")
    };
    let ca_path = ca.ca_pem_path();
    let mut vars = vec![("PROXY_UPSTREAM_PROTOCOL", "http2")];
    if tls {
        vars.push(("PROXY_UPSTREAM_CA", &ca_path));
    }
    let proxy = ProxyStart::at(&base_url).settings(&vars).start().await;
    let url = Arc::new(proxy.url("/v1/chat/completions"));
    let client = client();
    let _burners = Burners::start();

    let mut answered = HashSet::new();
    let mut unknown = Vec::new();
    for round in 0..ROUNDS {
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..BURST {
            let (client, url) = (client.clone(), url.clone());
            let id = format!("r{round}-{i}");
            let upstream_log = upstream.shared_log();
            let proxy_addr = proxy.addr;
            burst.spawn(async move {
                let headed = std::sync::atomic::AtomicBool::new(false);
                let exchange = async {
                    let response = client.request(request(&url, &id)).await.unwrap();
                    headed.store(true, Ordering::Relaxed);
                    let status = response.status();
                    (status, body_string(response).await)
                };
                match tokio::time::timeout(Duration::from_secs(20), exchange).await {
                    Ok((status, body)) => (id, status, body),
                    Err(_) => {
                        let headed = headed.load(Ordering::Relaxed);
                        let why = stuck(&id, headed, proxy_addr, &upstream_log).await;
                        panic!("{id} had no answer within 20 s: {why}")
                    }
                }
            });
        }
        while let Some(result) = burst.join_next().await {
            let (id, status, body) = result.unwrap();
            match status.as_u16() {
                200 => {
                    assert_eq!(body, id, "the answer of another request");
                    answered.insert(id);
                }
                502 => {
                    let (code, message) = error_fields(&body);
                    assert_eq!(code, MAY_HAVE_BEEN_PROCESSED, "{id}: {message}");
                    unknown.push(id);
                }
                other => panic!("{id}: {other} {body}"),
            }
        }
    }
    let log = upstream.log();
    let mut processed = HashSet::new();
    for id in &log.answered {
        assert!(processed.insert(id.clone()), "{id} was processed twice");
    }
    for id in &answered {
        assert!(processed.contains(id), "{id} answered 200, never processed");
    }
    // A stream the upstream accepted and then lost belongs to a request answered 502.
    assert!(
        log.abandoned <= unknown.len(),
        "{} streams were accepted and abandoned, {} requests answered 502 ({} accepted, {} answered)",
        log.abandoned,
        unknown.len(),
        log.accepted,
        log.answered.len()
    );
    assert_eq!(answered.len() + unknown.len(), ROUNDS * BURST);
    let retried = metric(
        &proxy,
        r#"memoctopus_upstream_retries_total{reason="goaway"}"#,
    )
    .await
        + metric(
            &proxy,
            r#"memoctopus_upstream_retries_total{reason="stale_connection"}"#,
        )
        .await;
    eprintln!(
        "{}: {} requests, {} answered, {} answered 502 {MAY_HAVE_BEEN_PROCESSED}, {} connections, {} streams refused by a last-stream-id, {} retries",
        if tls { "TLS" } else { "h2c" },
        ROUNDS * BURST,
        answered.len(),
        unknown.len(),
        log.connections,
        log.refused,
        retried
    );
    assert!(
        log.connections >= ROUNDS,
        "the upstream's shutdowns were not raced: {} connections",
        log.connections
    );
}

/// h2c, then TLS: one after the other, so that two CPU burners, not four, share the cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_goaway_raced_by_bursts_processes_no_request_twice() {
    race(false).await;
    race(true).await;
}

/// What [`h2_upstream`] does with each stream, once it has the request's head.
#[derive(Clone, Copy)]
enum Behaviour {
    /// `RST_STREAM` with this code before any answer.
    Reset(h2::Reason),
    /// Closes the whole connection, without a word.
    Drop,
    /// Answers 200 with five chunks 100 ms apart, and starts a graceful shutdown (GOAWAY,
    /// PING, GOAWAY with this stream as the last) after the first.
    SlowWhileGoingAway,
}

/// An HTTP/2 upstream over TLS on the h2 crate (hyper's server can neither reset a stream
/// with a chosen code nor drop a connection at a chosen point). Returns its port and how many
/// requests reached it.
async fn h2_upstream(
    ca: &TestCa,
    behaviour: Behaviour,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(Alpn::Http2Only));
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut connection) = h2::server::handshake(tls).await else {
                    return;
                };
                let (going_away, mut go_away) = tokio::sync::mpsc::unbounded_channel::<()>();
                loop {
                    let accepted = tokio::select! {
                        accepted = connection.accept() => accepted,
                        Some(()) = go_away.recv() => {
                            connection.graceful_shutdown();
                            continue;
                        }
                    };
                    let Some(Ok((_request, mut respond))) = accepted else {
                        break;
                    };
                    seen.fetch_add(1, Ordering::SeqCst);
                    match behaviour {
                        Behaviour::Reset(reason) => respond.send_reset(reason),
                        Behaviour::Drop => return,
                        Behaviour::SlowWhileGoingAway => {
                            let going_away = going_away.clone();
                            tokio::spawn(async move {
                                let head = http::Response::builder().body(()).unwrap();
                                let mut send = respond.send_response(head, false).unwrap();
                                for i in 0..5 {
                                    let chunk = Bytes::from(format!("chunk {i}\n"));
                                    let _ = send.send_data(chunk, i == 4);
                                    if i == 0 {
                                        let _ = going_away.send(());
                                    }
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                            });
                        }
                    }
                }
            });
        }
    });
    (port, seen)
}

async fn proxy_to_h2(ca: &TestCa, port: u16) -> TestProxy {
    let base_url = format!("https://localhost:{port}/v1");
    let ca_path = ca.ca_pem_path();
    ProxyStart::at(&base_url)
        .settings(&[
            ("PROXY_UPSTREAM_PROTOCOL", "http2"),
            ("PROXY_UPSTREAM_CA", &ca_path),
        ])
        .start()
        .await
}

#[tokio::test]
async fn a_reset_of_any_code_but_refused_stream_or_a_dropped_connection_is_never_retried() {
    for behaviour in [
        Behaviour::Reset(h2::Reason::INTERNAL_ERROR),
        Behaviour::Reset(h2::Reason::CANCEL),
        Behaviour::Reset(h2::Reason::NO_ERROR),
        Behaviour::Drop,
    ] {
        let ca = TestCa::new("h2-faults");
        let (port, seen) = h2_upstream(&ca, behaviour).await;
        let proxy = proxy_to_h2(&ca, port).await;
        let response = client()
            .request(request(&proxy.url("/v1/chat/completions"), "once"))
            .await
            .unwrap();
        assert_eq!(response.status(), 502);
        let (code, message) = error_fields(&body_string(response).await);
        assert_eq!(code, MAY_HAVE_BEEN_PROCESSED, "{message}");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "{message}: sent more than once"
        );
        assert_eq!(
            metric(
                &proxy,
                r#"memoctopus_upstream_errors_total{kind="may_have_been_processed"}"#
            )
            .await,
            1.0
        );
    }
}

#[tokio::test]
async fn a_stream_below_the_last_stream_id_finishes_after_goaway_and_the_next_request_gets_a_new_connection(
) {
    let ca = TestCa::new("h2-slow-goaway");
    let (port, seen) = h2_upstream(&ca, Behaviour::SlowWhileGoingAway).await;
    let proxy = proxy_to_h2(&ca, port).await;
    let url = proxy.url("/v1/chat/completions");
    let response = client().request(request(&url, "slow")).await.unwrap();
    assert_eq!(response.status(), 200);
    let (body, clean) = read_all(response).await;
    assert!(clean, "the stream was cut by the GOAWAY");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        (0..5).map(|i| format!("chunk {i}\n")).collect::<String>()
    );
    // The connection is going away: the next request opens another, and is answered there.
    let response = client().request(request(&url, "next")).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = read_all(response).await;
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert_eq!(
        metric(
            &proxy,
            "memoctopus_upstream_connections_opened_total{protocol=\"http2\"}"
        )
        .await,
        2.0
    );
}
