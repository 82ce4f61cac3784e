//! The Secrets of a hook: the generated signing Secret or the one
//! `spec.secretRef` names ([`secret`]), rotating its token ([`rotation`]),
//! and what the controller's cache keeps of labelled Secrets ([`trim`]).

pub mod rotation;
pub mod secret;
pub mod trim;
