//! The per-line cost of the hot path (child stdout line → sockets), piece by piece: classifying
//! a line, building its frame, keeping it in the replay ring, and fanning it out.
//!
//! Run with `cargo bench --bench hot_path`; figures go in BENCHMARKS.md.

// A bench with a missing fixture line should stop loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sashad::claude::protocol::classify;
use sashad::supervisor::fanout::{Fanout, QueueCaps};
use sashad::supervisor::frame;
use sashad::supervisor::replay::ReplayRing;

const FIXTURE: &str = include_str!("../tests/fixtures/claude-2.1.332-session.jsonl");

fn fixture_line(prefix: &str) -> String {
    FIXTURE
        .lines()
        .find(|l| l.starts_with(prefix))
        .expect("fixture line")
        .to_owned()
}

fn big_line(bytes: usize) -> String {
    let text = "x".repeat(bytes);
    format!(
        r#"{{"type":"assistant","message":{{"role":"assistant","content":[{{"type":"text","text":"{text}"}}]}}}}"#
    )
}

fn classify_lines(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    let lines = [
        (
            "init_3k",
            fixture_line(r#"{"type":"system","subtype":"init""#),
        ),
        (
            "text_delta",
            fixture_line(r#"{"type":"stream_event","event":{"type":"content_block_delta""#),
        ),
        ("result", fixture_line(r#"{"duration_api_ms""#)),
        ("assistant_1mib", big_line(1 << 20)),
    ];
    for (name, line) in &lines {
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), line, |b, line| {
            b.iter(|| classify(black_box(line.as_bytes())))
        });
        // The baseline classify's design is measured against: a full `serde_json::Value` tree.
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", name),
            line,
            |b, line| b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(line))),
        );
    }
    group.finish();
}

fn build_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for (name, line) in [
        (
            "text_delta",
            fixture_line(r#"{"type":"stream_event","event":{"type":"content_block_delta""#),
        ),
        ("assistant_1mib", big_line(1 << 20)),
    ] {
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| frame::claude(black_box(123_456), black_box(&line)))
        });
    }
    group.finish();
}

fn ring_and_fanout(c: &mut Criterion) {
    let line = fixture_line(r#"{"type":"stream_event","event":{"type":"content_block_delta""#);
    let sample = frame::claude(1, &line);
    let mut group = c.benchmark_group("fanout");
    for sockets in [1usize, 10, 100] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("ring_push_and_send", sockets),
            &sockets,
            |b, &n| {
                let mut ring = ReplayRing::new(0, 10_000, 32 << 20);
                let mut fanout = Fanout::default();
                let caps = QueueCaps {
                    frames: usize::MAX >> 4,
                    bytes: usize::MAX >> 4,
                };
                // Receivers are drained in batches so queues stay small, as a live socket's would.
                let mut rxs: Vec<_> = (0..n).map(|_| fanout.subscribe(caps)).collect();
                let mut since_drain = 0;
                b.iter(|| {
                    let seq = ring.next_seq();
                    let frame: ByteString = sample.clone();
                    fanout.send(&frame);
                    ring.push(seq, frame);
                    since_drain += 1;
                    if since_drain == 256 {
                        since_drain = 0;
                        for rx in &mut rxs {
                            while rx.try_recv().is_some() {}
                        }
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, classify_lines, build_frames, ring_and_fanout);
criterion_main!(benches);
