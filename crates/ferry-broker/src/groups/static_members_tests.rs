//! Static membership (KIP-345) through the coordinator, driven step by step with the
//! time given: restarts without a rebalance, fencing, session expiry, LeaveGroup by
//! instance id.

use super::coordinator::tests::{member_reading, offset};
use super::store::FileOffsetStore;
use super::types::{
    GroupError, GroupState, JoinRequest, JoinResult, LeavingMember, MEMBER_ID_BYTES_MAX,
};
use super::Coordinator;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

fn static_member(instance: &str, member_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        group_instance_id: Some(instance.into()),
        client_id: instance.into(),
        require_member_id: true,
        ..member_reading("g")
    }
}

/// Three static members a, b, c in a stable group of generation 1, each assigned
/// its own instance id's name; their member ids by instance.
async fn stable_trio(c: &Coordinator, t0: Instant) -> HashMap<String, String> {
    let mut joins = Vec::new();
    for instance in ["a", "b", "c"] {
        joins.push(c.begin_join(static_member(instance, ""), t0).await);
    }
    c.tick(t0 + std::time::Duration::from_millis(300)).await;
    let joined: Vec<JoinResult> = joins
        .iter_mut()
        .map(|j| j.try_take().expect("answered").expect("joined"))
        .collect();
    let leader = joined.iter().find(|j| j.leader == j.member_id).unwrap();
    assert_eq!(leader.members.len(), 3);
    let ids: HashMap<String, String> = leader
        .members
        .iter()
        .map(|m| (m.group_instance_id.clone().unwrap(), m.member_id.clone()))
        .collect();
    let assignments = ids
        .iter()
        .map(|(instance, id)| (id.clone(), Bytes::from(instance.clone())))
        .collect();
    let now = t0 + std::time::Duration::from_millis(300);
    let mut syncs = Vec::new();
    for j in joined.iter().filter(|j| j.leader != j.member_id) {
        syncs.push(
            c.begin_sync("g", &j.member_id, j.group_instance_id(&ids), 1, vec![], now)
                .await,
        );
    }
    c.sync(
        "g",
        &leader.member_id,
        leader.group_instance_id(&ids),
        1,
        assignments,
        now,
    )
    .await
    .unwrap();
    for mut s in syncs {
        s.try_take().expect("answered").expect("assigned");
    }
    assert_eq!(c.describe("g").await.state, GroupState::Stable);
    ids
}

trait InstanceOf {
    fn group_instance_id<'a>(&self, ids: &'a HashMap<String, String>) -> Option<&'a str>;
}

impl InstanceOf for JoinResult {
    fn group_instance_id<'a>(&self, ids: &'a HashMap<String, String>) -> Option<&'a str> {
        ids.iter()
            .find(|(_, id)| **id == self.member_id)
            .map(|(instance, _)| instance.as_str())
    }
}

fn ms(t0: Instant, ms: u64) -> Instant {
    t0 + std::time::Duration::from_millis(ms)
}

