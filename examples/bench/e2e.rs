//! Section 2 of issue 13 — End to end against the simulators: Outlook edit → CRM write and CRM edit → Outlook write,
//! latency at a steady rate (open loop, alternating directions), then the highest sustained rate
//! of Outlook edits (rate steps; a step is sustained when every change lands within 10 s after
//! the step, none is overtaken by the next edit of its item, and p99 < 1 s).
//!
//! Simplified against the issue: one tenant with N mailboxes in one process (N = 20 quick, 50
//! full), not 1,000 over 3 tenants; workers are consumers in the `run` process, not separate
//! processes (no 1/2/4-process scaling curve).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crm_graph_connector::demo::{Harness, crm_slot, wait_for};
use serde_json::{Value, json};

use crate::Ctx;
use crate::common::{options, pct, quiet};
use crate::report::Report;

struct Item {
    mailbox: String,
    event: String,
    crm: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    ToCrm,
    ToGraph,
}

struct Step {
    to_crm: Vec<f64>,
    to_graph: Vec<f64>,
    offered: usize,
    lost: usize,
    superseded: usize,
    secs: f64,
}

fn landed(h: &Harness, it: &Item, dir: Dir, token: &str) -> bool {
    match dir {
        Dir::ToCrm => {
            h.crm
                .record("Contact", it.crm)
                .and_then(|r| r.fields.get("Subject").cloned())
                .as_deref()
                == Some(token)
        }
        Dir::ToGraph => {
            h.graph
                .event(&it.mailbox, &it.event)
                .and_then(|e| e.get("subject").and_then(Value::as_str).map(str::to_string))
                .as_deref()
                == Some(token)
        }
    }
}

/// Offers `rate` changes/s for `secs` s (alternating directions when `both`); latencies in ms.
async fn drive(
    h: &Harness,
    items: &[Item],
    rate: usize,
    secs: usize,
    both: bool,
    tag: &str,
) -> Step {
    let total = rate * secs;
    let pending: std::cell::RefCell<HashMap<usize, (String, Instant, Dir)>> = Default::default();
    let done: std::cell::Cell<Option<Instant>> = Default::default();
    let (mut to_crm, mut to_graph) = (Vec::new(), Vec::new());
    let superseded = std::cell::Cell::new(0usize);
    let started = Instant::now();
    let offer = async {
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        for n in 0..total {
            let due = started + period * n as u32;
            tokio::time::sleep_until(due.into()).await;
            let i = n % items.len();
            let it = &items[i];
            let dir = if both && n % 2 == 1 {
                Dir::ToGraph
            } else {
                Dir::ToCrm
            };
            let token = format!("e2e {tag} {n}");
            if pending
                .borrow_mut()
                .insert(i, (token.clone(), due, dir))
                .is_some()
            {
                superseded.set(superseded.get() + 1);
            }
            match dir {
                Dir::ToCrm => {
                    h.graph
                        .user_update_event(&it.mailbox, &it.event, json!({"subject": token}));
                }
                Dir::ToGraph => h.crm.user_update("Contact", it.crm, &[("Subject", &token)]),
            }
        }
        done.set(Some(Instant::now()));
    };
    let check = async {
        let mut last_change = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = Instant::now();
            let hits: Vec<(usize, Instant, Dir)> = pending
                .borrow()
                .iter()
                .filter(|(i, (tok, _, dir))| landed(h, &items[**i], *dir, tok))
                .map(|(i, (_, t, d))| (*i, *t, *d))
                .collect();
            for (i, t, d) in hits {
                pending.borrow_mut().remove(&i);
                let ms = (now - t).as_secs_f64() * 1000.0;
                if d == Dir::ToCrm {
                    to_crm.push(ms)
                } else {
                    to_graph.push(ms)
                }
                last_change = now;
            }
            // After the last change: until every change landed, or 10 s pass with none landing.
            let calm = done.get().map(|d| d.max(last_change));
            if calm.is_some_and(|c| {
                pending.borrow().is_empty() || c.elapsed() > Duration::from_secs(10)
            }) {
                break;
            }
        }
    };
    tokio::join!(offer, check);
    to_crm.sort_by(f64::total_cmp);
    to_graph.sort_by(f64::total_cmp);
    Step {
        offered: total,
        lost: pending.borrow().len(),
        superseded: superseded.get(),
        secs: started.elapsed().as_secs_f64(),
        to_crm,
        to_graph,
    }
}

