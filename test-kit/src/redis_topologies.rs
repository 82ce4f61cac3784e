//! Redis the way users run it, each of a test's own: one TLS server with a
//! throwaway CA ([`TlsRedis`]), a primary and a replica watched by three
//! sentinels ([`SentinelGroup`]), and a Cluster of three masters with a
//! replica each ([`RedisCluster`]). Everything listens on 127.0.0.1 and
//! keeps its files in a temp dir; every redis-server runs under
//! [`redis_server_command`]'s shell in a [`ChildProcess`], so it stops when
//! its topology is dropped, when a test panics and when the test binary dies.
//!
//! The helpers drive Redis with `redis-cli` only, so they prove nothing
//! about the dispatcher's own Redis client, which the tests over them do.

use std::{
    collections::{BTreeSet, HashSet},
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use tempfile::TempDir;

use super::{
    process::{ChildProcess, free_port},
    redis::redis_server_command,
    wait_for,
};

/// How long a topology may take to come up, or to settle after a fail-over.
// A deadline, not a wait: a loaded 2-core machine (the whole suite running) slows fail-overs.
const SETTLE: Duration = Duration::from_secs(60);

/// How long one `redis-cli` call may take, in seconds.
const CLI_TIMEOUT_SECS: u32 = 10;

/// What every data node runs with: nothing persisted, nothing evicted (the
/// dispatcher requires noeviction), no protected mode (there is no default
/// user password), an immediate full sync (no 5 s wait for more replicas)
/// and an immediate shutdown (no wait for replicas), so tests stay quick.
const DATA_NODE_ARGS: &[&str] = &[
    "--appendonly",
    "no",
    "--save",
    "",
    "--maxmemory-policy",
    "noeviction",
    "--protected-mode",
    "no",
    "--enable-debug-command",
    "yes",
    "--repl-diskless-sync-delay",
    "0",
    "--shutdown-timeout",
    "0",
];

/// Sentinel timings: a primary unreachable for 1 s is down, so fail-overs
/// in tests take seconds.
const DOWN_AFTER_MS: u32 = 1000;
const FAILOVER_TIMEOUT_MS: u32 = 5000;

/// Cluster node timeout: a killed master's replica takes over after about this.
const CLUSTER_NODE_TIMEOUT_MS: u32 = 2000;

/// `redis-cli -h 127.0.0.1 -p PORT ARGS`: its output, trimmed, or an error
/// (a refused connection and an error reply alike).
pub fn redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    run_redis_cli(
        &["-h", "127.0.0.1", "-p", &port.to_string()],
        args,
        None,
        CLI_TIMEOUT_SECS,
    )
}

/// Fails the test unless `tool VERSION_ARGS` runs, naming the install step.
fn require_tool(tool: &str, version_args: &[&str], package: &str) {
    let runs = Command::new(tool)
        .args(version_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        runs,
        "{tool} is not installed: run scripts/install-tools.sh (or apt-get install -y {package})"
    );
}

