//! Scenario 8, the fleet: traffic as a platform's hooks see it. 1,000 hooks
//! over 200 orgs, each on its own host name (`h{i}.live.test`, resolved to
//! loopback by the test kit's DNS server through `--dns-server`), over
//! HTTPS with a throwaway CA (`--destination-ca-file`), every receiver
//! answering after `BENCH_FLEET_LATENCY_MS` (200). Reports deliveries/s
//! against two baselines of the same run, Little's limit (the in-flight
//! capacity over the latency) and a bare hyper client driving the same
//! fleet at that concurrency; the dispatcher's CPU per 1,000 deliveries,
//! RSS and attempts in flight; TLS handshakes per 1,000 deliveries; and
//! our own delay (XADD to the request's arrival at the receiver, which
//! answers only after its latency) at half the drained rate.
//!
//! `BENCH_FLEET_ARGS` adds dispatcher flags (e.g. `--max-in-flight 4096`;
//! the bare client then runs at that concurrency too).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector, connect::dns::Name},
    rt::TokioExecutor,
};
use outbound_webhooks::store::Keys;
use outbound_webhooks_test_kit::dns_server::DnsServer;
use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::{
    Env, Error,
    baselines::{Bodies, first_bodies_of, signed_headers},
    load,
    processes::Dispatcher,
    report::{Report, mib, percentile, verdict},
    scale,
    seed::{SeedHook, seed},
    tls_receiver::{self, Certs, FleetState},
};

const SCENARIO: &str = "8 fleet, 1,000 HTTPS hosts";
const ORGS: usize = 200;
const HOOKS_PER_ORG: usize = 5;
const PREFIX: &str = "{bench-fleet}:";
/// The dispatcher's `--max-in-flight` unless `BENCH_FLEET_ARGS` sets it.
const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);
/// Distinct envelope bodies the bare client cycles through (read from the
/// stream the dispatcher drains, so the same sizes).
const BARE_BODIES: usize = 1_000;

fn org(o: usize) -> String {
    format!("fleet-{o}")
}

fn host(i: usize) -> String {
    format!("h{i}.live.test")
}

