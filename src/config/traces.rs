//! The OpenTelemetry settings, by their standard `OTEL_*` names: where spans are exported
//! (OTLP over HTTP with protobuf), with which headers, which requests are sampled, what the
//! resource says, and how many spans wait for export. Traces are on when an endpoint is set.
//!
//! The headers often carry a collector's token: no message and no `Debug` ever shows them.

use std::fmt;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Uri;
use rustls::pki_types::CertificateDer;

use super::settings::Found;
use super::upstream::load_roots;
use super::values::{ConfigError, Value};

/// Which spans are recorded: `OTEL_TRACES_SAMPLER` and its argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Sampling {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    /// A client's sampled flag decides; a request without one is sampled by the inner rule.
    ParentBased(Root),
}

/// The rule of `Sampling::ParentBased` for a request without a parent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Root {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

/// Which names the GenAI attributes take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GenAiNames {
    /// Semantic conventions v1.41.0, the last published with the core conventions.
    V1_41,
    /// `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`: the newest names of
    /// `semantic-conventions-genai` this build knows.
    LatestExperimental,
}

/// The traces' settings; `None` in [`super::Config`] when no endpoint is set.
#[derive(Clone)]
pub(crate) struct TraceSettings {
    /// The traces URL itself (`.../v1/traces`).
    pub endpoint: Uri,
    /// Sent with every export; may hold a collector's token.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The longest one export may take.
    pub timeout: Duration,
    /// Roots for an `https://` collector besides the built-in ones.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, decoded.
    pub resource: Vec<(String, String)>,
    pub sampling: Sampling,
    pub names: GenAiNames,
    /// Spans waiting for export at most; more are dropped and counted.
    pub max_queue: usize,
    /// Spans in one export at most.
    pub max_batch: usize,
    /// The longest a span waits before its batch goes.
    pub delay: Duration,
}

impl fmt::Debug for TraceSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TraceSettings")
            .field("endpoint", &self.endpoint)
            .field("headers", &header_names)
            .field("timeout", &self.timeout)
            .field("extra_roots", &self.extra_roots.len())
            .field("service_name", &self.service_name)
            .field("resource", &self.resource)
            .field("sampling", &self.sampling)
            .field("names", &self.names)
            .field("max_queue", &self.max_queue)
            .field("max_batch", &self.max_batch)
            .field("delay", &self.delay)
            .finish()
    }
}

