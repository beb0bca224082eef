//! Durable enqueue (fsync before completion) of 256-byte messages with 1 to 1,024 concurrent
//! callers: to users (one queue each), and to lines of 1,000 and 10,000 members. Read and ack
//! throughput of one device draining its queue.
//!
//! Besides criterion's figures each run prints messages per fsync, the measure of group commit.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard_benches::{WriterCounters, fsyncs_and_messages, open_store, request, user_queues};
use switchboard_hub::store::{QueueId, StartAt, Store};

// The allocator the hub runs with, so that the store is measured as it runs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Runs `total` enqueues spread over `callers` tasks, each to `queues[i % queues.len()]`, and
/// returns the elapsed time.
fn enqueue_burst(
    rt: &tokio::runtime::Runtime,
    store: &Arc<Store>,
    queues: &Arc<Vec<QueueId>>,
    callers: usize,
    total: u64,
) -> Duration {
    let per_caller = total.div_ceil(callers as u64);
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::with_capacity(callers);
        for caller in 0..callers {
            let store = store.clone();
            let queues = queues.clone();
            tasks.push(tokio::spawn(async move {
                let queue = queues[caller % queues.len()];
                for _ in 0..per_caller {
                    let id = u128::from(NEXT_ID.fetch_add(1, Ordering::Relaxed));
                    store.enqueue(queue, request(id)).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    start.elapsed() * (total as u32) / ((per_caller * callers as u64) as u32)
}

fn report_batching(label: &str, store: &Store, before: WriterCounters) {
    eprintln!("{label}: {}", fsyncs_and_messages(store).since(&before));
}

fn to_users(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let queues = user_queues(&store, 1024);
    let mut group = c.benchmark_group("store_enqueue_to_users");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    for callers in [1usize, 16, 128, 1024] {
        let before = fsyncs_and_messages(&store);
        group.bench_with_input(BenchmarkId::from_parameter(callers), &callers, |b, &callers| {
            b.iter_custom(|iters| enqueue_burst(&rt, &store, &queues, callers, iters))
        });
        report_batching(&format!("users, {callers} callers"), &store, before);
    }
    group.finish();
}

fn to_lines(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("store_enqueue_to_line");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    for members in [1usize, 1_000, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let line = store.create_queue("sales@example.org").wait().unwrap();
        rt.block_on(async {
            let mut pending = Vec::with_capacity(members);
            for i in 0..members {
                let user = store.create_queue(&format!("m{i}@example.org")).await.unwrap();
                pending.push((user, store.add_device(user)));
            }
            for (_, device) in pending {
                let device = device.await.unwrap();
                store.subscribe(device, line, StartAt::Next).await.unwrap();
            }
        });
        let line = Arc::new(vec![line]);
        let before = fsyncs_and_messages(&store);
        group.bench_with_input(BenchmarkId::new("members", members), &members, |b, _| {
            b.iter_custom(|iters| enqueue_burst(&rt, &store, &line, 128, iters))
        });
        report_batching(&format!("line of {members}, 128 callers"), &store, before);
    }
    group.finish();
}

fn read_and_ack(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let queue = store.create_queue("reader@example.org").wait().unwrap();
    let device = store.add_device(queue).wait().unwrap();
    let mut group = c.benchmark_group("store_read_ack");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("batches_of_256", |b| {
        b.iter_custom(|iters| {
            let pending: Vec<_> = (0..iters)
                .map(|_| {
                    store.enqueue(
                        queue,
                        request(u128::from(NEXT_ID.fetch_add(1, Ordering::Relaxed))),
                    )
                })
                .collect();
            for p in pending {
                p.wait().unwrap();
            }
            let start = Instant::now();
            let mut left = iters;
            while left > 0 {
                let entries = store.read(queue, device, 256).unwrap();
                let last = entries.last().expect("entries remain").seq;
                store.ack(queue, device, last, Vec::new()).wait().unwrap();
                left -= entries.len() as u64;
            }
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, to_users, to_lines, read_and_ack);
criterion_main!(benches);
