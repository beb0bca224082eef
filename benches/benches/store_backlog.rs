//! Durable enqueue throughput as the stored backlog grows: 0, 1 million and 10 million
//! unconsumed 256-byte messages (spread over 1,024 user queues) are in the store before each
//! measurement. The target: within 20% from 0 to 10 million.
//!
//! `SWITCHBOARD_BENCH_BACKLOG_MAX` lowers the largest backlog (for a quick run), e.g. `1000000`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard_benches::{open_store, request, user_queues};
use switchboard_hub::store::{QueueId, Store};

// The allocator the hub runs with, so that the store is measured as it runs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
const CALLERS: usize = 256;

fn burst(
    rt: &tokio::runtime::Runtime,
    store: &Arc<Store>,
    queues: &Arc<Vec<QueueId>>,
    total: u64,
) -> Duration {
    let per_caller = total.div_ceil(CALLERS as u64);
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..CALLERS)
            .map(|caller| {
                let store = store.clone();
                let queues = queues.clone();
                tokio::spawn(async move {
                    for n in 0..per_caller {
                        let queue = queues[(caller + n as usize * CALLERS) % queues.len()];
                        let id = u128::from(NEXT_ID.fetch_add(1, Ordering::Relaxed));
                        store.enqueue(queue, request(id)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    start.elapsed() * (total as u32) / ((per_caller * CALLERS as u64) as u32)
}

fn backlog(c: &mut Criterion) {
    let max: u64 = std::env::var("SWITCHBOARD_BENCH_BACKLOG_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let queues = user_queues(&store, 1024);
    let mut group = c.benchmark_group("store_enqueue_with_backlog");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for target in [0u64, 1_000_000, 10_000_000].into_iter().filter(|&t| t <= max) {
        let stored = store.metrics().enqueued.load(Ordering::Relaxed);
        if target > stored {
            let fill = Instant::now();
            burst(&rt, &store, &queues, target - stored);
            eprintln!("filled to {target} messages in {:.1} s", fill.elapsed().as_secs_f64());
        }
        group.bench_with_input(BenchmarkId::from_parameter(target), &target, |b, _| {
            b.iter_custom(|iters| burst(&rt, &store, &queues, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, backlog);
criterion_main!(benches);
