//! References for this machine, to judge the store's figures against: a plain `fdatasync` loop
//! (4 KiB write + fdatasync), and raw RocksDB `WriteBatch`es of 1,000 and 10,000 puts of 256
//! bytes written with `sync = true`.

use std::{
    fs::OpenOptions,
    io::{Seek, SeekFrom, Write},
    time::Duration,
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn fdatasync(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.path().join("sync"))
        .unwrap();
    let block = [0u8; 4096];
    let mut group = c.benchmark_group("reference_fdatasync");
    group.throughput(Throughput::Elements(1));
    group.bench_function("4k_write_fdatasync", |b| {
        b.iter(|| {
            file.seek(SeekFrom::Start(0)).unwrap();
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
        })
    });
    group.finish();
}

fn rocksdb_batches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    options.set_write_buffer_size(64 << 20);
    let db = rocksdb::DB::open(&options, dir.path()).unwrap();
    let mut write_options = rocksdb::WriteOptions::default();
    write_options.set_sync(true);
    let value = [0x5au8; 256];
    let mut key: u64 = 0;
    let mut group = c.benchmark_group("reference_rocksdb_sync_batch");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(6));
    for puts in [1_000u64, 10_000] {
        group.throughput(Throughput::Elements(puts));
        group.bench_with_input(BenchmarkId::new("puts_256b", puts), &puts, |b, &puts| {
            b.iter(|| {
                let mut batch = rocksdb::WriteBatch::default();
                for _ in 0..puts {
                    key += 1;
                    batch.put(key.to_be_bytes(), value);
                }
                db.write_opt(batch, &write_options).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fdatasync, rocksdb_batches);
criterion_main!(benches);
