//! Unit tests of `http/stream.rs`: a streamed `/metrics` is byte for byte the whole render (text
//! and protobuf, per peer and per group), back-pressure bounds what waits, and a client that
//! goes away stops the render.

use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;

use super::*;
use crate::config::Config;
use crate::icmp::IcmpErrorKind;
use crate::mesh::labels::LabelSet;
use crate::mesh::runner::Mesh;
use crate::mesh::targets::TargetSpec;

const TARGETS: usize = 3000;

fn mesh(per_group: bool) -> Mesh {
    let text = "modules: {}\nmesh:\n  histogram: both\n  \
                peers: {static: [{targets: [198.18.0.1], labels: {peer: a}}]}\n";
    let config = Config::parse(text, "test.yml")
        .ok()
        .and_then(|config| config.mesh)
        .expect("valid mesh config");
    let specs: Vec<TargetSpec> = (0..TARGETS)
        .map(|index| {
            let address =
                IpAddr::from([198, 18, 64 + (index / 250) as u8, 1 + (index % 250) as u8]);
            TargetSpec {
                address,
                labels: Arc::new(LabelSet::new([
                    ("address", address.to_string()),
                    ("network", "lab".into()),
                    ("peer", format!("peer-{index:05}")),
                    ("rack", format!("r{:03}", index / 40)),
                ])),
            }
        })
        .collect();
    // Per group: every rack but the first shares one series set, as `inter_group_series:
    // per_group` exports it.
    let export = move |spec: &TargetSpec| -> Arc<LabelSet> {
        if per_group && spec.label("rack") != "r000" {
            Arc::new(LabelSet::new([
                ("network", "lab"),
                ("rack", spec.label("rack")),
            ]))
        } else {
            Arc::clone(&spec.labels)
        }
    };
    let mesh = Mesh::idle_for_tests(config.clone(), specs, &export);
    for (index, target) in mesh.table().targets.iter().enumerate() {
        let mut stats = target.stats();
        for probe in 0..(index % 9) as u64 {
            stats.record_sent();
            match probe % 4 {
                0 | 1 => {
                    stats.record_reply(&config.buckets, 2e-5 * (probe + 1) as f64, probe, probe)
                }
                2 => stats.record_lost(Some(IcmpErrorKind::DestinationUnreachable)),
                _ => stats.record_lost(None),
            }
        }
    }
    mesh
}

/// The whole text render: a sink that never drains, as `/metrics` was rendered before streaming.
fn whole_text(mesh: &Mesh) -> String {
    let mut whole = String::new();
    let _ = mesh.render(&mut whole, &mut |_| ControlFlow::Continue(()));
    whole
}

fn whole_protobuf(mesh: &Mesh) -> Vec<u8> {
    let mut whole = Vec::new();
    let _ = mesh.render_protobuf(&mut whole, &mut |_| ControlFlow::Continue(()));
    whole
}

async fn body_bytes(body: StreamedBody, gzip: bool) -> Vec<u8> {
    let collected = ResponseBody::Streamed(body)
        .collect()
        .await
        .expect("the body ends cleanly")
        .to_bytes();
    if !gzip {
        return collected.to_vec();
    }
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&collected[..])
        .read_to_end(&mut plain)
        .expect("valid gzip");
    plain
}

async fn streamed_text(mesh: &Mesh, gzip: bool) -> Vec<u8> {
    let mesh = mesh.clone();
    let body = render_streamed(gzip, move |sink| {
        let mut out = String::new();
        mesh.render(&mut out, &mut |chunk| sink.send_text(chunk))?;
        sink.send_text(&mut out)
    })
    .await;
    body_bytes(body, gzip).await
}

