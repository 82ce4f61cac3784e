//! Which tokens sign a hook's requests: the keys of its signing Secret
//! (`token`, and during a rotation `next-token` or `previous-token`), read
//! and checked one way for the controller (to report `SecretInvalid`) and
//! the dispatcher (to sign), so the two cannot disagree. Borrowed from the
//! Secret's data: reading them allocates nothing.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use crate::contract::secret_values::{self, ValueProblem};

/// Key of the hex token (the HMAC key, as UTF-8 bytes) in a generated Secret.
pub const TOKEN_KEY: &str = "token";
/// Key of the same token in Standard Webhooks form (`whsec_` + base64).
pub const STANDARD_WEBHOOKS_KEY: &str = "standard-webhooks-secret";
/// Key of the token staged by `rotate-secret`, not yet promoted.
pub const NEXT_TOKEN_KEY: &str = "next-token";
/// Key of the staged token in Standard Webhooks form.
pub const NEXT_STANDARD_WEBHOOKS_KEY: &str = "next-standard-webhooks-secret";
/// Key of the token a promotion rotated out, until its overlap ends.
pub const PREVIOUS_TOKEN_KEY: &str = "previous-token";
/// Key of the rotated-out token in Standard Webhooks form.
pub const PREVIOUS_STANDARD_WEBHOOKS_KEY: &str = "previous-standard-webhooks-secret";

/// The tokens of one signing Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigningTokens<'a> {
    /// Signs `X-Kustomer-Webhook-Signature` and the first `webhook-signature`.
    pub token: &'a str,
    /// Staged by a rotation: also signs `webhook-signature`.
    pub next: Option<&'a str>,
    /// Rotated out, within its overlap: also signs `webhook-signature`.
    pub previous: Option<&'a str>,
}

/// Why a Secret's tokens cannot be used (names the key, never the value).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    /// The token key is absent.
    #[error("has no key {0:?}")]
    Missing(String),
    /// A token key holds a value that cannot be a token.
    #[error("key {key:?} {problem}")]
    Invalid {
        /// The key.
        key: String,
        /// What is wrong with its value.
        problem: ValueProblem,
    },
}

impl<'a> SigningTokens<'a> {
    /// Reads the token under `token_key` (`token`, or `spec.secretRef.key`)
    /// and, when present, `next-token` and `previous-token`; each must be a
    /// usable signing token ([`secret_values::signing_token`]).
    pub fn read(data: &'a BTreeMap<String, ByteString>, token_key: &str) -> Result<Self, TokenProblem> {
        Self::read_with(|key| data.get(key).map(|b| b.0.as_slice()), token_key)
    }

    /// [`SigningTokens::read`] from any holder of a Secret's data (the
    /// dispatcher's cache keeps it in a smaller form than a `BTreeMap`).
    pub fn read_with(get: impl Fn(&str) -> Option<&'a [u8]>, token_key: &str) -> Result<Self, TokenProblem> {
        let checked = |key: &str| -> Result<Option<&'a str>, TokenProblem> {
            match get(key) {
                None => Ok(None),
                Some(bytes) => secret_values::signing_token(bytes)
                    .map(Some)
                    .map_err(|problem| TokenProblem::Invalid {
                        key: key.to_string(),
                        problem,
                    }),
            }
        };
        let token = checked(token_key)?.ok_or_else(|| TokenProblem::Missing(token_key.to_string()))?;
        Ok(SigningTokens {
            token,
            next: checked(NEXT_TOKEN_KEY)?,
            previous: checked(PREVIOUS_TOKEN_KEY)?,
        })
    }

    /// The tokens `webhook-signature` carries a signature by: `token` first,
    /// then the staged one, then the rotated-out one.
    pub fn standard_webhooks_tokens(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        [Some(self.token), self.next, self.previous].into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(entries: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
            .collect()
    }

    #[test]
    fn the_token_alone_signs_both_headers() {
        let d = data(&[(TOKEN_KEY, &[b'a'; 64]), (STANDARD_WEBHOOKS_KEY, b"whsec_x")]);
        let tokens = SigningTokens::read(&d, TOKEN_KEY).unwrap();
        assert_eq!(tokens.token, "a".repeat(64));
        assert_eq!(tokens.standard_webhooks_tokens().count(), 1);
    }

    #[test]
    fn a_staged_or_rotated_out_token_also_signs_webhook_signature_after_the_token() {
        let d = data(&[
            ("signing", &[b'a'; 32]),
            (NEXT_TOKEN_KEY, &[b'b'; 32]),
            (PREVIOUS_TOKEN_KEY, &[b'c'; 32]),
        ]);
        let tokens = SigningTokens::read(&d, "signing").unwrap();
        let all: Vec<&str> = tokens.standard_webhooks_tokens().collect();
        assert_eq!(all, ["a".repeat(32), "b".repeat(32), "c".repeat(32)]);
    }

    #[test]
    fn every_token_key_is_checked_like_the_token_and_problems_name_the_key_only() {
        assert_eq!(
            SigningTokens::read(&data(&[]), TOKEN_KEY),
            Err(TokenProblem::Missing(TOKEN_KEY.into()))
        );
        let short = data(&[(TOKEN_KEY, &[b'a'; 32]), (NEXT_TOKEN_KEY, b"short-secret")]);
        let problem = SigningTokens::read(&short, TOKEN_KEY).unwrap_err();
        assert_eq!(
            problem,
            TokenProblem::Invalid {
                key: NEXT_TOKEN_KEY.into(),
                problem: ValueProblem::TokenLength(12)
            }
        );
        assert!(!problem.to_string().contains("short-secret"), "{problem}");
        let binary = data(&[(TOKEN_KEY, &[b'a'; 32]), (PREVIOUS_TOKEN_KEY, &[0xff; 32])]);
        assert!(matches!(
            SigningTokens::read(&binary, TOKEN_KEY),
            Err(TokenProblem::Invalid { key, problem: ValueProblem::NotUtf8 }) if key == PREVIOUS_TOKEN_KEY
        ));
    }
}