fn run_redis_cli(
    connection: &[&str],
    args: &[&str],
    password: Option<&str>,
    timeout_secs: u32,
) -> Result<String, String> {
    let mut command = Command::new("timeout");
    // -e: an error reply fails the call, not only a failed connection.
    command
        .arg(timeout_secs.to_string())
        .arg("redis-cli")
        .args(connection)
        .arg("-e")
        .args(args)
        .stdin(Stdio::null());
    // The environment rather than -a keeps a password out of `ps`.
    if let Some(password) = password {
        command.env("REDISCLI_AUTH", password);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running timeout (coreutils) for redis-cli: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match out.status.code() {
        Some(0) => Ok(stdout),
        Some(127) => {
            panic!("redis-cli is not installed: run scripts/install-tools.sh (or apt-get install -y redis-tools)")
        }
        Some(124) => Err(format!("redis-cli {} timed out after {timeout_secs}s", args.join(" "))),
        _ => Err(format!(
            "redis-cli {}: {stdout} {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// The value of `field` in INFO output (`role:master` -> `master`).
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_string)
}

/// Whether process `pid` still runs (a zombie counts as gone).
pub fn process_is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGKILL of `pid`, no goodbyes.
fn sigkill(pid: u32) {
    let status = Command::new("kill")
        .args(["-s", "KILL", &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -s KILL {pid} failed ({status})");
}

/// `--name value` arguments for a redis-server command line.
fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// A directory under `parent`, created.
fn subdir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// One redis-server of a topology: a data node or a sentinel.
struct Node {
    port: u16,
    /// redis-server's own process id (the shell's is the process's), for SIGKILL.
    pid: u32,
    process: ChildProcess,
}

impl Node {
    /// Starts `redis-server ARGS` (a config file, if any, first), which
    /// listens on `port`, logging to `log`; ready once `cli(INFO server)`
    /// answers, which also gives its pid.
    fn start(
        what: &str,
        port: u16,
        args: Vec<OsString>,
        log: &Path,
        cli: impl Fn(&[&str]) -> Result<String, String>,
    ) -> Node {
        let mut command = redis_server_command();
        command.args(args);
        let mut process = ChildProcess::start(what, command, Some(log)).unwrap_or_else(|e| panic!("{e}"));
        // The shell needs a moment to stop redis-server and wait for it.
        process.set_stop_grace(Duration::from_secs(10));
        let pid = wait_for(&format!("the {what} to answer"), SETTLE, || {
            let info = cli(&["INFO", "server"])?;
            info_field(&info, "process_id")
                .and_then(|pid| pid.parse().ok())
                .ok_or(info)
        });
        Node { port, pid, process }
    }

    /// The arguments of a data node on loopback `port`, files in `dir`.
    fn data_node_args(port: u16, dir: &Path, extra: &[&str]) -> Vec<OsString> {
        let mut args = os_args(&["--bind", "127.0.0.1", "--port", &port.to_string(), "--dir"]);
        args.push(dir.into());
        args.extend(os_args(DATA_NODE_ARGS));
        args.extend(os_args(extra));
        args
    }

    /// Both process ids: redis-server's and its shell's.
    fn pids(&self) -> [u32; 2] {
        [self.pid, self.process.pid()]
    }
}

/// Starts a plain data node on `port` with its own directory under `root`.
fn start_data_node(root: &Path, what: &str, port: u16, extra: &[&str]) -> Node {
    let dir = subdir(root, &format!("node-{port}"));
    Node::start(
        &format!("{what} 127.0.0.1:{port}"),
        port,
        Node::data_node_args(port, &dir, extra),
        &root.join(format!("node-{port}.log")),
        |args| redis_cli(port, args),
    )
}

/// Ports given as `redis://127.0.0.1:P1,127.0.0.1:P2,...`: the format the
/// dispatcher takes for sentinels and Cluster seed nodes.
fn multi_host_url(ports: impl IntoIterator<Item = u16>) -> String {
    let hosts: Vec<String> = ports.into_iter().map(|port| format!("127.0.0.1:{port}")).collect();
    format!("redis://{}", hosts.join(","))
}

/// A redis-server that speaks only TLS (`tls-port`, no plain port), with a
/// server certificate for 127.0.0.1 and localhost signed by a throwaway CA;
/// clients need no certificate of their own.
pub struct TlsRedis {
    node: Node,
    password: Option<String>,
    /// The PKI and the server's files; dropped after the server.
    dir: TempDir,
}

impl TlsRedis {
    /// Starts one without a password.
    pub fn start() -> TlsRedis {
        TlsRedis::start_inner(None)
    }

    /// Starts one that requires `password` (`requirepass`); it goes into
    /// [`TlsRedis::url`] as is, so keep it to URL-safe characters.
    pub fn start_with_password(password: &str) -> TlsRedis {
        TlsRedis::start_inner(Some(password.to_string()))
    }

    fn start_inner(password: Option<String>) -> TlsRedis {
        require_tool("redis-server", &["--version"], "redis-server");
        require_tool("openssl", &["version"], "openssl");
        let dir = tempfile::tempdir().expect("a temp dir");
        make_test_pki(dir.path());
        let port = free_port();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        // A config file keeps the password out of the command line.
        let mut config = format!(
            "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\n",
            path("server.crt"),
            path("server.key"),
            path("ca.crt")
        );
        if let Some(password) = &password {
            config.push_str(&format!("requirepass {password}\n"));
        }
        let config_path = dir.path().join("redis.conf");
        std::fs::write(&config_path, config).expect("writing redis.conf");
        let mut args = vec![OsString::from(&config_path)];
        args.extend(Node::data_node_args(0, &subdir(dir.path(), "data"), &[]));
        args.extend(os_args(&["--tls-port", &port.to_string()]));
        let ca = dir.path().join("ca.crt");
        let node = Node::start(
            &format!("TLS redis-server 127.0.0.1:{port}"),
            port,
            args,
            &dir.path().join("redis.log"),
            |args| tls_cli(port, &ca, password.as_deref(), args),
        );
        TlsRedis { node, password, dir }
    }

    /// `rediss://127.0.0.1:PORT`, with `:PASSWORD@` when it has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("rediss://:{password}@127.0.0.1:{}", self.port()),
            None => format!("rediss://127.0.0.1:{}", self.port()),
        }
    }

    /// Its TLS port.
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// The password it requires, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The CA that signed its certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Another throwaway CA (PEM), one that did not sign its certificate.
    pub fn wrong_ca_file(&self) -> PathBuf {
        self.dir.path().join("wrong-ca.crt")
    }

    /// `redis-cli --tls` with the right CA and its password.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        tls_cli(self.port(), &self.ca_file(), self.password(), args)
    }

    /// `redis-cli --tls` trusting `ca`, with `password` if given.
    pub fn cli_with(&self, ca: &Path, password: Option<&str>, args: &[&str]) -> Result<String, String> {
        tls_cli(self.port(), ca, password, args)
    }

    /// The process ids of its redis-server and of the shell around it.
    pub fn pids(&self) -> Vec<u32> {
        self.node.pids().to_vec()
    }
}

fn tls_cli(port: u16, ca: &Path, password: Option<&str>, args: &[&str]) -> Result<String, String> {
    let ca = ca.to_string_lossy();
    let connection = ["-h", "127.0.0.1", "-p", &port.to_string(), "--tls", "--cacert", &ca];
    run_redis_cli(&connection, args, password, CLI_TIMEOUT_SECS)
}

/// Writes into `dir`: `ca.crt`/`ca.key`, `server.crt`/`server.key` for
/// IP:127.0.0.1 and DNS:localhost signed by that CA, and `wrong-ca.crt`, a
/// second CA. P-256 keys (quick to make); extensions as webpki wants them.
pub fn make_test_pki(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("running openssl (apt-get install -y openssl)");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (name, subject) in [
        ("ca", "/CN=outbound-webhooks-test-redis-ca"),
        ("wrong-ca", "/CN=outbound-webhooks-wrong-ca"),
    ] {
        let (key_file, cert_file) = (format!("{name}.key"), format!("{name}.crt"));
        let mut args = vec!["req", "-x509"];
        args.extend(key);
        args.extend(["-keyout", &key_file, "-out", &cert_file, "-days", "2", "-subj", subject]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&args);
    }
    let mut args = vec!["req"];
    args.extend(key);
    args.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    openssl(&args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("writing server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

/// A primary and one replica (or more) watched by three sentinels (quorum
/// 2), with quick fail-overs. Every method waits with a deadline and fails the test
/// with what it last saw.
pub struct SentinelGroup {
    master_name: String,
    // Sentinels stop first, so they start no fail-over while the group goes.
    sentinels: Vec<Node>,
    /// The primary at start, then the replicas.
    data: Vec<Node>,
    killed: Mutex<HashSet<u16>>,
    /// The nodes' files; dropped after them.
    _files: TempDir,
}

impl SentinelGroup {
    /// Starts the group and returns once every sentinel knows the primary,
    /// the replica and the two other sentinels, and the replica is in sync.
    pub fn start(master_name: &str) -> SentinelGroup {
        SentinelGroup::start_with_replicas(master_name, 1)
    }

    /// [`SentinelGroup::start`] with `replicas` replicas.
    pub fn start_with_replicas(master_name: &str, replicas: usize) -> SentinelGroup {
        require_tool("redis-server", &["--version"], "redis-server");
        let dir = tempfile::tempdir().expect("a temp dir");
        let primary_port = free_port();
        let mut data = vec![start_data_node(dir.path(), "Sentinel group primary", primary_port, &[])];
        let replica_of = ["--replicaof", "127.0.0.1", &primary_port.to_string()];
        for _ in 0..replicas {
            data.push(start_data_node(
                dir.path(),
                "Sentinel group replica",
                free_port(),
                &replica_of,
            ));
        }
        let sentinels = (0..3)
            .map(|_| start_sentinel(dir.path(), master_name, primary_port))
            .collect();
        let group = SentinelGroup {
            master_name: master_name.to_string(),
            sentinels,
            data,
            killed: Mutex::new(HashSet::new()),
            _files: dir,
        };
        group.wait_settled();
        group
    }

    /// The sentinels: `redis://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3`.
    pub fn url(&self) -> String {
        multi_host_url(self.sentinel_ports())
    }

    /// The sentinels' name of the primary.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|node| node.port).collect()
    }

    /// The data nodes' ports (the primary at start first).
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|node| node.port).collect()
    }

    /// The primary, as the first sentinel that answers names it.
    pub fn primary_port(&self) -> u16 {
        wait_for("a sentinel to name the primary", SETTLE, || {
            let answers: Vec<Result<u16, String>> = self
                .sentinel_ports()
                .into_iter()
                .map(|s| self.primary_seen_by(s))
                .collect();
            answers
                .iter()
                .find_map(|answer| answer.clone().ok())
                .ok_or(format!("{answers:?}"))
        })
    }

    /// `SENTINEL FAILOVER` once the group is settled, then waits until every
    /// sentinel names the new primary; returns it. The old primary still
    /// says it is a master (and takes writes) for some 8-10 s more, until
    /// the sentinels reconfigure it: Sentinel waits that long before it
    /// touches a node that reports the wrong role.
    /// [`SentinelGroup::wait_settled`] waits for that.
    pub fn failover(&self) -> u16 {
        let old = self.wait_settled();
        // Refused (NOGOODSLAVE, INPROG) while a sentinel still sorts out its view.
        wait_for("a sentinel to accept SENTINEL FAILOVER", SETTLE, || {
            redis_cli(self.sentinels[0].port, &["SENTINEL", "FAILOVER", &self.master_name])
        });
        self.wait_for_new_primary(old)
    }

    /// Waits until the sentinels agree on the primary, see each other and
    /// every live replica, and every live replica is in sync with the
    /// primary; returns the primary.
    pub fn wait_settled(&self) -> u16 {
        wait_for("the Sentinel group to settle", SETTLE, || self.settled())
    }

    /// SIGKILL of the primary's redis-server once the group is settled (so
    /// a replica in sync can take over); returns its port.
    /// [`SentinelGroup::wait_for_new_primary`] waits for the promotion.
    pub fn kill_primary(&self) -> u16 {
        let port = self.wait_settled();
        self.kill(port);
        port
    }

    /// SIGKILL of the data node on `port`.
    pub fn kill(&self, port: u16) {
        let node = self
            .data
            .iter()
            .find(|node| node.port == port)
            .unwrap_or_else(|| panic!("no data node of the group listens on {port}"));
        sigkill(node.pid);
        self.killed.lock().expect("killed ports").insert(port);
    }

    /// Waits until every sentinel names a primary other than `old` and that
    /// node says it is a master; returns its port.
    pub fn wait_for_new_primary(&self, old: u16) -> u16 {
        wait_for("the sentinels to promote a new primary", SETTLE, || {
            let port = self.agreed_primary()?;
            if port == old || self.is_killed(port) {
                return Err(format!("the sentinels still name {port}"));
            }
            let info = redis_cli(port, &["INFO", "replication"])?;
            match info_field(&info, "role").as_deref() {
                Some("master") => Ok(port),
                _ => Err(format!("{port} is named primary but says {info}")),
            }
        })
    }

    /// The process ids of every redis-server of the group and their shells.
    pub fn pids(&self) -> Vec<u32> {
        self.data.iter().chain(&self.sentinels).flat_map(Node::pids).collect()
    }

    fn is_killed(&self, port: u16) -> bool {
        self.killed.lock().expect("killed ports").contains(&port)
    }

    fn primary_seen_by(&self, sentinel: u16) -> Result<u16, String> {
        let answer = redis_cli(sentinel, &["SENTINEL", "get-master-addr-by-name", &self.master_name])?;
        answer
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .ok_or(format!("sentinel {sentinel} answered {answer:?}"))
    }

    /// The primary every sentinel names, if they agree.
    fn agreed_primary(&self) -> Result<u16, String> {
        let seen: Vec<Result<u16, String>> = self
            .sentinel_ports()
            .into_iter()
            .map(|s| self.primary_seen_by(s))
            .collect();
        match seen.first() {
            Some(Ok(port)) if seen.iter().all(|other| other.as_ref() == Ok(port)) => Ok(*port),
            _ => Err(format!("the sentinels name {seen:?}")),
        }
    }

    /// See [`SentinelGroup::wait_settled`]. (The sentinels' own view of a
    /// replica's link lags up to 10 s, their INFO period, and is not needed
    /// for a promotion, so it is not waited for.)
    fn settled(&self) -> Result<u16, String> {
        let primary = self.agreed_primary()?;
        let info = redis_cli(primary, &["INFO", "replication"])?;
        if info_field(&info, "role").as_deref() != Some("master") {
            return Err(format!("{primary} is named primary but says {info}"));
        }
        let replicas: Vec<u16> = self
            .data_ports()
            .into_iter()
            .filter(|&port| port != primary && !self.is_killed(port))
            .collect();
        for &replica in &replicas {
            let info = redis_cli(replica, &["INFO", "replication"])?;
            let linked = info_field(&info, "master_port") == Some(primary.to_string())
                && info_field(&info, "master_link_status").as_deref() == Some("up");
            if !linked {
                return Err(format!("replica {replica} is not in sync with {primary}: {info}"));
            }
        }
        for sentinel in self.sentinel_ports() {
            let master = fields(&redis_cli(sentinel, &["SENTINEL", "MASTER", &self.master_name])?);
            let field = |name: &str| master.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            if field("flags") != Some("master") || field("num-other-sentinels") != Some("2") {
                return Err(format!("sentinel {sentinel} sees the primary as {master:?}"));
            }
            let listed = fields(&redis_cli(sentinel, &["SENTINEL", "REPLICAS", &self.master_name])?);
            let healthy: BTreeSet<u16> = records(&listed)
                .into_iter()
                .filter(|r| r.get("flags") == Some("slave"))
                .filter_map(|r| r.get("port")?.parse().ok())
                .collect();
            if !replicas.iter().all(|port| healthy.contains(port)) {
                return Err(format!("sentinel {sentinel} sees the replicas as {listed:?}"));
            }
        }
        Ok(primary)
    }
}

/// Starts one sentinel watching the primary on `primary_port`; its config
/// file is its own and writable (a sentinel rewrites it).
fn start_sentinel(root: &Path, master_name: &str, primary_port: u16) -> Node {
    let port = free_port();
    let dir = subdir(root, &format!("sentinel-{port}"));
    let config = format!(
        "bind 127.0.0.1\nport {port}\nprotected-mode no\ndir {dir}\n\
         sentinel monitor {master_name} 127.0.0.1 {primary_port} 2\n\
         sentinel down-after-milliseconds {master_name} {DOWN_AFTER_MS}\n\
         sentinel failover-timeout {master_name} {FAILOVER_TIMEOUT_MS}\n\
         sentinel parallel-syncs {master_name} 1\n",
        dir = dir.display()
    );
    let config_path = dir.join("sentinel.conf");
    std::fs::write(&config_path, config).expect("writing sentinel.conf");
    // `redis-server CONF --sentinel` is what the redis-sentinel binary is,
    // so this works without Debian's redis-sentinel package too.
    Node::start(
        &format!("sentinel 127.0.0.1:{port}"),
        port,
        vec![config_path.into(), "--sentinel".into()],
        &root.join(format!("sentinel-{port}.log")),
        |args| redis_cli(port, args),
    )
}

/// redis-cli's flattened reply of key/value pairs, as pairs.
fn fields(reply: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = reply.lines().map(str::trim).collect();
    lines
        .chunks(2)
        .filter_map(|pair| match pair {
            [key, value] => Some((key.to_string(), value.to_string())),
            _ => None,
        })
        .collect()
}

/// One record of a flattened list of records (each starts with `name`).
struct Record<'a>(Vec<&'a (String, String)>);

impl Record<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn records(pairs: &[(String, String)]) -> Vec<Record<'_>> {
    let mut records: Vec<Record<'_>> = Vec::new();
    for pair in pairs {
        match records.last_mut() {
            Some(record) if pair.0 != "name" => record.0.push(pair),
            _ => records.push(Record(vec![pair])),
        }
    }
    records
}

