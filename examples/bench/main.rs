//! The benchmark set of issue 13 (`scripts/bench` builds and runs it): receiver, end to end,
//! cost per change, a polling baseline, peak RSS. Prints a table (machine-independent ratios
//! and counts first) and writes a nested JSON document (dotted names are paths).
//!
//! `bench [--quick] [--only receiver,cost,e2e,polling,rss] --out FILE --loadgen BIN --bin BIN`

mod common;
mod cost;
mod e2e;
mod polling;
mod receiver;
mod report;
mod rss;

use std::path::PathBuf;

use crm_graph_connector::demo::Harness;
use report::Report;

pub struct Ctx {
    pub quick: bool,
    pub loadgen: PathBuf,
    pub bin: PathBuf,
    pub tmp: PathBuf,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// (label, key, target, met) rows of the summary.
fn summary(r: &Report) -> Vec<[String; 4]> {
    let n = |k: &str| r.num(k);
    let row = |label: &str, value: String, target: &str, met: Option<bool>| {
        [
            label.to_string(),
            value,
            target.to_string(),
            match met {
                Some(true) => "met".into(),
                Some(false) => "missed".into(),
                None => "n/a".into(),
            },
        ]
    };
    let ok = |v: f64, f: &dyn Fn(f64) -> bool| v.is_finite().then(|| f(v));
    vec![
        row(
            "receiver embedded / no-op queue (batch 1)",
            format!("{:.2}", n("receiver.embedded_ratio")),
            ">= 0.40",
            ok(n("receiver.embedded_ratio"), &|v| v >= 0.40),
        ),
        row(
            "receiver RabbitMQ / broker confirm ceiling (batch 1)",
            format!("{:.2}", n("receiver.rabbitmq_ratio")),
            ">= 0.90",
            ok(n("receiver.rabbitmq_ratio"), &|v| v >= 0.90),
        ),
        row(
            "receiver RabbitMQ batch 50 / broker ceiling",
            format!("{:.2}", n("receiver.rabbitmq_batch_50_over_ceiling")),
            "> 1",
            ok(n("receiver.rabbitmq_batch_50_over_ceiling"), &|v| v > 1.0),
        ),
        row(
            "Graph requests per real change",
            format!("{:.2}", n("cost.graph_requests_per_change")),
            "<= 1.0",
            ok(n("cost.graph_requests_per_change"), &|v| v <= 1.0),
        ),
        row(
            "CRM writes per touch",
            format!("{:.2}", n("cost.crm_writes_per_touch")),
            "0",
            ok(n("cost.crm_writes_per_touch"), &|v| v == 0.0),
        ),
        row(
            "Graph requests per exact duplicate",
            format!("{:.2}", n("cost.graph_requests_per_duplicate")),
            "0",
            ok(n("cost.graph_requests_per_duplicate"), &|v| v == 0.0),
        ),
        row(
            "store round trips per real change",
            format!("{:.1}", n("cost.store_round_trips_per_change")),
            "<= 4",
            ok(n("cost.store_round_trips_per_change"), &|v| v <= 4.0),
        ),
        row(
            "polling / ours, Graph requests per mailbox-day",
            format!(
                "{:.1}x ({:.0} / {:.1})",
                n("polling.ratio"),
                n("polling.graph_requests_per_day"),
                n("ours.graph_requests_per_day")
            ),
            ">= 50x",
            ok(n("polling.ratio"), &|v| v >= 50.0),
        ),
        row(
            "receiver no-op / embedded / RabbitMQ (batch 1)",
            format!(
                "{:.0} / {:.0} / {:.0} per s",
                n("receiver.noop_per_s"),
                n("receiver.embedded_per_s"),
                n("receiver.rabbitmq_per_s")
            ),
            "",
            None,
        ),
        row(
            "broker confirm ceiling",
            format!("{:.0} per s", n("receiver.broker_ceiling_per_s")),
            "",
            None,
        ),
        row(
            "receiver p99 at 5,000/s open loop (embedded)",
            format!("{:.1} ms", n("receiver.p99_ms_at_5k")),
            "< 20 ms",
            ok(n("receiver.p99_ms_at_5k"), &|v| v < 20.0),
        ),
        row(
            "e2e Graph -> CRM p50 / p99 at steady rate",
            format!(
                "{:.0} / {:.0} ms at {:.0}/s",
                n("e2e.p50_ms"),
                n("e2e.p99_ms"),
                n("e2e.embedded.rate_per_s")
            ),
            "p99 < 500 ms at 200/s",
            ok(n("e2e.p99_ms"), &|v| v < 500.0).filter(|_| n("e2e.embedded.rate_per_s") >= 200.0),
        ),
        row(
            "e2e CRM -> Graph p50 / p99 (CRM polled every 1 s)",
            format!(
                "{:.0} / {:.0} ms",
                n("e2e.embedded.crm_to_graph.p50_ms"),
                n("e2e.embedded.crm_to_graph.p99_ms")
            ),
            "p99 < 500 ms",
            ok(n("e2e.embedded.crm_to_graph.p99_ms"), &|v| v < 500.0),
        ),
        row(
            "e2e highest sustained rate (embedded)",
            format!("{:.0} changes/s", n("e2e.max_changes_per_s")),
            ">= 1,000",
            ok(n("e2e.max_changes_per_s"), &|v| v >= 1000.0),
        ),
        row(
            "peak RSS of run, 1,000 mailboxes",
            format!("{:.1} MB", n("rss_mb.run_1000_mailboxes")),
            "< 150 MB",
            ok(n("rss_mb.run_1000_mailboxes"), &|v| v < 150.0),
        ),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<String> = arg(&args, "--only")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| {
            ["receiver", "cost", "e2e", "polling", "rss"]
                .map(String::from)
                .to_vec()
        });
    let want = |s: &str| only.iter().any(|o| o == s);
    let out =
        PathBuf::from(arg(&args, "--out").unwrap_or_else(|| "target/bench/bench.json".into()));
    let tmp = std::env::temp_dir().join(format!("cgc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let ctx = Ctx {
        quick,
        loadgen: arg(&args, "--loadgen")
            .unwrap_or_else(|| "target/release/examples/loadgen".into())
            .into(),
        bin: arg(&args, "--bin")
            .unwrap_or_else(|| "target/release/crm-graph-connector".into())
            .into(),
        tmp: tmp.clone(),
    };
    let mut r = Report::default();
    r.set_value(
        "mode",
        serde_json::json!(if quick { "quick" } else { "full" }),
    );
    r.set_value(
        "started",
        serde_json::json!(chrono::Utc::now().to_rfc3339()),
    );
    r.set_value(
        "cpus",
        serde_json::json!(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        ),
    );
    let started = std::time::Instant::now();
    macro_rules! section {
        ($name:literal, $fut:expr) => {
            if want($name) {
                println!("== {}", $name);
                let t = std::time::Instant::now();
                if let Err(e) = $fut.await {
                    r.note(&format!("section {} failed: {e:#}", $name));
                }
                r.set(&format!("secs.{}", $name), t.elapsed().as_secs_f64());
            }
        };
    }
    section!("receiver", async {
        let h = Harness::start(common::options(false, 2)).await?;
        h.wait_subscribed().await?;
        h.settle().await?;
        let res = receiver::run(&ctx, &h, &mut r).await;
        h.stop().await;
        res
    });
    section!("cost", cost::run(&ctx, &mut r));
    section!("e2e", async {
        e2e::run(&ctx, &mut r, false).await?;
        if !ctx.quick {
            e2e::run(&ctx, &mut r, true).await?;
        }
        anyhow::Ok(())
    });
    let p50 = r.num("e2e.embedded.graph_to_crm.p50_ms");
    let p99 = r.num("e2e.embedded.graph_to_crm.p99_ms");
    let max = r.num("e2e.embedded.max_changes_per_s");
    if want("e2e") {
        r.set("e2e.p50_ms", p50);
        r.set("e2e.p99_ms", p99);
        r.set("e2e.max_changes_per_s", max);
    }
    section!("polling", polling::baseline(&ctx, &mut r));
    if want("polling") && want("cost") {
        polling::ours(&mut r);
    }
    section!("rss", rss::run(&ctx, &mut r));
    r.set("secs.total", started.elapsed().as_secs_f64());
    // Every required key is present; a missing one is null with its reason.
    let doc = r.document();
    for k in report::missing(&doc) {
        r.null(k, "its section did not run or failed (see notes)");
    }
    for k in report::REQUIRED {
        if report::get(&r.document(), k).is_some_and(serde_json::Value::is_null)
            && !r.notes.iter().any(|n| n.starts_with(k))
        {
            r.note(&format!("{k} = null: not measured (see the notes above)"));
        }
    }
    let table = summary(&r);
    r.set_value("summary", serde_json::json!(table));
    println!("\n| figure | value | target | |\n| --- | --- | --- | --- |");
    for [a, b, c, d] in &table {
        println!("| {a} | {b} | {c} | {d} |");
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&r.document())?)?;
    println!("wrote {}", out.display());
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
