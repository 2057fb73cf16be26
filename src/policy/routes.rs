//! Which requests the proxy answers, and which it forwards. Pure: no sockets.
//!
//! Paths are compared exactly, as the client sent them. Nothing is decoded or normalised, so
//! `/v1/chat/completions/../x`, `/v1/%2e%2e/x` or `//v1/chat/completions` match no route, and
//! the upstream only ever sees a path that names a route.

use http::Method;

/// The two routes every deployment forwards; `PROXY_EXTRA_ROUTES` adds more.
const BUILT_IN: [(Method, &str); 2] = [
    (Method::POST, "/v1/chat/completions"),
    (Method::POST, "/v1/audio/transcriptions"),
];

/// The forwarded routes whose answers never cost tokens, or whose cost a budget cannot see:
/// files and uploads (stored, not generated), batches (billed when they run, outside the
/// exchange), vector stores, fine-tuning jobs, and moderations (free).
const NOT_METERED: [&str; 7] = [
    "/v1/files",
    "/v1/uploads",
    "/v1/batches",
    "/v1/vector_stores",
    "/v1/fine_tuning",
    "/v1/moderations",
    "/v1/containers",
];

/// Whether an answer on a forwarded route can cost tokens, and so is charged to a budget:
/// every `POST` but those of [`NOT_METERED`]. A `GET` or `DELETE` reads or removes what exists.
pub(crate) fn carries_usage(method: &Method, route: &str) -> bool {
    method == Method::POST
        && !NOT_METERED.iter().any(|free| {
            route
                .strip_prefix(free)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /health`: 200 while the process lives.
    Health,
    /// `GET /ready`: 200 while serving, 503 while draining.
    Ready,
    /// `GET /metrics`, when it is not on its own listener.
    Metrics,
    /// Forwarded to the upstream. `name` is the configured pattern, for logs and metrics;
    /// `index` its place in the table, for the route's metrics.
    Forward { name: &'a str, index: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// The path exists with other methods, listed for the `Allow` header.
    MethodNotAllowed {
        allow: String,
    },
}

/// One `METHOD /v1/path` entry; a trailing `/*` matches one or more segments below the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraRoute {
    method: Method,
    pattern: String,
}

impl ExtraRoute {
    /// Parses `POST /v1/embeddings` or `GET /v1/models/*`.
    pub fn parse(entry: &str) -> Result<ExtraRoute, String> {
        let mut parts = entry.split_whitespace();
        let (Some(method), Some(path), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{entry:?} is not of the form \"METHOD /v1/path\""));
        };
        let method = match method {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            _ => return Err(format!("{entry:?}: unknown method {method:?}")),
        };
        let fixed = path.strip_suffix("/*").unwrap_or(path);
        let segments_ok = fixed
            .strip_prefix("/v1/")
            .is_some_and(|rest| rest.split('/').all(is_plain_segment));
        if !segments_ok {
            return Err(format!(
                "{entry:?}: the path must be under /v1/, without empty, '.', '..' or encoded segments"
            ));
        }
        Ok(ExtraRoute {
            method,
            pattern: path.to_owned(),
        })
    }
}

/// A path segment that no server could read as a step elsewhere: printable ASCII only, and
/// no `%` (an encoded step), `\\` (a Windows separator) or `;` (a path parameter, which
/// Tomcat-style servers strip, so that `..;` reads as `..`).
fn is_plain_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'%' | b'\\' | b';'))
}

/// The route table, built once from the configuration.
#[derive(Debug, Clone)]
pub struct Routes {
    forwarded: Vec<(Method, String)>,
    /// Whether `GET /metrics` is answered here (false when `PROXY_METRICS_ADDR` moves it).
    metrics: bool,
}

impl Default for Routes {
    fn default() -> Self {
        Routes::with_extra(Vec::new())
    }
}

impl Routes {
    pub fn with_extra(extra: Vec<ExtraRoute>) -> Routes {
        let mut forwarded: Vec<(Method, String)> = BUILT_IN
            .iter()
            .map(|(m, p)| (m.clone(), (*p).to_owned()))
            .collect();
        for route in extra {
            if !forwarded
                .iter()
                .any(|(m, p)| *m == route.method && *p == route.pattern)
            {
                forwarded.push((route.method, route.pattern));
            }
        }
        Routes {
            forwarded,
            metrics: true,
        }
    }

    /// Moves `/metrics` off this table, to its own listener.
    pub(crate) fn without_metrics(mut self) -> Routes {
        self.metrics = false;
        self
    }

    /// `PROXY_EXTRA_ROUTES` as it was understood, for `--check-config`.
    pub(crate) fn describe_extra(&self) -> String {
        self.forwarded[BUILT_IN.len()..]
            .iter()
            .map(|(m, p)| format!("{m} {p}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The forwarded patterns, in table order.
    pub(crate) fn forwarded_names(&self) -> impl Iterator<Item = &str> {
        self.forwarded.iter().map(|(_, p)| p.as_str())
    }

    /// The proxy's own endpoint at `path`, on any listener.
    fn own(path: &str) -> Option<Route<'static>> {
        match path {
            "/health" => Some(Route::Health),
            "/ready" => Some(Route::Ready),
            "/metrics" => Some(Route::Metrics),
            _ => None,
        }
    }

    /// Whether `path` is one of the proxy's own endpoints, on any listener.
    pub(crate) fn is_own(path: &str) -> bool {
        Self::own(path).is_some()
    }

    /// Matches a request to one of the proxy's own endpoints, which take `GET` and `HEAD`:
    /// the whole route table of the admin listener.
    pub(crate) fn own_route(method: &Method, path: &str) -> Result<Route<'static>, RouteError> {
        let own = Self::own(path).ok_or(RouteError::NotFound)?;
        if method == Method::GET || method == Method::HEAD {
            Ok(own)
        } else {
            Err(RouteError::MethodNotAllowed {
                allow: "GET, HEAD".to_owned(),
            })
        }
    }

    /// Matches a request's method and path (without its query).
    pub fn route(&self, method: &Method, path: &str) -> Result<Route<'_>, RouteError> {
        if Self::own(path).is_some_and(|own| own != Route::Metrics || self.metrics) {
            return Self::own_route(method, path);
        }

        let mut allow: Vec<&str> = Vec::new();
        for (index, (m, pattern)) in self.forwarded.iter().enumerate() {
            if matches_pattern(pattern, path) {
                if m == method {
                    return Ok(Route::Forward {
                        name: pattern,
                        index,
                    });
                }
                if !allow.contains(&m.as_str()) {
                    allow.push(m.as_str());
                }
            }
        }
        if allow.is_empty() {
            Err(RouteError::NotFound)
        } else {
            Err(RouteError::MethodNotAllowed {
                allow: allow.join(", "),
            })
        }
    }

    /// The methods forwarded on `path`, for CORS preflights.
    pub(crate) fn methods_for(&self, path: &str) -> Vec<&Method> {
        self.forwarded
            .iter()
            .filter(|(_, pattern)| matches_pattern(pattern, path))
            .map(|(m, _)| m)
            .collect()
    }
}

fn matches_pattern(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix("/*") {
        None => pattern == path,
        Some(prefix) => path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| rest.split('/').all(is_plain_segment)),
    }
}

/// The upstream request target for a forwarded request: the base URL's path, then the
/// client's path after `/v1`, then the client's query unchanged. Every forwarded route starts
/// with `/v1/`, which [`ExtraRoute::parse`] checks.
pub(crate) fn upstream_target(
    base_path: &str,
    client_path: &str,
    query: Option<&str>,
    added: &UpstreamQuery,
) -> String {
    let rest = client_path.strip_prefix("/v1").unwrap_or(client_path);
    let mut target = String::with_capacity(
        base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + added.len(),
    );
    target.push_str(base_path);
    target.push_str(rest);
    let mut separator = "?";
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
        separator = if query.is_empty() { "" } else { "&" };
    }
    for param in &added.0 {
        if query.is_some_and(|q| query_names(q).any(|name| name == param.name)) {
            continue;
        }
        target.push_str(separator);
        target.push_str(&param.pair);
        separator = "&";
    }
    target
}

/// `PROXY_UPSTREAM_QUERY`: `name=value` pairs, joined by `&` as in a URL, added to every
/// upstream URL unless the client's query already has the name. Azure OpenAI's
/// `api-version=2024-10-21` is the case it exists for.
#[derive(Clone, Debug, Default)]
pub(crate) struct UpstreamQuery(Vec<QueryParam>);

#[derive(Clone, Debug)]
struct QueryParam {
    /// The name, percent-decoded, to compare with the client's names.
    name: String,
    /// `name=value` exactly as configured.
    pair: String,
}

impl UpstreamQuery {
    pub(crate) fn parse(value: &str) -> Result<UpstreamQuery, String> {
        let mut params = Vec::new();
        for pair in value.trim().split('&').filter(|p| !p.is_empty()) {
            let (name, _) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not name=value"))?;
            let fits_a_query = !name.is_empty()
                && !pair.contains('#')
                && format!("/?{pair}")
                    .parse::<http::uri::PathAndQuery>()
                    .is_ok();
            if !fits_a_query {
                return Err(format!(
                    "{pair:?} is not a name=value pair fit for a URL; percent-encode other characters"
                ));
            }
            params.push(QueryParam {
                name: decoded(name),
                pair: pair.to_owned(),
            });
        }
        Ok(UpstreamQuery(params))
    }

    /// The configured pairs joined, for `--check-config`.
    pub(crate) fn describe(&self) -> String {
        let pairs: Vec<&str> = self.0.iter().map(|p| p.pair.as_str()).collect();
        pairs.join("&")
    }

    fn len(&self) -> usize {
        self.0.iter().map(|p| p.pair.len() + 1).sum()
    }
}

/// The percent-decoded names in a query string.
fn query_names(query: &str) -> impl Iterator<Item = String> + '_ {
    query
        .split('&')
        .map(|pair| decoded(pair.split('=').next().unwrap_or(pair)))
}

fn decoded(name: &str) -> String {
    percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Routes {
        Routes::with_extra(vec![
            ExtraRoute::parse("GET /v1/models").unwrap(),
            ExtraRoute::parse("GET /v1/models/*").unwrap(),
            ExtraRoute::parse("POST /v1/embeddings").unwrap(),
        ])
    }

    #[test]
    fn posts_are_metered_but_those_that_cost_no_tokens() {
        for metered in [
            "/v1/chat/completions",
            "/v1/audio/transcriptions",
            "/v1/audio/speech",
            "/v1/responses",
            "/v1/embeddings",
            "/v1/images/generations",
            "/v1/filesystem",
        ] {
            assert!(carries_usage(&Method::POST, metered), "{metered}");
        }
        for free in ["/v1/files", "/v1/files/*", "/v1/batches", "/v1/moderations"] {
            assert!(!carries_usage(&Method::POST, free), "{free}");
        }
        assert!(!carries_usage(&Method::GET, "/v1/models"));
        assert!(!carries_usage(&Method::DELETE, "/v1/responses/*"));
    }

    #[test]
    fn built_in_routes_match_exactly() {
        let r = Routes::default();
        assert_eq!(
            r.route(&Method::POST, "/v1/chat/completions"),
            Ok(Route::Forward {
                name: "/v1/chat/completions",
                index: 0
            })
        );
        assert_eq!(
            r.route(&Method::POST, "/v1/audio/transcriptions"),
            Ok(Route::Forward {
                name: "/v1/audio/transcriptions",
                index: 1
            })
        );
        assert_eq!(r.route(&Method::GET, "/health"), Ok(Route::Health));
        assert_eq!(r.route(&Method::GET, "/ready"), Ok(Route::Ready));
    }

    #[test]
    fn path_tricks_match_nothing() {
        let r = Routes::default();
        for path in [
            "/v1/chat/completions/",
            "/v1/chat/completions/../x",
            "/v1/chat/../chat/completions",
            "/v1/%63hat/completions",
            "/v1/chat/completions%2f..",
            "//v1/chat/completions",
            "/V1/chat/completions",
            "/v1/chat/completions;x",
            "/v1/embeddings",
            "",
            "*",
        ] {
            assert_eq!(
                r.route(&Method::POST, path),
                Err(RouteError::NotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn wrong_method_lists_the_allowed_ones() {
        let r = Routes::default();
        assert_eq!(
            r.route(&Method::GET, "/v1/chat/completions"),
            Err(RouteError::MethodNotAllowed {
                allow: "POST".into()
            })
        );
        assert_eq!(
            r.route(&Method::POST, "/health"),
            Err(RouteError::MethodNotAllowed {
                allow: "GET, HEAD".into()
            })
        );
    }

    #[test]
    fn extra_routes_and_wildcards() {
        let r = table();
        assert_eq!(
            r.route(&Method::GET, "/v1/models"),
            Ok(Route::Forward {
                name: "/v1/models",
                index: 2
            })
        );
        assert_eq!(
            r.route(&Method::GET, "/v1/models/gpt-4o"),
            Ok(Route::Forward {
                name: "/v1/models/*",
                index: 3
            })
        );
        assert_eq!(
            r.route(&Method::GET, "/v1/models/ft:gpt-4o:org/x"),
            Ok(Route::Forward {
                name: "/v1/models/*",
                index: 3
            })
        );
        for path in [
            "/v1/models/",
            "/v1/models/..",
            "/v1/models/a//b",
            "/v1/models/%2e%2e",
            "/v1/modelsx",
        ] {
            assert_eq!(
                r.route(&Method::GET, path),
                Err(RouteError::NotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn extra_route_entries_are_validated() {
        for bad in [
            "FETCH /v1/x",
            "GET /v2/x",
            "GET /v1/../x",
            "GET /v1/",
            "GET",
            "GET /v1/x extra",
            "GET /v1/%2e",
        ] {
            assert!(ExtraRoute::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_target_swaps_the_v1_prefix_for_the_base_path_and_keeps_the_query() {
        let none = UpstreamQuery::default();
        assert_eq!(
            upstream_target("/v1", "/v1/chat/completions", None, &none),
            "/v1/chat/completions"
        );
        assert_eq!(
            upstream_target("", "/v1/models/x", Some("a=1&b"), &none),
            "/models/x?a=1&b"
        );
        assert_eq!(
            upstream_target("/openai/v1", "/v1/embeddings", Some(""), &none),
            "/openai/v1/embeddings?"
        );
    }

    #[test]
    fn configured_query_parameters_are_added_unless_the_client_sent_the_name() {
        let added = UpstreamQuery::parse("api-version=2024-10-21&x=1").unwrap();
        let target = |query| upstream_target("/openai", "/v1/chat/completions", query, &added);
        assert_eq!(
            target(None),
            "/openai/chat/completions?api-version=2024-10-21&x=1"
        );
        assert_eq!(
            target(Some("api-version=preview")),
            "/openai/chat/completions?api-version=preview&x=1"
        );
        assert_eq!(
            target(Some("api%2Dversion=preview&x")),
            "/openai/chat/completions?api%2Dversion=preview&x"
        );
        assert_eq!(
            target(Some("")),
            "/openai/chat/completions?api-version=2024-10-21&x=1"
        );
        for bad in ["api-version", "=1", "a=b c", "a=1#f"] {
            assert!(UpstreamQuery::parse(bad).is_err(), "{bad}");
        }
    }
}
