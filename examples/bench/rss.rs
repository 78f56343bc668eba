//! Section 5 of issue 13 — Peak RSS (VmHWM) of the `run` process (the release binary, its own process) with 1,000
//! mailboxes over 3 tenants (3 Graph + 3 CRM simulators in this process), embedded queue and
//! store, default poll periods: once every mailbox has its events subscription, and again after
//! one new Outlook event per mailbox has been synced to CRM (steady load; the worker role runs
//! in that process).

use std::time::{Duration, Instant};

use crm_graph_connector::demo::{Harness, HarnessOptions, wait_for};
use serde_json::json;

use crate::Ctx;
use crate::report::Report;

fn vm_hwm_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let total = 1000usize;
    let dir = ctx.tmp.join("rss");
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut sims = Vec::new();
    let (mut header, mut blocks) = (String::new(), String::new());
    for t in 0..3 {
        let n = total / 3 + usize::from(t < total % 3);
        let reps = (0..n)
            .map(|i| {
                let id: &'static str = Box::leak(format!("{}", 100 + i).into_boxed_str());
                let mail: &'static str = Box::leak(format!("rep{i}@t{t}.test").into_boxed_str());
                (id, mail)
            })
            .collect();
        let o = HarnessOptions {
            reps,
            ..HarnessOptions::default()
        };
        let (graph, crm) = Harness::simulators(&o).await?;
        let text = Harness::config_text(&graph, &crm, &dir, &o);
        let (head, tenant) = text
            .split_once("[[tenants]]")
            .ok_or_else(|| anyhow::anyhow!("config text"))?;
        if t == 0 {
            header = head.replace(
                "listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\""),
            );
        }
        blocks.push_str(
            &format!("[[tenants]]{tenant}")
                .replacen("id = \"contoso\"", &format!("id = \"t{t}\""), 1)
                .replace(
                    "domains = [\"contoso.com\"]",
                    &format!("domains = [\"t{t}.test\"]"),
                )
                .replace("crm_poll_seconds = 1\n", "crm_poll_seconds = 30\n")
                .replace("todo_poll_seconds = 1\n", "todo_poll_seconds = 60\n"),
        );
        sims.push((graph, crm, o.reps));
    }
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, format!("{header}{blocks}"))?;
    let log = std::fs::File::create(dir.join("run.log"))?;
    let mut child = tokio::process::Command::new(&ctx.bin)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .env("CGC_PREFIX", format!("cgc-bench-{}", std::process::id()))
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    let t0 = Instant::now();
    let subscribed = || {
        sims.iter()
            .map(|(g, _, _)| {
                g.subscriptions()
                    .iter()
                    .filter(|s| {
                        s["resource"]
                            .as_str()
                            .is_some_and(|x| x.ends_with("/events"))
                    })
                    .count()
            })
            .sum::<usize>()
    };
    let limit = Duration::from_secs(if ctx.quick { 90 } else { 300 });
    let ok = wait_for("1,000 events subscriptions", limit, || async {
        subscribed() >= total
    })
    .await;
    let subscribe_secs = t0.elapsed().as_secs_f64();
    if ok.is_err() {
        r.note(&format!("rss: only {} of {total} mailboxes subscribed after {subscribe_secs:.0} s (figure taken then)", subscribed()));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    match vm_hwm_mb(pid) {
        Some(mb) => r.set("rss_mb.run_1000_mailboxes", mb),
        None => r.null(
            "rss_mb.run_1000_mailboxes",
            "could not read /proc/<pid>/status of the run process",
        ),
    }
    r.set("rss_mb.subscribe_1000_secs", subscribe_secs);
    // Steady load: one new Outlook event per mailbox.
    let (date, _) = crm_graph_connector::demo::crm_slot(2, 9);
    let before: usize = sims
        .iter()
        .map(|(_, c, _)| c.records("Contact").len())
        .sum();
    let t1 = Instant::now();
    for (g, _, reps) in &sims {
        for (_, mail) in reps {
            g.user_create_event(
                mail,
                json!({"subject": "rss load",
                "start": {"dateTime": format!("{date}T09:00:00"), "timeZone": "UTC"},
                "end": {"dateTime": format!("{date}T09:30:00"), "timeZone": "UTC"}}),
            );
        }
    }
    let synced = || {
        sims.iter()
            .map(|(_, c, _)| c.records("Contact").len())
            .sum::<usize>()
            - before
    };
    let limit = Duration::from_secs(if ctx.quick { 60 } else { 180 });
    if wait_for("1,000 new events in CRM", limit, || async {
        synced() >= total
    })
    .await
    .is_err()
    {
        r.note(&format!(
            "rss: {} of {total} load events synced within {limit:?}",
            synced()
        ));
    }
    r.set("rss_mb.load_1000_events_secs", t1.elapsed().as_secs_f64());
    match vm_hwm_mb(pid) {
        Some(mb) => r.set("rss_mb.run_1000_mailboxes_under_load", mb),
        None => r.null(
            "rss_mb.run_1000_mailboxes_under_load",
            "could not read /proc/<pid>/status",
        ),
    }
    let _ = child.kill().await;
    for (g, c, _) in &sims {
        g.shutdown();
        c.shutdown();
    }
    r.row(
        "peak RSS of run, 1,000 mailboxes / 3 tenants, subscribed",
        format!(
            "{:.1} MB (all subscribed after {subscribe_secs:.0} s)",
            r.num("rss_mb.run_1000_mailboxes")
        ),
    );
    r.row(
        "peak RSS of run after 1,000 events synced (steady load)",
        format!("{:.1} MB", r.num("rss_mb.run_1000_mailboxes_under_load")),
    );
    Ok(())
}
