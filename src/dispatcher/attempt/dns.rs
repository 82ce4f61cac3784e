//! The dispatcher's DNS: one asynchronous resolver per process (hickory,
//! from `/etc/resolv.conf` or `--dns-server`), with its own timeouts and a
//! cache of answers by their TTL, never a pool of threads that a zone which
//! never answers could fill.
//!
//! Each lookup waits at most until its attempt's deadline. Lookups of one
//! host name share one query: at most one query per name is in flight (for
//! at most [`QUERY_TIMEOUT`]), so a dead zone holds one query per hook's
//! host name however many attempts wait for it, and those attempts are
//! bounded by the hook's in-flight slots (`--max-in-flight-per-hook`).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_resolver::{
    TokioResolver,
    config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts},
    net::{DnsError, NetError, runtime::TokioRuntimeProvider},
    proto::op::ResponseCode,
};
use tokio::sync::watch;

use crate::dispatcher::attempt::resolve_error::ResolveError;

/// The longest one query may take, whatever the attempts waiting for it
/// (hickory's own timeout is per try and per server).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long hickory waits for one server's answer to one try.
const TRY_TIMEOUT: Duration = Duration::from_secs(4);

/// Names listed here are answered from it, never from DNS.
const HOSTS_FILE: &str = "/etc/hosts";

/// Most host names cached; past it the cache starts over.
const MAX_CACHED: usize = 20_000;

