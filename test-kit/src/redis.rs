//! Redis as the tests touch it: publishing like a producer, raw stream
//! entries, key sizes (every key name through the dispatcher's own
//! [`Keys`]), and a redis-server of a test's own.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use outbound_webhooks::store::{GROUP, Keys};
use serde_json::Value;

use super::{process::free_port, wait_for};

/// A sync Redis connection to `url`.
pub fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("redis URL")
        .get_connection()
        .expect("connecting to Redis")
}

/// The XADD of one event entry as a producer writes it (`org`, `name`,
/// `data`, and `id` when given), for a pipeline or a single call.
pub fn xadd_event(prefix: &str, org: &str, event: &str, data: &str, id: Option<&str>) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(Keys::new(prefix).events())
        .arg("*")
        .arg("org")
        .arg(org)
        .arg("name")
        .arg(event)
        .arg("data")
        .arg(data);
    if let Some(id) = id {
        cmd.arg("id").arg(id);
    }
    cmd
}

/// Publishes an event with XADD (as a producer would); returns its id.
pub fn publish(url: &str, prefix: &str, org: &str, event: &str, data: &Value) -> String {
    let id = outbound_webhooks::wire::stream_entry::new_event_id();
    let _: String = xadd_event(prefix, org, event, &data.to_string(), Some(&id))
        .query(&mut connect(url))
        .expect("XADD");
    id
}

/// Appends `n` events of `org` in one pipeline, `data(i)` the i-th's data.
pub fn xadd_backlog(
    conn: &mut redis::Connection,
    prefix: &str,
    org: &str,
    event: &str,
    n: usize,
    data: impl Fn(usize) -> String,
) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.add_command(xadd_event(prefix, org, event, &data(i), None))
            .ignore();
    }
    let () = pipe.query(conn).expect("publishing the backlog");
}

/// Appends raw fields to the events stream; returns the entry id.
pub fn xadd_raw(url: &str, prefix: &str, fields: &[(&str, &str)]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(Keys::new(prefix).events()).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query(&mut connect(url)).expect("XADD")
}

/// XLEN of the events stream.
pub fn stream_length(url: &str, prefix: &str) -> i64 {
    redis::cmd("XLEN")
        .arg(Keys::new(prefix).events())
        .query(&mut connect(url))
        .expect("XLEN")
}

/// ZCARD of the due set: how many tasks are stored.
pub fn due_count(conn: &mut redis::Connection, prefix: &str) -> Result<usize, String> {
    redis::cmd("ZCARD")
        .arg(Keys::new(prefix).due())
        .query(conn)
        .map_err(|e| e.to_string())
}

/// Creates the dispatchers' consumer group (and the stream) from the start,
/// as a dispatcher would.
pub fn create_group(conn: &mut redis::Connection, prefix: &str) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(Keys::new(prefix).events())
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(conn)
        .expect("XGROUP CREATE");
}

/// `XINFO what KEY [GROUP]` of the events stream (`GROUPS`, `CONSUMERS`).
pub fn xinfo<T: redis::FromRedisValue>(url: &str, prefix: &str, what: &str) -> T {
    let mut cmd = redis::cmd("XINFO");
    cmd.arg(what).arg(Keys::new(prefix).events());
    if what == "CONSUMERS" {
        cmd.arg(GROUP);
    }
    cmd.query(&mut connect(url)).expect("XINFO")
}

/// `sh -c 'redis-server "$@" ...' sh`, to which the caller adds
/// redis-server's arguments: a small shell that stops redis-server (SIGTERM)
/// when its stdin closes, so the server dies with the test binary too, even
/// one that is killed. Hold its stdin for the server's life.
pub fn redis_server_command() -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"redis-server "$@" & pid=$!; cat >/dev/null; kill $pid 2>/dev/null; wait $pid"#)
        .arg("sh");
    command
}

/// A redis-server of the test's own (for restarts and odd configurations;
/// the shared one must not be disturbed). It runs under a small shell that
/// stops it when its stdin closes, so it dies with the test binary too.
pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<(Child, std::process::ChildStdin)>,
}

impl RedisServer {
    /// Starts redis-server on a free port with extra arguments.
    pub fn start(extra: &[&str]) -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut child = redis_server_command()
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (apt-get install -y redis-server)");
        let stdin = child.stdin.take().expect("piped stdin");
        self.child = Some((child, stdin));
        let url = self.url();
        wait_for("redis-server to answer", Duration::from_secs(20), || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .map_err(|e| e.to_string())
        });
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it (it stays down).
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Shuts down cleanly (SHUTDOWN: Redis writes out its AOF) and starts
    /// again on the same port and directory after `down_for`.
    pub fn restart(&mut self, down_for: Duration) {
        let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut connect(&self.url()));
        self.stop();
        std::thread::sleep(down_for);
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
