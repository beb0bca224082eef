//! The store's queue semantics against a plain in-memory model: random sequences of enqueue,
//! read, ack, trim, device add/remove, subscribe and reopen must give the same answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use proptest::prelude::*;
use switchboard_hub::store::*;

#[derive(Debug, Clone)]
enum Op {
    Enqueue { queue: usize, id: u8 },
    AddDevice { queue: usize },
    Subscribe { device: usize, queue: usize, oldest: bool },
    Unsubscribe { device: usize, queue: usize },
    Ack { device: usize, queue: usize, up_to: u8, selective: Vec<u8> },
    Read { device: usize, queue: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, any::<u8>()).prop_map(|(queue, id)| Op::Enqueue { queue, id: id % 40 }),
        1 => (0..3usize).prop_map(|queue| Op::AddDevice { queue }),
        1 => (0..6usize, 0..3usize, any::<bool>())
            .prop_map(|(device, queue, oldest)| Op::Subscribe { device, queue, oldest }),
        1 => (0..6usize, 0..3usize).prop_map(|(device, queue)| Op::Unsubscribe { device, queue }),
        4 => (0..6usize, 0..3usize, any::<u8>(), prop::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(device, queue, up_to, selective)| Op::Ack { device, queue, up_to, selective }),
        4 => (0..6usize, 0..3usize).prop_map(|(device, queue)| Op::Read { device, queue }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct ModelQueue {
    entries: BTreeMap<u64, String>,
    ids: HashMap<u8, u64>,
    last_seq: u64,
    floor: u64,
    readers: HashMap<usize, (u64, BTreeSet<u64>)>,
}

impl ModelQueue {
    fn trim(&mut self) {
        let lowest = self.readers.values().map(|(acked, _)| *acked).min();
        if let Some(lowest) = lowest.filter(|&lowest| lowest > self.floor) {
            self.floor = lowest;
            self.entries.retain(|&seq, _| seq > lowest);
        }
    }
}

/// Maps a random byte onto 0..=last+1, so that most acks are valid and some are past the tail.
fn scale(value: u8, last: u64) -> u64 {
    u64::from(value) % (last + 2)
}

static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();

fn request(id: u8, body: &str) -> EnqueueRequest {
    EnqueueRequest {
        // Ids of the present: the store forgets ids older than its dedupe window (those of
        // 1970) at its first sweep, which the model does not.
        id: *START.get_or_init(|| u128::from(switchboard_hub::store::system_clock_ms()) << 80)
            | u128::from(id),
        sender: Bytes::from_static(b"model@example.org"),
        expires_ms: u64::MAX,
        payload: Bytes::copy_from_slice(body.as_bytes()),
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = StoreConfig::new(dir.path());
        c.shards = 2;
        c
    };
    let mut store = Store::open(config()).unwrap();
    let queues: Vec<QueueId> =
        (0..3).map(|i| store.create_queue(&format!("q{i}@example.org")).wait().unwrap()).collect();
    let mut model: Vec<ModelQueue> = (0..3).map(|_| ModelQueue::default()).collect();
    let mut devices: Vec<DeviceId> = Vec::new();
    let mut body_counter = 0;

    for op in ops {
        match op {
            Op::Enqueue { queue, id } => {
                body_counter += 1;
                let body = format!("b{body_counter}");
                let got = store.enqueue(queues[queue], request(id, &body)).wait().unwrap();
                let m = &mut model[queue];
                let expected = match m.ids.get(&id) {
                    Some(&seq) => Enqueued { seq, duplicate: true },
                    None => {
                        m.last_seq += 1;
                        m.ids.insert(id, m.last_seq);
                        m.entries.insert(m.last_seq, body);
                        Enqueued { seq: m.last_seq, duplicate: false }
                    }
                };
                prop_assert_eq!(got, expected);
            }
            Op::AddDevice { queue } => {
                let device = store.add_device(queues[queue]).wait().unwrap();
                let m = &mut model[queue];
                m.readers.insert(devices.len(), (m.floor, BTreeSet::new()));
                devices.push(device);
            }
            Op::Subscribe { device, queue, oldest } => {
                let Some(&id) = devices.get(device) else { continue };
                let start = if oldest { StartAt::Oldest } else { StartAt::Next };
                store.subscribe(id, queues[queue], start).wait().unwrap();
                let m = &mut model[queue];
                let at = if oldest { m.floor } else { m.last_seq };
                m.readers.entry(device).or_insert((at, BTreeSet::new()));
                m.trim();
            }
            Op::Unsubscribe { device, queue } => {
                let Some(&id) = devices.get(device) else { continue };
                store.unsubscribe(id, queues[queue]).wait().unwrap();
                let m = &mut model[queue];
                m.readers.remove(&device);
                m.trim();
            }
            Op::Ack { device, queue, up_to, selective } => {
                let Some(&id) = devices.get(device) else { continue };
                let m = &mut model[queue];
                let up_to = scale(up_to, m.last_seq);
                let selective: BTreeSet<u64> = selective
                    .iter()
                    .map(|&s| scale(s, m.last_seq))
                    .filter(|&s| s > up_to)
                    .collect();
                let got =
                    store.ack(queues[queue], id, up_to, selective.iter().copied().collect()).wait();
                let Some((acked, held)) = m.readers.get(&device).cloned() else {
                    prop_assert!(matches!(got, Err(StoreError::NotSubscribed { .. })), "{got:?}");
                    continue;
                };
                if up_to > m.last_seq || selective.iter().any(|&s| s > m.last_seq) {
                    prop_assert!(matches!(got, Err(StoreError::AckBeyondTail { .. })), "{got:?}");
                    continue;
                }
                let mut acked = acked.max(up_to).max(m.floor);
                let mut held: BTreeSet<u64> =
                    held.union(&selective).copied().filter(|&s| s > acked).collect();
                while held.remove(&(acked + 1)) {
                    acked += 1;
                }
                let expected = Cursor { acked, selective: held.iter().copied().collect() };
                prop_assert_eq!(got.unwrap(), expected);
                m.readers.insert(device, (acked, held));
                m.trim();
            }
            Op::Read { device, queue } => {
                let Some(&id) = devices.get(device) else { continue };
                let got = store.read(queues[queue], id, 1000);
                let m = &model[queue];
                match m.readers.get(&device) {
                    None => prop_assert!(
                        matches!(got, Err(StoreError::NotSubscribed { .. })),
                        "{got:?}"
                    ),
                    Some((acked, held)) => {
                        let expected: Vec<(u64, String)> = m
                            .entries
                            .range(acked + 1..)
                            .filter(|(seq, _)| !held.contains(seq))
                            .map(|(seq, body)| (*seq, body.clone()))
                            .collect();
                        // A read from memory (the newest entries, the memtable) answers the
                        // same, or says it cannot.
                        if let Some(cached) =
                            store.read_after_cached(queues[queue], *acked, 1000).unwrap()
                        {
                            let cached: Vec<(u64, String)> = cached
                                .into_iter()
                                .filter(|e| !held.contains(&e.seq))
                                .map(|e| (e.seq, String::from_utf8(e.payload.to_vec()).unwrap()))
                                .collect();
                            prop_assert_eq!(&cached, &expected);
                        }
                        let got: Vec<(u64, String)> = got
                            .unwrap()
                            .into_iter()
                            .map(|e| (e.seq, String::from_utf8(e.payload.to_vec()).unwrap()))
                            .collect();
                        prop_assert_eq!(got, expected);
                    }
                }
            }
            Op::Reopen => {
                store.close();
                store = Store::open(config()).unwrap();
            }
        }
        for (i, m) in model.iter().enumerate() {
            let stats = store.stats(queues[i]).unwrap();
            prop_assert_eq!(stats, QueueStats { last_seq: m.last_seq, floor: m.floor });
        }
    }
    Ok(())
}

/// `PROPTEST_CASES` raises the number of cases for a longer run.
fn cases_or(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_or(128)))]

    #[test]
    fn store_matches_the_in_memory_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
