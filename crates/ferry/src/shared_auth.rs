//! Shared mode: the users, tokens and ACLs every node shares, kept in Postgres (see
//! `ferry_auth::StateBackend`).

use ferry_shared::SharedLog;
use std::sync::Arc;
use std::time::Duration;

/// How often a node takes the changes other nodes made to users, tokens and ACLs.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The auth store's state in Postgres. Its calls block on the runtime; the store makes
/// them from the blocking pool.
pub struct PgAuthState {
    log: SharedLog,
    runtime: tokio::runtime::Handle,
}

impl PgAuthState {
    pub fn new(log: SharedLog) -> Self {
        PgAuthState {
            log,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl ferry_auth::StateBackend for PgAuthState {
    fn load_newer(&self, version: i64) -> Result<Option<(i64, Vec<u8>)>, String> {
        self.runtime
            .block_on(self.log.metadata().auth_state_newer(version))
            .map_err(|e| format!("reading the shared users, tokens and ACLs: {e}"))
    }

    fn store(&self, version: i64, bytes: &[u8]) -> Result<bool, String> {
        self.runtime
            .block_on(self.log.metadata().store_auth_state(version, bytes))
            .map_err(|e| format!("storing the shared users, tokens and ACLs: {e}"))
    }
}

/// Opens the shared auth store (off the async threads: it reads Postgres).
pub async fn open(
    data_dir: &std::path::Path,
    settings: ferry_auth::AuthSettings,
    log: SharedLog,
) -> anyhow::Result<Arc<ferry_auth::Auth>> {
    let backend = Arc::new(PgAuthState::new(log));
    let dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || ferry_auth::Auth::open_shared(&dir, settings, backend))
        .await?
        .map_err(|e| anyhow::anyhow!("cannot open the shared users, tokens and ACLs: {e}"))
}

/// Takes other nodes' changes every second, until the store is dropped.
pub fn spawn_refresh(auth: &Arc<ferry_auth::Auth>) {
    let weak = Arc::downgrade(auth);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(auth) = weak.upgrade() else { return };
            match tokio::task::spawn_blocking(move || auth.refresh()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Could not read the shared users, tokens and ACLs; will retry.")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Reading the shared users, tokens and ACLs stopped.")
                }
            }
        }
    });
}
