//! Tests of the subscription state machine (`state.rs`): unit cases and a property
//! test that snapshot-then-replay equals applying everything.

use super::*;

#[test]
fn acks_out_of_order_collapse_into_the_floor() {
    let mut s = State::new(false);
    for o in 0..10 {
        s.apply(&Event::Deliver {
            partition: 0,
            offset: o,
            attempt: 1,
            key: NO_KEY,
        });
    }
    for o in [3, 5, 4, 9] {
        s.apply(&Event::Ack {
            partition: 0,
            offset: o,
        });
    }
    let part = s.part(0).unwrap();
    assert_eq!(part.floor, 0);
    assert_eq!(
        part.acked_ranges().collect::<Vec<_>>(),
        vec![(3, 6), (9, 10)]
    );
    assert_eq!(part.backlog(10), 6);
    for o in [0, 1, 2] {
        s.apply(&Event::Ack {
            partition: 0,
            offset: o,
        });
    }
    let part = s.part(0).unwrap();
    assert_eq!(part.floor, 6);
    assert_eq!(part.backlog(10), 3);
    assert!(part.is_done(9) && !part.is_done(7));
}

#[test]
fn a_seek_of_one_partition_starts_new_lower_partitions_at_their_beginning() {
    let mut s = State::new(false);
    s.apply(&Event::Seek {
        partition: 2,
        to: 1000,
    });
    assert_eq!(s.part(0).map(|x| (x.floor, x.head)), Some((0, 0)));
    assert_eq!(s.part(1).map(|x| (x.floor, x.head)), Some((0, 0)));
    assert_eq!(s.part(2).map(|x| (x.floor, x.head)), Some((1000, 1000)));
}

#[test]
fn per_key_ordering_holds_later_records() {
    let mut s = State::new(true);
    s.set(0, 1, 1, 7, PState::Ready);
    s.set(0, 2, 0, 7, PState::Ready);
    assert_eq!(s.pop_ready(), Some((0, 1)));
    assert_eq!(s.pop_ready(), None);
    s.apply(&Event::Ack {
        partition: 0,
        offset: 1,
    });
    assert_eq!(s.pop_ready(), Some((0, 2)));
}

/// Regression: deliveries were counted by the pull, not by the event, so a reopened
/// subscription showed the delivery counters of its last checkpoint.
#[test]
fn replayed_deliveries_are_counted() {
    let mut s = State::new(false);
    for attempt in [1, 2, 3] {
        s.apply(&Event::Deliver {
            partition: 0,
            offset: 4,
            attempt,
            key: NO_KEY,
        });
    }
    assert_eq!((s.counters.delivered, s.counters.redelivered), (3, 2));
}

/// Regression: replay met a held-back record's `Ready` before the `Deliver` of the
/// earlier record of its key (the order a pull journals them in), left both ready,
/// and a reopened subscription delivered the later record while the earlier one
/// was still pending.
#[test]
fn a_record_joining_its_key_below_a_waiting_one_holds_it_back() {
    let mut s = State::new(true);
    s.apply(&Event::Ready {
        partition: 0,
        offset: 2,
        attempt: 0,
        key: 7,
    });
    s.apply(&Event::Deliver {
        partition: 0,
        offset: 1,
        attempt: 1,
        key: 7,
    });
    assert_eq!(s.pop_ready(), Some((0, 1)));
    assert_eq!(s.pop_ready(), None);
    s.apply(&Event::Ack {
        partition: 0,
        offset: 1,
    });
    assert_eq!(s.pop_ready(), Some((0, 2)));
}

use proptest::prelude::*;

fn event() -> impl Strategy<Value = Event> {
    let p = 0u32..2;
    let o = 0u64..40;
    prop_oneof![
        4 => (p.clone(), o.clone(), 1u32..4, 0u64..3).prop_map(|(p, o, attempt, key)| Event::Deliver { partition: p, offset: o, attempt, key }),
        4 => (p.clone(), o.clone()).prop_map(|(p, o)| Event::Ack { partition: p, offset: o }),
        2 => (p.clone(), o.clone(), 0u64..5).prop_map(|(p, lo, n)| Event::Skip { partition: p, lo, hi: lo + n }),
        1 => (p.clone(), o.clone(), 0u32..3, 0u64..3).prop_map(|(p, o, attempt, key)| Event::Ready { partition: p, offset: o, attempt, key }),
        2 => (p.clone(), o.clone(), 1u32..4, 0u64..200_000, 0u64..3).prop_map(|(p, o, attempt, due, key)| Event::Delay { partition: p, offset: o, attempt, due, key }),
        1 => (p.clone(), o.clone()).prop_map(|(p, o)| Event::DeadLetter { partition: p, offset: o }),
        1 => (p.clone(), o.clone()).prop_map(|(p, o)| Event::GaveUp { partition: p, offset: o }),
        1 => (p.clone(), o.clone()).prop_map(|(p, offset)| Event::Seek { partition: p, to: offset }),
        1 => (p.clone(), o.clone()).prop_map(|(p, end)| Event::Truncate { partition: p, end }),
    ]
}

fn check_invariants(s: &State) {
    if let Err(broken) = s.check_invariants() {
        panic!("{broken}");
    }
}

proptest! {
    /// Restoring a snapshot taken at any point and replaying the rest gives the
    /// same state as applying everything: what recovery relies on.
    #[test]
    fn snapshot_then_replay_equals_straight_apply(
        ordering in any::<bool>(),
        events in proptest::collection::vec(event(), 0..120),
        cut in 0usize..120,
    ) {
        let cut = cut.min(events.len());
        let mut whole = State::new(ordering);
        whole.loaded_upto = 1;
        for e in &events {
            whole.apply(e);
            check_invariants(&whole);
        }
        let mut first = State::new(ordering);
        first.loaded_upto = 1;
        for e in &events[..cut] {
            first.apply(e);
        }
        let mut resumed = State::new(ordering);
        resumed.loaded_upto = 1;
        resumed.restore(&first.save());
        for e in &events[cut..] {
            resumed.apply(e);
        }
        prop_assert_eq!(resumed.save(), whole.save());
        prop_assert_eq!(resumed.ready_count(), whole.ready_count());
    }
}
