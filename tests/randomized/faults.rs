//! P12's faults: what one round runs under, switched on before its edits (or right after them)
//! and off before it settles; and the killed connector process.

use std::time::Duration;

use crm_graph_connector::demo::{Harness, MAILBOX, wait_for};

use super::support::{Child, spawn_connector};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No fault.
    Calm,
    /// Every notification delivered three times, creates notified `created` + `updated`;
    /// new pairs are created in this round.
    Duplicates,
    /// A 429 `Retry-After` window on the mailbox, opened right after the edits.
    Throttle,
    /// The CRM answers `LOCKED` to the next writes of the edited records.
    CrmLocked,
    /// The CRM answers 503 for a few seconds, from before the edits.
    CrmDown,
    /// The next Graph writes are applied and answered with an error or not at all.
    GraphCommitThenFail,
    /// The next CRM `Contact` writes are committed and answered with 500 or not at all.
    CrmCommitThenFail,
    /// The connector is stopped (draining) and started again right after the edits.
    Restart,
    /// A connector child process runs the round and is SIGKILLed once it has written something.
    Kill,
}

/// Every fault, each at least once; the order is shuffled per seed.
pub const ALL: [Fault; 9] = [
    Fault::Calm,
    Fault::Duplicates,
    Fault::Throttle,
    Fault::CrmLocked,
    Fault::CrmDown,
    Fault::GraphCommitThenFail,
    Fault::CrmCommitThenFail,
    Fault::Restart,
    Fault::Kill,
];

/// Before the round's edits.
pub fn arm(h: &Harness, f: Fault, pick: u64) {
    match f {
        Fault::Duplicates => {
            h.graph.duplicate_deliveries(3);
            h.graph.created_plus_updated(true);
        }
        Fault::CrmDown => h.crm.set_unavailable(Duration::from_secs(3)),
        Fault::GraphCommitThenFail => {
            let how = [
                cgc_graph::sim::CommitFail::Status500,
                cgc_graph::sim::CommitFail::Status503,
                cgc_graph::sim::CommitFail::Status504,
                cgc_graph::sim::CommitFail::CloseConnection,
            ][(pick % 4) as usize];
            h.graph.commit_then_fail(MAILBOX, 2, how);
        }
        Fault::CrmCommitThenFail => {
            let how = if pick.is_multiple_of(2) {
                cgc_crm::sim::AfterCommit::Status500
            } else {
                cgc_crm::sim::AfterCommit::Close
            };
            h.crm.fail_after_commit(Some("Contact"), 2, how);
        }
        Fault::Calm | Fault::Throttle | Fault::CrmLocked | Fault::Restart | Fault::Kill => {}
    }
}

/// Right after the round's edits. `edited` are the CRM ids of the pairs edited (a lock taken
/// before would refuse the CRM user's own edits too).
pub async fn after_edits(h: &mut Harness, f: Fault, edited: &[u64]) {
    match f {
        Fault::CrmLocked => {
            for id in edited {
                h.crm.lock_record(*id, 3);
            }
        }
        Fault::Throttle => h.graph.throttle_mailbox(MAILBOX, 2),
        Fault::Restart => {
            h.restart(2, crm_graph_connector::run::Roles::ALL)
                .await
                .expect("connector restarts");
            h.wait_subscribed().await.expect("subscribed after restart");
        }
        _ => {}
    }
}

/// Before the round settles: faults that would outlast it are switched off (the CRM outage
/// has run its course by then).
pub async fn disarm(h: &Harness, f: Fault) {
    match f {
        Fault::Duplicates => {
            h.graph.duplicate_deliveries(0);
            h.graph.created_plus_updated(false);
        }
        // The outage, then the scheduler's first backoff step of a failed CRM poll (5 s) and
        // one poll period: the poll that sees the edits made during the outage has run.
        Fault::CrmDown => tokio::time::sleep(Duration::from_secs(3 + 5 + 2)).await,
        Fault::Throttle => tokio::time::sleep(Duration::from_secs(2)).await,
        _ => {}
    }
}

/// The connector as a child process on the harness's config, data and prefix (the in-process
/// one is stopped first). Returns once its receiver accepts connections.
pub async fn spawn_child(h: &mut Harness) -> Child {
    h.stop_connector().await;
    let cfg = h.dir.join("p12-child.toml");
    std::fs::write(&cfg, &h.config_text).expect("child config written");
    let port = receiver_port(&h.config_text);
    let child = spawn_connector(&cfg, &h.prefix);
    wait_for("the child's receiver", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
    .expect("child connector up");
    child
}

/// Waits until the child has written something (to either side) since `before`, then kills it
/// with SIGKILL (no drain, no shutdown hook). Returns whether it had written.
pub async fn kill_when_busy(h: &Harness, mut child: Child, before: (usize, u64)) -> bool {
    let busy = wait_for("a write by the child", Duration::from_secs(20), || async {
        h.crm.write_log().len() > before.0 || h.graph.app_writes(MAILBOX) > before.1
    })
    .await
    .is_ok();
    let _ = child.0.kill();
    let _ = child.0.wait();
    busy
}

fn receiver_port(config: &str) -> u16 {
    config
        .lines()
        .find_map(|l| l.strip_prefix("public_url = \"http://127.0.0.1:"))
        .and_then(|p| p.trim_end_matches('"').parse().ok())
        .expect("the receiver's port is fixed after the first start")
}
