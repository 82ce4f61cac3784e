//! A scripted HTTP receiver on loopback, recording every request, and the
//! third-party signature check of what it received.

use std::{
    collections::HashMap,
    io::Write,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{hooks::TestHook, repo_root, wait_for};

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status, small body.
    Status(u16),
    /// This status and these headers.
    WithHeaders(u16, Vec<(&'static str, String)>),
    /// Never answer (until the client gives up).
    Hang,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Request path.
    pub path: String,
    /// Headers, names lowercase.
    pub headers: HashMap<String, String>,
    /// Exact body bytes.
    pub body: Vec<u8>,
}

impl Received {
    /// A request as it arrived now: its path, its headers (names
    /// lowercase, values that are not text recorded empty) and its body.
    pub fn new(path: &str, headers: &http::HeaderMap, body: Vec<u8>) -> Received {
        Received {
            at: Instant::now(),
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body,
        }
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    pub fn event_id(&self) -> &str {
        self.header("webhook-id")
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

type Script = Arc<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

/// A loopback HTTP receiver that records every request and answers per a
/// script `(request, nth request with this webhook-id) -> Reply`.
pub struct Receiver {
    pub port: u16,
    requests: Arc<Mutex<Vec<Received>>>,
}

/// The runtime the test receivers serve on (one per test binary).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("receiver runtime")
    })
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub fn ok() -> Receiver {
        Receiver::start(|_, _| Reply::Status(200))
    }

    /// A receiver answering per `script`.
    pub fn start(script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let script: Script = Arc::new(script);
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a receiver port");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let recorded = requests.clone();
        let handler = move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let script = script.clone();
            let recorded = recorded.clone();
            async move {
                let received = Received::new(uri.path(), &headers, body.to_vec());
                let nth = {
                    let mut all = recorded.lock().unwrap();
                    all.push(received.clone());
                    all.iter().filter(|r| r.event_id() == received.event_id()).count()
                };
                // Scripts may block (sleep to play a slow receiver): off the
                // shared runtime, so one test's slow receiver never delays
                // another test's.
                let reply = tokio::task::spawn_blocking(move || script(&received, nth))
                    .await
                    .expect("the receiver script panicked");
                let (status, extra) = match reply {
                    Reply::Status(s) => (s, vec![]),
                    Reply::WithHeaders(s, h) => (s, h),
                    Reply::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        (200, vec![])
                    }
                };
                let mut response = axum::response::Response::builder().status(status);
                for (k, v) in extra {
                    response = response.header(k, v);
                }
                response.body(axum::body::Body::from("receiver says so")).unwrap()
            }
        };
        runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let app = axum::Router::new().fallback(handler);
            axum::serve(listener, app).await.expect("serving the receiver");
        });
        Receiver { port, requests }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
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
                Err(format!("{} so far", got.len()))
            }
        })
    }
}

impl Receiver {
    /// A receiver answering 200 while the returned switch is on, 500
    /// while it is off; it starts `healthy` or not.
    pub fn switchable(healthy: bool) -> (Receiver, Arc<AtomicBool>) {
        let switch = Arc::new(AtomicBool::new(healthy));
        let on = switch.clone();
        let receiver = Receiver::start(move |_, _| Reply::Status(if on.load(Ordering::SeqCst) { 200 } else { 500 }));
        (receiver, switch)
    }

    /// A receiver that waits `delay` before answering 200 (a slow endpoint).
    pub fn slow(delay: Duration) -> Receiver {
        Receiver::start(move |_, _| {
            std::thread::sleep(delay);
            Reply::Status(200)
        })
    }
}

/// Those of `requests` that carry event id `event_id`.
pub(crate) fn carrying(requests: Vec<Received>, event_id: &str) -> Vec<Received> {
    requests.into_iter().filter(|r| r.event_id() == event_id).collect()
}

/// Runs the Node verifier (the seed's Kustomer check and the npm
/// `standardwebhooks` library) on a received request.
pub fn verify_signatures(hook: &TestHook, request: &Received) -> Result<(), String> {
    verify_signatures_with(&hook.token, &hook.token, request)
}

/// The `v1,` signatures `webhook-signature` carries.
pub fn standard_signatures(request: &Received) -> Vec<&str> {
    request.header("webhook-signature").split_whitespace().collect()
}

/// Runs the Node verifier with the seed's Kustomer check keyed by
/// `kustomer_token` and the npm `standardwebhooks` library given the
/// `whsec_` form of `standard_token` (during a rotation the two differ).
pub fn verify_signatures_with(kustomer_token: &str, standard_token: &str, request: &Received) -> Result<(), String> {
    use base64::Engine;
    let dir = repo_root().join("tests/verifiers");
    assert!(
        dir.join("node_modules/standardwebhooks").exists(),
        "the signature verifiers are not installed: run `npm ci --prefix tests/verifiers` (scripts/test.sh does)"
    );
    let input = json!({
        "token": kustomer_token,
        "standardWebhooksSecret": outbound_webhooks::wire::signing::standard_webhooks_secret(standard_token),
        "body": base64::engine::general_purpose::STANDARD.encode(&request.body),
        "headers": request.headers,
    });
    let mut child = Command::new("node")
        .arg(dir.join("verify.js"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running node (install Node.js 20: apt-get install -y nodejs npm)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = crate::printed(&out);
    if out.status.success() && text.trim() == "ok" {
        Ok(())
    } else {
        Err(text)
    }
}
