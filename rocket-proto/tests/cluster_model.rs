//! A model test of the engine's cluster boundary: random sequences of connects,
//! authentications, subscriptions, departures, broadcasts, direct messages, other nodes'
//! messages and answers from the other nodes, checked step by step against a model.
//!
//! - `Watch`/`Unwatch`, applied in order, always describe exactly what the node holds: the
//!   token of every live client and every channel with a local subscriber (never a watch of
//!   a topic already watched, never an unwatch of one that is not).
//! - A broadcast to a channel held here is delivered here and published once; one to a
//!   channel or token not held here is an `Operation::Publish` whose answer decides the
//!   reply (and a channel that gained local subscribers meanwhile gets it there).
//! - Messages from other nodes reach exactly the local holders.

mod support;

use std::collections::BTreeSet;

use proptest::prelude::*;
use rocket_proto::{
    ClientId, Completion, EngineConfig, HashSeed, OpId, Output, Payload, Publication, Topic,
};
use serde_json::{Value, json};
use support::{Sim, token_for};

const CHANNELS: [&str; 3] = ["a", "b", "c"];
const SLOTS: usize = 4;

#[derive(Debug, Clone)]
enum Step {
    Connect,
    Disconnect(usize),
    Auth(usize),
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    Logout(usize),
    Broadcast(usize, usize),
    /// To the client in another slot, or (slot ≥ SLOTS) to a token of another node.
    Direct(usize, usize),
    /// Answers the oldest publication awaiting one.
    Answer(bool),
    RemoteChannel(usize),
    RemoteClient(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let slot = 0..SLOTS;
    let channel = 0..CHANNELS.len();
    prop_oneof![
        2 => Just(Step::Connect),
        1 => slot.clone().prop_map(Step::Disconnect),
        2 => slot.clone().prop_map(Step::Auth),
        3 => (slot.clone(), channel.clone()).prop_map(|(s, c)| Step::Subscribe(s, c)),
        2 => (slot.clone(), channel.clone()).prop_map(|(s, c)| Step::Unsubscribe(s, c)),
        1 => slot.clone().prop_map(Step::Logout),
        3 => (slot.clone(), channel.clone()).prop_map(|(s, c)| Step::Broadcast(s, c)),
        2 => (slot.clone(), 0..SLOTS + 1).prop_map(|(s, t)| Step::Direct(s, t)),
        3 => any::<bool>().prop_map(Step::Answer),
        1 => channel.prop_map(Step::RemoteChannel),
        1 => (0..SLOTS + 1).prop_map(Step::RemoteClient),
    ]
}

/// What the model knows of a live client.
#[derive(Debug, Default)]
struct Model {
    id: Option<ClientId>,
    authed: bool,
    subs: BTreeSet<usize>,
    /// A publication of this client awaits its answer (its frames are held meanwhile).
    waiting: bool,
}

struct World {
    sim: Sim,
    slots: Vec<Model>,
    /// Topics watched, from the engine's outputs applied in order.
    watched: BTreeSet<String>,
    /// Publications awaiting an answer, oldest first: (client, op, publication).
    awaiting: Vec<(ClientId, OpId, Publication)>,
    seen_publications: usize,
    stranger: rocket_proto::Token,
}

fn name(topic: &Topic) -> String {
    match topic {
        Topic::Channel(c) => format!("c:{c}"),
        Topic::Client(t) => format!("t:{t}"),
    }
}

impl World {
    fn new() -> Self {
        let mut config =
            EngineConfig::from_json(r#"{"Users": {"u": {"Secret": "", "Permission": 7}}}"#)
                .unwrap();
        config.cluster = true;
        Self {
            sim: Sim::with_config(&config, HashSeed::default()),
            slots: (0..SLOTS).map(|_| Model::default()).collect(),
            watched: BTreeSet::new(),
            awaiting: Vec::new(),
            seen_publications: 0,
            stranger: token_for(1_000_000),
        }
    }

    /// The live, idle client in `slot` (a client awaiting an answer sends nothing).
    fn ready(&self, slot: usize) -> Option<ClientId> {
        let m = &self.slots[slot];
        m.id.filter(|_| !m.waiting)
    }

    fn held_channel(&self, channel: usize) -> bool {
        self.slots
            .iter()
            .any(|m| m.id.is_some() && m.subs.contains(&channel))
    }

    fn expected_watched(&self) -> BTreeSet<String> {
        let mut held = BTreeSet::new();
        for m in &self.slots {
            if let Some(id) = m.id {
                held.insert(format!("t:{}", token_for(id.0)));
                for &c in &m.subs {
                    held.insert(format!("c:{}", CHANNELS[c]));
                }
            }
        }
        held
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::Connect => {
                if let Some(slot) = self.slots.iter().position(|m| m.id.is_none()) {
                    let id = self.sim.connect();
                    self.sim.take(id);
                    self.slots[slot] = Model {
                        id: Some(id),
                        ..Model::default()
                    };
                }
            }
            Step::Disconnect(slot) => {
                if let Some(id) = self.slots[slot].id.take() {
                    self.sim.disconnect(id);
                    self.slots[slot] = Model::default();
                    self.awaiting.retain(|(c, ..)| *c != id);
                }
            }
            Step::Auth(slot) => {
                if let Some(id) = self.ready(slot) {
                    self.sim.auth(id, "u", "x");
                    // A new session drops the old one's subscriptions.
                    self.slots[slot].subs.clear();
                    self.slots[slot].authed = true;
                }
            }
            Step::Subscribe(slot, c) => {
                if let Some(id) = self.ready(slot) {
                    let reply = self
                        .sim
                        .request(id, json!({"subscribe": {"channel": CHANNELS[c]}}));
                    if self.slots[slot].authed {
                        assert_eq!(reply, json!({"subscribed": CHANNELS[c]}));
                        self.slots[slot].subs.insert(c);
                    } else {
                        assert_eq!(reply, json!({"err": "ACCESS_DENIED"}));
                    }
                }
            }
            Step::Unsubscribe(slot, c) => {
                if let Some(id) = self.ready(slot) {
                    self.sim
                        .send(id, json!({"unsubscribe": {"channel": CHANNELS[c]}}));
                    self.slots[slot].subs.remove(&c);
                    self.check_deliveries_then(id, json!({"unsubscribed": CHANNELS[c]}));
                }
            }
            Step::Logout(slot) => {
                if let Some(id) = self.ready(slot) {
                    self.sim.send(id, json!({"logout": true}));
                    self.slots[slot].subs.clear();
                    self.slots[slot].authed = false;
                    self.check_deliveries_then(id, json!({"loggedOut": true}));
                }
            }
            Step::Broadcast(slot, c) => {
                let Some(id) = self.ready(slot) else { return };
                let data = json!(self.sim.engine().stats().messages_received);
                let request =
                    json!({"broadcast": {"event": "e", "channel": CHANNELS[c], "data": data}});
                let held = self.held_channel(c);
                self.sim.send(id, request);
                if !self.slots[slot].authed {
                    assert_eq!(self.sim.take(id), [json!({"err": "ACCESS_DENIED"})]);
                    return;
                }
                let event = json!({"event": "e", "channel": CHANNELS[c], "data": data});
                if held {
                    // Delivered here, answered at once, published once.
                    self.expect_local_delivery(c, &event, Some(id));
                    let published: Vec<_> = self
                        .sim
                        .cluster
                        .iter()
                        .filter_map(|o| match o {
                            Output::Publish(p) => Some(p.clone()),
                            _ => None,
                        })
                        .collect();
                    self.sim
                        .cluster
                        .retain(|o| !matches!(o, Output::Publish(_)));
                    assert_eq!(published.len(), 1, "published once");
                    assert_eq!(published[0].topic, Topic::Channel(CHANNELS[c].into()));
                    let sent: Value =
                        serde_json::from_slice(published[0].payload.as_bytes()).expect("JSON");
                    assert_eq!(sent, event);
                } else {
                    assert!(self.sim.take(id).is_empty(), "the reply waits");
                    self.expect_new_publication(id, Topic::Channel(CHANNELS[c].into()));
                }
            }
            Step::Direct(slot, target) => {
                let Some(id) = self.ready(slot) else { return };
                let token = match self.slots.get(target).and_then(|m| m.id) {
                    Some(t) => token_for(t.0),
                    None => self.stranger,
                };
                let local = self.slots.get(target).and_then(|m| m.id);
                self.sim.send(
                    id,
                    json!({"direct": {"event": "d", "client": token.to_string()}}),
                );
                if !self.slots[slot].authed {
                    assert_eq!(self.sim.take(id), [json!({"err": "ACCESS_DENIED"})]);
                    return;
                }
                match local {
                    Some(to) => {
                        let got = self.sim.take(to);
                        let mine = if to == id {
                            got.clone()
                        } else {
                            self.sim.take(id)
                        };
                        assert!(
                            got.contains(
                                &json!({"event": "d", "from": token_for(id.0).to_string()})
                            )
                        );
                        assert!(mine.contains(&json!({"directSent": token.to_string()})));
                    }
                    None => {
                        assert!(self.sim.take(id).is_empty());
                        self.expect_new_publication(id, Topic::Client(token));
                    }
                }
            }
            Step::Answer(reached) => {
                if self.awaiting.is_empty() {
                    return;
                }
                let (client, op, publication) = self.awaiting.remove(0);
                let slot = self.slot_of(client);
                self.slots[slot].waiting = false;
                let held_now = match &publication.topic {
                    Topic::Channel(c) => {
                        let i = CHANNELS.iter().position(|x| **x == **c).unwrap();
                        Some((i, self.held_channel(i)))
                    }
                    Topic::Client(_) => None,
                };
                self.sim.complete(op, Completion::Published(reached));
                let expected = match (&publication.topic, held_now) {
                    (Topic::Channel(_), Some((i, held))) => {
                        if reached || held {
                            let event: Value =
                                serde_json::from_slice(publication.payload.as_bytes()).unwrap();
                            self.expect_local_delivery(i, &event, Some(client));
                            return;
                        }
                        json!({"err": "INVALID_CHANNEL"})
                    }
                    (Topic::Client(t), _) if reached => json!({"directSent": t.to_string()}),
                    _ => json!({"err": "INVALID_CLIENT"}),
                };
                assert_eq!(self.sim.take(client), [expected]);
            }
            Step::RemoteChannel(c) => {
                let event = json!({"event": "r", "channel": CHANNELS[c]});
                self.sim.remote(
                    &Topic::Channel(CHANNELS[c].into()),
                    Payload::text(event.to_string()),
                );
                self.expect_local_delivery(c, &event, None);
            }
            Step::RemoteClient(target) => {
                let local = self.slots.get(target).and_then(|m| m.id);
                let token = local.map_or(self.stranger, |id| token_for(id.0));
                let event = json!({"event": "r"});
                self.sim
                    .remote(&Topic::Client(token), Payload::text(event.to_string()));
                for m in &self.slots {
                    if let Some(id) = m.id {
                        let got = self.sim.take(id);
                        if Some(id) == local {
                            assert_eq!(got, std::slice::from_ref(&event));
                        } else {
                            assert!(got.is_empty());
                        }
                    }
                }
            }
        }
        self.check_watched();
    }

