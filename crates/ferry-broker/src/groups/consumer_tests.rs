//! The consumer-protocol group (KIP-848) as a state machine: targets, revocation
//! before assignment, epochs, leaving, static members, sessions.

use super::consumer::*;
use super::types::GroupError;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn topics(name: &str) -> Option<u32> {
    match name {
        "t" => Some(4),
        "u" => Some(2),
        _ => None,
    }
}

fn join(g: &mut ConsumerGroup, id: &str, now: Instant) -> ConsumerHeartbeatResult {
    let hb = ConsumerHeartbeat {
        group: "g".into(),
        member_id: id.into(),
        member_epoch: 0,
        subscribed: Some(vec!["t".into()]),
        owned: Some(Assignment::new()),
        ..Default::default()
    };
    g.heartbeat(&hb, now, &topics, || unreachable!("ids are given"))
        .unwrap()
}

fn beat(
    g: &mut ConsumerGroup,
    id: &str,
    epoch: i32,
    owned: &Assignment,
    now: Instant,
) -> Result<ConsumerHeartbeatResult, GroupError> {
    let hb = ConsumerHeartbeat {
        group: "g".into(),
        member_id: id.into(),
        member_epoch: epoch,
        owned: Some(owned.clone()),
        ..Default::default()
    };
    g.heartbeat(&hb, now, &topics, || unreachable!())
}

fn of(a: &Assignment) -> BTreeSet<u32> {
    a.get("t").cloned().unwrap_or_default()
}

#[test]
fn a_partition_moves_only_after_its_holder_revoked_it() {
    let now = Instant::now();
    let mut g = ConsumerGroup::default();
    let a = join(&mut g, "a", now);
    let a_owned = a.assignment.clone().unwrap();
    assert_eq!(of(&a_owned), BTreeSet::from([0, 1, 2, 3]));
    assert_eq!(a.member_epoch, 1);

    // b joins: its target is [2, 3], still held by a; it gets nothing yet.
    let b = join(&mut g, "b", now);
    assert_eq!(b.assignment.as_ref().map(of), Some(BTreeSet::new()));
    assert_eq!(b.member_epoch, 2);
    // a is asked to give up 2 and 3, at its old epoch.
    let a = beat(&mut g, "a", 1, &a_owned, now).unwrap();
    assert_eq!(a.member_epoch, 1);
    let kept = a.assignment.unwrap();
    assert_eq!(of(&kept), BTreeSet::from([0, 1]));
    // Until a says it no longer owns them, b gets nothing more.
    let b2 = beat(&mut g, "b", 2, &Assignment::new(), now).unwrap();
    assert_eq!(b2.assignment, None);
    // a has revoked: it moves to the group's epoch, and b gets 2 and 3.
    let a = beat(&mut g, "a", 1, &kept, now).unwrap();
    assert_eq!(a.member_epoch, 2);
    let b3 = beat(&mut g, "b", 2, &Assignment::new(), now).unwrap();
    assert_eq!(b3.assignment.as_ref().map(of), Some(BTreeSet::from([2, 3])));
    assert_eq!(g.describe("g").state, "Stable");

    // Epochs: an old one the member never had is fenced; an unknown member is unknown.
    assert_eq!(
        beat(&mut g, "b", 7, &Assignment::new(), now),
        Err(GroupError::FencedMemberEpoch)
    );
    assert_eq!(
        beat(&mut g, "zz", 2, &Assignment::new(), now),
        Err(GroupError::UnknownMember)
    );
    // Commits need the member's epoch.
    assert_eq!(g.check_commit("b", 2), Ok(()));
    assert_eq!(g.check_commit("b", 1), Err(GroupError::StaleMemberEpoch));
    assert_eq!(g.check_commit("zz", 2), Err(GroupError::UnknownMember));

    // b leaves: a gets every partition back.
    let left = beat(&mut g, "b", LEAVE_EPOCH, &Assignment::new(), now).unwrap();
    assert_eq!(left.member_epoch, LEAVE_EPOCH);
    let a = beat(&mut g, "a", 2, &kept, now).unwrap();
    assert_eq!(
        a.assignment.as_ref().map(of),
        Some(BTreeSet::from([0, 1, 2, 3]))
    );
    assert_eq!(a.member_epoch, 3);
}