/// Why the resolver could not be built (start-up only).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `/etc/resolv.conf` (or the platform's configuration) is unusable.
    #[error("reading the system's DNS configuration (/etc/resolv.conf): {0}")]
    SystemConfig(#[source] NetError),
    /// hickory refused the configuration.
    #[error("building the DNS resolver: {0}")]
    Build(#[source] NetError),
}

/// How a shared query ended, as its waiters see it.
#[derive(Clone, Debug)]
enum Answer {
    /// The addresses (cached until their TTL ends).
    Addresses(Arc<[IpAddr]>),
    /// No answer within the query's own timeout.
    TimedOut,
    /// An answer that gives no address, or an error: the reason for people.
    Failed(String),
}

/// The cache and the queries in flight, by host name.
#[derive(Debug, Default)]
struct State {
    cached: HashMap<String, (Arc<[IpAddr]>, Instant)>,
    in_flight: HashMap<String, watch::Receiver<Option<Answer>>>,
}

/// The process's resolver (cheap to clone: shared).
#[derive(Clone, Debug)]
pub struct Resolver {
    shared: Arc<Shared>,
}

/// What every clone of the resolver shares.
#[derive(Debug)]
struct Shared {
    /// The hosts file's names, answered before any DNS.
    hosts: HashMap<String, Arc<[IpAddr]>>,
    hickory: TokioResolver,
    state: Mutex<State>,
}

/// The hosts file as the system's resolver reads it: a name listed there
/// gets exactly its addresses there (`localhost` is 127.0.0.1 alone when
/// only that is listed; hickory's own hosts step would add `::1`).
fn parse_hosts(text: &str) -> HashMap<String, Arc<[IpAddr]>> {
    let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in fields {
            let addresses = names
                .entry(name.trim_end_matches('.').to_ascii_lowercase())
                .or_default();
            if !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
    }
    names.into_iter().map(|(name, ips)| (name, ips.into())).collect()
}

impl Resolver {
    /// A resolver asking `servers`, or the servers of `/etc/resolv.conf`
    /// (with its search domains and options) when there are none. The
    /// hosts file (read once, here) is answered first either way, as the
    /// system's resolver does.
    pub fn new(servers: &[SocketAddr]) -> Result<Resolver, BuildError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(BuildError::SystemConfig)?
        } else {
            let name_servers = servers
                .iter()
                .map(|server| {
                    let mut config = NameServerConfig::udp_and_tcp(server.ip());
                    for connection in &mut config.connections {
                        connection.port = server.port();
                    }
                    config
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(name_servers), provider)
                .with_options(ResolverOpts::default())
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = TRY_TIMEOUT;
        options.attempts = 2;
        // Our own cache keeps the answers; hickory's holds the rest (negative
        // answers, names tried with search domains).
        options.cache_size = 1024;
        options.use_hosts_file = ResolveHosts::Never;
        let hickory = builder.build().map_err(BuildError::Build)?;
        // No hosts file (or an unreadable one) means no names from it.
        let hosts = parse_hosts(&std::fs::read_to_string(HOSTS_FILE).unwrap_or_default());
        Ok(Resolver {
            shared: Arc::new(Shared {
                hosts,
                hickory,
                state: Mutex::default(),
            }),
        })
    }

    /// The addresses of `host` (a name, not an IP literal), waiting until
    /// `deadline` at most.
    pub async fn lookup(&self, host: &str, deadline: tokio::time::Instant) -> Result<Arc<[IpAddr]>, ResolveError> {
        if let Some(addresses) = self.shared.hosts.get(host) {
            return Ok(addresses.clone());
        }
        let started = Instant::now();
        let mut answer = {
            let mut state = self.shared.state.lock().expect("DNS state lock");
            match state.cached.get(host) {
                Some((addresses, until)) if *until > started => return Ok(addresses.clone()),
                Some(_) => {
                    state.cached.remove(host);
                }
                None => {}
            }
            // A query whose task is gone (it panicked) is not joined.
            match state.in_flight.get(host).filter(|answer| answer.has_changed().is_ok()) {
                Some(answer) => answer.clone(),
                None => {
                    let answer = self.start_query(host);
                    state.in_flight.insert(host.to_string(), answer.clone());
                    answer
                }
            }
        };
        let failed = |reason: String| ResolveError::Lookup {
            host: host.to_string(),
            reason,
        };
        let timed_out = || ResolveError::TimedOut {
            host: host.to_string(),
            after: started.elapsed(),
        };
        let Ok(waited) = tokio::time::timeout_at(deadline, answer.wait_for(Option::is_some)).await else {
            return Err(timed_out());
        };
        let answer = match waited {
            Ok(answer) => answer.clone(),
            Err(_) => None,
        };
        match answer {
            Some(Answer::Addresses(addresses)) => Ok(addresses),
            Some(Answer::TimedOut) => Err(timed_out()),
            Some(Answer::Failed(reason)) => Err(failed(reason)),
            None => Err(failed("the resolver stopped".into())),
        }
    }

    /// Starts the one query for `host` (the caller registers it as in
    /// flight); it ends within [`QUERY_TIMEOUT`] whoever waits for it.
    fn start_query(&self, host: &str) -> watch::Receiver<Option<Answer>> {
        let (tx, rx) = watch::channel(None);
        let shared = self.shared.clone();
        let host = host.to_string();
        tokio::spawn(async move {
            let looked_up = tokio::time::timeout(QUERY_TIMEOUT, shared.hickory.lookup_ip(host.as_str())).await;
            let (answer, valid_until) = match looked_up {
                Err(_) | Ok(Err(NetError::Timeout)) => (Answer::TimedOut, None),
                Ok(Err(e)) => (Answer::Failed(reason(&e)), None),
                Ok(Ok(found)) => {
                    let addresses: Arc<[IpAddr]> = found.iter().collect();
                    if addresses.is_empty() {
                        (Answer::Failed("the name has no address".into()), None)
                    } else {
                        (Answer::Addresses(addresses), Some(found.valid_until()))
                    }
                }
            };
            {
                // Cached before the query leaves `in_flight`, so a lookup
                // never starts a second query for an answer just received.
                let mut state = shared.state.lock().expect("DNS state lock");
                if let (Answer::Addresses(addresses), Some(until)) = (&answer, valid_until) {
                    if state.cached.len() >= MAX_CACHED {
                        state.cached.clear();
                    }
                    state.cached.insert(host.clone(), (addresses.clone(), until));
                }
                state.in_flight.remove(&host);
            }
            let _ = tx.send(Some(answer));
        });
        rx
    }
}

/// A failed lookup's reason, short, in the words `getaddrinfo` users know.
fn reason(error: &NetError) -> String {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no)) if no.response_code == ResponseCode::NXDomain => {
            "name not known".into()
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => "the name has no address".into(),
        NetError::Dns(DnsError::ResponseCode(code)) => format!("the DNS server answered {code}"),
        NetError::NoConnections => "no DNS server reachable".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_in_the_hosts_file_gets_exactly_its_addresses_there() {
        let hosts = parse_hosts(
            "127.0.0.1 localhost # the usual\n# ::1 commented\n10.0.0.5 Billing.internal billing\n\
             fd00::5 billing.internal\nnot-an-ip name\n",
        );
        let ips = |name: &str| hosts.get(name).map(|a| a.to_vec());
        assert_eq!(ips("localhost"), Some(vec!["127.0.0.1".parse().unwrap()]));
        assert_eq!(
            ips("billing.internal"),
            Some(vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()])
        );
        assert_eq!(ips("billing").map(|a| a.len()), Some(1));
        assert_eq!(ips("name"), None);
    }

    #[tokio::test]
    async fn lookups_of_a_name_that_never_answers_share_one_query_and_end_at_their_deadline() {
        // A DNS server that never answers.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let resolver = Resolver::new(&[silent.local_addr().unwrap()]).unwrap();
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        let (a, b) = tokio::join!(
            resolver.lookup("billing.example", deadline),
            resolver.lookup("billing.example", deadline + Duration::from_millis(200)),
        );
        let took = started.elapsed();
        for e in [a.unwrap_err(), b.unwrap_err()] {
            let text = e.to_string();
            assert!(
                text.starts_with("DNS lookup of billing.example timed out after "),
                "{text}"
            );
        }
        assert!(took < Duration::from_millis(1000), "{took:?}");
        let in_flight = resolver.shared.state.lock().unwrap().in_flight.len();
        assert_eq!(
            in_flight, 1,
            "one query for both lookups, still running on its own timeout"
        );
    }
}
