//! Helpers shared by the broker's integration tests.

use ferry_broker::{Broker, BrokerConfig, TopicDefaults};
use std::sync::Arc;

/// A broker on `dir` with the default settings, its maintenance task not started.
pub fn broker(dir: &std::path::Path) -> Arc<Broker> {
    Broker::open(BrokerConfig {
        data_dir: dir.to_path_buf(),
        defaults: TopicDefaults::default(),
        retention_check_ms: 60_000,
        max_partitions: ferry_broker::broker::MAX_PARTITIONS_DEFAULT,
        max_open_segments: None,
        cleaner_offset_map_bytes: 1 << 20,
    })
    .unwrap()
}
