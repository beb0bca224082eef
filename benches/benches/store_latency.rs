//! Open-loop latency of durable enqueue: requests are issued at a fixed rate (not when the
//! previous one finished), and each latency is measured from the request's *intended* start, so
//! a stall shows up in the figures instead of slowing the load (no coordinated omission).
//!
//! `SWITCHBOARD_BENCH_RATE` (messages/s, default 60,000) and `SWITCHBOARD_BENCH_SECONDS`
//! (default 10) set the load. Prints p50, p90, p99, p99.9 and max.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use switchboard_benches::{open_store, request, user_queues};

// The allocator the hub runs with, so that the store is measured as it runs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks every bench binary for its benchmarks
    }
    let rate = env_or("SWITCHBOARD_BENCH_RATE", 60_000);
    let seconds = env_or("SWITCHBOARD_BENCH_SECONDS", 10);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let queues = user_queues(&store, 1024);
    let histogram =
        Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap()));
    let errors = Arc::new(AtomicU64::new(0));
    // How late the pacer issued each request: a late pacer is load-generator delay, not the
    // store's, though it is counted in the latency all the same (the request was due then).
    let mut lateness = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let total = rate * seconds;
    // A plain thread paces the requests (tokio's timer ticks in whole milliseconds, which would
    // add up to 1 ms of artificial delay); completions are awaited on the runtime.
    let start = Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    for issued in 0..total {
        let intended = start + Duration::from_nanos(issued * 1_000_000_000 / rate);
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        lateness.saturating_record((intended.elapsed().as_micros() as u64).max(1));
        let queue = queues[(issued % queues.len() as u64) as usize];
        let pending = store.enqueue(queue, request(u128::from(issued + 1)));
        let histogram = histogram.clone();
        let errors = errors.clone();
        handles.push(rt.spawn(async move {
            match pending.await {
                Ok(_) => {
                    let micros = intended.elapsed().as_micros() as u64;
                    histogram.lock().unwrap().saturating_record(micros.max(1));
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    rt.block_on(async {
        for h in handles {
            h.await.unwrap();
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let h = histogram.lock().unwrap();
    println!(
        "store_latency: target {rate}/s for {seconds} s, achieved {:.0}/s, errors {}",
        total as f64 / elapsed,
        errors.load(Ordering::Relaxed)
    );
    println!(
        "  enqueue latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    println!(
        "  pacer lateness µs: p50 {} p99 {} max {}",
        lateness.value_at_quantile(0.50),
        lateness.value_at_quantile(0.99),
        lateness.max()
    );
}