pub(super) fn validate(found: &Found<'_>) -> Result<Option<TraceSettings>, ConfigError> {
    let disabled = found
        .otel_sdk_disabled
        .choice(&[("false", false), ("true", true)])?;
    let exporter = found
        .otel_traces_exporter
        .choice(&[("otlp", true), ("none", false)])?;
    let endpoint = match (
        found.otel_exporter_otlp_traces_endpoint.get(),
        found.otel_exporter_otlp_endpoint.get(),
    ) {
        (Some(url), _) => endpoint(found.otel_exporter_otlp_traces_endpoint, url, None)?,
        (None, Some(url)) => endpoint(found.otel_exporter_otlp_endpoint, url, Some("v1/traces"))?,
        (None, None) => return Ok(None),
    };
    if disabled || !exporter {
        return Ok(None);
    }
    for protocol in [
        found.otel_exporter_otlp_traces_protocol,
        found.otel_exporter_otlp_protocol,
    ] {
        protocol.choice(&[("http/protobuf", ())]).map_err(|_| {
            protocol.invalid(format!(
                "{:?} is not supported; this build exports OTLP over HTTP with protobuf: http/protobuf",
                protocol.or_default()
            ))
        })?;
    }
    let headers_setting = for_traces(
        found.otel_exporter_otlp_traces_headers,
        found.otel_exporter_otlp_headers,
    );
    let headers = pairs(headers_setting, false)?
        .into_iter()
        .map(|(name, value)| {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| headers_setting.invalid(format!("{name:?} is not a header name")))?;
            let mut value = HeaderValue::try_from(value.as_str()).map_err(|_| {
                headers_setting.invalid(format!(
                    "the value of {name} has characters not allowed in a header"
                ))
            })?;
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let timeout_setting = for_traces(
        found.otel_exporter_otlp_traces_timeout,
        found.otel_exporter_otlp_timeout,
    );
    Ok(Some(TraceSettings {
        endpoint,
        headers,
        timeout: Duration::from_millis(millis(timeout_setting)?),
        extra_roots: load_roots(found.otel_exporter_otlp_certificate)?,
        service_name: found.otel_service_name.or_default().to_owned(),
        resource: pairs(found.otel_resource_attributes, true)?,
        sampling: sampling(found.otel_traces_sampler, found.otel_traces_sampler_arg)?,
        names: if found
            .otel_semconv_stability_opt_in
            .list()
            .any(|v| v == "gen_ai_latest_experimental")
        {
            GenAiNames::LatestExperimental
        } else {
            GenAiNames::V1_41
        },
        max_queue: found.otel_bsp_max_queue_size.at_least_one()?,
        max_batch: found.otel_bsp_max_export_batch_size.at_least_one()?,
        delay: Duration::from_millis(millis(found.otel_bsp_schedule_delay)?),
    }))
}

/// The traces' own variant of a setting where it is set, else the one for every signal, as the
/// OTLP exporter specification orders them.
fn for_traces<'a>(traces: Value<'a>, every: Value<'a>) -> Value<'a> {
    if traces.get().is_some() {
        traces
    } else {
        every
    }
}

/// An `http://` or `https://` URL; `path` is appended to the base URL's path, as the OTLP
/// exporter specification asks of `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn endpoint(setting: Value<'_>, url: &str, path: Option<&str>) -> Result<Uri, ConfigError> {
    let full = match path {
        Some(path) => format!("{}/{path}", url.trim_end_matches('/')),
        None => url.to_owned(),
    };
    let uri: Uri = full
        .parse()
        .map_err(|_| setting.invalid(format!("{url:?} is not a URL")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(uri),
        _ => Err(setting.invalid(format!(
            "{url:?} is not an http:// or https:// URL with a host"
        ))),
    }
}

/// Milliseconds, as the OTLP and batch settings are written.
fn millis(setting: Value<'_>) -> Result<u64, ConfigError> {
    let n: u64 = setting.number()?;
    if n == 0 {
        return Err(setting.invalid("must be at least 1 (milliseconds)"));
    }
    Ok(n)
}

/// `key=value,key=value`, each part percent-decoded (the W3C Baggage form that
/// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES` share). `show` says whether a
/// message may quote a value.
fn pairs(setting: Value<'_>, show: bool) -> Result<Vec<(String, String)>, ConfigError> {
    setting
        .list()
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                let shown = if show { pair } else { "an entry" };
                setting.invalid(format!("{shown:?} is not key=value"))
            })?;
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s.trim())
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| setting.invalid("an entry is not UTF-8 once percent-decoded"))
            };
            let key = decode(key)?;
            if key.is_empty() {
                return Err(setting.invalid("an entry has an empty key"));
            }
            Ok((key, decode(value)?))
        })
        .collect()
}

fn sampling(sampler: Value<'_>, arg: Value<'_>) -> Result<Sampling, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        let word = arg.or_default();
        match word.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(arg.invalid(format!("{word:?} is not a ratio from 0 to 1"))),
        }
    };
    // A ratio set beside a sampler that takes none is still checked: a typo is never ignored.
    if arg.get().is_some() {
        ratio()?;
    }
    Ok(match sampler.or_default() {
        "always_on" => Sampling::AlwaysOn,
        "always_off" => Sampling::AlwaysOff,
        "traceidratio" => Sampling::Ratio(ratio()?),
        "parentbased_always_on" => Sampling::ParentBased(Root::AlwaysOn),
        "parentbased_always_off" => Sampling::ParentBased(Root::AlwaysOff),
        "parentbased_traceidratio" => Sampling::ParentBased(Root::Ratio(ratio()?)),
        other => {
            return Err(sampler.invalid(format!(
                "{other:?} is none of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
            )))
        }
    })
}
