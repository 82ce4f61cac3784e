//! What every long-running process needs: signals and host name
//! ([`process`]), the ops endpoints ([`ops_server`]), logging
//! ([`telemetry`]) and the one grammar of duration flags ([`duration`]).

pub mod duration;
pub mod ops_server;
pub mod process;
pub mod telemetry;
