//! The same workload against NATS JetStream, for a side-by-side: one file-backed stream per
//! run, every device its own connection and its own durable pull consumer (explicit acks)
//! on its user's subject (and the line's), publishes acknowledged by JetStream.
//!
//! Whether an acknowledged publish is on disk is the server's setting (`sync_interval`), not
//! the client's: the run's label says which was used.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc};

use crate::{
    check::Stamp,
    run::{Job, Options, Plan, Shared},
};

/// A NATS server to load.
#[derive(Debug, Clone)]
pub struct NatsTarget {
    /// The server's address, `host:port` or a `nats://` URL.
    pub url: String,
    /// What to call the run in the report, e.g. "sync_interval: always".
    pub label: String,
}

/// Connections and consumer set-ups in flight at once.
const PARALLEL_SETUP: usize = 64;

/// The devices of one run on NATS.
pub(crate) struct NatsFleet {
    shared: Arc<Shared>,
    stream_name: String,
    subject_prefix: String,
    admin: jetstream::Context,
    /// Each online device's connection, and its sending channel.
    online: Vec<Option<mpsc::UnboundedSender<Job>>>,
    /// Per device, the highest stream sequence taken (a redelivery is not a new message).
    taken: Arc<Mutex<HashMap<u32, u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    url: String,
}

impl NatsFleet {
    pub(crate) async fn setup(
        target: &NatsTarget,
        plan: &Plan,
        options: &Options,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(options.churn == 0.0, "churn is measured against hubs only");
        anyhow::ensure!(options.idle == 0, "idle connections are measured against hubs only");
        let url = target.url.clone();
        let client = async_nats::connect(url.as_str())
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?;
        let admin = jetstream::new(client);
        let stream_name = format!("LOADGEN_{}", options.run_name);
        let subject_prefix = format!("loadgen.{}", options.run_name);
        let stream = admin
            .create_stream(stream::Config {
                name: stream_name.clone(),
                subjects: vec![format!("{subject_prefix}.>")],
                storage: stream::StorageType::File,
                // One consumer per device. nats-server 2.15 limits a stream to 1,000 consumers
                // unless the stream names its own limit (and takes no "unlimited").
                max_consumers: i32::try_from(plan.total()).unwrap_or(i32::MAX).saturating_add(16),
                ..Default::default()
            })
            .await
            .context("creating the run's JetStream stream")?;
        // One durable consumer per device, made now so that offline devices' messages wait.
        let limit = Arc::new(Semaphore::new(PARALLEL_SETUP));
        let mut tasks = Vec::new();
        for device in 0..plan.total() {
            let user = plan.user_of(device);
            let mut subjects = vec![format!("{subject_prefix}.u{user}")];
            if plan.is_member(user) {
                subjects.push(format!("{subject_prefix}.line"));
            }
            let (stream, permit) = (stream.clone(), limit.clone().acquire_owned().await?);
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                stream
                    .create_consumer(pull::Config {
                        durable_name: Some(format!("d{device}")),
                        filter_subjects: subjects,
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("creating consumer d{device}: {e}"))
            }));
        }
        for task in tasks {
            task.await??;
        }
        let mut fleet = Self {
            shared,
            stream_name,
            subject_prefix,
            admin,
            online: vec![None; plan.total() as usize],
            taken: Arc::default(),
            tasks: Vec::new(),
            url,
        };
        let online: Vec<u32> = (0..plan.total()).filter(|&d| !plan.is_offline(d)).collect();
        fleet.bring_back(&online).await?;
        Ok(fleet)
    }

    pub(crate) fn is_online(&self, device: u32) -> bool {
        self.online.get(device as usize).is_some_and(Option::is_some)
    }

    pub(crate) fn submit(&self, sender: u32, job: Job) {
        let stamp = job.stamp;
        match &self.online[sender as usize] {
            Some(tx) if tx.send(job).is_ok() => {}
            _ => self.shared.failed(stamp),
        }
    }

    pub(crate) async fn reconnect(&mut self, _device: u32) -> anyhow::Result<()> {
        anyhow::bail!("churn is measured against hubs only")
    }

    /// Connects `devices`: each its own connection, sending task and consumer reader.
    pub(crate) async fn bring_back(&mut self, devices: &[u32]) -> anyhow::Result<()> {
        let limit = Arc::new(Semaphore::new(PARALLEL_SETUP));
        let mut connecting = Vec::new();
        for &device in devices {
            let (url, permit) = (self.url.clone(), limit.clone().acquire_owned().await?);
            let stream_name = self.stream_name.clone();
            connecting.push(tokio::spawn(async move {
                let _permit = permit;
                let client = async_nats::connect(url.as_str()).await?;
                let context = jetstream::new(client);
                let consumer: jetstream::consumer::PullConsumer =
                    context.get_consumer_from_stream(format!("d{device}"), stream_name).await?;
                let messages = consumer.messages().await?;
                anyhow::Ok((device, context, messages))
            }));
        }
        for task in connecting {
            let (device, context, messages) = task.await??;
            let (tx, rx) = mpsc::unbounded_channel();
            self.tasks.push(tokio::spawn(publish_task(
                self.shared.clone(),
                context,
                self.subject_prefix.clone(),
                rx,
            )));
            self.tasks.push(tokio::spawn(read_task(
                self.shared.clone(),
                self.taken.clone(),
                device,
                messages,
            )));
            self.online[device as usize] = Some(tx);
        }
        Ok(())
    }

    pub(crate) async fn shutdown(mut self) {
        self.online.clear();
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Err(error) = self.admin.delete_stream(&self.stream_name).await {
            eprintln!("loadgen: could not delete the stream {}: {error}", self.stream_name);
        }
    }
}

/// Publishes one device's messages in order; each acknowledgement is awaited on its own so
/// that publishing never waits for the one before (open loop).
async fn publish_task(
    shared: Arc<Shared>,
    context: jetstream::Context,
    prefix: String,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(job) = jobs.recv().await {
        let subject = match job.to_user {
            Some(user) => format!("{prefix}.u{user}"),
            None => format!("{prefix}.line"),
        };
        match context.publish(subject, job.body).await {
            Ok(ack) => {
                let shared = shared.clone();
                let (stamp, expected) = (job.stamp, job.expected);
                tokio::spawn(async move {
                    match ack.await {
                        Ok(_) => shared.accepted(stamp, expected),
                        // A refusal or, mostly, a timed-out acknowledgement: the message
                        // may be stored all the same.
                        Err(_) => shared.failed(stamp),
                    }
                });
            }
            Err(_) => shared.failed(job.stamp),
        }
    }
}

/// Takes one device's messages from its consumer, acknowledging each.
async fn read_task(
    shared: Arc<Shared>,
    taken: Arc<Mutex<HashMap<u32, u64>>>,
    device: u32,
    mut messages: pull::Stream,
) {
    while let Some(Ok(message)) = messages.next().await {
        let sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
        let fresh = {
            let mut taken = taken.lock().expect("taken lock");
            let last = taken.entry(device).or_insert(0);
            let fresh = sequence > *last;
            *last = (*last).max(sequence);
            fresh
        };
        if fresh && let Some(stamp) = Stamp::read(&message.payload) {
            shared.delivered(device, stamp);
        }
        if message.ack().await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
