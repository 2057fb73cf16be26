//! Properties of the pure parts, over generated inputs: routing never maps a path to a route
//! it does not name, header rewriting never lets a hop-by-hop header or a foreign credential
//! through, the setting parsers never panic, and the HTTP/1 framing guard passes well-framed
//! requests through unchanged however they are cut, and never panics on anything else.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use memoctopus::config::{parse_duration, Config};
use memoctopus::inbound::framing::{FramingGuard, Refusals};
use memoctopus::policy::headers::{
    rewrite_request, rewrite_response, Credential, UpstreamAuth, UpstreamIdentity,
};
use memoctopus::policy::routes::{ExtraRoute, Route, Routes};
use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn path_strategy() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("v1".to_string()),
        Just("chat".to_string()),
        Just("completions".to_string()),
        Just("audio".to_string()),
        Just("transcriptions".to_string()),
        Just("models".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("%2e%2e".to_string()),
        Just("%2F".to_string()),
        Just(String::new()),
        "[a-zA-Z0-9._%:;-]{0,8}",
    ];
    prop::collection::vec(segment, 0..6).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #[test]
    fn no_path_reaches_a_route_it_does_not_name(path in path_strategy(), method in prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::DELETE)]) {
        let routes = Routes::with_extra(vec![
            ExtraRoute::parse("GET /v1/models/*").unwrap(),
            ExtraRoute::parse("POST /v1/embeddings").unwrap(),
        ]);
        if let Ok(Route::Forward { name, .. }) = routes.route(&method, &path) {
            match name.strip_suffix("/*") {
                None => prop_assert_eq!(name, path.as_str()),
                Some(prefix) => {
                    let rest = path.strip_prefix(prefix).and_then(|r| r.strip_prefix('/'));
                    prop_assert!(rest.is_some_and(|r| !r.is_empty()), "{}", path);
                    for segment in rest.unwrap_or_default().split('/') {
                        prop_assert!(!segment.is_empty() && segment != "." && segment != ".." && !segment.contains('%'), "{}", path);
                    }
                }
            }
        }
    }

    #[test]
    fn rewriting_never_lets_hop_by_hop_or_client_credentials_through(
        extra in prop::collection::vec(("[a-z][a-z0-9-]{0,10}", "[ -~]{0,20}"), 0..12),
        hops in prop::collection::vec(0usize..HOP_BY_HOP.len(), 0..5),
        connection_names in prop::collection::vec("[a-z][a-z0-9-]{0,10}", 0..4),
        client_auth in "[ -~]{0,40}",
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in &extra {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                headers.append(n, v);
            }
        }
        for hop in &hops {
            headers.append(HOP_BY_HOP[*hop], HeaderValue::from_static("keep-alive"));
        }
        if let Ok(v) = HeaderValue::from_str(&connection_names.join(", ")) {
            headers.append("connection", v);
        }
        if let Ok(v) = HeaderValue::from_str(&client_auth) {
            headers.append("authorization", v);
        }
        let before = headers.clone();
        let credential = Credential::new(UpstreamAuth::Bearer, &HeaderValue::from_static("sk-ours"));
        let identity = UpstreamIdentity { organization: None, project: None, via: memoctopus::policy::headers::via_entry() };
        rewrite_request(&mut headers, &identity, &HeaderValue::from_static("id-1"));
        credential.put(&mut headers);

        let auth: Vec<_> = headers.get_all("authorization").iter().collect();
        prop_assert_eq!(auth.len(), 1);
        prop_assert_eq!(auth[0].as_bytes(), b"Bearer sk-ours");
        for hop in HOP_BY_HOP {
            prop_assert!(!headers.contains_key(hop), "{} survived", hop);
        }
        for name in &connection_names {
            prop_assert!(!headers.contains_key(name.as_str()) || name == "authorization" || name == "x-client-request-id", "{} named by Connection survived", name);
        }
        // Everything else is untouched.
        for (name, value) in before.iter() {
            let special = HOP_BY_HOP.contains(&name.as_str())
                || connection_names.iter().any(|c| c == name.as_str())
                || ["authorization", "api-key", "host", "expect", "openai-organization", "openai-project", "x-client-request-id"].contains(&name.as_str());
            if !special {
                prop_assert!(headers.get_all(name).iter().any(|v| v == value), "{} lost", name);
            }
        }

        let mut response = before;
        rewrite_response(&mut response, &HeaderValue::from_static("id-1"));
        for hop in HOP_BY_HOP {
            prop_assert!(!response.contains_key(hop));
        }
    }

    #[test]
    fn duration_parser_never_panics_and_reads_what_it_writes(text in "\\PC{0,12}", n in 0u64..100_000, unit in prop_oneof![Just("ms"), Just("s"), Just("m"), Just("h"), Just("")]) {
        let _ = parse_duration(&text);
        let millis = match unit { "ms" => n, "m" => n * 60_000, "h" => n * 3_600_000, _ => n * 1000 };
        prop_assert_eq!(parse_duration(&format!("{n}{unit}")).unwrap().as_millis() as u64, millis);
    }

    #[test]
    fn config_never_panics_on_any_value(
        name in prop_oneof![
            Just("OPENAI_BASE_URL"), Just("HOST"), Just("PORT"), Just("PROXY_IDLE_TIMEOUT"),
            Just("PROXY_MAX_BODY_BYTES"), Just("PROXY_CLIENT_KEYS"), Just("PROXY_CORS_ORIGINS"),
            Just("PROXY_EXTRA_ROUTES"), Just("PROXY_METRICS_ADDR"), Just("PROXY_LOG_FORMAT"),
        ],
        value in "\\PC{0,40}",
    ) {
        let result = Config::from_vars([("OPENAI_API_KEY", "sk-prop".to_string()), (name, value)]);
        if let Err(error) = result {
            prop_assert_eq!(error.setting, name);
        }
    }
}

