//! The same workload against an MQTT broker (Mosquitto), for a side-by-side: every device its
//! own connection with a persistent session (clean session off) and a QoS 1 subscription to
//! its user's topic (and the line's); sends are QoS 1 publishes, accepted at their `PUBACK`.
//!
//! A broker's `PUBACK` says nothing of the disk: Mosquitto acknowledges from memory (and keeps
//! a persistent session's queue only in memory between its periodic saves). The run's label
//! says so. MQTT has no message sequence a device could drop a redelivery by: a QoS 1 message
//! delivered twice counts as duplicated.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::Semaphore;

use crate::{
    check::Stamp,
    run::{Job, Options, Plan, Shared},
};

/// An MQTT broker to load.
#[derive(Debug, Clone)]
pub struct MqttTarget {
    /// The broker's TCP address, `host:port`.
    pub address: std::net::SocketAddr,
    /// What to call the run in the report, e.g. "Mosquitto 2, not durable".
    pub label: String,
}

/// Connections and subscriptions in flight at once.
const PARALLEL_SETUP: usize = 64;

/// QoS 1 publishes a device may have unacknowledged (MQTT's receive maximum, Mosquitto's
/// default for a client).
const INFLIGHT: u16 = 100;

/// The sends of one device waiting for their packet id: the eventloop gives publishes their
/// ids in the order they were queued.
type Queued = Arc<Mutex<VecDeque<(Stamp, Vec<u32>)>>>;

/// The devices of one run on an MQTT broker.
pub(crate) struct MqttFleet {
    shared: Arc<Shared>,
    target: MqttTarget,
    prefix: String,
    plan: Plan,
    online: Vec<Option<(AsyncClient, Queued)>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MqttFleet {
    pub(crate) async fn setup(
        target: &MqttTarget,
        plan: &Plan,
        options: &Options,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(options.churn == 0.0, "churn is measured against hubs only");
        anyhow::ensure!(options.idle == 0, "idle connections are measured against hubs only");
        let mut fleet = Self {
            shared,
            target: target.clone(),
            prefix: format!("loadgen/{}", options.run_name),
            plan: plan.clone(),
            online: (0..plan.total()).map(|_| None).collect(),
            tasks: Vec::new(),
        };
        // Every device's session and subscriptions exist before anything is sent, so that
        // what comes for an offline device waits in its session.
        let all: Vec<u32> = (0..plan.total()).collect();
        fleet.bring_back(&all).await?;
        for device in (0..plan.total()).filter(|&d| plan.is_offline(d)) {
            if let Some((client, _)) = fleet.online[device as usize].take() {
                client.disconnect().await.context("disconnecting an offline device")?;
            }
        }
        Ok(fleet)
    }

    pub(crate) fn is_online(&self, device: u32) -> bool {
        self.online.get(device as usize).is_some_and(Option::is_some)
    }

    pub(crate) fn submit(&self, sender: u32, job: Job) {
        let Some((client, queued)) = &self.online[sender as usize] else {
            return self.shared.failed(job.stamp);
        };
        let topic = match job.to_user {
            Some(user) => format!("{}/u{user}", self.prefix),
            None => format!("{}/line", self.prefix),
        };
        // Queued before the request, so the eventloop's packet id finds it.
        let mut waiting = queued.lock().expect("queued lock");
        waiting.push_back((job.stamp, job.expected));
        if client.try_publish(topic, QoS::AtLeastOnce, false, job.body.to_vec()).is_err() {
            let (stamp, _) = waiting.pop_back().expect("pushed above");
            drop(waiting);
            self.shared.failed(stamp);
        }
    }

    pub(crate) async fn reconnect(&mut self, _device: u32) -> anyhow::Result<()> {
        anyhow::bail!("churn is measured against hubs only")
    }

    /// Connects `devices`, each with its persistent session, and subscribes it.
    pub(crate) async fn bring_back(&mut self, devices: &[u32]) -> anyhow::Result<()> {
        let limit = Arc::new(Semaphore::new(PARALLEL_SETUP));
        let mut connecting = Vec::new();
        for &device in devices {
            let permit = limit.clone().acquire_owned().await?;
            let user = self.plan.user_of(device);
            let mut topics = vec![format!("{}/u{user}", self.prefix)];
            if self.plan.is_member(user) {
                topics.push(format!("{}/line", self.prefix));
            }
            let id = format!("{}-d{device}", self.prefix.replace('/', "-"));
            let target = self.target.address;
            connecting.push(tokio::spawn(async move {
                let _permit = permit;
                let mut options = MqttOptions::new(id, target.ip().to_string(), target.port());
                options
                    .set_clean_session(false)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_inflight(INFLIGHT)
                    .set_max_packet_size(1 << 20, 1 << 20);
                let (client, mut eventloop) = AsyncClient::new(options, 100_000);
                let wanted = topics.len();
                for topic in topics {
                    client.subscribe(topic, QoS::AtLeastOnce).await?;
                }
                // Until every subscription is answered: the session is then in place.
                let mut subscriptions = 0;
                let mut early = Vec::new();
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                            subscriptions += 1;
                            if subscriptions == wanted {
                                break;
                            }
                        }
                        // A message kept for the session while it was away comes early.
                        Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => early.push(publish),
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => anyhow::bail!("device d{device}: {error}"),
                        Err(_) => anyhow::bail!("device d{device}: no SUBACK in 10 s"),
                    }
                }
                anyhow::Ok((device, client, eventloop, early))
            }));
        }
        for task in connecting {
            let (device, client, eventloop, early) = task.await??;
            for publish in early {
                if let Some(stamp) = Stamp::read(&publish.payload) {
                    self.shared.delivered(device, stamp);
                }
            }
            let queued: Queued = Arc::default();
            self.tasks.push(tokio::spawn(drive(
                self.shared.clone(),
                device,
                eventloop,
                queued.clone(),
            )));
            self.online[device as usize] = Some((client, queued));
        }
        Ok(())
    }

    pub(crate) async fn shutdown(mut self) {
        for (client, _) in self.online.drain(..).flatten() {
            let _ = client.disconnect().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// Drives one device's connection: matches each `PUBACK` to its send, and takes deliveries
/// (acknowledged by the eventloop as they come).
async fn drive(shared: Arc<Shared>, device: u32, mut eventloop: EventLoop, queued: Queued) {
    let mut sent: HashMap<u16, (Stamp, Vec<u32>)> = HashMap::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(job) = queued.lock().expect("queued lock").pop_front() {
                    sent.insert(pkid, job);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some((stamp, expected)) = sent.remove(&ack.pkid) {
                    shared.accepted(stamp, expected);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Some(stamp) = Stamp::read(&publish.payload) {
                    shared.delivered(device, stamp);
                }
            }
            Ok(_) => {}
            // The run is over: the broker closes the connection after its DISCONNECT.
            Err(_) if shared.stopping.load(std::sync::atomic::Ordering::Relaxed) => return,
            Err(error) => {
                // The eventloop reconnects on the next poll; unacknowledged publishes are sent
                // again with their packet ids.
                eprintln!("loadgen: mqtt d{device}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