async fn streamed_protobuf(mesh: &Mesh, gzip: bool) -> Vec<u8> {
    let mesh = mesh.clone();
    let body = render_streamed(gzip, move |sink| {
        let mut out = Vec::new();
        mesh.render_protobuf(&mut out, &mut |chunk| sink.send_bytes(chunk))?;
        sink.send_bytes(&mut out)
    })
    .await;
    body_bytes(body, gzip).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn streamed_text_is_the_whole_render_per_peer_and_per_group() {
    for per_group in [false, true] {
        let mesh = mesh(per_group);
        let whole = whole_text(&mesh);
        let series = whole.lines().filter(|l| !l.starts_with('#')).count();
        assert!(series > if per_group { 2000 } else { 60_000 }, "{series}");
        for gzip in [false, true] {
            let streamed = streamed_text(&mesh, gzip).await;
            assert!(
                streamed == whole.as_bytes(),
                "per_group={per_group} gzip={gzip}: {} streamed bytes, {} whole",
                streamed.len(),
                whole.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn streamed_protobuf_is_the_whole_render_and_decodes() {
    for per_group in [false, true] {
        let mesh = mesh(per_group);
        let whole = whole_protobuf(&mesh);
        for gzip in [false, true] {
            let streamed = streamed_protobuf(&mesh, gzip).await;
            assert!(streamed == whole, "per_group={per_group} gzip={gzip}");
            let families = crate::proto::decode_all(&streamed).expect("decodes with prost");
            let sent = families
                .iter()
                .find(|f| f.name.as_deref() == Some("meshprobe_mesh_sent_total"))
                .expect("sent family");
            let expected_rows = if per_group {
                40 + (TARGETS - 40) / 40
            } else {
                TARGETS
            };
            assert_eq!(sent.metric.len(), expected_rows);
            let total: f64 = sent
                .metric
                .iter()
                .filter_map(|m| m.counter.as_ref().and_then(|c| c.value))
                .sum();
            let expected: usize = (0..TARGETS).map(|index| index % 9).sum();
            assert_eq!(total, expected as f64, "every probe counted once");
        }
    }
}

/// A renderer of `chunks` 64 KiB chunks that counts what it handed on and how it ended.
fn counting_render(
    chunks: usize,
    sent: Arc<AtomicUsize>,
    stopped: Arc<AtomicUsize>,
) -> impl FnOnce(&mut ChunkSink) -> ControlFlow<()> + Send + 'static {
    move |sink| {
        for index in 0..chunks {
            let mut chunk = format!("{index:08}\n").repeat(64 * 1024 / 9);
            if sink.send_text(&mut chunk).is_break() {
                stopped.store(index + 1, Ordering::SeqCst);
                return ControlFlow::Break(());
            }
            sent.fetch_add(1, Ordering::SeqCst);
        }
        ControlFlow::Continue(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_slow_client_holds_a_bounded_number_of_chunks() {
    let sent = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    let mut body = render_streamed(false, counting_render(1000, sent.clone(), stopped)).await;
    // Nobody reads: the renderer fills the channel and waits with the next chunk.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent.load(Ordering::SeqCst), QUEUED_CHUNKS);
    // Reading one chunk lets exactly one more through.
    let frame = std::future::poll_fn(|cx| body.poll_next(cx)).await;
    assert!(matches!(frame, Some(Ok(_))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent.load(Ordering::SeqCst), QUEUED_CHUNKS + 1);
    drop(body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_client_that_goes_away_stops_the_render() {
    let sent = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    let mut body = render_streamed(
        true,
        counting_render(100_000, sent.clone(), stopped.clone()),
    )
    .await;
    let frame = std::future::poll_fn(|cx| body.poll_next(cx)).await;
    assert!(matches!(frame, Some(Ok(_))));
    // The connection closes mid-stream: hyper drops the body.
    drop(body);
    for _ in 0..100 {
        if stopped.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_at = stopped.load(Ordering::SeqCst);
    assert!(stopped_at > 0, "the renderer noticed the client left");
    assert!(
        stopped_at < 1000,
        "and stopped early: at chunk {stopped_at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_render_that_dies_breaks_the_body_instead_of_ending_it() {
    let body = render_streamed(false, |sink| {
        let mut chunk = String::from("partial\n");
        let _ = sink.send_text(&mut chunk);
        panic!("renderer bug");
    })
    .await;
    let result = ResponseBody::Streamed(body).collect().await;
    assert!(result.is_err(), "a truncated body must not look complete");
}
