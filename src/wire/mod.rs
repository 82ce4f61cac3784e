//! What travels: the events stream's entry format ([`stream_entry`]), the
//! envelope POSTed to receivers ([`envelope`]) and its signatures
//! ([`signing`]).

pub mod envelope;
pub mod signing;
pub mod stream_entry;
