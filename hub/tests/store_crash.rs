//! Crash safety of the store: a child process enqueues under load and is killed with SIGKILL at
//! random moments; after each kill the store is reopened and every enqueue the child saw
//! acknowledged must be there exactly once, in order, per recipient.
//!
//! 20 kill cycles run by default; `SWITCHBOARD_CRASH_CYCLES=1000` runs a long campaign.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use rand::Rng;
use switchboard_hub::store::*;

const RECIPIENTS: usize = 8;
const TASKS: usize = 64;
const CHILD_DIR: &str = "SWITCHBOARD_CRASH_CHILD_DIR";
const CHILD_CYCLE: &str = "SWITCHBOARD_CRASH_CHILD_CYCLE";

fn recipient(r: usize) -> String {
    format!("r{r}@example.org")
}

/// What the child prints for each acknowledged enqueue: queue name, cycle, task, counter, seq.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Acked {
    recipient: usize,
    cycle: u32,
    task: usize,
    counter: u64,
    seq: u64,
}

#[test]
fn every_acknowledged_enqueue_survives_sigkill_exactly_once_in_order() {
    let cycles: u32 =
        std::env::var("SWITCHBOARD_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked_total = Vec::new();
    for cycle in 0..cycles {
        let acked = run_child_and_kill(dir.path(), cycle, rng.random_range(50..400));
        acked_total.extend(acked);
        verify(dir.path(), &acked_total);
    }
    assert!(acked_total.len() > cycles as usize * 10, "the child acknowledged too little to test");
}

/// Starts the child, lets it enqueue for `run_ms` after it is ready, kills it with SIGKILL,
/// and returns every acknowledgement it printed.
fn run_child_and_kill(dir: &std::path::Path, cycle: u32, run_ms: u64) -> Vec<Acked> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_CYCLE, cycle.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest prints `test crash_child ... ` without a newline before the test runs,
                // so markers are searched anywhere in a line.
                if line.contains("READY") {
                    let _ = ready_tx.send(());
                } else if let Some(a) = parse_ack(&line) {
                    acked.lock().unwrap().push(a);
                }
            }
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(60)).expect("child never became ready");
    std::thread::sleep(Duration::from_millis(run_ms));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    reader.join().unwrap();
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

fn parse_ack(line: &str) -> Option<Acked> {
    let mut parts = line[line.find("ACK ")? + 4..].split(' ');
    let mut next = || parts.next()?.parse::<u64>().ok();
    Some(Acked {
        recipient: next()? as usize,
        cycle: next()? as u32,
        task: next()? as usize,
        counter: next()?,
        seq: next()?,
    })
}

fn body(cycle: u32, task: usize, counter: u64) -> String {
    format!("{cycle} {task} {counter}")
}

fn verify(dir: &std::path::Path, acked: &[Acked]) {
    let store = Store::open(StoreConfig::new(dir)).unwrap();
    let mut present: HashMap<(usize, u32, usize, u64), u64> = HashMap::new();
    for r in 0..RECIPIENTS {
        let Some(queue) = store.queue_id(&recipient(r)).unwrap() else { continue };
        let entries = store.read_after(queue, 0, usize::MAX).unwrap();
        let mut seen = HashSet::new();
        let mut last_by_task: HashMap<usize, (u32, u64)> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            if i > 0 {
                assert!(entry.seq > entries[i - 1].seq, "sequences not increasing in {r}");
            }
            let text = std::str::from_utf8(&entry.payload).unwrap();
            let fields: Vec<u64> = text.split(' ').map(|f| f.parse().unwrap()).collect();
            let (cycle, task, counter) = (fields[0] as u32, fields[1] as usize, fields[2]);
            assert!(seen.insert((cycle, task, counter)), "duplicate {text} in queue {r}");
            // A task sends its next message only after the previous one was acknowledged, so per
            // task and cycle the counters in the queue must be 0, 1, 2, ... without a gap.
            let expected = match last_by_task.get(&task) {
                Some(&(c, n)) if c == cycle => n + 1,
                Some(&(c, _)) => {
                    assert!(cycle > c, "cycle {cycle} after cycle {c} in queue {r}");
                    0
                }
                None => 0,
            };
            assert_eq!(counter, expected, "gap or reorder for task {task} in queue {r}: {text}");
            last_by_task.insert(task, (cycle, counter));
            present.insert((r, cycle, task, counter), entry.seq);
        }
    }
    for a in acked {
        let seq = present.get(&(a.recipient, a.cycle, a.task, a.counter));
        assert_eq!(seq, Some(&a.seq), "acknowledged enqueue lost: {a:?}");
    }
    store.close();
}

/// The child side, run only by the test above through the environment.
#[test]
#[ignore = "run as a child process by every_acknowledged_enqueue_survives_sigkill_exactly_once_in_order"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let cycle: u32 = std::env::var(CHILD_CYCLE).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(async move {
        let store = Arc::new(Store::open(StoreConfig::new(dir)).unwrap());
        let mut queues = Vec::new();
        for r in 0..RECIPIENTS {
            queues.push(store.create_queue(&recipient(r)).await.unwrap());
        }
        println!("READY");
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = store.clone();
            let r = task % RECIPIENTS;
            let queue = queues[r];
            tasks.push(tokio::spawn(async move {
                for counter in 0u64.. {
                    let request = EnqueueRequest {
                        id: (u128::from(cycle) << 64)
                            | ((task as u128) << 32)
                            | u128::from(counter),
                        sender: Bytes::from_static(b"crash@example.org"),
                        expires_ms: u64::MAX,
                        payload: Bytes::from(body(cycle, task, counter)),
                    };
                    let done = store.enqueue(queue, request).await.unwrap();
                    assert!(!done.duplicate);
                    println!("ACK {r} {cycle} {task} {counter} {}", done.seq);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}
