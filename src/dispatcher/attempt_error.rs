//! What went wrong with an attempt that got no answer, in words a person
//! understands ("DNS lookup of billing.example failed: name not known",
//! "connection to 203.0.113.5:443 refused"), found by walking the error's
//! source chain for the typed errors underneath the client's generic
//! "error sending request".
//!
//! The texts become the attempts log's error and `status.delivery`'s last
//! failure message; they never carry a body, a header value or a token.

use std::{error::Error, io, time::Duration};

use super::{attempts_log::AttemptKind, http_client::SendError};

/// Why our resolver gave the client no address: the typed error at the bottom
/// of a failed attempt's source chain.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The DNS answered without an address, or failed.
    #[error("DNS lookup of {host} failed: {reason}")]
    Lookup {
        /// The host name looked up.
        host: String,
        /// What the resolver said, short ("name not known").
        reason: String,
    },
    /// No answer before the attempt's deadline (or the query's own timeout).
    #[error("DNS lookup of {host} timed out after {}", rounded(*.after))]
    TimedOut {
        /// The host name looked up.
        host: String,
        /// How long the attempt waited for it.
        after: Duration,
    },
    /// Every address the name resolves to is refused (docs/src/contract.md#outbound-safety).
    #[error("refused destination {host}: {why}")]
    Refused {
        /// The host name.
        host: String,
        /// Why its first address is refused.
        why: String,
    },
}

/// A wait as people say it: whole seconds, or milliseconds under one.
fn rounded(wait: Duration) -> String {
    if wait >= Duration::from_secs(1) {
        format!("{}s", wait.as_secs_f64().round())
    } else {
        format!("{}ms", wait.as_millis())
    }
}

/// Where the attempt went: the URL's host and port, named in the texts.
#[derive(Clone, Copy, Debug)]
pub struct Destination<'a> {
    /// The URL's host (an IP literal or a name).
    pub host: &'a str,
    /// The URL's port, or its scheme's default.
    pub port: u16,
}

/// Every error of the chain under `error`, including the errors an
/// `io::Error` wraps (its own `source()` skips them: a TLS failure is an
/// `io::Error` around a `rustls::Error`).
fn chain<'a>(error: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut all = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        all.push(e);
        next = match e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        };
    }
    all
}

/// The kind and text of an attempt that failed without an answer.
/// `timeout` is the hook's `timeoutSeconds`; `connect_timeout` the client's.
pub fn explain(
    error: &(dyn Error + 'static),
    to: Destination<'_>,
    timeout: Duration,
    connect_timeout: Duration,
) -> (AttemptKind, String) {
    let errors = chain(error);
    let host = to.host.trim_start_matches('[').trim_end_matches(']');
    let address = if host.contains(':') {
        format!("[{host}]:{}", to.port)
    } else {
        format!("{host}:{}", to.port)
    };
    // Our resolver's verdict first: it says exactly what happened.
    for e in &errors {
        if let Some(resolve) = e.downcast_ref::<ResolveError>() {
            let kind = match resolve {
                ResolveError::Lookup { .. } | ResolveError::TimedOut { .. } => AttemptKind::ConnectionFailed,
                ResolveError::Refused { .. } => AttemptKind::RefusedAddress,
            };
            return (kind, resolve.to_string());
        }
    }
    for e in &errors {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return (
                AttemptKind::ConnectionFailed,
                format!("TLS handshake with {host} failed: {}", tls_reason(tls, host)),
            );
        }
    }
    let deadline_passed = errors
        .iter()
        .any(|e| matches!(e.downcast_ref::<SendError>(), Some(SendError::Timeout)));
    // The first kind that says something: layers re-wrap errors as `Other`.
    let io_kind = errors
        .iter()
        .filter_map(|e| e.downcast_ref::<io::Error>().map(io::Error::kind))
        .find(|k| *k != io::ErrorKind::Other);
    // hyper-util says whether it failed while connecting (our connector's
    // `CONNECT_TIMEOUT` is an io `TimedOut` under it).
    let connecting = errors.iter().any(|e| {
        e.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect)
    });
    if deadline_passed || io_kind == Some(io::ErrorKind::TimedOut) {
        if connecting {
            return (
                AttemptKind::Timeout,
                format!("no connection to {address} within {}s", connect_timeout.as_secs()),
            );
        }
        return (
            AttemptKind::Timeout,
            format!("no response within {}s", timeout.as_secs()),
        );
    }
    let text = match io_kind {
        Some(io::ErrorKind::ConnectionRefused) => format!("connection to {address} refused"),
        Some(io::ErrorKind::ConnectionReset) => format!("connection to {address} reset by the receiver"),
        Some(io::ErrorKind::ConnectionAborted) => format!("connection to {address} aborted"),
        Some(io::ErrorKind::HostUnreachable) => format!("{address} unreachable (no route to host)"),
        Some(io::ErrorKind::NetworkUnreachable) => format!("{address} unreachable (network unreachable)"),
        Some(io::ErrorKind::AddrNotAvailable) => format!("cannot connect to {address}: address not available"),
        Some(io::ErrorKind::UnexpectedEof) => format!("{address} closed the connection before answering"),
        _ => joined(&errors),
    };
    (AttemptKind::ConnectionFailed, text)
}

