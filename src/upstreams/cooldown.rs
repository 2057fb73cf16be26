//! How long an upstream that said "not now" rests: what its answer asks for in `Retry-After`
//! (seconds or an HTTP date), Azure's `retry-after-ms`, or OpenAI's `x-ratelimit-reset-*`
//! for the limit that ran out; `None` when it says nothing.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The longest rest an answer may ask for: a wrong header must not take an upstream away for
/// a day.
const LONGEST: Duration = Duration::from_secs(3600);

/// The rest the answer's headers ask for.
pub(super) fn asked(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let asked = text("retry-after-ms")
        .and_then(|ms| ms.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms.min(LONGEST.as_secs_f64() * 1000.0) / 1000.0))
        .or_else(|| text("retry-after").and_then(|v| retry_after(v, now)))
        .or_else(|| {
            // The reset of each limit that ran out; if none says it ran out, the soonest.
            let limits = ["requests", "tokens"].map(|limit| {
                let reset = text(&format!("x-ratelimit-reset-{limit}")).and_then(go_duration);
                let out = text(&format!("x-ratelimit-remaining-{limit}")) == Some("0");
                (reset, out)
            });
            let ran_out = limits
                .iter()
                .filter(|(_, out)| *out)
                .filter_map(|(r, _)| *r)
                .max();
            ran_out.or_else(|| limits.iter().filter_map(|(r, _)| *r).min())
        })?;
    Some(asked.min(LONGEST))
}

/// `Retry-After`: whole seconds, or an HTTP date (RFC 9110, section 10.2.3).
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// A duration as OpenAI writes its resets, in Go's form: `1s`, `6m0s`, `20ms`, `1h2m3.5s`.
fn go_duration(value: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut rest = value;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&at| at > 0)?;
        let amount: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += amount * seconds;
        rest = &rest[unit..];
    }
    (total.is_finite() && total >= 0.0)
        .then(|| Duration::from_secs_f64(total.min(LONGEST.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn each_form_of_the_headers_is_read() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let asked = |pairs| asked(&headers(pairs), now);
        assert_eq!(asked(&[("retry-after", "2")]), Some(Duration::from_secs(2)));
        assert_eq!(
            asked(&[("retry-after-ms", "1500"), ("retry-after", "9")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            asked(&[("retry-after", "Sun, 09 Sep 2001 01:46:50 GMT")]),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            asked(&[
                ("x-ratelimit-remaining-requests", "4"),
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ]),
            Some(Duration::from_secs(360))
        );
        assert_eq!(
            asked(&[("x-ratelimit-reset-requests", "1h2m3.5s")]),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            asked(&[("x-ratelimit-reset-tokens", "20ms")]),
            Some(Duration::from_millis(20))
        );
        assert_eq!(asked(&[("retry-after", "soon")]), None);
        assert_eq!(asked(&[]), None);
    }
}
