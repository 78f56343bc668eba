//! Section 1 of issue 13 — Receiver: notifications/s and POST latency from a separate load-generator process, for
//! batches of 1 and 50, with (a) a no-op queue, (b) the embedded queue, (c) RabbitMQ with
//! confirms; the broker's own confirm ceiling; p99 at a fixed 5,000 notifications/s.
//!
//! Each run gets its own queue (a fresh embedded file or fresh RabbitMQ queues) that no worker
//! consumes, so the figures are the receiver's alone; the receiver itself is the harness app's
//! (same subscription look-up, same store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cgc_backends::{EmbeddedQueue, Queue, QueueOptions, RabbitQueue};
use crm_graph_connector::demo::Harness;
use serde_json::Value;

use crate::Ctx;
use crate::common::{CountingQueue, NullQueue, RABBIT_URL, RECEIVER_ONLY, Trips, load, with_queue};
use crate::report::Report;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Noop,
    Embedded,
    Rabbit,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Noop => "noop",
            Kind::Embedded => "embedded",
            Kind::Rabbit => "rabbitmq",
        }
    }
}

/// The queue for one run, and how to remove it afterwards.
async fn fresh_queue(
    ctx: &Ctx,
    kind: Kind,
    n: usize,
) -> anyhow::Result<(Arc<dyn Queue>, Option<RabbitQueue>)> {
    Ok(match kind {
        Kind::Noop => (Arc::new(NullQueue), None),
        Kind::Embedded => {
            let path = ctx.tmp.join(format!("receiver-queue-{n}"));
            (
                Arc::new(EmbeddedQueue::open(&path, QueueOptions::default())?),
                None,
            )
        }
        Kind::Rabbit => {
            let prefix = format!(
                "cgc-bench-r{}",
                &uuid::Uuid::new_v4().simple().to_string()[..10]
            );
            let opts = QueueOptions {
                partitions: 8,
                ..QueueOptions::default()
            };
            let q = RabbitQueue::connect(RABBIT_URL, &prefix, opts.clone()).await?;
            let cleanup = RabbitQueue::connect(RABBIT_URL, &prefix, opts).await?;
            (Arc::new(q), Some(cleanup))
        }
    })
}

