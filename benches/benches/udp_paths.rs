//! The UDP path under the hub's QUIC stack, measured on its own: CPU time per datagram (the
//! process's own accounting, sender and receiver in one process on loopback) through
//!
//! - `tokio`: tokio's `UdpSocket` (epoll), one `sendto` and one `recvfrom` per datagram;
//! - `quinn-udp`: what quinn does today: one `sendmsg` per datagram (a connection's packets to
//!   many devices cannot share a GSO batch) and `recvmmsg` of up to 32, behind epoll;
//! - `quinn-udp gso`: the same with GSO, ten datagrams to one address per `sendmsg` (the most a
//!   hub gains when one connection has a burst to send);
//! - `io_uring`: tokio-uring's `UdpSocket`, a window of datagrams in flight both ways, so one
//!   `io_uring_enter` submits many operations.
//!
//! Each path runs on one thread. The sender sends a window of datagrams, the receiver takes them
//! all, then the next window goes (no datagram is lost to a full receive buffer, and every path
//! does the same work). Issue 18 asks whether io_uring beats epoll on the hub's UDP path; the
//! figures are in docs/benchmarks.md.
//!
//! `cargo bench -p switchboard-benches --bench udp_paths [-- DATAGRAMS [SIZE [WINDOW]]]`
//! (defaults: 400,000 datagrams of 350 bytes, the size of a delivery of a 256-byte body, in
//! windows of 32; at most 64, which a default receive buffer holds without dropping).

use std::{
    io::{self, IoSliceMut},
    net::SocketAddr,
    time::Instant,
};

use futures_util::future::{join, join_all};
use switchboard_hub::admin::process_cpu_seconds;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Workload {
    datagrams: usize,
    size: usize,
    window: usize,
}

struct Figures {
    cpu_secs: f64,
    wall_secs: f64,
    received: usize,
}

fn main() {
    // `cargo bench` passes `--bench`; the numbers are what follows it, if anything.
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let work = Workload {
        datagrams: numbers.first().copied().unwrap_or(400_000),
        size: numbers.get(1).copied().unwrap_or(350),
        window: numbers.get(2).copied().unwrap_or(32).clamp(1, 64),
    };
    println!(
        "{} datagrams of {} bytes in windows of {}, sender and receiver on one thread",
        work.datagrams, work.size, work.window
    );
    println!("{:<14} {:>14} {:>12} {:>14}", "path", "CPU/datagram", "wall", "datagrams/s");
    for (name, run) in [
        ("tokio", run_tokio as fn(&Workload) -> io::Result<Figures>),
        ("quinn-udp", |w| run_quinn_udp(w, 1)),
        ("quinn-udp gso", |w| run_quinn_udp(w, 10)),
        ("io_uring", run_uring),
    ] {
        match run(&work) {
            Ok(f) if f.received == work.datagrams => println!(
                "{:<14} {:>11.2} µs {:>10.2} s {:>14.0}",
                name,
                f.cpu_secs * 1e6 / work.datagrams as f64,
                f.wall_secs,
                work.datagrams as f64 / f.wall_secs
            ),
            Ok(f) => println!("{name:<14} received {} of {}", f.received, work.datagrams),
            Err(e) => println!("{name:<14} failed: {e}"),
        }
    }
}

fn current_thread() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn run_tokio(work: &Workload) -> io::Result<Figures> {
    let rt = current_thread()?;
    rt.block_on(async {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let tx = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let to = rx.local_addr()?;
        let payload = vec![7u8; work.size];
        let mut buf = vec![0u8; 2048];
        let mut received = 0;
        measure_async(async {
            let mut sent = 0;
            while sent < work.datagrams {
                let n = work.window.min(work.datagrams - sent);
                for _ in 0..n {
                    tx.send_to(&payload, to).await?;
                }
                for _ in 0..n {
                    rx.recv_from(&mut buf).await?;
                    received += 1;
                }
                sent += n;
            }
            Ok(received)
        })
        .await
    })
}

