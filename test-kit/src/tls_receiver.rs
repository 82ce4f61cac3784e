//! An HTTPS receiver on loopback: HTTP/1.1 and HTTP/2 (hyper-util's `auto`
//! server over tokio-rustls), the protocols it offers by ALPN chosen by the
//! test. Its certificate, for `*.live.test` and `live.test` (the DNS
//! server's live zone), is signed by a throwaway CA made in-process with
//! rcgen; the CA's PEM file is what the dispatcher's `--destination-ca-file`
//! is given. It records every request as [`Received`] with the HTTP version
//! it came over, answers 200, and counts TLS handshakes and the connections
//! that negotiated HTTP/2.

use std::{
    collections::HashMap,
    convert::Infallible,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use bytes::Bytes;
use http::Version;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};

use super::{
    receiver::{Received, carrying, runtime},
    wait_for,
};

/// ALPN offering HTTP/2 and HTTP/1.1 (a client that speaks HTTP/2 takes it).
pub const H2_AND_HTTP1: &[&str] = &["h2", "http/1.1"];
/// ALPN offering HTTP/1.1 only (a receiver without HTTP/2).
pub const HTTP1_ONLY: &[&str] = &["http/1.1"];

/// What the receiver counted and recorded.
#[derive(Default)]
struct State {
    /// Each request with the HTTP version it came over, in arrival order.
    requests: Mutex<Vec<(Received, Version)>>,
    /// TLS handshakes that completed (connections accepted over TLS).
    handshakes: AtomicUsize,
    /// TLS handshakes that failed (the client refused the certificate, say).
    failed_handshakes: AtomicUsize,
    /// Connections that negotiated HTTP/2 by ALPN.
    h2_connections: AtomicUsize,
}

/// A loopback HTTPS receiver answering 200 to everything; it stops with
/// the test binary.
pub struct TlsReceiver {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// A throwaway CA's PEM and a certificate and key for `*.live.test`
/// and `live.test` signed by it.
struct Certs {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn make_certs() -> Certs {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.distinguished_name
        .push(DnType::CommonName, "outbound-webhooks test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("the CA's key");
    let ca_cert = ca.self_signed(&ca_key).expect("the CA's certificate");

    let mut server = CertificateParams::new(vec!["*.live.test".to_string(), "live.test".to_string()])
        .expect("the receiver's certificate parameters");
    server.distinguished_name.push(DnType::CommonName, "live.test");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().expect("the receiver's key");
    let issuer = Issuer::new(ca, ca_key);
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .expect("the receiver's certificate");
    Certs {
        ca_pem: ca_cert.pem(),
        chain: vec![server_cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(server_key.serialize_der()).into(),
    }
}

impl TlsReceiver {
    /// Starts a receiver offering `alpn` ([`H2_AND_HTTP1`] or [`HTTP1_ONLY`]).
    pub fn start(alpn: &[&str]) -> TlsReceiver {
        let certs = make_certs();
        let dir = tempfile::tempdir().expect("a temporary directory for the CA file");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &certs.ca_pem).expect("writing the CA file");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs.chain, certs.key)
            .expect("the receiver's certificate and key");
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a receiver port");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(State::default());
        let st = state.clone();
        runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, acceptor) = (st.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        st.failed_handshakes.fetch_add(1, SeqCst);
                        return;
                    };
                    st.handshakes.fetch_add(1, SeqCst);
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        st.h2_connections.fetch_add(1, SeqCst);
                    }
                    let service = service_fn(move |req| receive(req, st.clone()));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsReceiver {
            port,
            state,
            ca_file,
            _dir: dir,
        }
    }

    /// The CA's PEM file (the dispatcher's `--destination-ca-file`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// `https://HOST:PORT/path`; `host` should be a name of the live zone.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }

    /// Every request so far with the HTTP version it came over.
    pub fn requests_with_versions(&self) -> Vec<(Received, Version)> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.requests_with_versions().into_iter().map(|(r, _)| r).collect()
    }

    /// Requests carrying this event id.
    pub fn requests_for(&self, event_id: &str) -> Vec<Received> {
        carrying(self.requests(), event_id)
    }

    /// Waits until `n` requests carry this event id; returns them.
    pub fn wait_for_event(&self, event_id: &str, n: usize, timeout: Duration) -> Vec<Received> {
        wait_for(&format!("{n} request(s) for event {event_id}"), timeout, || {
            let got = self.requests_for(event_id);
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!(
                    "{} so far; {} TLS handshake(s), {} failed",
                    got.len(),
                    self.tls_handshakes(),
                    self.failed_handshakes()
                ))
            }
        })
    }

    /// How many requests came over each HTTP version.
    pub fn versions(&self) -> HashMap<Version, usize> {
        let mut counts = HashMap::new();
        for (_, version) in self.requests_with_versions() {
            *counts.entry(version).or_default() += 1;
        }
        counts
    }

    /// TLS handshakes that completed (connections accepted).
    pub fn tls_handshakes(&self) -> usize {
        self.state.handshakes.load(SeqCst)
    }

    /// TLS handshakes that failed.
    pub fn failed_handshakes(&self) -> usize {
        self.state.failed_handshakes.load(SeqCst)
    }

    /// Connections that negotiated HTTP/2.
    pub fn h2_connections(&self) -> usize {
        self.state.h2_connections.load(SeqCst)
    }
}

async fn receive(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes().to_vec(),
        // Recorded all the same: a test then sees the body was cut.
        Err(_) => Vec::new(),
    };
    let received = Received::new(parts.uri.path(), &parts.headers, body);
    state.requests.lock().unwrap().push((received, parts.version));
    Ok(Response::new(Full::new(Bytes::from_static(b"receiver says so"))))
}
