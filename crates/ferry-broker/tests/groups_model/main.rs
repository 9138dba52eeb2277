//! Model-based test of the group coordinator: random sequences of JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, time passing (sessions and rebalances running out), offset
//! commits and fetches, group and topic deletion and reopening from the store, each
//! applied to the real coordinator and to a plain model written here. After every step
//! the answers (error codes, generations, leaders, rosters, assignments delivered to the
//! members who waited for them), the description of every group, the group list and the
//! committed offsets must agree.
//!
//! Time is driven by the test: the coordinator takes `now` on every call.
//! The model is in `model.rs`; the simulated clients, the steps and the comparison are
//! here.
//!
//! Seeds: `GROUPS_MODEL_SEEDS=n` runs seeds 0..n (default 120); `GROUPS_MODEL_SEED=s`
//! runs seed `s` alone; `GROUPS_MODEL_STEPS` sets the steps per seed (default 200). A
//! failure names its seed and the last steps.
//!
//! Member ids are minted by the coordinator from the client id, the wall clock and a
//! counter. Every fresh member here has a client id of its own (`c00042`), so the
//! part before the first `-` names the member: the model works with those names, and
//! the answers of the real coordinator are compared after cutting ids down to them.
//! Ids sort like their names, so the model orders members as the coordinator does.

use bytes::Bytes;
use ferry_broker::groups::{
    CommittedOffset, Coordinator, FileOffsetStore, GroupDescription, GroupError, GroupResult,
    JoinMember, JoinRequest, JoinResult, LeavingMember, MemberDescription, PartitionOffset,
    Pending,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod model;
mod regressions;
use model::{Answer, Model, ModelJoin, Ticket};

const GROUP_NAMES: [&str; 2] = ["g0", "g1"];
const CLIENTS: usize = 8;
const PROTOCOLS: [&str; 3] = ["range", "roundrobin", "sticky"];
const TOPICS: [&str; 2] = ["t0", "t1"];

/// The member name inside a member id (see the module doc).
fn name_of(member_id: &str) -> String {
    member_id.split('-').next().unwrap_or_default().to_string()
}

fn named_error(e: GroupError) -> GroupError {
    match e {
        GroupError::MemberIdRequired(id) => GroupError::MemberIdRequired(name_of(&id)),
        other => other,
    }
}

fn named_join(result: GroupResult<JoinResult>) -> GroupResult<JoinResult> {
    result
        .map(|r| JoinResult {
            leader: name_of(&r.leader),
            member_id: name_of(&r.member_id),
            members: r
                .members
                .into_iter()
                .map(|m| JoinMember {
                    member_id: name_of(&m.member_id),
                    ..m
                })
                .collect(),
            ..r
        })
        .map_err(named_error)
}

fn named_description(d: GroupDescription) -> GroupDescription {
    GroupDescription {
        leader: name_of(&d.leader),
        members: d
            .members
            .into_iter()
            .map(|m| MemberDescription {
                member_id: name_of(&m.member_id),
                ..m
            })
            .collect(),
        ..d
    }
}

// ---------------------------------------------------------------------------------
// The run: random steps applied to both, compared after each.
// ---------------------------------------------------------------------------------

/// What a well-behaved client does next.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Next {
    #[default]
    Join,
    Sync,
    Heartbeat,
}

/// What a simulated client knows of itself.
#[derive(Debug, Clone, Default)]
struct Client {
    next: Next,
    group: String,
    client_id: String,
    /// The member id the coordinator gave it.
    member_id: Option<String>,
    generation: i32,
    /// The roster of the generation it leads.
    roster: Option<Vec<String>>,
    /// Its group instance id, for a static member (a fresh client in the same slot
    /// takes it over).
    instance: Option<String>,
}

#[derive(Debug)]
enum Op {
    Join {
        client: usize,
        request: JoinRequest,
    },
    Sync {
        client: usize,
        group: String,
        member_id: String,
        instance: Option<String>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        client: usize,
        group: String,
        member_id: String,
        instance: Option<String>,
        generation: i32,
    },
    Leave {
        group: String,
        members: Vec<LeavingMember>,
    },
    /// Time passes, then the maintenance tick runs.
    Advance {
        ms: u64,
    },
    Commit {
        group: String,
        member_id: String,
        instance: Option<String>,
        generation: i32,
        offsets: Vec<PartitionOffset>,
    },
    Fetch {
        group: String,
        wanted: Option<Vec<(String, Vec<u32>)>>,
    },
    Delete {
        group: String,
    },
    ForgetTopic {
        topic: String,
    },
    Reopen,
}

enum Waiting {
    Join(Pending<JoinResult>),
    Sync(Pending<Bytes>),
}

