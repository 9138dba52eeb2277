//! Idempotent producers: each batch from a producer with an id carries its epoch and
//! the sequence number of its first record. Per partition, the log remembers the last
//! few batches of each producer, so that a retried batch is answered with the offset it
//! already has instead of being written twice, and a gap in sequence numbers is refused.
//!
//! # Memory
//!
//! At most [`PRODUCERS_PER_PARTITION_MAX`] producers per partition, the least recently
//! seen dropped first, and [`BATCHES_PER_PRODUCER_MAX`] batches each (as many as a Kafka
//! producer keeps in flight).
//!
//! # After a restart
//!
//! The state is rebuilt from the batch headers of the active segment, which recovery
//! reads anyway. A producer whose batches are all in older segments is unknown after a
//! restart; its next batch is taken as it comes (sequence numbers restart from it).

use std::collections::{HashMap, VecDeque};

pub const PRODUCERS_PER_PARTITION_MAX: usize = 4096;
pub const BATCHES_PER_PRODUCER_MAX: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchRecord {
    first_seq: i32,
    last_seq: i32,
    base_offset: u64,
}

#[derive(Debug)]
struct Producer {
    epoch: i16,
    batches: VecDeque<BatchRecord>,
    last_used: u64,
    /// The largest timestamp of the producer's last batch.
    last_timestamp: i64,
}

/// What is known of one idempotent producer of a partition (for Kafka's
/// DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    pub producer_id: i64,
    pub epoch: i16,
    /// The sequence number of the last record of its last batch.
    pub last_sequence: i32,
    /// The largest timestamp of its last batch.
    pub last_timestamp: i64,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already stored at this base offset: answer with it, append nothing.
    Duplicate { base_offset: u64 },
    /// An older epoch than the producer's current one (a fenced zombie).
    StaleEpoch { current: i16 },
    /// Not the next sequence number.
    OutOfOrder { expected: i32, got: i32 },
}

#[derive(Debug, Default)]
pub struct Producers {
    by_id: HashMap<i64, Producer>,
    clock: u64,
}

fn next_seq(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

impl Producers {
    /// Checks a batch of `count` records from producer `id`.
    pub fn check(&self, id: i64, epoch: i16, first_seq: i32, count: i32) -> SequenceCheck {
        if id < 0 || first_seq < 0 {
            return SequenceCheck::Append;
        }
        let Some(p) = self.by_id.get(&id) else {
            return SequenceCheck::Append;
        };
        if epoch < p.epoch {
            return SequenceCheck::StaleEpoch { current: p.epoch };
        }
        if epoch > p.epoch {
            return if first_seq == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    got: first_seq,
                }
            };
        }
        let last_seq = first_seq.wrapping_add(count - 1);
        if let Some(b) = p
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return SequenceCheck::Duplicate {
                base_offset: b.base_offset,
            };
        }
        let expected = p.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if first_seq == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder {
                expected,
                got: first_seq,
            }
        }
    }

    /// Every producer remembered, by id.
    pub fn states(&self) -> Vec<ProducerState> {
        let mut out: Vec<ProducerState> = self
            .by_id
            .iter()
            .filter_map(|(id, p)| {
                p.batches.back().map(|b| ProducerState {
                    producer_id: *id,
                    epoch: p.epoch,
                    last_sequence: b.last_seq,
                    last_timestamp: p.last_timestamp,
                })
            })
            .collect();
        out.sort_unstable_by_key(|p| p.producer_id);
        out
    }

    /// Records a batch that was appended (or found at recovery); `max_timestamp` is the
    /// batch's largest timestamp.
    pub fn record(
        &mut self,
        id: i64,
        epoch: i16,
        first_seq: i32,
        count: i32,
        base_offset: u64,
        max_timestamp: i64,
    ) {
        if id < 0 || first_seq < 0 {
            return;
        }
        self.clock += 1;
        if !self.by_id.contains_key(&id) && self.by_id.len() >= PRODUCERS_PER_PARTITION_MAX {
            if let Some(oldest) = self
                .by_id
                .iter()
                .min_by_key(|(_, p)| p.last_used)
                .map(|(k, _)| *k)
            {
                self.by_id.remove(&oldest);
            }
        }
        let p = self.by_id.entry(id).or_insert(Producer {
            epoch,
            batches: VecDeque::new(),
            last_used: 0,
            last_timestamp: max_timestamp,
        });
        if epoch != p.epoch {
            p.epoch = epoch;
            p.batches.clear();
        }
        p.last_used = self.clock;
        p.last_timestamp = max_timestamp;
        if p.batches.len() == BATCHES_PER_PRODUCER_MAX {
            p.batches.pop_front();
        }
        p.batches.push_back(BatchRecord {
            first_seq,
            last_seq: first_seq.wrapping_add(count - 1),
            base_offset,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_batch_is_a_duplicate_and_a_gap_is_out_of_order() {
        let mut p = Producers::default();
        assert_eq!(p.check(7, 0, 0, 3), SequenceCheck::Append);
        p.record(7, 0, 0, 3, 100, 1_000);
        assert_eq!(p.check(7, 0, 3, 2), SequenceCheck::Append);
        p.record(7, 0, 3, 2, 103, 2_000);
        assert_eq!(
            p.check(7, 0, 0, 3),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            p.check(7, 0, 3, 2),
            SequenceCheck::Duplicate { base_offset: 103 }
        );
        assert_eq!(
            p.check(7, 0, 9, 1),
            SequenceCheck::OutOfOrder {
                expected: 5,
                got: 9
            }
        );
        // A new epoch starts again at 0; the old epoch is fenced.
        assert_eq!(p.check(7, 1, 0, 1), SequenceCheck::Append);
        p.record(7, 1, 0, 1, 110, 3_000);
        assert_eq!(
            p.check(7, 0, 5, 1),
            SequenceCheck::StaleEpoch { current: 1 }
        );
        // Producers without an id are never checked.
        assert_eq!(p.check(-1, -1, -1, 5), SequenceCheck::Append);
    }

    #[test]
    fn states_show_each_producers_epoch_last_sequence_and_last_timestamp() {
        let mut p = Producers::default();
        p.record(9, 2, 0, 4, 0, 500);
        p.record(3, 0, 0, 1, 4, 700);
        p.record(9, 2, 4, 2, 5, 900);
        p.record(-1, -1, -1, 3, 7, 1_000);
        assert_eq!(
            p.states(),
            vec![
                ProducerState {
                    producer_id: 3,
                    epoch: 0,
                    last_sequence: 0,
                    last_timestamp: 700
                },
                ProducerState {
                    producer_id: 9,
                    epoch: 2,
                    last_sequence: 5,
                    last_timestamp: 900
                },
            ]
        );
    }

    #[test]
    fn the_number_of_producers_remembered_is_bounded() {
        let mut p = Producers::default();
        for id in 0..(PRODUCERS_PER_PARTITION_MAX as i64 + 10) {
            p.record(id, 0, 0, 1, id as u64, 0);
        }
        assert_eq!(p.by_id.len(), PRODUCERS_PER_PARTITION_MAX);
        assert_eq!(
            p.check(0, 0, 1, 1),
            SequenceCheck::Append,
            "the oldest was forgotten"
        );
    }
}