#[tokio::test]
async fn a_static_member_that_restarts_keeps_its_assignment_and_nobody_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::new(Arc::new(FileOffsetStore::open(dir.path()).unwrap())).unwrap();
    let t0 = Instant::now();
    let ids = stable_trio(&c, t0).await;
    let leader = c.describe("g").await.leader;
    // The leader's process restarts: no member id, the same instance id.
    let restarted_instance = ids.iter().find(|(_, id)| **id == leader).unwrap().0.clone();
    let again = c
        .join(static_member(&restarted_instance, ""), ms(t0, 2_000))
        .await
        .expect("taken over at once");
    assert_ne!(again.member_id, leader, "a new member id");
    assert_eq!(again.generation, 1, "the same generation");
    assert_eq!(again.leader, leader, "the leader named as before");
    assert!(again.members.is_empty(), "nobody is asked to assign");
    let d = c.describe("g").await;
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.generation, 1);
    assert_eq!(d.leader, again.member_id, "it leads the next rebalance");
    let assignment = c
        .sync(
            "g",
            &again.member_id,
            Some(&restarted_instance),
            1,
            vec![],
            ms(t0, 2_000),
        )
        .await
        .unwrap();
    assert_eq!(assignment, Bytes::from(restarted_instance.clone()));
    // The others heartbeat on, undisturbed.
    for (instance, id) in ids.iter().filter(|(i, _)| **i != restarted_instance) {
        c.heartbeat("g", id, Some(instance), 1, ms(t0, 2_100))
            .await
            .unwrap();
    }
    // The old process is fenced wherever it shows up.
    let old = ids[&restarted_instance].as_str();
    let fenced = Err(GroupError::FencedInstanceId);
    assert_eq!(
        c.heartbeat("g", old, Some(&restarted_instance), 1, ms(t0, 2_200))
            .await,
        fenced
    );
    assert_eq!(
        c.commit("g", old, Some(&restarted_instance), 1, offset(3))
            .await,
        fenced
    );
    assert_eq!(
        c.sync(
            "g",
            old,
            Some(&restarted_instance),
            1,
            vec![],
            ms(t0, 2_200)
        )
        .await,
        Err(GroupError::FencedInstanceId)
    );
    assert_eq!(
        c.join(static_member(&restarted_instance, old), ms(t0, 2_200))
            .await
            .map(|j| j.generation),
        Err(GroupError::FencedInstanceId)
    );
    // The new one commits as a member of generation 1.
    c.commit(
        "g",
        &again.member_id,
        Some(&restarted_instance),
        1,
        offset(3),
    )
    .await
    .unwrap();
    assert_eq!(c.describe("g").await.members.len(), 3);
}

#[tokio::test]
async fn a_static_member_whose_session_runs_out_is_removed_and_the_others_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::new(Arc::new(FileOffsetStore::open(dir.path()).unwrap())).unwrap();
    let t0 = Instant::now();
    let ids = stable_trio(&c, t0).await;
    // a and b heartbeat; c stopped (a static member sends no LeaveGroup).
    for at in [3_000, 6_000, 9_000] {
        for instance in ["a", "b"] {
            let r = c
                .heartbeat("g", &ids[instance], Some(instance), 1, ms(t0, at))
                .await;
            assert_eq!(r, Ok(()));
        }
        c.tick(ms(t0, at)).await;
        assert_eq!(
            c.describe("g").await.state,
            GroupState::Stable,
            "at {at} ms"
        );
    }
    // Its 10 s session (from 300 ms) is over at 10.3 s.
    c.tick(ms(t0, 10_400)).await;
    let d = c.describe("g").await;
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert_eq!(d.members.len(), 2);
    assert_eq!(
        c.heartbeat("g", &ids["a"], Some("a"), 1, ms(t0, 10_500))
            .await,
        Err(GroupError::RebalanceInProgress)
    );
    // Gone: its instance id is unknown now, and a restart joins as a new member.
    assert_eq!(
        c.heartbeat("g", &ids["c"], Some("c"), 1, ms(t0, 10_500))
            .await,
        Err(GroupError::UnknownMember)
    );
    let mut a = c
        .begin_join(static_member("a", &ids["a"]), ms(t0, 10_600))
        .await;
    let mut b = c
        .begin_join(static_member("b", &ids["b"]), ms(t0, 10_600))
        .await;
    let a = a.try_take().expect("answered").unwrap();
    let b = b.try_take().expect("answered").unwrap();
    assert_eq!((a.generation, b.generation), (2, 2));
    let leader = if a.leader == a.member_id { &a } else { &b };
    assert_eq!(leader.members.len(), 2, "the leader assigns c's partitions");
    assert!(leader.members.iter().all(|m| m.group_instance_id.is_some()));
}