/// A client's bytes as the socket hands them over: one piece per read.
struct Pieces(VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(mut piece) = self.0.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                self.0.push_front(piece.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Cuts `bytes` at the given offsets.
fn cut(bytes: &[u8], cuts: &[usize]) -> VecDeque<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.windows(2)
        .filter(|w| w[0] < w[1])
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

/// Reads everything the guard hands over, in reads of at most `read_size` bytes, as hyper
/// would. Stops when the guard stops handing anything over (a refusal waits forever).
fn read_through(pieces: VecDeque<Vec<u8>>, read_size: usize) -> (Vec<u8>, Arc<Refusals>) {
    let refusals = Arc::new(Refusals::default());
    let mut guard = FramingGuard::new(Pieces(pieces), refusals.clone());
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_size];
    loop {
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                out.extend_from_slice(read.filled())
            }
            _ => return (out, refusals),
        }
    }
}

fn well_framed_request() -> impl Strategy<Value = Vec<u8>> {
    let body = prop::collection::vec(any::<u8>(), 0..300);
    let chunks = prop::collection::vec(prop::collection::vec(any::<u8>(), 1..80), 0..5);
    prop_oneof![
        body.prop_map(|body| {
            let mut r = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(&body);
            r
        }),
        chunks.prop_map(|chunks| {
            let mut r =
                b"POST /v1/audio/transcriptions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec();
            for chunk in chunks {
                r.extend_from_slice(format!("{:X};n=v\r\n", chunk.len()).as_bytes());
                r.extend_from_slice(&chunk);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\nX-Trailer: a\r\n\r\n");
            r
        }),
        Just(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ]
}

proptest! {
    /// Well-framed requests pass unchanged, and the guard is still in step after them: an
    /// ambiguous request behind them is refused, as exactly that request.
    #[test]
    fn well_framed_requests_pass_unchanged_however_cut(
        requests in prop::collection::vec(well_framed_request(), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        read_size in 1usize..9000,
    ) {
        let good = requests.concat();
        let bad = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let stream = [&good[..], &bad[..]].concat();
        let (out, refusals) = read_through(cut(&stream, &cuts), read_size);
        prop_assert!(out.starts_with(&good), "changed: {} of {} bytes", out.len(), good.len());
        prop_assert_eq!(&out[good.len()..], &b"GET / HTTP/1.1\r\nhost: memoctopus\r\n\r\n"[..]);
        for i in 0..requests.len() as u64 {
            prop_assert_eq!(refusals.of(i), None);
        }
        prop_assert!(refusals.of(requests.len() as u64).is_some());
    }

    #[test]
    fn any_bytes_pass_as_a_prefix_or_end_in_a_refusal(
        prefix in well_framed_request(),
        junk in prop::collection::vec(any::<u8>(), 0..400),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        read_size in 1usize..600,
    ) {
        let stream = [prefix, junk].concat();
        let (out, refusals) = read_through(cut(&stream, &cuts), read_size);
        let refused = (0..8).find_map(|i| refusals.of(i));
        if refused.is_some() {
            let stand_in: &[u8] = b"GET / HTTP/1.1\r\nhost: memoctopus\r\n\r\n";
            prop_assert!(out.ends_with(stand_in));
            prop_assert!(stream.starts_with(&out[..out.len() - stand_in.len()]));
        } else {
            prop_assert!(stream.starts_with(&out));
        }
    }
}