/// A Redis Cluster of three masters with one replica each, made by
/// `redis-cli --cluster create`, with a short node timeout so a killed
/// master's replica takes over within seconds.
pub struct RedisCluster {
    nodes: Vec<Node>,
    killed: Mutex<HashSet<u16>>,
    /// The nodes' files; dropped after them.
    _files: TempDir,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct ClusterNode {
    id: String,
    port: u16,
    flags: Vec<String>,
    master_id: Option<String>,
    /// Served slot ranges, inclusive.
    slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    fn parse(line: &str) -> Option<ClusterNode> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let address = words.get(1)?;
        let port = address.split('@').next()?.rsplit(':').next()?.parse().ok()?;
        let slots = words
            .iter()
            .skip(8)
            .filter(|slot| !slot.starts_with('['))
            .filter_map(|slot| match slot.split_once('-') {
                Some((from, to)) => Some((from.parse().ok()?, to.parse().ok()?)),
                None => slot.parse().ok().map(|slot| (slot, slot)),
            })
            .collect();
        Some(ClusterNode {
            id: words.first()?.to_string(),
            port,
            flags: words.get(2)?.split(',').map(str::to_string).collect(),
            master_id: words.get(3).filter(|id| **id != "-").map(|id| id.to_string()),
            slots,
        })
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Not flagged failing (or suspected).
    fn healthy(&self) -> bool {
        !self.has_flag("fail") && !self.has_flag("fail?") && !self.has_flag("handshake") && !self.has_flag("noaddr")
    }

    /// A healthy master that serves slots.
    fn serving_master(&self) -> bool {
        self.has_flag("master") && self.healthy() && !self.slots.is_empty()
    }
}

impl RedisCluster {
    /// Starts six nodes, creates the Cluster, and returns once every node
    /// says `cluster_state:ok`, knows all six, and every replica is in sync.
    pub fn start() -> RedisCluster {
        require_tool("redis-server", &["--version"], "redis-server");
        let dir = tempfile::tempdir().expect("a temp dir");
        let nodes: Vec<Node> = (0..6)
            .map(|_| {
                // The bus port is given, as port + 10000 may not be free (or exist).
                let bus_port = free_port().to_string();
                let timeout = CLUSTER_NODE_TIMEOUT_MS.to_string();
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &timeout,
                    "--cluster-port",
                    &bus_port,
                ];
                start_data_node(dir.path(), "Cluster node", free_port(), &extra)
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        run_redis_cli(&[], &args, None, 60).unwrap_or_else(|e| panic!("creating the Cluster: {e}"));
        let cluster = RedisCluster {
            nodes,
            killed: Mutex::new(HashSet::new()),
            _files: dir,
        };
        wait_for("the Cluster to be ok on every node", SETTLE, || cluster.healthy());
        cluster
    }

    /// The seed nodes (all six): `redis://127.0.0.1:P1,127.0.0.1:P2,...`.
    pub fn url(&self) -> String {
        multi_host_url(self.ports())
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// The ports of the masters that serve slots, as a live node sees them.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<u16> = self
            .cluster_nodes(self.live_port())
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .filter(|node| node.serving_master())
            .map(|node| node.port)
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The healthy replica of the master on `master`, if it has one.
    pub fn replica_of(&self, master: u16) -> Option<u16> {
        let nodes = self.cluster_nodes(self.live_port()).unwrap_or_else(|e| panic!("{e}"));
        let id = &nodes.iter().find(|node| node.port == master)?.id;
        nodes
            .iter()
            .find(|node| node.master_id.as_ref() == Some(id) && node.has_flag("slave") && node.healthy())
            .map(|node| node.port)
    }

    /// The master that serves `key`'s slot (`CLUSTER KEYSLOT`, `CLUSTER NODES`).
    pub fn node_of_key(&self, key: &str) -> u16 {
        let live = self.live_port();
        let slot: u16 = redis_cli(live, &["CLUSTER", "KEYSLOT", key])
            .unwrap_or_else(|e| panic!("{e}"))
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        let nodes = self.cluster_nodes(live).unwrap_or_else(|e| panic!("{e}"));
        nodes
            .iter()
            .find(|node| node.serving_master() && node.slots.iter().any(|&(from, to)| (from..=to).contains(&slot)))
            .map(|node| node.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot} of {key}: {nodes:?}"))
    }

    /// `redis-cli -c` on a live node (MOVED and ASK followed).
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let port = self.live_port().to_string();
        let connection = ["-c", "-h", "127.0.0.1", "-p", &port];
        run_redis_cli(&connection, args, None, CLI_TIMEOUT_SECS)
    }

    /// SIGKILL of the node on `port`.
    pub fn kill(&self, port: u16) {
        let node = self
            .nodes
            .iter()
            .find(|node| node.port == port)
            .unwrap_or_else(|| panic!("no node of the Cluster listens on {port}"));
        sigkill(node.pid);
        self.killed.lock().expect("killed ports").insert(port);
    }

    /// Waits until the Cluster is ok again on every live node with three
    /// masters, none of them killed (their replicas promoted); returns them.
    pub fn wait_for_failover(&self) -> Vec<u16> {
        wait_for("a replica to take over in the Cluster", SETTLE, || {
            self.healthy()?;
            let masters = self.masters();
            match masters.iter().find(|port| self.is_killed(**port)) {
                Some(port) => Err(format!("killed {port} still serves slots")),
                None => Ok(masters),
            }
        })
    }

    /// The process ids of every redis-server of the Cluster and their shells.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().flat_map(Node::pids).collect()
    }

