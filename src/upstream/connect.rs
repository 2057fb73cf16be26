//! Making one upstream connection: TCP (directly, or through a forward proxy's `CONNECT`
//! tunnel), then TLS with the protocols offered in ALPN. The pools decide when to call it.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tower_service::Service;

use super::failure::{ConnectTimedOut, UpstreamError};
use crate::config::UpstreamSettings;
use crate::outcome::{BoxError, FailureKind};

/// What ALPN offers on a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// `h2` and `http/1.1`: the upstream decides.
    Both,
    Http1,
    Http2,
}

/// A connected stream, plain or TLS, as hyper's connections take it.
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A new connection and the protocol it speaks.
pub(crate) struct Connected {
    pub io: TokioIo<Io>,
    /// ALPN chose `h2` (or, on plain HTTP, HTTP/2 was asked for).
    pub http2: bool,
}

/// Connects to the configured upstream. Shared by both pools.
pub(crate) struct Connector {
    tcp: HttpConnector,
    tunnel: Option<(Tunnel<HttpConnector>, String)>,
    /// `scheme://host:port/`: what TCP (or the tunnel) connects to.
    target: Uri,
    tls: Option<Tls>,
    timeout: Duration,
}

/// One client configuration per ALPN offer. They are clones of one, so they share one
/// session cache: a new connection resumes a session instead of a full handshake.
struct Tls {
    server_name: ServerName<'static>,
    both: TlsConnector,
    http1: TlsConnector,
    http2: TlsConnector,
}

impl Connector {
    pub(crate) fn new(
        config: &UpstreamSettings,
        timeout: Duration,
    ) -> Result<Connector, rustls::Error> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        // Each SSE event must leave at once, not wait for Nagle's algorithm.
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(60)));
        let target = Uri::builder()
            .scheme(config.scheme.clone())
            .authority(config.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let tunnel = config.egress.as_ref().map(|proxy| {
            let mut tunnel = Tunnel::new(proxy.uri.clone(), tcp.clone());
            if let Some(auth) = &proxy.authorization {
                tunnel = tunnel.with_auth(auth.clone());
            }
            (tunnel, proxy.name())
        });
        let tls = if config.scheme == http::uri::Scheme::HTTPS {
            Some(Tls::new(config)?)
        } else {
            None
        };
        Ok(Connector {
            tcp,
            tunnel,
            target,
            tls,
            timeout,
        })
    }

    /// Connects within `PROXY_CONNECT_TIMEOUT`, which bounds TCP, the tunnel and the TLS
    /// handshake together.
    pub(crate) async fn connect(&self, offer: Offer) -> Result<Connected, UpstreamError> {
        match tokio::time::timeout(self.timeout, self.connect_unbounded(offer)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::new(
                FailureKind::ConnectTimeout,
                ConnectTimedOut,
            )),
        }
    }

    async fn connect_unbounded(&self, offer: Offer) -> Result<Connected, UpstreamError> {
        let tcp = match &self.tunnel {
            None => self
                .tcp
                .clone()
                .call(self.target.clone())
                .await
                .map_err(|e| UpstreamError::classify(FailureKind::Connect, e))?
                .into_inner(),
            Some((tunnel, name)) => tunnel
                .clone()
                .call(self.target.clone())
                .await
                .map_err(|error| {
                    UpstreamError::new(
                        FailureKind::ForwardProxy,
                        ForwardProxyFailed {
                            proxy: name.clone(),
                            error: Box::new(error),
                        },
                    )
                })?
                .into_inner(),
        };
        let Some(tls) = &self.tls else {
            return Ok(Connected {
                io: TokioIo::new(Io::Plain(tcp)),
                http2: offer == Offer::Http2,
            });
        };
        let connector = match offer {
            Offer::Both => &tls.both,
            Offer::Http1 => &tls.http1,
            Offer::Http2 => &tls.http2,
        };
        let stream = connector
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                if refused_alpn(&e) {
                    let offered = match offer {
                        Offer::Both => "h2, http/1.1",
                        Offer::Http1 => "http/1.1",
                        Offer::Http2 => "h2",
                    };
                    UpstreamError::new(
                        FailureKind::Tls,
                        format!("the upstream speaks none of the protocols offered in ALPN ({offered}; HTTP/2 is h2); check PROXY_UPSTREAM_PROTOCOL"),
                    )
                } else {
                    UpstreamError::classify(FailureKind::Tls, e)
                }
            })?;
        let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Connected {
            io: TokioIo::new(Io::Tls(Box::new(stream))),
            http2,
        })
    }
}

impl Tls {
    fn new(config: &UpstreamSettings) -> Result<Tls, rustls::Error> {
        let base = crate::tls::client_config(&config.extra_roots)?;
        let with_alpn = |protocols: &[&[u8]]| {
            let mut config = base.clone();
            config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(config))
        };
        let host = config.authority.host();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // A DNS name is sent as SNI (rustls always sends it); an IP address cannot be.
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|e| rustls::Error::General(format!("{host:?}: {e}")))?;
        Ok(Tls {
            server_name,
            both: with_alpn(&[b"h2", b"http/1.1"]),
            http1: with_alpn(&[b"http/1.1"]),
            http2: with_alpn(&[b"h2"]),
        })
    }
}

/// Whether the upstream ended the handshake because it shares no ALPN protocol with us.
fn refused_alpn(error: &io::Error) -> bool {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
                    | rustls::Error::NoApplicationProtocol
            )
        })
}

/// The forward proxy failed or refused the tunnel; the answer names the proxy, not OpenAI.
#[derive(Debug)]
pub(crate) struct ForwardProxyFailed {
    proxy: String,
    error: BoxError,
}

impl fmt::Display for ForwardProxyFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "forward proxy {} failed the CONNECT tunnel", self.proxy)
    }
}

impl std::error::Error for ForwardProxyFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_extra_ca_adds_to_the_built_in_roots() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let dir = std::env::temp_dir().join(format!("memoctopus-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        let config = crate::Config::from_vars([
            ("OPENAI_API_KEY", "sk-test"),
            ("PROXY_UPSTREAM_CA", path.to_str().unwrap()),
        ])
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(config.upstream.extra_roots.len(), 1);
        let roots = crate::tls::roots(&config.upstream.extra_roots).unwrap();
        assert_eq!(roots.len(), webpki_roots::TLS_SERVER_ROOTS.len() + 1);
    }
}