#[test]
fn a_member_that_stops_heartbeating_is_removed_after_its_session() {
    let now = Instant::now();
    let mut g = ConsumerGroup::default();
    join(&mut g, "a", now);
    join(&mut g, "b", now);
    let later = now + Duration::from_millis(SESSION_TIMEOUT_MS / 2);
    beat(&mut g, "a", 1, &Assignment::new(), later).unwrap();
    assert!(g.expire(now + Duration::from_millis(SESSION_TIMEOUT_MS + 1)));
    assert!(g.has_member("a") && !g.has_member("b"));
}

#[test]
fn a_static_member_that_comes_back_takes_over_its_place_without_a_new_epoch() {
    let now = Instant::now();
    let mut g = ConsumerGroup::default();
    let joined = |g: &mut ConsumerGroup, id: &str| {
        let hb = ConsumerHeartbeat {
            group: "g".into(),
            member_id: id.into(),
            member_epoch: 0,
            instance_id: Some("i-1".into()),
            subscribed: Some(vec!["t".into(), "u".into()]),
            ..Default::default()
        };
        g.heartbeat(&hb, now, &topics, || unreachable!())
    };
    let first = joined(&mut g, "a").unwrap();
    let epoch = g.group_epoch;
    // Another process with the same instance id while the first is live: refused.
    assert_eq!(joined(&mut g, "a2"), Err(GroupError::UnreleasedInstanceId));
    // The first leaves for a while (-2); the second takes its place and assignment.
    beat(&mut g, "a", STATIC_LEAVE_EPOCH, &Assignment::new(), now).unwrap();
    let second = joined(&mut g, "a2").unwrap();
    assert_eq!(g.group_epoch, epoch, "no rebalance");
    assert_eq!(second.assignment, first.assignment);
    assert!(!g.has_member("a"));
    // Only topics that exist are assigned; an unknown assignor is refused.
    let hb = ConsumerHeartbeat {
        group: "g".into(),
        member_id: "a2".into(),
        member_epoch: second.member_epoch,
        assignor: Some("sticky".into()),
        ..Default::default()
    };
    assert_eq!(
        g.heartbeat(&hb, now, &topics, || unreachable!()),
        Err(GroupError::UnsupportedAssignor)
    );
}

#[test]
fn a_member_that_does_not_revoke_within_its_rebalance_timeout_is_removed() {
    let now = Instant::now();
    let mut g = ConsumerGroup::default();
    let hb = |id: &str| ConsumerHeartbeat {
        group: "g".into(),
        member_id: id.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 2_000,
        subscribed: Some(vec!["t".into()]),
        ..Default::default()
    };
    let a = g
        .heartbeat(&hb("a"), now, &topics, || unreachable!())
        .unwrap();
    let owned = a.assignment.unwrap();
    let b = g
        .heartbeat(&hb("b"), now, &topics, || unreachable!())
        .unwrap();
    // a is asked to revoke, keeps heartbeating, and never does.
    let a = beat(&mut g, "a", a.member_epoch, &owned, now).unwrap();
    assert_eq!(of(&a.assignment.unwrap()).len(), 2);
    let soon = now + Duration::from_millis(1_500);
    beat(&mut g, "a", a.member_epoch, &owned, soon).unwrap();
    assert!(!g.expire(soon));
    assert!(g.expire(now + Duration::from_millis(2_001)));
    assert!(!g.has_member("a"));
    // b gets everything.
    let b = beat(&mut g, "b", b.member_epoch, &Assignment::new(), soon).unwrap();
    assert_eq!(
        b.assignment.as_ref().map(of),
        Some(BTreeSet::from([0, 1, 2, 3]))
    );
}