fn run_quinn_udp(work: &Workload, segments: usize) -> io::Result<Figures> {
    use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
    use tokio::io::Interest;
    let rt = current_thread()?;
    rt.block_on(async {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let tx = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let rx_state = UdpSocketState::new((&rx).into())?;
        let tx_state = UdpSocketState::new((&tx).into())?;
        let segments = segments.min(tx_state.max_gso_segments()).max(1);
        let to = rx.local_addr()?;
        let payload = vec![7u8; work.size * segments];
        let mut storage = vec![[0u8; 65_536]; quinn_udp::BATCH_SIZE];
        let mut meta = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
        measure_async(async {
            let mut sent = 0;
            let mut received = 0;
            while sent < work.datagrams {
                let n = work.window.min(work.datagrams - sent);
                let mut left = n;
                while left > 0 {
                    let k = segments.min(left);
                    let transmit = Transmit {
                        destination: to,
                        ecn: None,
                        contents: &payload[..k * work.size],
                        segment_size: (k > 1).then_some(work.size),
                        src_ip: None,
                    };
                    tx.async_io(Interest::WRITABLE, || tx_state.send((&tx).into(), &transmit))
                        .await?;
                    left -= k;
                }
                let target = received + n;
                while received < target {
                    let mut bufs: Vec<IoSliceMut<'_>> =
                        storage.iter_mut().map(|b| IoSliceMut::new(&mut b[..])).collect();
                    let got = rx
                        .async_io(Interest::READABLE, || {
                            rx_state.recv((&rx).into(), &mut bufs, &mut meta)
                        })
                        .await?;
                    received +=
                        meta[..got].iter().map(|m| m.len.div_ceil(m.stride.max(1))).sum::<usize>();
                }
                sent += n;
            }
            Ok(received)
        })
        .await
    })
}

fn run_uring(work: &Workload) -> io::Result<Figures> {
    let window = work.window;
    let (datagrams, size) = (work.datagrams, work.size);
    let mut outcome = Err(io::Error::other("tokio-uring did not run"));
    // tokio-uring panics if the kernel refuses a ring; report that as a failed path.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        outcome = tokio_uring::start(async move {
            let any: SocketAddr = "127.0.0.1:0".parse().map_err(io::Error::other)?;
            let rx = tokio_uring::net::UdpSocket::bind(any).await?;
            let tx = tokio_uring::net::UdpSocket::bind(any).await?;
            let to: SocketAddr = rx.local_addr()?;
            // Each window's buffers are owned by the ring while in flight and handed back.
            let mut send_bufs: Vec<Vec<u8>> = (0..window).map(|_| vec![7u8; size]).collect();
            let mut recv_bufs: Vec<Vec<u8>> = (0..window).map(|_| vec![0u8; 2048]).collect();
            measure_async(async {
                let mut sent = 0;
                let mut received = 0;
                while sent < datagrams {
                    let n = window.min(datagrams - sent);
                    // Receives first, so that they are in the ring when the datagrams land;
                    // one poll of the pair submits the whole window.
                    let recvs = join_all(recv_bufs.drain(..n).map(|buf| rx.recv_from(buf)));
                    let sends = join_all(send_bufs.drain(..n).map(|buf| tx.send_to(buf, to)));
                    let (recvs, sends) = join(recvs, sends).await;
                    for (result, buf) in sends {
                        result?;
                        send_bufs.push(buf);
                    }
                    for (result, buf) in recvs {
                        result?;
                        received += 1;
                        recv_bufs.push(buf);
                    }
                    sent += n;
                }
                Ok(received)
            })
            .await
        });
    }));
    match ran {
        Ok(()) => outcome,
        Err(_) => Err(io::Error::other("tokio-uring panicked (io_uring refused?)")),
    }
}

async fn measure_async(body: impl Future<Output = io::Result<usize>>) -> io::Result<Figures> {
    let cpu = process_cpu_seconds().ok_or_else(|| io::Error::other("no /proc/self/stat"))?;
    let start = Instant::now();
    let received = body.await?;
    let wall_secs = start.elapsed().as_secs_f64();
    let cpu_secs =
        process_cpu_seconds().ok_or_else(|| io::Error::other("no /proc/self/stat"))? - cpu;
    Ok(Figures { cpu_secs, wall_secs, received })
}