/// Starts the harness with `mailboxes` reps and `per` events each, all synced to CRM.
async fn setup(rabbit: bool, mailboxes: usize, per: usize) -> anyhow::Result<(Harness, Vec<Item>)> {
    let mut o = options(rabbit, 4);
    o.reps = (0..mailboxes)
        .map(|i| {
            let id: &'static str = Box::leak(format!("{}", 100 + i).into_boxed_str());
            let mail: &'static str = Box::leak(format!("rep{i}@contoso.com").into_boxed_str());
            (id, mail)
        })
        .collect();
    let mut h = Harness::start(o.clone()).await?;
    // To Do is polled every second by the harness; the default period here (not measured).
    h.config_text = h
        .config_text
        .replace("todo_poll_seconds = 1\n", "todo_poll_seconds = 60\n");
    h.restart(4, crm_graph_connector::run::Roles::ALL).await?;
    wait_for(
        "every mailbox's events subscription",
        Duration::from_secs(180),
        || async {
            h.graph
                .subscriptions()
                .iter()
                .filter(|s| {
                    s["resource"]
                        .as_str()
                        .is_some_and(|r| r.ends_with("/events"))
                })
                .count()
                >= mailboxes
        },
    )
    .await?;
    let (date, _) = crm_slot(3, 9);
    let mut by_subject = HashMap::new();
    for (i, (_, mail)) in o.reps.iter().enumerate() {
        for j in 0..per {
            let subject = format!("e2e m{i} e{j}");
            let e = h.graph.user_create_event(
                mail,
                json!({"subject": subject,
                "start": {"dateTime": format!("{date}T{:02}:00:00", 6 + j % 12), "timeZone": "UTC"},
                "end": {"dateTime": format!("{date}T{:02}:30:00", 6 + j % 12), "timeZone": "UTC"}}),
            );
            by_subject.insert(
                subject,
                (
                    mail.to_string(),
                    e["id"].as_str().unwrap_or_default().to_string(),
                ),
            );
        }
    }
    let want = mailboxes * per;
    println!("    {mailboxes} mailboxes subscribed; syncing {want} events");
    wait_for("the events in CRM", Duration::from_secs(600), || async {
        h.crm.records("Contact").len() >= want
    })
    .await?;
    quiet(&h).await;
    let items = h
        .crm
        .records("Contact")
        .into_iter()
        .filter_map(|r| {
            let (mailbox, event) = by_subject.get(r.fields.get("Subject")?)?.clone();
            Some(Item {
                mailbox,
                event,
                crm: r.id,
            })
        })
        .collect();
    Ok((h, items))
}

pub async fn run(ctx: &Ctx, r: &mut Report, rabbit: bool) -> anyhow::Result<()> {
    let name = if rabbit { "rabbitmq_redis" } else { "embedded" };
    let (mailboxes, per) = if ctx.quick { (20, 20) } else { (50, 20) };
    let t0 = Instant::now();
    let (h, items) = setup(rabbit, mailboxes, per).await?;
    println!("    set up in {:.0} s", t0.elapsed().as_secs_f64());
    r.set(&format!("e2e.{name}.mailboxes"), mailboxes as f64);
    let (rate, secs) = if ctx.quick { (50, 4) } else { (200, 5) };
    let s = drive(&h, &items, rate, secs, true, &format!("{name} steady")).await;
    let p = format!("e2e.{name}");
    r.set(&format!("{p}.rate_per_s"), rate as f64);
    r.set(&format!("{p}.graph_to_crm.p50_ms"), pct(&s.to_crm, 0.5));
    r.set(&format!("{p}.graph_to_crm.p99_ms"), pct(&s.to_crm, 0.99));
    r.set(&format!("{p}.crm_to_graph.p50_ms"), pct(&s.to_graph, 0.5));
    r.set(&format!("{p}.crm_to_graph.p99_ms"), pct(&s.to_graph, 0.99));
    r.set(&format!("{p}.lost"), (s.lost + s.superseded) as f64);
    r.row(
        &format!("e2e {name}, {rate} changes/s, {mailboxes} mailboxes: Graph -> CRM"),
        format!(
            "p50 {:.0} ms, p99 {:.0} ms (n {})",
            pct(&s.to_crm, 0.5),
            pct(&s.to_crm, 0.99),
            s.to_crm.len()
        ),
    );
    r.row(
        &format!("e2e {name}, {rate} changes/s: CRM -> Graph (CRM polled every 1 s)"),
        format!(
            "p50 {:.0} ms, p99 {:.0} ms (n {}; {} not landed)",
            pct(&s.to_graph, 0.5),
            pct(&s.to_graph, 0.99),
            s.to_graph.len(),
            s.lost + s.superseded
        ),
    );
    quiet(&h).await;
    let steps: &[usize] = if ctx.quick {
        &[100, 200, 400]
    } else {
        &[50, 100, 200, 400, 800, 1600]
    };
    let step_secs = if ctx.quick { 3 } else { 8 };
    let (mut best, mut saturated) = (None, None);
    for &rate in steps {
        let s = drive(
            &h,
            &items,
            rate,
            step_secs,
            false,
            &format!("{name} max {rate}"),
        )
        .await;
        let p99 = pct(&s.to_crm, 0.99);
        let ok = s.lost == 0 && s.superseded == 0 && p99 < 1000.0;
        r.set(&format!("{p}.steps.r{rate}.p99_ms"), p99);
        r.set(
            &format!("{p}.steps.r{rate}.landed_per_s"),
            s.to_crm.len() as f64 / s.secs,
        );
        println!(
            "    step {rate}/s: p99 {p99:.0} ms, {} of {} landed, {} overtaken -> {}",
            s.to_crm.len(),
            s.offered,
            s.superseded,
            if ok { "sustained" } else { "not sustained" }
        );
        if !ok {
            saturated = Some(s.to_crm.len() as f64 / s.secs);
            break;
        }
        best = Some(rate as f64);
        quiet(&h).await;
    }
    match best {
        Some(b) => r.set(&format!("{p}.max_changes_per_s"), b),
        None => {
            r.set(
                &format!("{p}.max_changes_per_s"),
                saturated.unwrap_or(f64::NAN),
            );
            r.note(&format!("e2e {name}: no step sustained; max_changes_per_s is the landed rate of the lowest step"));
        }
    }
    if let Some(s) = saturated {
        r.set(&format!("{p}.saturated_landed_per_s"), s);
    }
    r.row(
        &format!("e2e {name}: highest sustained rate (Graph -> CRM)"),
        format!("{:.0} changes/s", r.num(&format!("{p}.max_changes_per_s"))),
    );
    h.stop().await;
    Ok(())
}