    fn slot_of(&self, id: ClientId) -> usize {
        self.slots.iter().position(|m| m.id == Some(id)).unwrap()
    }

    /// The client's reply is `reply`, possibly after deliveries (which are checked later
    /// steps do not need: a departing subscriber may still get what was sent before).
    fn check_deliveries_then(&mut self, id: ClientId, reply: Value) {
        let got = self.sim.take(id);
        assert_eq!(got.last(), Some(&reply), "{got:?}");
    }

    /// Every local subscriber of `channel` got `event` once (and `sender` its reply), and
    /// nobody else got anything.
    fn expect_local_delivery(&mut self, channel: usize, event: &Value, sender: Option<ClientId>) {
        for m in &self.slots {
            let Some(id) = m.id else { continue };
            let got = self.sim.take(id);
            let mut expected = Vec::new();
            if m.subs.contains(&channel) {
                expected.push(event.clone());
            }
            if Some(id) == sender {
                expected.push(json!({"broadcasted": CHANNELS[channel]}));
            }
            let mut got = got;
            got.sort_by_key(Value::to_string);
            expected.sort_by_key(Value::to_string);
            assert_eq!(got, expected, "{id}");
        }
    }

    fn expect_new_publication(&mut self, id: ClientId, topic: Topic) {
        assert_eq!(self.sim.publications.len(), self.seen_publications + 1);
        let (client, op, publication) = self.sim.publications.last().unwrap().clone();
        self.seen_publications += 1;
        assert_eq!(client, id);
        assert_eq!(publication.topic, topic);
        let slot = self.slot_of(id);
        self.slots[slot].waiting = true;
        self.awaiting.push((client, op, publication));
    }

    fn check_watched(&mut self) {
        for output in self.sim.cluster.drain(..) {
            match output {
                Output::Watch(t) => assert!(self.watched.insert(name(&t)), "watched twice: {t:?}"),
                Output::Unwatch(t) => {
                    assert!(self.watched.remove(&name(&t)), "unwatched unwatched: {t:?}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(self.watched, self.expected_watched());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_cluster_boundary_follows_the_model(
        steps in prop::collection::vec(step(), 1..80),
        whole in any::<bool>(),
    ) {
        let mut world = World::new();
        if whole {
            // Broadcasts as one output each: the inboxes must not differ.
            world.sim.whole_broadcasts();
        }
        for step in &steps {
            world.apply(step);
        }
        // Everyone leaves: nothing is held any more.
        for slot in 0..SLOTS {
            world.apply(&Step::Disconnect(slot));
        }
        prop_assert!(world.watched.is_empty(), "{:?}", world.watched);
    }
}
