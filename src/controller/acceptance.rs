//! Sticky acceptance under the per-namespace limit, as a pure function.
//!
//! Accepted hooks keep their slot; waiting hooks are admitted oldest first
//! (`creationTimestamp`, ties broken by name) as slots free up; only when the
//! limit drops below the number of accepted hooks are the newest accepted
//! ones un-accepted. Ordering purely by timestamp would flap, because
//! timestamps have one-second resolution and `kubectl apply -f dir/` creates
//! many hooks in the same second.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
};

use crate::contract::{
    conditions::accepted,
    filter::{Filter, InvalidFilter},
};

/// The limit that applies to one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// How many hooks may hold a slot.
    pub value: usize,
    /// Why the Namespace annotation was ignored, for the condition message.
    pub problem: Option<String>,
}

/// The namespace's limit: the `outboundwebhooks.io/max-webhooks` annotation
/// when it is a whole number, else `default` (with a message saying why).
pub fn effective_limit(annotation: Option<&str>, default: usize) -> Limit {
    let Some(raw) = annotation else {
        return Limit {
            value: default,
            problem: None,
        };
    };
    match raw.trim().parse::<usize>() {
        Ok(value) => Limit { value, problem: None },
        Err(_) => Limit {
            value: default,
            problem: Some(format!(
                "the Namespace annotation {}={raw:?} is not a whole number >= 0, so the default limit of {default} applies",
                crate::contract::resource::MAX_WEBHOOKS_ANNOTATION
            )),
        },
    }
}

/// Why a hook cannot hold a slot whatever the limit: its destination or its filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ineligible {
    /// `InsecureURL`, `InvalidSpec` or `InvalidFilter`.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// Checks the destination URL the API server already validated: it must
/// parse, and `http://` only when the operator allows it.
pub fn check_destination(url: &str, allow_http: bool) -> Result<(), Ineligible> {
    let parsed = url::Url::parse(url).map_err(|e| Ineligible {
        reason: accepted::INVALID_SPEC,
        message: format!("spec.url {url:?} is not a valid absolute URL: {e}"),
    })?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_http => Ok(()),
        "http" => Err(Ineligible {
            reason: accepted::INSECURE_URL,
            message: "spec.url uses http://, which this operator refuses (events and signatures would travel unencrypted); use https:// or ask the platform team to start the controller with --allow-http".to_string(),
        }),
        other => Err(Ineligible {
            reason: accepted::INVALID_SPEC,
            message: format!("spec.url has scheme {other:?}; only https:// is served"),
        }),
    }
}

/// Most filter verdicts remembered; past it the memo starts over (a
/// verdict is cheap to recompute, at most 1 KiB of source to parse).
const MAX_FILTER_VERDICTS: usize = 4096;

/// Whether each filter text compiles, remembered: every reconcile checks
/// the filters of all the hooks of the namespace (a peer whose filter is
/// refused holds no slot), and a compile parses on a thread of its own.
#[derive(Debug, Default)]
pub struct FilterVerdicts {
    verdicts: Mutex<HashMap<Box<str>, Option<String>>>,
}

impl FilterVerdicts {
    /// `spec.filter` compiles; otherwise `InvalidFilter` with the compiler's message.
    pub fn check(&self, filter: Option<&str>) -> Result<(), Ineligible> {
        let Some(source) = filter else {
            return Ok(());
        };
        let known = self
            .verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(source)
            .cloned();
        let problem = match known {
            Some(problem) => problem,
            None => {
                let compiled = Filter::compile(source);
                // A compiler that could not run says nothing of the filter:
                // not remembered, so the next reconcile tries again.
                let lasting = !matches!(compiled, Err(InvalidFilter::NoCompiler(_)));
                let problem = compiled.err().map(|e| e.to_string());
                if lasting {
                    let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
                    if verdicts.len() >= MAX_FILTER_VERDICTS {
                        verdicts.clear();
                    }
                    verdicts.insert(source.into(), problem.clone());
                }
                problem
            }
        };
        match problem {
            None => Ok(()),
            Some(message) => Err(Ineligible {
                reason: accepted::INVALID_FILTER,
                message: format!("spec.filter: {message}"),
            }),
        }
    }
}

/// One hook of a namespace that may hold a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.creationTimestamp` in Unix seconds (absent sorts first).
    pub created: Option<i64>,
    /// Whether the hook holds a slot now (its `Accepted` condition is True).
    pub accepted: bool,
}