/// The extra dispatcher flags, and the in-flight capacity they give.
fn dispatcher_args() -> (Vec<String>, usize) {
    let args: Vec<String> = std::env::var("BENCH_FLEET_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let capacity = args
        .iter()
        .position(|a| a == "--max-in-flight")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    (args, capacity)
}

/// Scenario 8 (see the module's comment).
pub async fn scenario_8(env: &Env, report: &mut Report) -> Result<(), Error> {
    let latency = Duration::from_millis(
        std::env::var("BENCH_FLEET_LATENCY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200),
    );
    let certs = tls_receiver::make_certs(&env.state.join("fleet-ca"))?;
    let (port, fleet, runtime) = tls_receiver::start(&certs, latency)?;
    // The receivers live until the process exits (see start_receiver).
    std::mem::forget(runtime);
    let dns = DnsServer::start();
    let hooks: Vec<SeedHook> = (0..ORGS)
        .flat_map(|o| {
            (0..HOOKS_PER_ORG).map(move |k| {
                let url = format!("https://{}:{port}/fleet", host(o * HOOKS_PER_ORG + k));
                SeedHook::new(org(o), format!("hook-{k}"), &url)
            })
        })
        .collect();
    let seeding = Instant::now();
    eprintln!("bench: scenario 8: seeding {} hooks over {ORGS} orgs", hooks.len());
    seed(&env.kube, hooks, 16).await?;
    eprintln!("bench: scenario 8: seeded in {:.1}s", seeding.elapsed().as_secs_f64());

    let events = scale(10_000).max(ORGS);
    let per_org = events / ORGS;
    let deliveries = (per_org * ORGS * HOOKS_PER_ORG) as u64;
    let mut conn = env.redis.clone();
    let orgs: Vec<String> = (0..ORGS).map(org).collect();
    let orgs: Vec<&str> = orgs.iter().map(String::as_str).collect();
    load::fill_interleaved(&mut conn, PREFIX, &orgs, per_org).await?;
    let (extra, capacity) = dispatcher_args();

    eprintln!("bench: scenario 8: bare hyper client, {deliveries} requests at concurrency {capacity}");
    let before_bare = handshakes(&fleet);
    let bodies = first_bodies_of(&mut conn, &Keys::new(PREFIX).events(), BARE_BODIES).await?;
    let bare_rate = bare_client(&certs, port, &bodies, deliveries as usize, capacity).await?;
    let handshakes_before = handshakes(&fleet);
    let bare_handshakes = handshakes_before.0 + handshakes_before.1 - before_bare.0 - before_bare.1;

    eprintln!("bench: scenario 8: the dispatcher drains {deliveries} deliveries");
    let dns_address = dns.address();
    let ca = certs.ca_file.display().to_string();
    let mut args: Vec<&str> = vec!["--dns-server", &dns_address, "--destination-ca-file", &ca];
    args.extend(extra.iter().map(String::as_str));
    let d = Dispatcher::start(env, PREFIX, "dispatcher-fleet", &args).await?;
    let before = d.stats();
    let start = fleet.requests.load(Relaxed);
    let t0 = Instant::now();
    let mut in_flight = Vec::new();
    let mut last_change = (start, Instant::now());
    while fleet.requests.load(Relaxed) - start < deliveries && t0.elapsed() < DRAIN_TIMEOUT {
        in_flight.push(d.metric("outbound_webhooks_attempts_in_flight").await);
        let now = fleet.requests.load(Relaxed);
        if now != last_change.0 {
            last_change = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let delivered = fleet.requests.load(Relaxed) - start;
    let seconds = last_change.1.duration_since(t0).as_secs_f64().max(1e-3);
    let after = d.stats();
    let rate = delivered as f64 / seconds;
    let (full, resumed) = {
        let (f1, r1) = handshakes(&fleet);
        (f1 - handshakes_before.0, r1 - handshakes_before.1)
    };
    let thousands = delivered.max(1) as f64 / 1000.0;

    // Our own delay at half the drained rate, the dispatcher still running
    // with its pools warm: the handshakes meanwhile are the steady state's.
    let warm = handshakes(&fleet);
    let steady_started = Instant::now();
    let delays = own_delays(env, &fleet, (rate / HOOKS_PER_ORG as f64 / 2.0).max(10.0)).await?;
    let steady_minutes = steady_started.elapsed().as_secs_f64() / 60.0;
    let steady = {
        let now = handshakes(&fleet);
        (now.0 + now.1 - warm.0 - warm.1) as f64
    };
    drop(d);

    let little = capacity as f64 / latency.as_secs_f64();
    let note = format!("{delivered} of {deliveries} in {seconds:.1}s");
    report.row(SCENARIO, "deliveries/s", format!("{rate:.0}"), &note);
    report.row(
        SCENARIO,
        "Little's limit (in-flight capacity / latency)",
        format!("{little:.0}"),
        &format!("{capacity} / {:.3}s", latency.as_secs_f64()),
    );
    report.row(
        SCENARIO,
        "bare hyper client deliveries/s",
        format!("{bare_rate:.0}"),
        &format!("concurrency {capacity}; {bare_handshakes} TLS handshakes"),
    );
    report.row(
        SCENARIO,
        "dispatcher / bare client",
        format!("{:.0}%", 100.0 * rate / bare_rate.max(1e-9)),
        &format!("target >= 90%: {}", verdict(rate >= 0.9 * bare_rate)),
    );
    report.row(
        SCENARIO,
        "target 10,000 deliveries/s",
        verdict(rate >= 10_000.0).to_string(),
        "one replica",
    );
    report.row(
        SCENARIO,
        "dispatcher CPU s per 1,000 deliveries",
        format!("{:.3}", (after.cpu_seconds - before.cpu_seconds) / thousands),
        &format!(
            "{:.0}% of a core",
            100.0 * (after.cpu_seconds - before.cpu_seconds) / seconds
        ),
    );
    report.row(
        SCENARIO,
        "dispatcher peak RSS",
        format!("{:.0} MiB", mib(after.peak_rss)),
        "VmHWM",
    );
    let mean = in_flight.iter().sum::<f64>() / in_flight.len().max(1) as f64;
    let most = in_flight.iter().copied().fold(0.0, f64::max);
    report.row(
        SCENARIO,
        "attempts in flight",
        format!("{mean:.0} mean, {most:.0} max"),
        "sampled every 250 ms",
    );
    report.row(
        SCENARIO,
        "TLS handshakes per 1,000 deliveries",
        format!("{:.1}", (full + resumed) as f64 / thousands),
        &format!(
            "{full} full, {resumed} resumed, {} hosts; {} HTTP/2 connections in all",
            ORGS * HOOKS_PER_ORG,
            fleet.h2_connections.load(Relaxed)
        ),
    );
    let per_host_minute = steady / (ORGS * HOOKS_PER_ORG) as f64 / steady_minutes.max(1e-9);
    report.row(
        SCENARIO,
        "TLS handshakes per host per minute, steady",
        format!("{per_host_minute:.2}"),
        &format!(
            "{steady:.0} while publishing at half the rate for {:.0}s after the drain; target <= 1: {}",
            steady_minutes * 60.0,
            verdict(per_host_minute <= 1.0)
        ),
    );
    report.row(
        SCENARIO,
        "own delay p50 / p99 (XADD to the request's arrival)",
        format!("{:.1} / {:.1} ms", delays.0, delays.1),
        &format!(
            "{} deliveries at half the drained rate; target p99 <= 50 ms: {}",
            delays.2,
            verdict(delays.1 <= 50.0)
        ),
    );
    Ok(())
}

fn handshakes(fleet: &FleetState) -> (u64, u64) {
    (
        fleet.full_handshakes.load(Relaxed),
        fleet.resumed_handshakes.load(Relaxed),
    )
}

/// Publishes to every org round-robin at `events_per_second` for 5 s;
/// returns p50 and p99 of (arrival - XADD) in ms, and the count. The
/// arrival is the request's, before the receiver's latency.
async fn own_delays(env: &Env, fleet: &FleetState, events_per_second: f64) -> Result<(f64, f64, usize), Error> {
    fleet.arrivals.lock().expect("arrivals lock").clear();
    fleet.recording.store(true, Relaxed);
    let stream = Keys::new(PREFIX).events();
    let mut conn = env.redis.clone();
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let total = (events_per_second * 5.0) as usize;
    let gap = Duration::from_secs_f64(1.0 / events_per_second);
    let start = Instant::now();
    for n in 0..total {
        tokio::time::sleep_until((start + gap * n as u32).into()).await;
        load::publish(&mut conn, &stream, &org(n % ORGS), |id| {
            sent.insert(id.to_string(), Instant::now());
        })
        .await?;
    }
    let expected = total * HOOKS_PER_ORG;
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet.arrivals.lock().expect("arrivals lock").len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.recording.store(false, Relaxed);
    let arrivals = std::mem::take(&mut *fleet.arrivals.lock().expect("arrivals lock"));
    let mut delays: Vec<f64> = arrivals
        .iter()
        .filter_map(|(id, at)| sent.get(id).map(|s| at.duration_since(*s).as_secs_f64() * 1000.0))
        .collect();
    delays.sort_by(f64::total_cmp);
    Ok((percentile(&delays, 0.5), percentile(&delays, 0.99), delays.len()))
}

/// Resolves every name to loopback, as the DNS server does for the
/// dispatcher (the port comes from the URL).
#[derive(Clone)]
struct Loopback;

impl tower_service::Service<Name> for Loopback {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        std::future::ready(Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))].into_iter()))
    }
}