/// A request whose answer has not been looked at: the client that sent it, under
/// which client id, and the answer to come.
struct Outstanding {
    client: usize,
    client_id: String,
    answer: Waiting,
}

struct Run {
    rng: SmallRng,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    real: Coordinator,
    start: Instant,
    model: Model,
    clients: Vec<Client>,
    outstanding: BTreeMap<Ticket, Outstanding>,
    next_ticket: Ticket,
    next_name: u64,
    step: usize,
}

fn open(dir: &std::path::Path) -> Coordinator {
    Coordinator::new(Arc::new(
        FileOffsetStore::open(dir).expect("open the store"),
    ))
    .expect("open the coordinator")
}

impl Run {
    fn new(seed: u64) -> Run {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = open(dir.path());
        let mut run = Run {
            rng: SmallRng::seed_from_u64(seed),
            dir,
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            real,
            start: Instant::now(),
            model: Model::default(),
            clients: vec![Client::default(); CLIENTS],
            outstanding: BTreeMap::new(),
            next_ticket: 0,
            next_name: 0,
            step: 0,
        };
        run.clients = (0..CLIENTS).map(|_| run.fresh_client()).collect();
        run
    }

    /// A client starting over: a client id of its own, no member id yet.
    fn fresh_client(&mut self) -> Client {
        Client {
            next: Next::Join,
            group: self.pick_group(),
            client_id: self.fresh_name('c'),
            member_id: None,
            generation: -1,
            roster: None,
            instance: None,
        }
    }

    fn fresh_name(&mut self, letter: char) -> String {
        self.next_name += 1;
        format!("{letter}{:05}", self.next_name)
    }

    /// Mostly the first group, so that it gets crowded.
    fn pick_group(&mut self) -> String {
        let index = usize::from(self.rng.gen_bool(0.3));
        GROUP_NAMES[index].to_string()
    }

    /// A client with a request waiting for its answer.
    fn is_waiting(&self, client: usize) -> bool {
        let client_id = &self.clients[client].client_id;
        self.outstanding
            .values()
            .any(|o| o.client == client && o.client_id == *client_id)
    }

    /// What a well-behaved client does now: wait for its answer, join, sync or
    /// heartbeat.
    fn natural_op(&mut self, client: usize) -> Op {
        if self.is_waiting(client) {
            return Op::Advance {
                ms: *[0, 20, 50, 100, 300].choose(&mut self.rng).expect("steps"),
            };
        }
        match self.clients[client].next {
            Next::Join => self.join_op(client),
            Next::Sync => self.sync_op(client),
            Next::Heartbeat => self.heartbeat_op(client),
        }
    }

    fn heartbeat_op(&mut self, client: usize) -> Op {
        Op::Heartbeat {
            client,
            group: if self.rng.gen_bool(0.05) {
                self.pick_group()
            } else {
                self.clients[client].group.clone()
            },
            member_id: self.member_id_of(client),
            instance: self.instance_of(client),
            generation: self.generation_of(client),
        }
    }

    /// The client's instance id, now and then another slot's or none.
    fn instance_of(&mut self, client: usize) -> Option<String> {
        match self.rng.gen_range(0..20) {
            0 => Some(format!("instance-{}", self.rng.gen_range(0..CLIENTS))),
            1 => None,
            _ => self.clients[client].instance.clone(),
        }
    }

    /// The client's generation, now and then off by one.
    fn generation_of(&mut self, client: usize) -> i32 {
        let known = self.clients[client].generation;
        if self.rng.gen_bool(0.1) {
            known + self.rng.gen_range(-1..=1)
        } else {
            known
        }
    }

    fn member_id_of(&self, client: usize) -> String {
        self.clients[client].member_id.clone().unwrap_or_default()
    }

