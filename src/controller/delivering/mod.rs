//! The `Delivering` condition from the dispatcher's health record
//! ([`condition`]) and the Failing/Recovered Events it paces ([`events`]).

pub mod condition;
pub mod events;
