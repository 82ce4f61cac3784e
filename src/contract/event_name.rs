//! The ten Kustomer trigger event names.

use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kustomer trigger event name, e.g. `kustomer.conversation.create`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventName {
    /// A conversation was created.
    #[serde(rename = "kustomer.conversation.create")]
    ConversationCreate,
    /// A conversation was updated.
    #[serde(rename = "kustomer.conversation.update")]
    ConversationUpdate,
    /// A customer was created.
    #[serde(rename = "kustomer.customer.create")]
    CustomerCreate,
    /// A customer was updated.
    #[serde(rename = "kustomer.customer.update")]
    CustomerUpdate,
    /// A message was created.
    #[serde(rename = "kustomer.message.create")]
    MessageCreate,
    /// A message was updated.
    #[serde(rename = "kustomer.message.update")]
    MessageUpdate,
    /// A team was created.
    #[serde(rename = "kustomer.team.create")]
    TeamCreate,
    /// A team was updated.
    #[serde(rename = "kustomer.team.update")]
    TeamUpdate,
    /// A user was created.
    #[serde(rename = "kustomer.user.create")]
    UserCreate,
    /// A user was updated.
    #[serde(rename = "kustomer.user.update")]
    UserUpdate,
}

impl EventName {
    /// Every event name, in the order Kustomer lists them.
    pub const ALL: [EventName; 10] = [
        EventName::ConversationCreate,
        EventName::ConversationUpdate,
        EventName::CustomerCreate,
        EventName::CustomerUpdate,
        EventName::MessageCreate,
        EventName::MessageUpdate,
        EventName::TeamCreate,
        EventName::TeamUpdate,
        EventName::UserCreate,
        EventName::UserUpdate,
    ];

    /// The wire name, e.g. `kustomer.conversation.create`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::ConversationCreate => "kustomer.conversation.create",
            EventName::ConversationUpdate => "kustomer.conversation.update",
            EventName::CustomerCreate => "kustomer.customer.create",
            EventName::CustomerUpdate => "kustomer.customer.update",
            EventName::MessageCreate => "kustomer.message.create",
            EventName::MessageUpdate => "kustomer.message.update",
            EventName::TeamCreate => "kustomer.team.create",
            EventName::TeamUpdate => "kustomer.team.update",
            EventName::UserCreate => "kustomer.user.create",
            EventName::UserUpdate => "kustomer.user.update",
        }
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of the ten Kustomer trigger events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown event name {0:?}: expected one of kustomer.{{conversation,customer,message,team,user}}.{{create,update}}"
)]
pub struct UnknownEventName(pub String);

impl FromStr for EventName {
    type Err = UnknownEventName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventName::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownEventName(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_through_serde_and_from_str() {
        for e in EventName::ALL {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.as_str()));
            assert_eq!(e.as_str().parse::<EventName>().unwrap(), e);
        }
    }

    #[test]
    fn unknown_name_is_refused() {
        assert!("kustomer.order.create".parse::<EventName>().is_err());
    }
}
