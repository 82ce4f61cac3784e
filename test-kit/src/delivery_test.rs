//! The setting most dispatcher tests share: a namespace (the org), a Redis
//! prefix of their own on the shared Redis, hooks subscribed to [`CREATE`]
//! set up as the controller would, and dispatchers with the test defaults.

use std::time::Duration;

use outbound_webhooks::store::Keys;
use serde_json::Value;

use super::{
    CREATE,
    cluster::{env, namespace, redis_prefix},
    dispatcher::{self, Dispatcher},
    hooks::{self, TestHook},
    receiver::Receiver,
    redis, wait_for,
};

/// One dispatcher test's namespace, Redis prefix and Redis URL.
pub struct DeliveryTest {
    /// The name the test gave (also the default consumer name).
    pub name: String,
    /// Its namespace, which is also the org events are published to.
    pub ns: String,
    /// Its Redis key prefix.
    pub prefix: String,
    /// The Redis it publishes to (the shared one unless given).
    pub redis_url: String,
}

impl DeliveryTest {
    /// A fresh namespace and prefix on the shared Redis.
    pub fn new(name: &str) -> DeliveryTest {
        DeliveryTest::on(name, &env().redis_url)
    }

    /// A fresh namespace and prefix on the Redis at `redis_url`.
    pub fn on(name: &str, redis_url: &str) -> DeliveryTest {
        DeliveryTest {
            name: name.to_string(),
            ns: namespace(name),
            prefix: redis_prefix(name),
            redis_url: redis_url.to_string(),
        }
    }

    /// Its Redis key names.
    pub fn keys(&self) -> Keys {
        Keys::new(&self.prefix)
    }

    /// A connection to its Redis.
    pub fn redis(&self) -> ::redis::Connection {
        redis::connect(&self.redis_url)
    }

    /// A hook of its namespace subscribed to [`CREATE`], with its Secret
    /// and accepted conditions.
    pub fn hook(&self, name: &str, url: &str, extra_spec: Value) -> TestHook {
        hooks::create_hook(&self.ns, name, url, &[CREATE], extra_spec)
    }

    /// A hook named `h` pointing at `receiver`'s `/`.
    pub fn hook_to(&self, receiver: &Receiver, extra_spec: Value) -> TestHook {
        self.hook("h", &receiver.url("/"), extra_spec)
    }

    /// Dispatcher arguments (the test defaults, then `more`) for `consumer`.
    pub fn args(&self, consumer: &str, more: &[&str]) -> Vec<String> {
        dispatcher::args(&self.redis_url, &self.prefix, consumer, more)
    }

    /// A ready dispatcher consuming as the test's name.
    pub fn dispatcher(&self, more: &[&str]) -> Dispatcher {
        self.dispatcher_as(&self.name, more)
    }

    /// A ready dispatcher consuming as `consumer`.
    pub fn dispatcher_as(&self, consumer: &str, more: &[&str]) -> Dispatcher {
        Dispatcher::start(self.args(consumer, more))
    }

    /// Publishes a [`CREATE`] event to its org; returns the event id.
    pub fn publish(&self, data: &Value) -> String {
        self.publish_event(CREATE, data)
    }

    /// Publishes `event` to its org; returns the event id.
    pub fn publish_event(&self, event: &str, data: &Value) -> String {
        redis::publish(&self.redis_url, &self.prefix, &self.ns, event, data)
    }

    /// `outbound-webhooks publish` of a [`CREATE`] event with `data` to its
    /// org, then `more` flags: (success, stdout, stderr).
    pub fn try_publish_cli(&self, data: &str, more: &[&str]) -> (bool, String, String) {
        let mut args = vec![
            "publish",
            "--redis-url",
            &self.redis_url,
            "--redis-prefix",
            &self.prefix,
            "--org",
            &self.ns,
            "--event",
            CREATE,
            "--data",
            data,
        ];
        args.extend_from_slice(more);
        dispatcher::try_cli(&args)
    }

    /// Like [`DeliveryTest::try_publish_cli`], failing the test on an
    /// error; returns stdout (`EVENT_ID ENTRY_ID`).
    pub fn publish_cli(&self, data: &str, more: &[&str]) -> String {
        let (ok, stdout, stderr) = self.try_publish_cli(data, more);
        assert!(
            ok,
            "outbound-webhooks publish {} failed: {stdout}{stderr}",
            more.join(" ")
        );
        stdout
    }

    /// The arguments of `attempts --hook HOOK` on its Redis, then `extra`.
    pub fn attempts_args<'a>(&'a self, hook: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "attempts",
            "--redis-url",
            &self.redis_url,
            "--redis-prefix",
            &self.prefix,
            "--hook",
            hook,
        ];
        args.extend(extra);
        args
    }

    /// `hook`'s attempts log (`attempts -o json`, at most `limit`), newest first.
    pub fn attempts_json(&self, hook: &TestHook, limit: usize) -> Vec<Value> {
        let limit = limit.to_string();
        let out = dispatcher::run_cli(&self.attempts_args(&hook.key(), &["-o", "json", "--limit", &limit]));
        serde_json::from_str::<Vec<Value>>(&out)
            .unwrap_or_else(|e| panic!("attempts -o json is not a JSON array ({e}): {out}"))
    }

    /// `dead-letter replay` then `more` flags: (success, stdout, stderr).
    pub fn try_replay_dead_letters(&self, more: &[&str]) -> (bool, String, String) {
        let mut args = vec![
            "dead-letter",
            "replay",
            "--redis-url",
            &self.redis_url,
            "--redis-prefix",
            &self.prefix,
        ];
        args.extend_from_slice(more);
        dispatcher::try_cli(&args)
    }

    /// `dead-letter list [--hook HOOK]` lines.
    pub fn dead_letters(&self, hook: Option<&str>) -> Vec<String> {
        dispatcher::dead_letters(&self.redis_url, &self.prefix, hook)
    }

    /// Publishes `{}` events, `pause` apart, until one reaches `receiver`
    /// (within 30 s): for changes the dispatcher's caches take a moment to see.
    pub fn publish_until_delivered(&self, what: &str, receiver: &Receiver, pause: Duration) {
        self.publish_until(
            what,
            receiver,
            &Value::Object(Default::default()),
            pause,
            1,
            Duration::from_secs(30),
        );
    }

    /// Publishes `data` again and again, `pause` apart, until one of them
    /// reaches `receiver` in `requests` requests (2 when the first attempt
    /// fails by design). Fails after `timeout`.
    pub fn publish_until(
        &self,
        what: &str,
        receiver: &Receiver,
        data: &Value,
        pause: Duration,
        requests: usize,
        timeout: Duration,
    ) {
        wait_for(what, timeout, || {
            let id = self.publish(data);
            std::thread::sleep(pause);
            let got = receiver.requests_for(&id).len();
            if got >= requests {
                Ok(())
            } else {
                Err(format!("{got} of {requests} requests"))
            }
        });
    }
}