/// The chain's messages joined, each once (the top-level "error sending
/// request" alone does not say what went wrong).
pub fn joined(errors: &[&(dyn Error + 'static)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in errors {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// A short reason for a failed TLS handshake.
fn tls_reason(error: &rustls::Error, host: &str) -> String {
    use rustls::{CertificateError as C, Error as E};
    match error {
        E::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => "certificate signed by an unknown authority".into(),
            C::Expired | C::ExpiredContext { .. } => "certificate expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate not valid yet".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!("certificate not valid for {host}"),
            C::Revoked => "certificate revoked".into(),
            C::BadSignature => "bad certificate signature".into(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "certificate not valid for a server".into(),
            other => format!("invalid certificate ({other:?})"),
        },
        E::InvalidMessage(_) => "the server did not speak TLS (plain HTTP on this port?)".into(),
        E::AlertReceived(alert) => format!("the server refused it (alert {alert:?})"),
        E::PeerIncompatible(_) => "no TLS version or cipher suite in common".into(),
        E::NoCertificatesPresented => "the server presented no certificate".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::address_filter::AddressFilter;

    /// An error wrapping another, like the client's and hyper's layers.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Layer(&'static str, #[source] Box<dyn Error + Send + Sync>);

    fn layered(inner: impl Error + Send + Sync + 'static) -> Layer {
        Layer(
            "error sending request",
            Box::new(Layer("client error (Connect)", Box::new(inner))),
        )
    }

    const TO: Destination<'static> = Destination {
        host: "billing.example",
        port: 443,
    };
    const T: Duration = Duration::from_secs(10);

    fn explained(e: &(dyn Error + 'static)) -> (AttemptKind, String) {
        explain(e, TO, T, T)
    }

    #[test]
    fn a_dns_failure_names_the_host_and_the_short_reason() {
        let e = layered(ResolveError::Lookup {
            host: "billing.example".into(),
            reason: "name not known".into(),
        });
        assert_eq!(
            explained(&e),
            (
                AttemptKind::ConnectionFailed,
                "DNS lookup of billing.example failed: name not known".into()
            )
        );
    }

    #[test]
    fn a_dns_timeout_names_the_host_and_the_wait_and_counts_as_a_connection_failure() {
        let e = layered(ResolveError::TimedOut {
            host: "billing.example".into(),
            after: Duration::from_millis(2004),
        });
        assert_eq!(
            explained(&e),
            (
                AttemptKind::ConnectionFailed,
                "DNS lookup of billing.example timed out after 2s".into()
            )
        );
        assert_eq!(rounded(Duration::from_millis(350)), "350ms");
    }

    #[test]
    fn a_refused_address_keeps_its_clear_text() {
        let e = layered(ResolveError::Refused {
            host: "billing.example".into(),
            why: "10.0.0.5 is private".into(),
        });
        assert_eq!(
            explained(&e),
            (
                AttemptKind::RefusedAddress,
                "refused destination billing.example: 10.0.0.5 is private".into()
            )
        );
    }

    #[test]
    fn refused_and_reset_connections_name_the_address() {
        let refused = layered(io::Error::from(io::ErrorKind::ConnectionRefused));
        let to = Destination {
            host: "203.0.113.5",
            port: 443,
        };
        assert_eq!(explain(&refused, to, T, T).1, "connection to 203.0.113.5:443 refused");
        let v6 = Destination {
            host: "[2001:db8::1]",
            port: 8443,
        };
        assert_eq!(
            explain(&refused, v6, T, T).1,
            "connection to [2001:db8::1]:8443 refused"
        );
        let reset = layered(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(
            explained(&reset).1,
            "connection to billing.example:443 reset by the receiver"
        );
    }

    #[test]
    fn tls_failures_give_a_short_reason() {
        let cases = [
            (
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
                "TLS handshake with billing.example failed: certificate signed by an unknown authority",
            ),
            (
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
                "TLS handshake with billing.example failed: certificate expired",
            ),
            (
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
                "TLS handshake with billing.example failed: certificate not valid for billing.example",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
                "TLS handshake with billing.example failed: the server refused it (alert HandshakeFailure)",
            ),
        ];
        for (tls, text) in cases {
            // As tokio-rustls reports it: an io::Error around the rustls::Error.
            let e = layered(io::Error::new(io::ErrorKind::InvalidData, tls));
            assert_eq!(explained(&e), (AttemptKind::ConnectionFailed, text.to_string()));
        }
    }

    #[test]
    fn anything_else_joins_the_chain_once() {
        let e = layered(io::Error::other("something new"));
        assert_eq!(
            explained(&e).1,
            "error sending request: client error (Connect): something new"
        );
    }

    fn client() -> crate::dispatcher::http_client::HttpClient {
        let filter = Arc::new(AddressFilter::new(vec!["127.0.0.0/8".parse().unwrap()]));
        let resolver = crate::dispatcher::dns::Resolver::new(&[]).unwrap();
        super::super::attempt::outbound(filter, resolver, None, &[])
            .unwrap()
            .client
    }

    async fn real(url: &str) -> (AttemptKind, String) {
        let target = crate::dispatcher::http_client::Target::parse(url).unwrap();
        let to = Destination {
            host: &target.host,
            port: target.port,
        };
        let t = Duration::from_millis(1500);
        let deadline = tokio::time::Instant::now() + t;
        let e = client()
            .post(&target, Default::default(), Default::default(), deadline)
            .await
            .unwrap_err();
        explain(&e, to, t, Duration::from_secs(10))
    }

    #[tokio::test]
    async fn real_failures_on_loopback_read_as_people_expect() {
        // A closed port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_eq!(
            real(&format!("http://127.0.0.1:{port}/")).await,
            (
                AttemptKind::ConnectionFailed,
                format!("connection to 127.0.0.1:{port} refused")
            )
        );
        // A name no resolver knows (RFC 6761 reserves .invalid).
        let (kind, text) = real("https://billing.invalid/").await;
        assert_eq!(kind, AttemptKind::ConnectionFailed);
        assert!(text.starts_with("DNS lookup of billing.invalid failed: "), "{text}");
        // A listener that accepts and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                kept.push(s);
            }
        });
        assert_eq!(
            real(&format!("http://127.0.0.1:{silent_port}/")).await,
            (AttemptKind::Timeout, "no response within 1s".into())
        );
        held.abort();
    }

    #[tokio::test]
    async fn tls_to_a_plain_http_server_says_so() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let (kind, text) = real(&format!("https://127.0.0.1:{port}/")).await;
        server.abort();
        assert_eq!(kind, AttemptKind::ConnectionFailed);
        assert_eq!(
            text,
            "TLS handshake with 127.0.0.1 failed: the server did not speak TLS (plain HTTP on this port?)"
        );
    }
}
