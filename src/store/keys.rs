//! Every Redis key name, built in one place: the dispatcher, producers
//! (`publish`), the `dead-letter` command, tests and the benchmark all take
//! their key names from [`Keys`].

/// Key names under one prefix (e.g. `{outbound-webhooks}:`; its hash tag
/// keeps every key in one Redis Cluster slot, so scripts may touch them
/// together).
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The events stream producers append to.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// The dead-letter stream.
    pub fn dead_letter(&self) -> String {
        format!("{}dead-letter", self.prefix)
    }

    /// The sorted set of every task member by due time.
    pub fn due(&self) -> String {
        format!("{}due", self.prefix)
    }

    /// The sorted set of one hook's task members by due time.
    pub fn hook_due(&self, uid: &str) -> String {
        format!("{}due:{uid}", self.prefix)
    }

    /// One hook's rate limiter: its theoretical arrival time (GCRA), Unix
    /// ms of Redis's clock, expiring once the bucket is full again.
    pub fn hook_rate(&self, uid: &str) -> String {
        format!("{}rate:{uid}", self.prefix)
    }

    /// One hook's claimed tasks by lease end (its requests in flight across
    /// replicas, for `spec.maxConcurrentRequests`), expiring with the leases.
    pub fn hook_in_flight(&self, uid: &str) -> String {
        format!("{}in-flight:{uid}", self.prefix)
    }

    /// The set of one hook's tasks that wait for it to become deliverable.
    pub fn hook_waiting(&self, uid: &str) -> String {
        format!("{}waiting:{uid}", self.prefix)
    }

    /// One hook's dead letters (stream ids by time), so retention bounds
    /// each hook's count on its own; `malformed` for malformed entries.
    pub fn dead_index(&self, uid: &str) -> String {
        format!("{}dead-index:{uid}", self.prefix)
    }

    /// The set of hooks that have a [`Keys::dead_index`].
    pub fn dead_hooks(&self) -> String {
        format!("{}dead-hooks", self.prefix)
    }

    /// The sorted set of hooks by their earliest due task.
    pub fn hooks_due(&self) -> String {
        format!("{}hooks-due", self.prefix)
    }

    /// The bytes each org holds on this shard (task hashes and dead
    /// letters): a hash org -> bytes, kept by the scripts.
    pub fn org_bytes(&self) -> String {
        format!("{}org-bytes", self.prefix)
    }

    /// The accounted dead letters by id (so by age), each with its size,
    /// org and hook: `{padded id}\0{bytes}\0{org}\0{uid}` (lex order).
    pub fn dead_letters_by_id(&self) -> String {
        format!("{}dead-letters-by-id", self.prefix)
    }

    /// The accounted dead letters by org, oldest first: `{org}\0{padded id}`
    /// (lex order), so the org's oldest go first at its budget.
    pub fn dead_letters_by_org(&self) -> String {
        format!("{}dead-letters-by-org", self.prefix)
    }

    /// One task's hash.
    pub fn task(&self, member: &str) -> String {
        format!("{}task:{member}", self.prefix)
    }

    /// The set of one hook's task members.
    pub fn hook_tasks(&self, uid: &str) -> String {
        format!("{}hook-tasks:{uid}", self.prefix)
    }

    /// How many stream shards the dispatchers use (kept under shard 0's
    /// prefix; producers read it).
    pub fn shard_count(&self) -> String {
        format!("{}shards", self.prefix)
    }

    /// The marker that dead letter `letter_id` of shard `from_shard` was
    /// appended to this shard's events stream (kept for a while, so a
    /// replay run again does not append it twice).
    pub fn moved(&self, from_shard: usize, letter_id: &str) -> String {
        format!("{}moved:{from_shard}:{letter_id}", self.prefix)
    }

    /// One hook's attempts log (newest first, capped).
    pub fn attempts(&self, uid: &str) -> String {
        format!("{}attempts:{uid}", self.prefix)
    }

    /// One hook's delivery health.
    pub fn health(&self, uid: &str) -> String {
        format!("{}health:{uid}", self.prefix)
    }
}

/// The member naming a task in the due sets and `hook-tasks`:
/// `{hook uid}:{event id}`.
pub fn task_member(uid: &str, event_id: &str) -> String {
    format!("{uid}:{event_id}")
}

/// The hook UID of a task member.
pub fn uid_of_member(member: &str) -> &str {
    member.split(':').next().unwrap_or(member)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_shares_the_prefix_and_its_hash_tag() {
        let keys = Keys::new("{owh}:");
        for key in [
            keys.events(),
            keys.dead_letter(),
            keys.due(),
            keys.hook_due("u1"),
            keys.hooks_due(),
            keys.task("u1:e1"),
            keys.hook_tasks("u1"),
            keys.hook_waiting("u1"),
            keys.dead_index("u1"),
            keys.dead_hooks(),
            keys.health("u1"),
            keys.attempts("u1"),
            keys.shard_count(),
            keys.moved(1, "1-0"),
            keys.org_bytes(),
            keys.dead_letters_by_id(),
            keys.dead_letters_by_org(),
        ] {
            assert!(key.starts_with("{owh}:"), "{key}");
        }
        assert_eq!(keys.events(), "{owh}:events");
        assert_eq!(keys.hook_due("u1"), "{owh}:due:u1");
        assert_eq!(task_member("u1", "e1"), "u1:e1");
        assert_eq!(uid_of_member("u1:e1"), "u1");
    }
}
