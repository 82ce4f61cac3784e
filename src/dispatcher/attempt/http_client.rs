//! The dispatcher's outbound HTTP client, on hyper directly: a pooled
//! HTTP/1.1 and HTTP/2 client whose connections are made only to addresses
//! our resolver allowed, TLS with rustls (the platform's roots, ring), no
//! redirects followed (hyper follows none), environment proxies ignored,
//! and `--proxy` as a forward proxy (http://) or a CONNECT tunnel (https://).
//!
//! reqwest did the same with about twice the client CPU per request (a
//! `Uri` re-parsed and the headers copied per request, more allocation),
//! which is the dispatcher's main cost per delivery.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Request, Response, Uri,
    header::{ACCEPT, AUTHORIZATION, PROXY_AUTHORIZATION, USER_AGENT},
    uri::Scheme,
};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection, HttpConnector, dns::Name, proxy::Tunnel},
    },
    rt::{TokioExecutor, TokioTimer},
};
use rustls::pki_types::CertificateDer;
use tower_service::Service;

use crate::address_filter::AddressFilter;
use crate::dispatcher::{attempt::dns::Resolver, attempt::resolve_error::ResolveError};

/// How long making a connection may take (DNS, TCP, the proxy, TLS), within
/// the attempt's own deadline.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sent unless the hook configures its own `User-Agent`.
const USER_AGENT_VALUE: &str = concat!("outbound-webhooks/", env!("CARGO_PKG_VERSION"));

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the client could not be built (start-up only).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `--proxy` is not an http:// or https:// URL.
    #[error("--proxy {0:?} is not an http:// or https:// URL")]
    Proxy(String),
    /// The TLS configuration (the platform's certificate verifier).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The system CA bundle holds no certificate: every https:// receiver
    /// would fail (and its hook turn off), so the dispatcher does not start.
    #[error(
        "no CA certificate found in the system bundle (SSL_CERT_FILE, /etc/ssl/certs/ca-certificates.crt and the other usual places): https:// destinations cannot be verified; the image must carry a CA bundle"
    )]
    NoSystemRoots,
}

/// Why a request got no answer. The typed errors underneath (ours, hyper's,
/// rustls', io) are its sources, for `attempt_error::explain`.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The attempt's deadline passed before the answer's head arrived.
    #[error("no response before the deadline")]
    Timeout,
    /// The client failed: connecting, or sending, or reading the answer.
    #[error("error sending request")]
    Client(#[source] hyper_util::client::legacy::Error),
}

/// A destination URL parsed once: what a request, the address checks and
/// the failure texts need. A hook sends to the same URL each time, so this
/// is cached (`attempt::UrlCache`).
#[derive(Clone, Debug)]
pub struct Target {
    /// The request URI (without userinfo).
    pub uri: Uri,
    /// The URL's host as written in a URL (IPv6 literals in brackets).
    pub host: String,
    /// The URL's port, or its scheme's default.
    pub port: u16,
    /// `Authorization: Basic` from the URL's userinfo, as reqwest sent it.
    authorization: Option<HeaderValue>,
}

impl Target {
    /// Parses an http:// or https:// URL; the error is for people.
    pub fn parse(text: &str) -> Result<Target, String> {
        let mut url = url::Url::parse(text).map_err(|e| e.to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("URL scheme is not allowed".into());
        }
        let host = url.host_str().ok_or("the URL has no host")?.to_string();
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let authorization = take_credentials(&mut url).map(|(user, password)| basic_auth(&user, password.as_deref()));
        let uri = Uri::try_from(url.as_str()).map_err(|e| e.to_string())?;
        Ok(Target {
            uri,
            host,
            port,
            authorization,
        })
    }
}

/// The URL's userinfo, percent-decoded, removed from it.
fn take_credentials(url: &mut url::Url) -> Option<(String, Option<String>)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    let user = decode(url.username())?;
    let password = url.password().and_then(decode);
    if user.is_empty() && password.is_none() {
        return None;
    }
    // Cannot fail: the URL has a host (checked before).
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some((user, password))
}

/// `Basic base64(user:password)`, marked sensitive (kept out of Debug).
fn basic_auth(user: &str, password: Option<&str>) -> HeaderValue {
    use base64::Engine;
    let credentials = format!("{user}:{}", password.unwrap_or_default());
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}")).unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

tokio::task_local! {
    /// The deadline of the attempt a connection is made for: the resolver
    /// waits no longer, also when hyper finishes the connection in the
    /// background after the attempt took a pooled one.
    static ATTEMPT_DEADLINE: tokio::time::Instant;
}

