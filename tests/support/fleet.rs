//! Several mock upstreams on their own ports, each with a behaviour the test changes while it
//! serves, each counting the requests it processed; and the upstreams file that names them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

use super::mock::CHAT_JSON;

/// What an upstream of the fleet does with each request.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// `200` with the chat JSON, or 3 SSE events for a body that asks for a stream.
    Serve,
    /// This status, with these headers and OpenAI's error body.
    Refuse(u16, Vec<(&'static str, String)>),
    /// A stream that sends its first event and then breaks off.
    CutAfterFirstEvent,
    /// A stream of `n` events, `gap` apart.
    SlowStream(usize, Duration),
    /// `Serve`, after holding the answer's head this long.
    SlowHead(Duration),
}

/// One request as an upstream of the fleet saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub id: String,
    pub authorization: String,
    pub api_key: String,
    pub uri: String,
    pub status: u16,
    pub body_bytes: usize,
    pub at: Instant,
}

#[derive(Clone)]
pub struct FleetUpstream {
    pub name: String,
    pub addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FleetUpstream {
    pub async fn start(name: &str, behaviour: Behaviour) -> FleetUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = FleetUpstream {
            name: name.to_owned(),
            addr: listener.local_addr().unwrap(),
            behaviour: Arc::new(Mutex::new(behaviour)),
            seen: Arc::default(),
        };
        let served = upstream.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let served = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let served = served.clone();
                        async move { Ok::<_, Infallible>(served.answer(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        upstream
    }

    /// An upstream that is down: a port bound and released, so that connecting is refused.
    pub fn down(name: &str) -> FleetUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        FleetUpstream {
            name: name.to_owned(),
            addr,
            behaviour: Arc::new(Mutex::new(Behaviour::Serve)),
            seen: Arc::default(),
        }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests it answered with a success: those it processed and charged.
    pub fn processed(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| (200..300).contains(&s.status))
            .collect()
    }

    /// The key its entry in [`write_file`]'s file gives it (the secret scan looks for
    /// `sk-fleet-`).
    pub fn key(&self) -> String {
        format!("sk-fleet-{}-upstream-key", self.name)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<FleetBody> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let behaviour = self.behaviour.lock().unwrap().clone();
        let stream = body.windows(14).any(|w| w == b"\"stream\":true");
        let status = match &behaviour {
            Behaviour::Refuse(status, _) => *status,
            _ => 200,
        };
        self.seen.lock().unwrap().push(Seen {
            id: header("x-client-request-id"),
            authorization: header("authorization"),
            api_key: header("api-key"),
            uri: parts.uri.to_string(),
            status,
            body_bytes: body.len(),
            at: Instant::now(),
        });
        if let Behaviour::SlowHead(delay) = behaviour {
            tokio::time::sleep(delay).await;
        }
        let mut response = match behaviour {
            Behaviour::Refuse(status, headers) => {
                let mut response = Response::new(full(format!(
                    r#"{{"error":{{"message":"refused by {}","type":"requests","param":null,"code":"{status}"}}}}"#,
                    self.name
                )));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                for (name, value) in headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
            Behaviour::Serve | Behaviour::SlowHead(_) if !stream => {
                Response::new(full(CHAT_JSON.to_owned()))
            }
            Behaviour::Serve | Behaviour::SlowHead(_) => events(3, Duration::ZERO, false),
            Behaviour::CutAfterFirstEvent => events(1, Duration::ZERO, true),
            Behaviour::SlowStream(n, gap) => events(n, gap, false),
        };
        let content_type = if stream && response.status() == StatusCode::OK {
            "text/event-stream"
        } else {
            "application/json"
        };
        response
            .headers_mut()
            .insert("content-type", content_type.parse().unwrap());
        response
            .headers_mut()
            .insert("x-served-by", self.name.parse().unwrap());
        response
    }
}

type FleetBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(text: String) -> FleetBody {
    Full::new(Bytes::from(text))
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// `n` chat chunks `gap` apart, then `[DONE]`, or a break instead of the rest after them.
fn events(n: usize, gap: Duration, cut: bool) -> Response<FleetBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            let event = format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"
            );
            if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                return;
            }
        }
        if cut {
            // After a pause, so that the event has left before the connection breaks.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(Err(std::io::Error::other("cut"))).await;
        } else {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
                .await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::new(StreamBody::new(stream).boxed())
}

/// An upstreams file naming `upstreams`, each `(upstream, priority, weight)`, with `extra` at
/// the top, and a key file for each ([`key`]), in `dir`.
pub fn write_file(dir: &Path, upstreams: &[(&FleetUpstream, u32, u32)], extra: &str) -> PathBuf {
    let mut toml = format!("{extra}\n");
    for (upstream, priority, weight) in upstreams {
        let key = dir.join(format!("key-{}", upstream.name));
        std::fs::write(&key, format!("{}\n", upstream.key())).unwrap();
        toml.push_str(&format!(
            "[[upstream]]\nname = \"{}\"\nbase_url = \"{}\"\napi_key_file = \"key-{}\"\npriority = {priority}\nweight = {weight}\n\n",
            upstream.name,
            upstream.base_url(),
            upstream.name
        ));
    }
    let path = dir.join("upstreams.toml");
    // Written whole and renamed over, as an editor or the kubelet does.
    let fresh = dir.join("upstreams.toml.new");
    std::fs::write(&fresh, toml).unwrap();
    std::fs::rename(&fresh, &path).unwrap();
    path
}