    fn is_killed(&self, port: u16) -> bool {
        self.killed.lock().expect("killed ports").contains(&port)
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports().into_iter().filter(|port| !self.is_killed(*port)).collect()
    }

    fn live_port(&self) -> u16 {
        *self.live_ports().first().expect("a live node in the Cluster")
    }

    fn cluster_nodes(&self, port: u16) -> Result<Vec<ClusterNode>, String> {
        let answer = redis_cli(port, &["CLUSTER", "NODES"])?;
        Ok(answer.lines().filter_map(ClusterNode::parse).collect())
    }

    /// Ok when every live node says `cluster_state:ok`, knows all six
    /// nodes, sees the same three serving masters and every other live node
    /// as a healthy replica of one of them, and every live replica is in
    /// sync with its master.
    fn healthy(&self) -> Result<(), String> {
        let mut views = BTreeSet::new();
        for port in self.live_ports() {
            let info = redis_cli(port, &["CLUSTER", "INFO"])?;
            if info_field(&info, "cluster_state").as_deref() != Some("ok")
                || info_field(&info, "cluster_known_nodes").as_deref() != Some("6")
            {
                return Err(format!("node {port}: {info}"));
            }
            let nodes = self.cluster_nodes(port)?;
            let masters: Vec<u16> = nodes.iter().filter(|n| n.serving_master()).map(|n| n.port).collect();
            if masters.len() != 3 {
                return Err(format!("node {port} sees masters {masters:?}: {nodes:?}"));
            }
            // Gossip tells a node late that another is a replica (until then
            // it shows as a master without slots).
            let master_ids: HashSet<&str> = nodes
                .iter()
                .filter(|n| n.serving_master())
                .map(|n| n.id.as_str())
                .collect();
            let misplaced: Vec<&ClusterNode> = nodes
                .iter()
                .filter(|n| !self.is_killed(n.port) && !n.serving_master())
                .filter(|n| {
                    !(n.has_flag("slave")
                        && n.healthy()
                        && n.master_id.as_deref().is_some_and(|id| master_ids.contains(id)))
                })
                .collect();
            if !misplaced.is_empty() {
                return Err(format!("node {port} sees neither master nor replica in {misplaced:?}"));
            }
            views.insert(BTreeSet::from_iter(masters));
            let replication = redis_cli(port, &["INFO", "replication"])?;
            if info_field(&replication, "role").as_deref() == Some("slave")
                && info_field(&replication, "master_link_status").as_deref() != Some("up")
            {
                return Err(format!("replica {port} is not in sync: {replication}"));
            }
        }
        if views.len() == 1 {
            Ok(())
        } else {
            Err(format!("the nodes disagree on the masters: {views:?}"))
        }
    }
}