/// Runs the load generator against a receiver with a queue of `kind`; its JSON line, plus the
/// mean bytes per published envelope.
async fn one(
    ctx: &Ctx,
    h: &Harness,
    sub: &(String, String),
    kind: Kind,
    mode: &[String],
    n: usize,
) -> anyhow::Result<(Value, f64)> {
    let (queue, cleanup) = fresh_queue(ctx, kind, n).await?;
    let trips = Arc::new(Trips::default());
    let counted: Arc<dyn Queue> = Arc::new(CountingQueue(queue, trips.clone()));
    let running = with_queue(h.app(), counted, &trips, RECEIVER_ONLY).await;
    let url = format!(
        "http://{}/notifications",
        running.bound.receiver.expect("receiver bound")
    );
    let out = tokio::process::Command::new(&ctx.loadgen)
        .arg(&url)
        .arg(&sub.0)
        .arg(&sub.1)
        .args(mode)
        .env("LOADGEN_MAILBOX", crm_graph_connector::demo::MAILBOX)
        .output()
        .await?;
    running.stop().await;
    if let Some(q) = cleanup {
        let _ = q.delete_topology().await;
        q.close().await;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(line.trim()).map_err(|e| {
        anyhow::anyhow!(
            "loadgen said {line:?} ({e}); stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let published = load(&trips.published).max(1) as f64;
    Ok((v, load(&trips.published_bytes) as f64 / published))
}

/// The broker's own ceiling: `concurrency` publishers on one confirm channel, each publishing a
/// persistent message of `size` bytes to a quorum queue and waiting for its confirm.
async fn broker_ceiling(total: usize, concurrency: usize, size: usize) -> anyhow::Result<f64> {
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    let conn =
        lapin::Connection::connect(RABBIT_URL, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let name = format!(
        "cgc-bench-ceiling-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
        .await?;
    let body = vec![b'x'; size.max(1)];
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (ch, next, body, name) = (ch.clone(), next.clone(), body.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let props = lapin::BasicProperties::default().with_delivery_mode(2);
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        name.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &body,
                        props,
                    )
                    .await?;
                confirm.await?;
            }
            Ok::<(), lapin::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let _ = ch
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bye".into()).await;
    Ok(rate)
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

pub async fn run(ctx: &Ctx, h: &Harness, r: &mut Report) -> anyhow::Result<()> {
    let sub = h
        .app()
        .state
        .subscriptions()
        .await?
        .into_iter()
        .find(|s| s.resource.ends_with("/events"))
        .ok_or_else(|| anyhow::anyhow!("no events subscription"))?;
    // The store keeps only an HMAC of the clientState; the Graph simulator knows the secret.
    let cs = h
        .graph
        .subscriptions()
        .into_iter()
        .find(|s| s["id"].as_str() == Some(sub.id.as_str()))
        .and_then(|s| s["clientState"].as_str().map(str::to_string))
        .ok_or_else(|| anyhow::anyhow!("no clientState"))?;
    let sub = (sub.id, cs);
    let conc = 16usize;
    let mut n = 0;
    let mut size_sum = (0.0, 0usize);
    let mut first_ceiling = f64::NAN;
    for batch in [1usize, 50] {
        let total = if ctx.quick { 3000 } else { 20000 } * if batch == 1 { 1 } else { 10 };
        for kind in [Kind::Noop, Kind::Embedded, Kind::Rabbit] {
            n += 1;
            let mode: Vec<String> = [
                "closed".to_string(),
                total.to_string(),
                batch.to_string(),
                conc.to_string(),
            ]
            .into();
            let (v, size) = one(ctx, h, &sub, kind, &mode, n).await?;
            if kind == Kind::Rabbit && batch == 1 {
                size_sum = (size, 1);
                // The ceiling right after the run it is compared with (the machine's load drifts).
                let total = if ctx.quick { 3000 } else { 20000 };
                first_ceiling = broker_ceiling(total, conc, size.round() as usize).await?;
            }
            let p = format!("receiver.batch_{batch}.{}", kind.name());
            for k in ["per_s", "p50_ms", "p99_ms", "p999_ms", "errors"] {
                r.set(&format!("{p}.{k}"), f(&v, k));
            }
            r.row(
                &format!("receiver batch {batch}, {conc} conns: {}", kind.name()),
                format!(
                    "{:.0}/s  p50 {:.2} p99 {:.2} p99.9 {:.2} ms  ({} non-202)",
                    f(&v, "per_s"),
                    f(&v, "p50_ms"),
                    f(&v, "p99_ms"),
                    f(&v, "p999_ms"),
                    f(&v, "errors")
                ),
            );
        }
    }
    let size = if size_sum.1 == 1 {
        size_sum.0.round() as usize
    } else {
        400
    };
    let ceiling_total = if ctx.quick { 3000 } else { 20000 };
    // The better of two measurements (right after the batch-1 run, and now): the ratio against
    // the broker's best.
    let ceiling = broker_ceiling(ceiling_total, conc, size)
        .await?
        .max(first_ceiling);
    r.set("receiver.broker_ceiling_per_s", ceiling);
    r.set("receiver.broker_message_bytes", size as f64);
    let b1 = |k: &str| r.num(&format!("receiver.batch_1.{k}.per_s"));
    let b50 = |k: &str| r.num(&format!("receiver.batch_50.{k}.per_s"));
    let (noop, emb, rmq, rmq50) = (b1("noop"), b1("embedded"), b1("rabbitmq"), b50("rabbitmq"));
    let emb50 = b50("embedded") / b50("noop");
    r.set("receiver.noop_per_s", noop);
    r.set("receiver.embedded_per_s", emb);
    r.set("receiver.embedded_ratio", emb / noop);
    r.set("receiver.embedded_ratio_batch_50", emb50);
    r.set("receiver.rabbitmq_per_s", rmq);
    r.set("receiver.rabbitmq_ratio", rmq / ceiling);
    r.set("receiver.rabbitmq_batch_50_per_s", rmq50);
    r.set("receiver.rabbitmq_batch_50_over_ceiling", rmq50 / ceiling);
    r.row(
        &format!("broker confirm ceiling ({conc} publishers, {size} B)"),
        format!("{ceiling:.0}/s"),
    );
    // Open loop at 5,000/s: embedded (the default) and RabbitMQ.
    let secs = if ctx.quick { 3 } else { 10 };
    for kind in [Kind::Embedded, Kind::Rabbit] {
        n += 1;
        let mode: Vec<String> = ["open".to_string(), "5000".into(), secs.to_string()].into();
        let (v, _) = one(ctx, h, &sub, kind, &mode, n).await?;
        let p = format!("receiver.open_5k.{}", kind.name());
        for k in ["per_s", "p50_ms", "p99_ms", "p999_ms", "errors"] {
            r.set(&format!("{p}.{k}"), f(&v, k));
        }
        r.row(
            &format!("receiver open loop 5,000/s for {secs} s: {}", kind.name()),
            format!(
                "p50 {:.2} p99 {:.2} p99.9 {:.2} ms  ({} non-202)",
                f(&v, "p50_ms"),
                f(&v, "p99_ms"),
                f(&v, "p999_ms"),
                f(&v, "errors")
            ),
        );
    }
    r.set(
        "receiver.p99_ms_at_5k",
        r.num("receiver.open_5k.embedded.p99_ms"),
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