    fn next_op(&mut self) -> Op {
        let client = self.rng.gen_range(0..CLIENTS);
        if self.rng.gen_bool(0.65) {
            return self.natural_op(client);
        }
        match self.rng.gen_range(0..100) {
            0..=19 => self.join_op(client),
            20..=33 => self.sync_op(client),
            34..=53 => self.heartbeat_op(client),
            54..=58 => {
                let group = self.clients[client].group.clone();
                let count = self.rng.gen_range(1..=3);
                let members = (0..count)
                    .map(|_| {
                        let other = self.rng.gen_range(0..CLIENTS);
                        let instance = self.instance_of(other);
                        let member_id = match self.rng.gen_range(0..10) {
                            0 => self.fresh_name('z'),
                            1..=2 if instance.is_some() => String::new(),
                            _ => self.member_id_of(other),
                        };
                        LeavingMember {
                            member_id,
                            group_instance_id: instance,
                        }
                    })
                    .collect();
                Op::Leave { group, members }
            }
            59..=78 => {
                let steps: &[u64] = if self.rng.gen_bool(0.85) {
                    &[0, 20, 50, 100, 200, 300, 500]
                } else {
                    &[1000, 1500, 3000, 6000]
                };
                Op::Advance {
                    ms: *steps.choose(&mut self.rng).expect("steps"),
                }
            }
            79..=87 => self.commit_op(client),
            88..=92 => {
                let group = self.pick_group();
                let wanted = self.rng.gen_bool(0.5).then(|| {
                    let mut wanted = Vec::new();
                    for topic in TOPICS {
                        if self.rng.gen_bool(0.7) {
                            wanted.push((topic.to_string(), vec![0, self.rng.gen_range(0..3)]));
                        }
                    }
                    wanted
                });
                Op::Fetch { group, wanted }
            }
            93..=95 => Op::Delete {
                group: self.pick_group(),
            },
            96 => Op::ForgetTopic {
                topic: TOPICS.choose(&mut self.rng).expect("topics").to_string(),
            },
            _ => Op::Reopen,
        }
    }

    fn join_op(&mut self, client: usize) -> Op {
        let fresh = self.clients[client].member_id.is_none() || self.rng.gen_bool(0.05);
        if fresh {
            self.clients[client] = self.fresh_client();
            self.clients[client].instance =
                self.rng.gen_bool(0.4).then(|| format!("instance-{client}"));
        }
        let known = &self.clients[client];
        let (group, client_id) = (known.group.clone(), known.client_id.clone());
        let mut member_id = self.member_id_of(client);
        if self.rng.gen_bool(0.03) {
            member_id = self.fresh_name('z');
        }
        // Mostly a shared protocol, sometimes not; sometimes new metadata.
        let count = self.rng.gen_range(1..=PROTOCOLS.len());
        let mut names: Vec<&str> = PROTOCOLS
            .choose_multiple(&mut self.rng, count)
            .copied()
            .collect();
        if self.rng.gen_bool(0.8) && !names.contains(&"range") {
            names.push("range");
        }
        if self.rng.gen_bool(0.02) {
            names.clear();
        }
        let version = self.rng.gen_range(0..2);
        let protocols = names
            .iter()
            .map(|name| {
                (
                    name.to_string(),
                    Bytes::from(format!("{client_id}:{name}:{version}")),
                )
            })
            .collect();
        let session_timeout_ms = if self.rng.gen_bool(0.03) {
            999
        } else {
            *[1000, 1500, 3000].choose(&mut self.rng).expect("timeouts")
        };
        Op::Join {
            client,
            request: JoinRequest {
                group: if self.rng.gen_bool(0.02) {
                    String::new()
                } else {
                    group
                },
                member_id,
                group_instance_id: self.instance_of(client),
                client_id,
                client_host: format!("10.0.0.{client}"),
                session_timeout_ms,
                rebalance_timeout_ms: *[1000, 2000, 5000].choose(&mut self.rng).expect("timeouts"),
                protocol_type: if self.rng.gen_bool(0.95) {
                    "consumer".into()
                } else {
                    "connect".into()
                },
                protocols,
                require_member_id: self.rng.gen_bool(0.6),
            },
        }
    }

    fn sync_op(&mut self, client: usize) -> Op {
        let member_id = self.member_id_of(client);
        let generation = self.generation_of(client);
        let step = self.step;
        let mut assignments: Vec<(String, Bytes)> = match self.clients[client].roster.clone() {
            Some(roster) => roster
                .into_iter()
                .filter(|_| self.rng.gen_bool(0.85))
                .map(|id| {
                    let bytes = Bytes::from(format!("{step}:{}", name_of(&id)));
                    (id, bytes)
                })
                .collect(),
            None if self.rng.gen_bool(0.1) => {
                vec![(member_id.clone(), Bytes::from_static(b"not the leader"))]
            }
            None => Vec::new(),
        };
        if self.rng.gen_bool(0.1) {
            assignments.push((self.fresh_name('z'), Bytes::from_static(b"nobody")));
        }
        if self.rng.gen_bool(0.1) {
            if let Some((id, _)) = assignments.first().cloned() {
                assignments.push((id, Bytes::from(format!("{step}:again"))));
            }
        }
        Op::Sync {
            client,
            group: self.clients[client].group.clone(),
            member_id,
            instance: self.instance_of(client),
            generation,
            assignments,
        }
    }

