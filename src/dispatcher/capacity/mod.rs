//! How many attempts run at once: per hook ([`lanes`]) and per replica
//! ([`slots`], with a share for slow hooks so they cannot starve others);
//! [`in_flight`] is the guard one running attempt holds.

pub(crate) mod in_flight;
pub(crate) mod lanes;
pub(crate) mod slots;
