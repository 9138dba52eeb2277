//! Users, API tokens and ACLs in Postgres (migration 0009): one document, the broker's
//! auth store's, replaced whole under a version check.

use crate::error::Result;
use crate::meta::Meta;

impl Meta {
    /// The shared users, tokens and ACLs (a JSON document the caller checks) with their
    /// version, when newer than `version`.
    pub async fn auth_state_newer(&self, version: i64) -> Result<Option<(i64, Vec<u8>)>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT version, state FROM ferry_auth WHERE id = 1 AND version > $1",
                &[&version],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Stores the users, tokens and ACLs as version `version + 1` if the stored version
    /// is still `version` (0: none stored); false, with nothing written, otherwise.
    pub async fn store_auth_state(&self, version: i64, state: &[u8]) -> Result<bool> {
        let client = self.client().await?;
        let n = if version == 0 {
            client
                .execute(
                    "INSERT INTO ferry_auth (id, version, state) VALUES (1, 1, $1)
                     ON CONFLICT (id) DO NOTHING",
                    &[&state],
                )
                .await?
        } else {
            client
                .execute(
                    "UPDATE ferry_auth SET version = version + 1, state = $2
                      WHERE id = 1 AND version = $1",
                    &[&version, &state],
                )
                .await?
        };
        Ok(n == 1)
    }
}