    fn commit_op(&mut self, client: usize) -> Op {
        let outsider = self.rng.gen_bool(0.2);
        let (group, member_id, instance, generation) = if outsider {
            (self.pick_group(), String::new(), None, -1)
        } else {
            let generation = self.generation_of(client);
            (
                self.clients[client].group.clone(),
                self.member_id_of(client),
                self.instance_of(client),
                generation,
            )
        };
        let count = self.rng.gen_range(0..=3);
        let offsets = (0..count)
            .map(|_| {
                let metadata = match self.rng.gen_range(0..20) {
                    0 => Some("x".repeat(4097)),
                    1..=7 => Some(format!("m{}", self.step)),
                    _ => None,
                };
                PartitionOffset {
                    topic: TOPICS.choose(&mut self.rng).expect("topics").to_string(),
                    partition: self.rng.gen_range(0..3),
                    committed: CommittedOffset {
                        offset: self.rng.gen_range(0..1000),
                        metadata,
                        leader_epoch: Some(self.rng.gen_range(-1..3)).filter(|e: &i32| *e >= 0),
                    },
                }
            })
            .collect();
        Op::Commit {
            group,
            member_id,
            instance,
            generation,
            offsets,
        }
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.model.now_ms)
    }

    fn wait_for(&mut self, client: usize, answer: Waiting) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let client_id = self.clients[client].client_id.clone();
        self.outstanding.insert(
            ticket,
            Outstanding {
                client,
                client_id,
                answer,
            },
        );
        ticket
    }

    fn apply_join(&mut self, client: usize, request: &JoinRequest, now: Instant) {
        let pending = self
            .runtime
            .block_on(self.real.begin_join(request.clone(), now));
        let ticket = self.wait_for(client, Waiting::Join(pending));
        let request = request.clone();
        let modelled = ModelJoin {
            group: request.group,
            member_id: name_of(&request.member_id),
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_ms: request.session_timeout_ms,
            rebalance_ms: request.rebalance_timeout_ms,
            protocol_type: request.protocol_type,
            protocols: request.protocols,
            require_member_id: request.require_member_id,
        };
        self.model.join(modelled, ticket);
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_sync(
        &mut self,
        client: usize,
        group: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        assignments: &[(String, Bytes)],
        now: Instant,
    ) {
        let pending = self.runtime.block_on(self.real.begin_sync(
            group,
            member_id,
            instance,
            generation,
            assignments.to_vec(),
            now,
        ));
        let ticket = self.wait_for(client, Waiting::Sync(pending));
        let named: Vec<(String, Bytes)> = assignments
            .iter()
            .map(|(id, bytes)| (name_of(id), bytes.clone()))
            .collect();
        self.model.sync(
            group,
            &name_of(member_id),
            instance,
            generation,
            &named,
            ticket,
        );
    }

    fn apply_commit(
        &mut self,
        group: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        offsets: &[PartitionOffset],
    ) {
        let real = self.runtime.block_on(self.real.commit(
            group,
            member_id,
            instance,
            generation,
            offsets.to_vec(),
        ));
        let expected = self
            .model
            .commit(group, &name_of(member_id), instance, generation, offsets);
        assert_eq!(real, expected, "commit");
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now();
        match op {
            Op::Join { client, request } => self.apply_join(*client, request, now),
            Op::Sync {
                client,
                group,
                member_id,
                instance,
                generation,
                assignments,
            } => self.apply_sync(
                *client,
                group,
                member_id,
                instance.as_deref(),
                *generation,
                assignments,
                now,
            ),
            Op::Heartbeat {
                client,
                group,
                member_id,
                instance,
                generation,
            } => {
                let instance = instance.as_deref();
                let real = self.runtime.block_on(self.real.heartbeat(
                    group,
                    member_id,
                    instance,
                    *generation,
                    now,
                ));
                let expected =
                    self.model
                        .heartbeat(group, &name_of(member_id), instance, *generation);
                assert_eq!(real, expected, "heartbeat");
                self.clients[*client].next = if real.is_ok() {
                    Next::Heartbeat
                } else {
                    Next::Join
                };
            }
            Op::Leave { group, members } => {
                let real = self.runtime.block_on(self.real.leave(group, members, now));
                let named: Vec<LeavingMember> = members
                    .iter()
                    .map(|m| LeavingMember {
                        member_id: name_of(&m.member_id),
                        group_instance_id: m.group_instance_id.clone(),
                    })
                    .collect();
                assert_eq!(real, self.model.leave(group, &named), "leave");
            }
            Op::Advance { ms } => {
                self.model.now_ms += ms;
                let now = self.now();
                self.runtime.block_on(self.real.tick(now));
                self.model.tick();
            }
            Op::Commit {
                group,
                member_id,
                instance,
                generation,
                offsets,
            } => self.apply_commit(group, member_id, instance.as_deref(), *generation, offsets),
            Op::Fetch { group, wanted } => {
                let real = self.real.fetch_offsets(group, wanted.as_deref());
                assert_eq!(real, self.model.fetch(group, wanted.as_deref()), "fetch");
            }
            Op::Delete { group } => {
                let real = self.runtime.block_on(self.real.delete(group));
                assert_eq!(real, self.model.delete(group), "delete");
            }
            Op::ForgetTopic { topic } => {
                self.real.forget_topic(topic).expect("forget a topic");
                self.model.forget_topic(topic);
            }
            Op::Reopen => {
                self.real = open(self.dir.path());
                self.model.reopen();
            }
        }
    }

    /// Answers that arrived must be the model's; the client learns from them.
    fn check_answers(&mut self) {
        let tickets: Vec<Ticket> = self.outstanding.keys().copied().collect();
        for ticket in tickets {
            let waiting = self.outstanding.get_mut(&ticket).expect("listed");
            let real = match &mut waiting.answer {
                Waiting::Join(pending) => pending.try_take().map(|r| {
                    learn_join(&mut self.clients, waiting.client, &waiting.client_id, &r);
                    Answer::Join(named_join(r))
                }),
                Waiting::Sync(pending) => pending.try_take().map(|r| {
                    let client = &mut self.clients[waiting.client];
                    if client.client_id == waiting.client_id {
                        client.next = if r.is_ok() {
                            Next::Heartbeat
                        } else {
                            Next::Join
                        };
                    }
                    Answer::Sync(r.map_err(named_error))
                }),
            };
            let expected = self.model.delivered.remove(&ticket);
            assert_eq!(real, expected, "the answer to request #{ticket}");
            if real.is_some() {
                self.outstanding.remove(&ticket);
            }
        }
        assert!(
            self.model.delivered.is_empty(),
            "the model answered requests the coordinator never had: {:?}",
            self.model.delivered
        );
    }

    /// Every group, the list and the committed offsets agree.
    fn check_groups(&mut self) {
        for group in GROUP_NAMES {
            let real = named_description(self.runtime.block_on(self.real.describe(group)));
            assert_eq!(real, self.model.describe(group), "description of {group}");
            assert_eq!(
                self.real.fetch_offsets(group, None),
                self.model.fetch(group, None),
                "offsets of {group}"
            );
        }
        let listed = self.runtime.block_on(self.real.list());
        assert_eq!(listed, self.model.list(), "group list");
    }
}

