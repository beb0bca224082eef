//! Encode and decode of the hottest frames (`send`, `deliver`) with a 256-byte body.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard_protocol::{
    Address, DEFAULT_MAX_PAYLOAD, Decoder, Deliver, Envelope, Flags, Frame, MessageId,
};

fn deliver_frame() -> Frame {
    let envelope = Envelope {
        id: MessageId::from_parts(1_763_900_000_000, 7),
        from: Address::parse("alice@example.org").unwrap(),
        to: Address::parse("bob@example.org").unwrap(),
        created_ms: 1_763_900_000_000,
        ttl_secs: 0,
        flags: Flags::WANT_RECEIPTS,
        body: Bytes::from(vec![0xab; 256]),
    };
    Deliver { queue: envelope.to.clone(), seq: 42, envelope }.into()
}

fn codec(c: &mut Criterion) {
    let frame = deliver_frame();
    let mut group = c.benchmark_group("protocol_codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_deliver_256", |b| {
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            out.clear();
            frame.encode(DEFAULT_MAX_PAYLOAD, &mut out).unwrap();
        })
    });
    let bytes = frame.to_bytes(DEFAULT_MAX_PAYLOAD).unwrap();
    group.bench_function("decode_deliver_256", |b| {
        let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
        b.iter(|| decoder.decode(&mut &bytes[..]).unwrap().unwrap())
    });
    let batch: Vec<u8> = (0..64).flat_map(|_| bytes.iter().copied()).collect();
    group.throughput(Throughput::Elements(64));
    group.bench_function("decode_64_deliver_stream", |b| {
        let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
        b.iter(|| {
            let mut src = &batch[..];
            let mut n = 0;
            while decoder.decode(&mut src).unwrap().is_some() {
                n += 1;
            }
            assert_eq!(n, 64);
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
