//! Scenario 1s: does sharding cost the single-node user? The same 4 orgs
//! (one hook each) drained with `--shards 1` and `--shards 4` on one
//! standalone redis-server; the 1-shard drain runs before and after, as the
//! machine's speed drifts within minutes.

use outbound_webhooks::publish::stream_of;

use crate::{
    Env, Error,
    load::fill_stream,
    report::{Report, verdict},
    scale,
    throughput::{DRAIN_TIMEOUT, drain},
};

/// Orgs that land on shards 0, 1, 2 and 3 of 4 (`shard::shard_of`).
pub const ORGS: [&str; 4] = ["bench-shard-5", "bench-shard-2", "bench-shard-0", "bench-shard-12"];

const SCENARIO: &str = "1s shards, 4 orgs x 1 hook";

async fn fill_sharded(env: &Env, prefix: &str, shards: usize, per_org: usize) -> Result<(), Error> {
    let mut conn = env.redis.clone();
    for org in ORGS {
        let stream = stream_of(prefix, shards, org).map_err(|e| e.to_string())?;
        fill_stream(&mut conn, &stream, org, per_org).await?;
    }
    Ok(())
}

/// Scenario 1s.
pub async fn scenario_shards(env: &Env, report: &mut Report) -> Result<(), Error> {
    let per_org = scale(25_000);
    let total = (per_org * ORGS.len()) as u64;
    eprintln!("bench: scenario 1s: filling {total} events over 4 orgs, for 1 and 4 shards");
    let runs = [("{bench-s1a}:", 1), ("{bench-s4}:", 4), ("{bench-s1b}:", 1)];
    for (prefix, shards) in runs {
        fill_sharded(env, prefix, shards, per_org).await?;
    }
    let mut rates = Vec::new();
    for (prefix, shards) in runs {
        let name = format!("dispatcher-{}", prefix.trim_matches(|c| "{}:".contains(c)));
        let count = shards.to_string();
        let d = drain(env, prefix, &name, total, DRAIN_TIMEOUT, &["--shards", &count]).await?;
        eprintln!("bench: 1s with {shards} shard(s): {} ({:.0}/s)", d.progress(), d.rate);
        rates.push(d.rate);
    }
    let one = (rates[0] + rates[2]) / 2.0;
    report.row(
        SCENARIO,
        "1 shard deliveries/s",
        format!("{one:.0}"),
        &format!("mean of a drain before ({:.0}) and after ({:.0})", rates[0], rates[2]),
    );
    report.row(SCENARIO, "4 shards deliveries/s", format!("{:.0}", rates[1]), "");
    let ratio = rates[1] / one;
    report.row(
        SCENARIO,
        "4 shards / 1 shard",
        format!("{:.0}%", 100.0 * ratio),
        &format!("target: within noise (>= 90%): {}", verdict(ratio >= 0.9)),
    );
    Ok(())
}
