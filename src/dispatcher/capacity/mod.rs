//! How many attempts run at once: per hook ([`lanes`]) and per replica
//! ([`slots`], with a share for slow hooks so they cannot starve others).

pub(crate) mod lanes;
pub(crate) mod slots;
