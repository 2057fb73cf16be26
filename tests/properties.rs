//! Properties of the pure parts, over generated inputs: routing never maps a path to a route
//! it does not name, header rewriting never lets a hop-by-hop header or a foreign credential
//! through, and the setting parsers never panic.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use memoctopus::config::{parse_duration, Config};
use memoctopus::headers::{rewrite_request, rewrite_response, UpstreamIdentity};
use memoctopus::routes::{ExtraRoute, Route, Routes};
use proptest::prelude::*;

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
        let mut authorization = HeaderValue::from_static("Bearer sk-ours");
        authorization.set_sensitive(true);
        let identity = UpstreamIdentity { authorization, organization: None, project: None };
        rewrite_request(&mut headers, &identity, &HeaderValue::from_static("id-1"));

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
                || ["authorization", "host", "expect", "openai-organization", "openai-project", "x-client-request-id"].contains(&name.as_str());
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
