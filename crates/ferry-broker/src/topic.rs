//! A topic: its settings and partitions.

use crate::config::TopicConfig;
use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use ferry_log::sync::read;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

pub struct Topic {
    pub(crate) config: RwLock<TopicConfig>,
    pub(crate) partitions: RwLock<Vec<Arc<Partition>>>,
    round_robin: AtomicU32,
}

impl Topic {
    pub fn new(config: TopicConfig, partitions: Vec<Arc<Partition>>) -> Self {
        Topic {
            config: RwLock::new(config),
            partitions: RwLock::new(partitions),
            round_robin: AtomicU32::new(0),
        }
    }

    pub fn config(&self) -> TopicConfig {
        read(&self.config).clone()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        read(&self.partitions).clone()
    }

    pub fn partition(&self, id: u32) -> Result<Arc<Partition>> {
        let parts = read(&self.partitions);
        parts
            .get(id as usize)
            .cloned()
            .ok_or_else(|| BrokerError::PartitionNotFound {
                topic: self.config().name,
                partition: id,
                count: parts.len() as u32,
            })
    }

    pub(crate) fn next_round_robin(&self, count: u32) -> u32 {
        self.round_robin.fetch_add(1, Ordering::Relaxed) % count
    }
}