/// The bare hyper client baseline: `total` POSTs over the fleet's hosts in
/// turn, `concurrency` at a time, with a connection pool and TLS as hyper
/// and rustls give them by default, each with one of `bodies` and the
/// headers the dispatcher sends, signed per request (as baseline A does).
/// Returns requests per second.
async fn bare_client(
    certs: &Certs,
    port: u16,
    bodies: &Bodies,
    total: usize,
    concurrency: usize,
) -> Result<f64, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&certs.ca_file).map_err(|e| format!("reading the CA: {e}"))? {
        roots
            .add(cert.map_err(|e| format!("reading the CA: {e}"))?)
            .map_err(|e| format!("the CA: {e}"))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(Loopback);
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let next = Arc::new(AtomicUsize::new(0));
    let hosts = ORGS * HOOKS_PER_ORG;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, bodies) = (client.clone(), next.clone(), bodies.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= total {
                        return Ok::<(), String>(());
                    }
                    let (id, body) = &bodies[i % bodies.len()];
                    let mut request = hyper::Request::post(format!("https://{}:{port}/fleet", host(i % hosts)));
                    for (name, value) in signed_headers(id, body) {
                        request = request.header(name, value);
                    }
                    let request = request
                        .body(Full::new(Bytes::from(body.clone())))
                        .map_err(|e| e.to_string())?;
                    let response = client.request(request).await.map_err(|e| format!("{e:?}"))?;
                    let _ = response.into_body().collect().await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