#[tokio::test]
async fn leave_group_removes_static_members_by_instance_id_in_one_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::new(Arc::new(FileOffsetStore::open(dir.path()).unwrap())).unwrap();
    let t0 = Instant::now();
    let ids = stable_trio(&c, t0).await;
    let by_instance = |instance: &str, member_id: &str| LeavingMember {
        member_id: member_id.into(),
        group_instance_id: Some(instance.into()),
    };
    let results = c
        .leave(
            "g",
            &[
                by_instance("a", ""),
                by_instance("b", &ids["b"]),
                by_instance("c", &ids["a"]),
                by_instance("nobody", ""),
                by_instance("a", ""),
                LeavingMember {
                    member_id: "stranger".into(),
                    group_instance_id: None,
                },
            ],
            ms(t0, 1_000),
        )
        .await;
    assert_eq!(
        results,
        [
            Ok(()),
            Ok(()),
            Err(GroupError::FencedInstanceId),
            Err(GroupError::UnknownMember),
            Err(GroupError::UnknownMember),
            Err(GroupError::UnknownMember),
        ]
    );
    let d = c.describe("g").await;
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].group_instance_id.as_deref(), Some("c"));
    assert_eq!(d.state, GroupState::PreparingRebalance);
    // c rejoins alone: one new generation, not one per member that left.
    let joined = c
        .join(static_member("c", &ids["c"]), ms(t0, 1_100))
        .await
        .unwrap();
    assert_eq!(joined.generation, 2);
}

#[tokio::test]
async fn a_static_member_rejoining_during_a_rebalance_fences_the_old_join_and_waits() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::new(Arc::new(FileOffsetStore::open(dir.path()).unwrap())).unwrap();
    let t0 = Instant::now();
    let ids = stable_trio(&c, t0).await;
    // A newcomer starts a rebalance; a rejoins with its old id, then its new process
    // starts while that join waits.
    let mut newcomer = c.begin_join(member_reading("g"), ms(t0, 1_000)).await;
    let mut old_join = c
        .begin_join(static_member("a", &ids["a"]), ms(t0, 1_000))
        .await;
    let mut new_join = c.begin_join(static_member("a", ""), ms(t0, 1_100)).await;
    assert_eq!(
        old_join.try_take().expect("answered").map(|j| j.generation),
        Err(GroupError::FencedInstanceId)
    );
    assert!(new_join.try_take().is_none(), "waits for the rebalance");
    let mut rest = Vec::new();
    for instance in ["b", "c"] {
        rest.push(
            c.begin_join(static_member(instance, &ids[instance]), ms(t0, 1_200))
                .await,
        );
    }
    let joined = new_join.try_take().expect("answered").unwrap();
    assert_eq!(joined.generation, 2);
    assert!(newcomer.try_take().expect("answered").is_ok());
    assert_eq!(
        c.describe("g").await.members.len(),
        4,
        "replaced, not added"
    );
}

#[tokio::test]
async fn instance_ids_are_bounded_and_a_new_static_member_needs_no_member_id_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::new(Arc::new(FileOffsetStore::open(dir.path()).unwrap())).unwrap();
    let long = "i".repeat(MEMBER_ID_BYTES_MAX + 1);
    assert_eq!(
        c.join(static_member(&long, ""), Instant::now()).await,
        Err(GroupError::InconsistentProtocol)
    );
    // v4+ sends dynamic members back for an id; a static one is given one at once.
    let mut first = c.begin_join(static_member("a", ""), Instant::now()).await;
    assert!(
        first.try_take().is_none(),
        "joined, waiting for the rebalance"
    );
    // A member id the coordinator never gave, with an instance id it does not know.
    assert_eq!(
        c.join(static_member("b", "made-up"), Instant::now()).await,
        Err(GroupError::UnknownMember)
    );
    assert_eq!(
        c.commit("nobody", "", Some("a"), -1, offset(1)).await,
        Err(GroupError::UnknownMember)
    );
}
