//! A DNS server on loopback (UDP, std only) for the dispatcher's
//! `--dns-server`: names under the live zone resolve to 127.0.0.1 (TTL 0,
//! so every connection asks again), queries for names under the dead zone
//! are dropped (a zone that never answers), anything else is `NXDOMAIN`.
//! It counts the queries it got per name.

use std::{
    collections::HashMap,
    net::UdpSocket,
    sync::{Arc, Mutex},
    thread,
};

/// Names under this zone resolve to 127.0.0.1.
pub const LIVE_ZONE: &str = "live.test";
/// Queries for names under this zone are never answered.
pub const DEAD_ZONE: &str = "dead.test";

const TYPE_A: u16 = 1;
const RCODE_NXDOMAIN: u16 = 3;

/// The running server; it stops with the test binary.
pub struct DnsServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    queries: Arc<Mutex<HashMap<String, usize>>>,
}

impl DnsServer {
    /// Starts it on a free port of 127.0.0.1.
    pub fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding the DNS server's port");
        let port = socket.local_addr().expect("local addr").port();
        let queries: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counted = queries.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                let Some(query) = Query::parse(&buf[..len]) else {
                    continue;
                };
                *counted.lock().unwrap().entry(query.name.clone()).or_default() += 1;
                if let Some(answer) = answer(&buf[..len], &query) {
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        DnsServer { port, queries }
    }

    /// `--dns-server` for the dispatcher.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Queries received for `name` (A and AAAA, retries included).
    pub fn queries_for(&self, name: &str) -> usize {
        self.queries.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

/// The question of a query.
struct Query {
    /// Lowercase, without the final dot.
    name: String,
    qtype: u16,
    /// Where the question ends in the message.
    end: usize,
}

impl Query {
    fn parse(message: &[u8]) -> Option<Query> {
        if message.len() < 12 || u16::from_be_bytes([message[4], message[5]]) != 1 {
            return None;
        }
        let mut at = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*message.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            labels.push(String::from_utf8_lossy(message.get(at..at + len)?).to_lowercase());
            at += len;
        }
        let qtype = u16::from_be_bytes([*message.get(at)?, *message.get(at + 1)?]);
        Some(Query {
            name: labels.join("."),
            qtype,
            end: at + 4,
        })
    }

    fn under(&self, zone: &str) -> bool {
        self.name == zone || self.name.ends_with(&format!(".{zone}"))
    }
}

/// The answer to `query` (`message` is the query), or none for the dead zone.
fn answer(message: &[u8], query: &Query) -> Option<Vec<u8>> {
    if query.under(DEAD_ZONE) {
        return None;
    }
    let live = query.under(LIVE_ZONE);
    let with_address = live && query.qtype == TYPE_A;
    // QR, the query's opcode and RD, RA; NOERROR, or NXDOMAIN outside the zones.
    let flags = 0x8000 | (u16::from_be_bytes([message[2], message[3]]) & 0x7900) | 0x0080;
    let flags = if live { flags } else { flags | RCODE_NXDOMAIN };
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&message[0..2]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&u16::from(with_address).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&message[12..query.end]);
    if with_address {
        // The question's name (a pointer to offset 12), A, IN, TTL 0, 127.0.0.1.
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 127, 0, 0, 1]);
    }
    Some(out)
}
