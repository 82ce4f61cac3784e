//! Example receiver for outbound-webhooks (Kustomer-compatible) deliveries.
//!
//!     WEBHOOK_TOKEN=... cargo run --release     (or WEBHOOK_TOKEN_FILE=/path/to/token)
//!     WEBHOOK_TOKEN=new,previous ...            (during a rotation: any listed token)
//!
//! Verifies the signatures over the raw body (401 unless one matches), answers
//! 200, and processes each event id once: a redelivery of an id already seen is
//! acknowledged with 200 but not processed again. Processing here is printing
//! `verified <id> <name> org=<org>` to stdout.
//!
//! The HTTP/1.1 server is a deliberately small one on `std::net::TcpListener`
//! (Content-Length bodies, keep-alive, `Expect: 100-continue`); behind a
//! framework (axum, actix-web, ...) keep only `handle` and the verify functions.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use outbound_webhooks_receiver::{StandardWebhooks, verify_signature, verify_standard_webhooks};

const MAX_BODY_BYTES: usize = 2 << 20; // events are at most 1 MiB
const MAX_LINE_BYTES: u64 = 8192;
const MAX_HEADERS: usize = 100;
const MAX_REMEMBERED_IDS: usize = 100_000;

/// Ids already processed, oldest first. A real receiver keeps them in its
/// database, with the processing, for longer than the sender retries (about
/// 80 minutes).
#[derive(Default)]
struct SeenIds {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl SeenIds {
    /// Records `id`; true if it was new (the caller holds the lock: check and
    /// record in one step).
    fn first_time(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > MAX_REMEMBERED_IDS
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>, // names in lower case
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The receiver's check: either header signed by one of `tokens`.
fn verify_request(tokens: &[&str], req: &Request) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let standard = StandardWebhooks {
        id: req.header("webhook-id"),
        timestamp: req.header("webhook-timestamp"),
        signature: req.header("webhook-signature"),
    };
    verify_signature(tokens, &req.body, req.header("x-kustomer-webhook-signature"))
        || verify_standard_webhooks(tokens, &req.body, standard, now)
}

/// The webhook logic: (status, response text).
fn handle(tokens: &[&str], seen: &Mutex<SeenIds>, req: &Request) -> (u16, &'static str) {
    if req.method == "GET" && req.path == "/healthz" {
        return (200, "ok");
    }
    if req.method != "POST" {
        return (405, "POST only");
    }
    // The raw bytes: never re-serialize before verifying.
    if !verify_request(tokens, req) {
        return (401, "invalid signature");
    }
    let event = match serde_json::from_slice::<serde_json::Value>(&req.body) {
        Ok(event) if event.is_object() => event,
        _ => return (400, "body is not a JSON object"),
    };
    let field = |name: &str| event.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let id = match req.header("webhook-id") {
        Some(id) if !id.is_empty() => id,
        _ => field("id"),
    };
    if id.is_empty() {
        return (400, "no event id");
    }
    let mut seen = seen.lock().unwrap();
    if !seen.first_time(id) {
        return (200, "duplicate");
    }
    // Still under the lock: one line per event, in the order ids were recorded.
    println!("verified {id} {} org={}", field("name"), field("org"));
    (200, "ok")
}

enum ReadError {
    /// The connection ended (or timed out) between requests.
    Closed,
    /// Answer with this status and close.
    Reply(u16, &'static str),
}

fn read_line(reader: &mut BufReader<TcpStream>) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE_BYTES)
        .read_until(b'\n', &mut buf)
        .map_err(|_| ReadError::Closed)?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if !buf.ends_with(b"\n") {
        return Err(ReadError::Reply(431, "request line or header too long"));
    }
    let line = String::from_utf8(buf).map_err(|_| ReadError::Reply(400, "header is not UTF-8"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_request(reader: &mut BufReader<TcpStream>, writer: &mut TcpStream) -> Result<(Request, bool), ReadError> {
    let request_line = read_line(reader)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ReadError::Reply(400, "bad request line"));
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(ReadError::Reply(431, "too many headers"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Reply(400, "bad header"));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut req = Request {
        method: method.to_owned(),
        path: target.to_owned(),
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return Err(ReadError::Reply(411, "Content-Length required"));
    }
    let mut lengths = req
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>());
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => 0,
        (Some(Ok(n)), None) => n,
        _ => return Err(ReadError::Reply(400, "bad Content-Length")),
    };
    if length > MAX_BODY_BYTES {
        return Err(ReadError::Reply(413, "body too large"));
    }
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        writer
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| ReadError::Closed)?;
    }
    req.body = vec![0; length];
    reader.read_exact(&mut req.body).map_err(|_| ReadError::Closed)?;
    let connection = req.header("connection").unwrap_or("").to_ascii_lowercase();
    let keep_alive = if version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    Ok((req, keep_alive))
}

fn respond(writer: &mut TcpStream, status: u16, text: &str, keep_alive: bool) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let connection = if keep_alive { "" } else { "Connection: close\r\n" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{connection}\r\n{text}\n",
        text.len() + 1
    );
    writer.write_all(response.as_bytes())?;
    writer.flush()
}

fn serve(stream: TcpStream, tokens: &[&str], seen: &Mutex<SeenIds>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        match read_request(&mut reader, &mut writer) {
            Ok((req, keep_alive)) => {
                let (status, text) = handle(tokens, seen, &req);
                respond(&mut writer, status, text, keep_alive)?;
                if !keep_alive {
                    return Ok(());
                }
            }
            Err(ReadError::Closed) => return Ok(()),
            Err(ReadError::Reply(status, text)) => return respond(&mut writer, status, text, false),
        }
    }
}

/// A comma-separated list, so a rotation can give the new and the previous token.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn load_tokens() -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    if let Ok(value) = std::env::var("WEBHOOK_TOKEN")
        && !value.is_empty()
    {
        tokens.extend(list(&value).map(str::to_owned));
    } else if let Ok(paths) = std::env::var("WEBHOOK_TOKEN_FILE")
        && !paths.is_empty()
    {
        for path in list(&paths) {
            let token = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            // A file written by hand usually ends with a newline; the token does not.
            tokens.push(token.trim_end_matches(['\r', '\n']).to_owned());
        }
    }
    if tokens.is_empty() {
        return Err("set WEBHOOK_TOKEN or WEBHOOK_TOKEN_FILE to the webhook signing token(s)".to_owned());
    }
    Ok(tokens)
}

fn main() {
    let tokens: Arc<Vec<String>> = match load_tokens() {
        Ok(tokens) => Arc::new(tokens),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    eprintln!("listening on http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(SeenIds::default()));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (tokens, seen) = (tokens.clone(), seen.clone());
        std::thread::spawn(move || {
            let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let _ = serve(stream, &tokens, &seen);
        });
    }
}
