//! Stream shards: which shard an org's events go to, and the key prefix of
//! each shard.
//!
//! With `--shards N`, orgs are spread over N shards, each a full set of
//! keys (stream, consumer group, tasks, dead letters) under its own hash
//! tag, so a Redis Cluster spreads them over its nodes. Shard 0 keeps the
//! prefix as it is (one shard is the layout of a single-shard install);
//! shard k > 0 appends `-k` inside the braces: `{outbound-webhooks-3}:`.

use sha2::{Digest, Sha256};

/// The shard of `org` among `shards`: the first 4 bytes of SHA-256(org),
/// big-endian, modulo the shard count. Producers that `XADD` themselves
/// compute the same (docs/src/redis.md#stream-shards gives it in Python).
pub fn shard_of(org: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let digest = Sha256::digest(org.as_bytes());
    let head = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (head as u64 % shards as u64) as usize
}

/// The prefix has no `{hash tag}`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--redis-prefix {0:?} has no {{hash tag}}: the scripts change several keys at once, which Redis Cluster allows only within one slot; use e.g. \"{{outbound-webhooks}}:\""
)]
pub struct NoHashTag(pub String);

/// The byte range of the hash tag's content in `prefix` (what Redis Cluster
/// hashes: from the first `{` to the next `}`, not empty).
fn hash_tag(prefix: &str) -> Option<(usize, usize)> {
    let open = prefix.find('{')?;
    let close = open + 1 + prefix[open + 1..].find('}')?;
    (close > open + 1).then_some((open + 1, close))
}

/// Refuses a prefix without a hash tag.
pub fn check_prefix(prefix: &str) -> Result<(), NoHashTag> {
    hash_tag(prefix)
        .map(|_| ())
        .ok_or_else(|| NoHashTag(prefix.to_string()))
}

/// The key prefix of shard `k`.
pub fn shard_prefix(prefix: &str, k: usize) -> Result<String, NoHashTag> {
    let (_, close) = hash_tag(prefix).ok_or_else(|| NoHashTag(prefix.to_string()))?;
    if k == 0 {
        return Ok(prefix.to_string());
    }
    Ok(format!("{}-{k}{}", &prefix[..close], &prefix[close..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vectors of docs/src/redis.md#stream-shards: org -> shard for N = 1, 3 and 16.
    pub const VECTORS: [(&str, usize, usize, usize); 6] = [
        ("acme", 0, 1, 13),
        ("globex", 0, 0, 13),
        ("initech", 0, 1, 2),
        ("umbrella", 0, 1, 9),
        ("tenant-0042", 0, 1, 5),
        ("a", 0, 2, 2),
    ];

    #[test]
    fn orgs_map_to_the_documented_shards() {
        for (org, n1, n3, n16) in VECTORS {
            assert_eq!(
                (shard_of(org, 1), shard_of(org, 3), shard_of(org, 16)),
                (n1, n3, n16),
                "{org}"
            );
        }
    }

    #[test]
    fn the_formula_is_sha256_head_mod_n() {
        let d = Sha256::digest(b"acme");
        let head = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
        assert_eq!(shard_of("acme", 7), head % 7);
    }

    #[test]
    fn shard_prefixes_append_inside_the_braces() {
        assert_eq!(shard_prefix("{outbound-webhooks}:", 0).unwrap(), "{outbound-webhooks}:");
        assert_eq!(
            shard_prefix("{outbound-webhooks}:", 3).unwrap(),
            "{outbound-webhooks-3}:"
        );
        assert_eq!(shard_prefix("team:{owh}:x:", 2).unwrap(), "team:{owh-2}:x:");
        assert!(check_prefix("outbound-webhooks:").is_err());
        assert!(check_prefix("{}:").is_err());
        assert!(shard_prefix("no-tag:", 1).is_err());
    }
}
