//! Which companies and persons a mailbox's contact scope reached at its last CRM poll: a key
//! new since then has its persons read whole once.

use std::collections::BTreeSet;

use cgc_backends::StoreError;
use serde::{Deserialize, Serialize};

use super::{State, ser};

/// `(CoGrp, CoNo)` companies and `(PeGrp, PeNo)` persons a rep's appointments are with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactReach {
    #[serde(default)]
    pub companies: BTreeSet<(String, String)>,
    #[serde(default)]
    pub persons: BTreeSet<(String, String)>,
}

fn ns(tenant: &str) -> String {
    format!("{tenant}:contact_reach")
}

impl State {
    pub async fn contact_reach(
        &self,
        tenant: &str,
        mailbox: &str,
    ) -> Result<ContactReach, StoreError> {
        Ok(self
            .get(&ns(tenant), &mailbox.to_ascii_lowercase())
            .await?
            .unwrap_or_default())
    }

    pub async fn put_contact_reach(
        &self,
        tenant: &str,
        mailbox: &str,
        reach: &ContactReach,
    ) -> Result<(), StoreError> {
        self.store
            .put(&ns(tenant), &mailbox.to_ascii_lowercase(), &ser(reach))
            .await
    }
}
