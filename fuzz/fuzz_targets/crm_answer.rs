//! CRM.interface `<response>` documents as the CRM client reads them
//! (`cgc_crm::client::response::parse_response`, on top of `client::xml::parse_document`).
//!
//! `parse_response` needs the request's commands. Each input is parsed twice: once against
//! commands derived from the document's own answer elements (so the fuzzer reaches the
//! per-command readers: query records, write returns, imports) and once against a fixed
//! request (query, update, break, import) as the client sends it.
#![no_main]

use std::collections::BTreeMap;

use cgc_crm::client::response::parse_response;
use cgc_crm::client::xml::parse_document;
use cgc_crm::{Command, ImportField, Outcome, Query};
use libfuzzer_sys::fuzz_target;

fn command_for(element: &str) -> Command {
    match element {
        "insert" => Command::Insert {
            table: "Contact".into(),
            fields: BTreeMap::new(),
        },
        "update" => Command::Update {
            table: "Contact".into(),
            id: 4_294_967_394,
            fields: BTreeMap::new(),
        },
        "delete" => Command::Delete {
            table: "Contact".into(),
            id: 4_294_967_394,
        },
        "import" => Command::Import {
            table: "ExtKey".into(),
            fields: vec![ImportField::new("ExtKey", "x", true)],
        },
        _ => Command::Query(Query::new("Contact")),
    }
}

fn check(xml: &str, commands: &[Command]) {
    match parse_response(xml, commands) {
        Ok(parsed) => {
            let answered = commands
                .iter()
                .filter(|c| !matches!(c, Command::BreakOnError))
                .count();
            assert!(
                parsed.outcomes.len() <= answered,
                "more outcomes than answered commands"
            );
            for o in &parsed.outcomes {
                if let Outcome::Records(page) = o {
                    for r in &page.records {
                        let _ = r.field("Subject");
                    }
                }
            }
            let _ = parsed.attr("corr");
        }
        Err(e) => {
            // Error messages carry an excerpt of the body: formatting them must never panic.
            let _ = e.to_string();
            let _ = e.is_retryable();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let xml = String::from_utf8_lossy(data);
    let xml = xml.as_ref();
    let derived: Vec<Command> = match parse_document(xml) {
        Ok(root) => {
            let mut cmds = Vec::new();
            for (i, child) in root.children.iter().take(64).enumerate() {
                if i % 2 == 1 {
                    cmds.push(Command::BreakOnError);
                }
                cmds.push(command_for(&child.name));
            }
            cmds
        }
        Err(e) => {
            let _ = e.to_string();
            Vec::new()
        }
    };
    check(xml, &derived);
    let fixed = [
        command_for("query"),
        command_for("update"),
        Command::BreakOnError,
        command_for("import"),
    ];
    check(xml, &fixed);
});