impl Candidate<'_> {
    fn age_key(&self) -> (Option<i64>, &str) {
        (self.created, self.name)
    }
}

/// The names of the hooks that hold a slot after applying `limit` to the
/// namespace's eligible hooks.
pub fn accepted_set<'a>(candidates: &[Candidate<'a>], limit: usize) -> BTreeSet<&'a str> {
    let mut holding: Vec<&Candidate<'a>> = candidates.iter().filter(|c| c.accepted).collect();
    let mut waiting: Vec<&Candidate<'a>> = candidates.iter().filter(|c| !c.accepted).collect();
    holding.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
    waiting.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
    // A lowered limit keeps the oldest accepted hooks and drops the newest.
    holding.truncate(limit);
    let free = limit - holding.len();
    holding
        .into_iter()
        .chain(waiting.into_iter().take(free))
        .map(|c| c.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_that_does_not_compile_is_invalid_filter_with_the_compilers_message() {
        let verdicts = FilterVerdicts::default();
        assert_eq!(verdicts.check(None), Ok(()));
        assert_eq!(verdicts.check(Some("event.name == 'kustomer.user.create'")), Ok(()));
        for _ in 0..2 {
            let refused = verdicts.check(Some("evnt.name == 'x'")).unwrap_err();
            assert_eq!(refused.reason, "InvalidFilter");
            assert!(
                refused.message.contains("unknown variable \"evnt\""),
                "{}",
                refused.message
            );
        }
        let refused = verdicts.check(Some("event.name ==")).unwrap_err();
        assert!(
            refused.message.starts_with("spec.filter: filter does not parse: 1:"),
            "{}",
            refused.message
        );
    }

    fn c(name: &str, created: i64, accepted: bool) -> Candidate<'_> {
        Candidate {
            name,
            created: Some(created),
            accepted,
        }
    }

    fn names<'a>(set: &BTreeSet<&'a str>) -> Vec<&'a str> {
        set.iter().copied().collect()
    }

    #[test]
    fn the_annotation_overrides_the_default_and_garbage_falls_back_with_a_message() {
        assert_eq!(
            effective_limit(None, 5),
            Limit {
                value: 5,
                problem: None
            }
        );
        assert_eq!(
            effective_limit(Some("2"), 5),
            Limit {
                value: 2,
                problem: None
            }
        );
        assert_eq!(
            effective_limit(Some(" 0 "), 5),
            Limit {
                value: 0,
                problem: None
            }
        );
        for bad in ["two", "-1", "2.5", ""] {
            let limit = effective_limit(Some(bad), 5);
            assert_eq!(limit.value, 5, "{bad}");
            let problem = limit.problem.expect("a message");
            assert!(problem.contains("outboundwebhooks.io/max-webhooks"), "{problem}");
            assert!(problem.contains("default limit of 5"), "{problem}");
        }
    }

    #[test]
    fn http_is_refused_unless_allowed() {
        assert!(check_destination("https://a.example/x", false).is_ok());
        let err = check_destination("http://a.example/x", false).unwrap_err();
        assert_eq!(err.reason, "InsecureURL");
        assert!(err.message.contains("--allow-http"));
        assert!(check_destination("http://a.example/x", true).is_ok());
        assert_eq!(check_destination("not a url", true).unwrap_err().reason, "InvalidSpec");
        assert_eq!(
            check_destination("ftp://a.example/", true).unwrap_err().reason,
            "InvalidSpec"
        );
    }

    #[test]
    fn cold_start_admits_the_oldest_up_to_the_limit() {
        let hooks = [
            c("g", 10, false),
            c("a", 30, false),
            c("b", 20, false),
            c("c", 40, false),
            c("d", 50, false),
            c("e", 60, false),
            c("f", 70, false),
        ];
        assert_eq!(names(&accepted_set(&hooks, 5)), ["a", "b", "c", "d", "g"]);
    }

    #[test]
    fn ties_on_creation_time_are_broken_by_name() {
        let hooks = [c("b", 10, false), c("c", 10, false), c("a", 10, false)];
        assert_eq!(names(&accepted_set(&hooks, 2)), ["a", "b"]);
    }

    #[test]
    fn many_hooks_created_in_one_second_admit_the_first_names() {
        let names_owned: Vec<String> = (0..50).map(|i| format!("hook-{i:02}")).collect();
        let hooks: Vec<Candidate<'_>> = names_owned.iter().rev().map(|n| c(n, 1000, false)).collect();
        let set = accepted_set(&hooks, 5);
        assert_eq!(names(&set), ["hook-00", "hook-01", "hook-02", "hook-03", "hook-04"]);
        // Feeding the result back in is stable: nothing flips.
        let again: Vec<Candidate<'_>> = names_owned
            .iter()
            .map(|n| c(n, 1000, set.contains(n.as_str())))
            .collect();
        assert_eq!(accepted_set(&again, 5), set);
    }

    #[test]
    fn accepted_hooks_keep_their_slot_even_when_an_older_one_waits() {
        // "z" was accepted first; "a" arrived in the same second later.
        let hooks = [c("z", 10, true), c("a", 10, false)];
        assert_eq!(names(&accepted_set(&hooks, 1)), ["z"]);
    }

    #[test]
    fn a_deleted_accepted_hook_frees_a_slot_for_the_oldest_waiting_one() {
        let before = [c("a", 1, true), c("b", 2, true), c("c", 3, false), c("d", 4, false)];
        assert_eq!(names(&accepted_set(&before, 2)), ["a", "b"]);
        let after_deleting_a = [c("b", 2, true), c("c", 3, false), c("d", 4, false)];
        assert_eq!(names(&accepted_set(&after_deleting_a, 2)), ["b", "c"]);
    }

    #[test]
    fn deleting_a_waiting_hook_changes_nothing() {
        let hooks = [c("a", 1, true), c("b", 2, true), c("d", 4, false)];
        assert_eq!(names(&accepted_set(&hooks, 2)), ["a", "b"]);
    }

    #[test]
    fn a_lowered_limit_un_accepts_the_newest_accepted_hooks() {
        let hooks = [
            c("a", 1, true),
            c("b", 2, true),
            c("c", 3, true),
            c("d", 3, true),
            c("e", 5, false),
        ];
        assert_eq!(names(&accepted_set(&hooks, 2)), ["a", "b"]);
        assert_eq!(names(&accepted_set(&hooks, 3)), ["a", "b", "c"]);
        assert!(accepted_set(&hooks, 0).is_empty());
    }

    #[test]
    fn a_lowered_limit_prefers_accepted_hooks_over_older_waiting_ones() {
        let hooks = [c("old", 1, false), c("new1", 5, true), c("new2", 6, true)];
        assert_eq!(names(&accepted_set(&hooks, 1)), ["new1"]);
    }

    #[test]
    fn a_raised_limit_admits_waiting_hooks_oldest_first() {
        let hooks = [
            c("a", 1, true),
            c("b", 2, true),
            c("c", 4, false),
            c("d", 3, false),
            c("e", 5, false),
        ];
        assert_eq!(names(&accepted_set(&hooks, 4)), ["a", "b", "c", "d"]);
        assert_eq!(names(&accepted_set(&hooks, 100)), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn hooks_without_a_creation_time_sort_first() {
        let hooks = [
            c("a", 1, false),
            Candidate {
                name: "b",
                created: None,
                accepted: false,
            },
        ];
        assert_eq!(names(&accepted_set(&hooks, 1)), ["b"]);
    }

    #[test]
    fn the_result_is_a_fixed_point_for_every_limit_and_order() {
        // Exhaustive over small namespaces: every subset of accepted hooks,
        // every limit; the result never exceeds the limit, always keeps as
        // many accepted hooks as fit, and applying it again changes nothing.
        let pool = [
            c("a", 1, false),
            c("b", 1, false),
            c("c", 2, false),
            c("d", 3, false),
            c("e", 3, false),
        ];
        for mask in 0u32..(1 << pool.len()) {
            let hooks: Vec<Candidate<'_>> = pool
                .iter()
                .enumerate()
                .map(|(i, h)| Candidate {
                    accepted: mask & (1 << i) != 0,
                    ..h.clone()
                })
                .collect();
            let accepted_now = hooks.iter().filter(|h| h.accepted).count();
            for limit in 0..=pool.len() + 1 {
                let set = accepted_set(&hooks, limit);
                assert_eq!(set.len(), limit.min(hooks.len()), "mask {mask:b} limit {limit}");
                let kept = hooks.iter().filter(|h| h.accepted && set.contains(h.name)).count();
                assert_eq!(kept, accepted_now.min(limit), "mask {mask:b} limit {limit}");
                let next: Vec<Candidate<'_>> = hooks
                    .iter()
                    .map(|h| Candidate {
                        accepted: set.contains(h.name),
                        ..h.clone()
                    })
                    .collect();
                assert_eq!(accepted_set(&next, limit), set, "mask {mask:b} limit {limit}");
            }
        }
    }
}