/// A client learns its id, generation and (as leader) roster from a JoinGroup answer
/// to a request it sent under its current client id.
fn learn_join(
    clients: &mut [Client],
    client: usize,
    client_id: &str,
    result: &GroupResult<JoinResult>,
) {
    let client = &mut clients[client];
    if client.client_id != client_id {
        return;
    }
    match result {
        Ok(joined) => {
            client.next = Next::Sync;
            client.member_id = Some(joined.member_id.clone());
            client.generation = joined.generation;
            client.roster = (joined.leader == joined.member_id)
                .then(|| joined.members.iter().map(|m| m.member_id.clone()).collect());
        }
        Err(GroupError::MemberIdRequired(id)) => {
            client.next = Next::Join;
            client.member_id = Some(id.clone());
        }
        Err(_) => client.next = Next::Join,
    }
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

fn run_seed(seed: u64, steps: usize, trace: &mut Vec<String>) {
    let mut run = Run::new(seed);
    for step in 0..steps {
        run.step = step;
        let op = run.next_op();
        trace.push(format!("step {step} at {} ms: {op:?}", run.model.now_ms));
        run.apply(&op);
        run.check_answers();
        run.check_groups();
    }
}

#[test]
fn the_coordinator_agrees_with_a_plain_model() {
    let seeds: Vec<u64> = match env_number("GROUPS_MODEL_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_number("GROUPS_MODEL_SEEDS").unwrap_or(120)).collect(),
    };
    let steps = env_number("GROUPS_MODEL_STEPS").unwrap_or(200) as usize;
    for seed in seeds {
        let mut trace = Vec::new();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_seed(seed, steps, &mut trace)
        }));
        if outcome.is_err() {
            let from = trace.len().saturating_sub(40);
            for line in &trace[from..] {
                eprintln!("{line}");
            }
            panic!(
                "seed {seed} failed at step {} (the last steps are above); replay it with \
                 GROUPS_MODEL_SEED={seed} cargo test -p ferry-broker --test groups_model",
                trace.len().saturating_sub(1)
            );
        }
    }
}
