//! The API server's request latencies from its `/metrics`, so scenario 6
//! can say what each call the controller makes costs.

use std::collections::HashMap;

use kube::Client;

use crate::Error;

/// (verb, resource[/subresource]) -> (seconds summed, requests).
pub type Latencies = HashMap<(String, String), (f64, f64)>;

/// Sums `apiserver_request_duration_seconds` by verb and resource now.
pub async fn apiserver_latencies(kube: &Client) -> Result<Latencies, Error> {
    let text = kube
        .request_text(hyper::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let mut out = Latencies::new();
    for line in text.lines() {
        let (is_sum, rest) = if let Some(r) = line.strip_prefix("apiserver_request_duration_seconds_sum{") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("apiserver_request_duration_seconds_count{") {
            (false, r)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let resource = match label("subresource").as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        let entry = out.entry((label("verb"), resource)).or_default();
        if is_sum {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    Ok(out)
}

/// Mean latency in ms and number of the `verb` requests on `resource` between two scrapes.
pub fn mean_latency(before: &Latencies, after: &Latencies, verb: &str, resource: &str) -> (f64, f64) {
    let key = (verb.to_string(), resource.to_string());
    let (s0, n0) = before.get(&key).copied().unwrap_or_default();
    let (s1, n1) = after.get(&key).copied().unwrap_or((f64::NAN, f64::NAN));
    (1000.0 * (s1 - s0) / (n1 - n0), n1 - n0)
}