/// Resolves names with the process's asynchronous resolver within the
/// attempt's deadline and keeps only addresses the filter allows, so a
/// connection is made only to a checked address.
#[derive(Clone, Debug)]
pub struct FilteringResolver {
    resolver: Resolver,
    filter: Arc<AddressFilter>,
}

impl Service<Name> for FilteringResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ResolveError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        let host = name.as_str().to_string();
        let deadline = ATTEMPT_DEADLINE
            .try_with(|deadline| *deadline)
            .unwrap_or_else(|_| tokio::time::Instant::now() + CONNECT_TIMEOUT);
        Box::pin(async move {
            let resolved = this.resolver.lookup(&host, deadline).await?;
            let allowed = this
                .filter
                .allowed(&resolved)
                .map_err(|why| ResolveError::Refused { host, why })?;
            // The port is the connector's to set.
            Ok(allowed
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

/// One hop: TCP to a filtered address, TLS when the URI is https://.
type Hop = HttpsConnector<HttpConnector<FilteringResolver>>;

/// Where connections go.
#[derive(Clone, Debug)]
enum Route {
    /// To the destination.
    Direct(Hop),
    /// Through `--proxy` (boxed: the larger route, cloned per connection).
    Proxy(Box<Proxied>),
}

/// The connectors of the `--proxy` route.
#[derive(Clone, Debug)]
struct Proxied {
    /// To the proxy itself (HTTP/1.1 only: it forwards absolute-form
    /// requests), for http:// destinations.
    forward: Hop,
    /// The proxy's URI.
    proxy: Uri,
    /// TLS to the destination through a CONNECT tunnel, for https://.
    tunnel: HttpsConnector<Tunnel<Hop>>,
}

/// The client's connector: the route, bounded by `CONNECT_TIMEOUT`.
#[derive(Clone, Debug)]
pub struct Connector {
    route: Route,
}

/// Calls a tower service once it is ready.
async fn ready_call<S>(service: &mut S, uri: Uri) -> Result<S::Response, BoxError>
where
    S: Service<Uri>,
    S::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(Into::into)?;
    service.call(uri).await.map_err(Into::into)
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each call clones the route and waits for readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let route = self.route.clone();
        // Called while the attempt's request is polled; the connection may
        // then be finished in the background, still within that deadline.
        let deadline = ATTEMPT_DEADLINE
            .try_with(|deadline| *deadline)
            .unwrap_or_else(|_| tokio::time::Instant::now() + CONNECT_TIMEOUT);
        Box::pin(ATTEMPT_DEADLINE.scope(deadline, async move {
            let connecting = async move {
                match route {
                    Route::Direct(mut hop) => Ok(Conn::new(ready_call(&mut hop, dst).await?, false)),
                    Route::Proxy(mut via) if dst.scheme() == Some(&Scheme::HTTPS) => {
                        Ok(Conn::new(ready_call(&mut via.tunnel, dst).await?, false))
                    }
                    Route::Proxy(mut via) => {
                        let proxy = via.proxy.clone();
                        Ok::<_, BoxError>(Conn::new(ready_call(&mut via.forward, proxy).await?, true))
                    }
                }
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(Box::new(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")) as BoxError),
            }
        }))
    }
}

/// What a connection needs to be: an IO stream hyper can pool.
trait Io: hyper::rt::Read + hyper::rt::Write + Connection + Send + Unpin {}

impl<T: hyper::rt::Read + hyper::rt::Write + Connection + Send + Unpin> Io for T {}

/// A connection of any route (boxed: one allocation per connection, not
/// per request).
pub struct Conn {
    io: Box<dyn Io>,
    /// To a forward proxy: hyper then sends the request in absolute form.
    forward_proxy: bool,
}

impl Conn {
    fn new(io: impl Io + 'static, forward_proxy: bool) -> Self {
        Conn {
            io: Box::new(io),
            forward_proxy,
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let connected = self.io.connected();
        if self.forward_proxy {
            connected.proxy(true)
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// The outbound HTTP client (cheap to clone: the pool is shared).
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
    /// `Proxy-Authorization` for requests a forward proxy relays (from
    /// `--proxy`'s userinfo; a tunnel sends it in its CONNECT).
    forward_auth: Option<HeaderValue>,
}

impl HttpClient {
    /// Builds the client; `proxy` is `--proxy`, `extra_roots` the CAs of
    /// `--destination-ca-file` (trusted besides the system's). Proxy
    /// environment variables are never read.
    pub fn new(
        filter: Arc<AddressFilter>,
        resolver: Resolver,
        proxy: Option<&str>,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<HttpClient, BuildError> {
        if rustls_native_certs::load_native_certs().certs.is_empty() {
            return Err(BuildError::NoSystemRoots);
        }
        let mut tcp = HttpConnector::new_with_resolver(FilteringResolver { resolver, filter });
        // https:// URIs reach it through the TLS layer.
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // As reqwest had them.
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        let destinations = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(extra_roots)?)
            .https_or_http()
            .enable_http1()
            .enable_http2();
        let (route, forward_auth) = match proxy {
            None => (Route::Direct(destinations.wrap_connector(tcp)), None),
            Some(text) => {
                let (proxy, auth) = proxy_uri(text)?;
                let to_proxy = HttpsConnectorBuilder::new()
                    .with_tls_config(tls_config(extra_roots)?)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(tcp);
                let mut tunnel = Tunnel::new(proxy.clone(), to_proxy.clone());
                if let Some(auth) = &auth {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let route = Route::Proxy(Box::new(Proxied {
                    forward: to_proxy,
                    proxy,
                    tunnel: destinations.wrap_connector(tunnel),
                }));
                (route, auth)
            }
        };
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(Connector { route });
        Ok(HttpClient { client, forward_auth })
    }

    /// POSTs `body` with `headers` to `target`, waiting until `deadline`
    /// for the answer's head (the caller bounds the body read with the
    /// same deadline).
    pub async fn post(
        &self,
        target: &Target,
        mut headers: HeaderMap,
        body: Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<Response<Incoming>, SendError> {
        // The hook's own headers win, as with reqwest's defaults.
        headers
            .entry(USER_AGENT)
            .or_insert_with(|| HeaderValue::from_static(USER_AGENT_VALUE));
        headers.entry(ACCEPT).or_insert_with(|| HeaderValue::from_static("*/*"));
        if let Some(auth) = &target.authorization {
            headers.entry(AUTHORIZATION).or_insert_with(|| auth.clone());
        }
        if let Some(auth) = &self.forward_auth
            && target.uri.scheme() == Some(&Scheme::HTTP)
        {
            headers.entry(PROXY_AUTHORIZATION).or_insert_with(|| auth.clone());
        }
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = target.uri.clone();
        *request.headers_mut() = headers;
        let answer = ATTEMPT_DEADLINE.scope(deadline, self.client.request(request));
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(SendError::Client(e)),
            Err(_) => Err(SendError::Timeout),
        }
    }
}

/// TLS as reqwest had it: TLS 1.2 and 1.3, the platform's verifier
/// (system roots, plus `extra_roots`), ring (the crate's one provider).
/// ALPN is set by the connector builder.
pub(crate) fn tls_config(extra_roots: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots.iter().cloned(), provider.clone())?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The certificates of a PEM bundle (`--destination-ca-file`).
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, std::io::Error> {
    use rustls::pki_types::pem::PemObject;
    let invalid =
        |e: rustls::pki_types::pem::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(invalid)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    if certs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no PEM certificate in it",
        ));
    }
    Ok(certs)
}

/// `--proxy` as a URI without userinfo, and the userinfo as basic auth
/// (like reqwest, a URL without a scheme means http://).
fn proxy_uri(text: &str) -> Result<(Uri, Option<HeaderValue>), BuildError> {
    let invalid = || BuildError::Proxy(redacted(text));
    let mut url = match url::Url::parse(text) {
        Ok(u) if u.has_host() => u,
        _ => url::Url::parse(&format!("http://{text}")).map_err(|_| invalid())?,
    };
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(invalid());
    }
    let auth = take_credentials(&mut url).map(|(user, password)| basic_auth(&user, password.as_deref()));
    let uri = Uri::try_from(url.as_str()).map_err(|_| invalid())?;
    Ok((uri, auth))
}

/// The proxy URL for a message, without its password.
fn redacted(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => text.split('@').next_back().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        sync::mpsc,
    };

    use super::*;
    use crate::dispatcher::{
        attempt::attempts_log::AttemptKind,
        attempt::error_text::{Destination, explain},
    };

    /// A proxy on loopback that reports each request head it gets and
    /// answers a CONNECT with 200 and then plain HTTP where TLS is
    /// expected, anything else with 204.
    async fn fake_proxy() -> (u16, mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if s.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let connect = head.starts_with("CONNECT ");
                    tx.send(head).unwrap();
                    if connect {
                        s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            .await
                            .unwrap();
                        let mut client_hello = [0u8; 1024];
                        let _ = s.read(&mut client_hello).await;
                    }
                    let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest).await;
                });
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn through_a_proxy_http_is_forwarded_in_absolute_form_and_https_tunnelled() {
        let (port, mut heads) = fake_proxy().await;
        let filter = Arc::new(AddressFilter::new(vec!["127.0.0.0/8".parse().unwrap()]));
        let resolver = Resolver::new(&[]).unwrap();
        let client = HttpClient::new(filter, resolver, Some(&format!("http://u:pw@127.0.0.1:{port}")), &[]).unwrap();
        let deadline = || tokio::time::Instant::now() + Duration::from_secs(5);
        // `.invalid` names resolve nowhere: only the proxy may see them.
        let plain = Target::parse("http://billing.invalid:8080/x?y=1").unwrap();
        let answer = client
            .post(&plain, HeaderMap::new(), Bytes::from_static(b"{}"), deadline())
            .await
            .unwrap();
        assert_eq!(answer.status(), 204);
        let head = heads.recv().await.unwrap();
        assert!(
            head.starts_with("POST http://billing.invalid:8080/x?y=1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_lowercase().contains("proxy-authorization: basic dtpwdw=="),
            "{head}"
        );
        assert!(head.contains("outbound-webhooks/"), "{head}");

        let secure = Target::parse("https://billing.invalid:8443/x").unwrap();
        let e = client
            .post(&secure, HeaderMap::new(), Bytes::new(), deadline())
            .await
            .unwrap_err();
        let head = heads.recv().await.unwrap();
        assert!(head.starts_with("CONNECT billing.invalid:8443 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_lowercase().contains("proxy-authorization: basic dtpwdw=="),
            "{head}"
        );
        let to = Destination {
            host: "billing.invalid",
            port: 8443,
        };
        let t = Duration::from_secs(5);
        assert_eq!(
            explain(&e, to, t, t),
            (
                AttemptKind::ConnectionFailed,
                "TLS handshake with billing.invalid failed: the server did not speak TLS (plain HTTP on this port?)"
                    .into()
            )
        );
    }

    #[tokio::test]
    async fn a_name_whose_dns_never_answers_fails_at_the_attempts_deadline_with_a_dns_timeout() {
        // A DNS server that never answers.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let resolver = Resolver::new(&[silent.local_addr().unwrap()]).unwrap();
        let filter = Arc::new(AddressFilter::new(vec![]));
        let client = HttpClient::new(filter, resolver, None, &[]).unwrap();
        let target = Target::parse("http://billing.example:8080/").unwrap();
        let t = Duration::from_millis(700);
        let started = std::time::Instant::now();
        let e = client
            .post(&target, HeaderMap::new(), Bytes::new(), tokio::time::Instant::now() + t)
            .await
            .unwrap_err();
        let took = started.elapsed();
        let to = Destination {
            host: "billing.example",
            port: 8080,
        };
        let (kind, text) = explain(&e, to, t, CONNECT_TIMEOUT);
        assert_eq!(kind, AttemptKind::ConnectionFailed, "{text}");
        assert!(
            text.starts_with("DNS lookup of billing.example timed out after "),
            "{text}"
        );
        assert!(took < Duration::from_millis(1200), "{took:?}");
    }

    #[test]
    fn userinfo_becomes_basic_auth_and_leaves_the_uri() {
        let t = Target::parse("https://user:p%40ss@billing.example/hook?x=1").unwrap();
        assert_eq!(t.uri.to_string(), "https://billing.example/hook?x=1");
        assert_eq!((t.host.as_str(), t.port), ("billing.example", 443));
        assert_eq!(t.authorization.unwrap().to_str().unwrap(), "Basic dXNlcjpwQHNz");
        let v6 = Target::parse("http://[::1]:8080/").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 8080));
        assert!(Target::parse("ftp://billing.example/").is_err());
    }

    #[test]
    fn proxy_urls_without_scheme_are_http_and_bad_ones_are_refused() {
        let (uri, auth) = proxy_uri("proxy.internal:3128").unwrap();
        assert_eq!(uri.to_string(), "http://proxy.internal:3128/");
        assert!(auth.is_none());
        let (uri, auth) = proxy_uri("http://u:secret@10.0.0.1:3128").unwrap();
        assert_eq!(uri.to_string(), "http://10.0.0.1:3128/");
        assert!(auth.is_some());
        let e = proxy_uri("socks5://u:secret@10.0.0.1:1080").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
