//! Errors of the CRM.interface client.

use crate::model::{ErrorCode, RecordId};

/// Longest excerpt of an answer kept in an error.
pub const EXCERPT_CHARS: usize = 200;

/// What went wrong talking to CRM.interface.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// Connection failure or an HTTP status other than 2xx (401, 5xx, …); retried.
    #[error("{}", transport_message(.status, .excerpt))]
    Transport {
        status: Option<u16>,
        excerpt: String,
    },
    /// No answer within the configured timeout; the command may still have been carried out.
    #[error("CRM.interface did not answer in time; retry later (writes must be idempotent)")]
    Timeout,
    /// The answer is not a CRM.interface document this client understands.
    #[error(
        "CRM.interface answer could not be read: {detail}; check the endpoint URL (answer starts: {excerpt})"
    )]
    Parse { detail: String, excerpt: String },
    /// The answer's `corr` is not the one sent: it belongs to another request.
    #[error("CRM.interface answer carries another request's corr; retry the request")]
    CorrMismatch,
    /// The request or a single command was refused (`<return type="error">`).
    #[error("{}", remote_message(.code, .message))]
    Remote { code: ErrorCode, message: String },
    /// `create_linked` created the record but writing its `ExtKey` link (the second request)
    /// failed. Finish the link with `upsert_link(record_id, …)`; creating again would make a
    /// second record. Retryable.
    #[error(
        "CRM record {record_id} was created but its ExtKey link was not written ({source}); write the link for this record (upsert_link), do not create it again"
    )]
    LinkNotWritten {
        record_id: RecordId,
        #[source]
        source: Box<CrmError>,
    },
}

fn transport_message(status: &Option<u16>, excerpt: &str) -> String {
    match status {
        Some(s) => format!("CRM.interface answered {s}: {excerpt}"),
        None => format!("CRM.interface could not be reached: {excerpt}"),
    }
}

fn remote_message(code: &ErrorCode, message: &str) -> String {
    let hint = match code {
        ErrorCode::Auth => "check crm_user and crm_password",
        ErrorCode::Impersonate => "no CRM rep has this mailbox's e-mail address",
        ErrorCode::NotFound => "the record does not exist or is deleted",
        ErrorCode::Field => "unknown table or field; check the field mapping",
        ErrorCode::Value => "a field rejected its value",
        ErrorCode::Locked => "the record is locked by another user; retry later",
        ErrorCode::Rights => "the rep lacks the rights for this record",
        ErrorCode::Other(_) => "see the CRM.interface log",
    };
    format!("CRM.interface refused the command ({code}: {message}); {hint}")
}

impl CrmError {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            CrmError::Transport { .. } | CrmError::Timeout | CrmError::CorrMismatch => true,
            CrmError::Parse { .. } => false,
            CrmError::Remote { code, .. } => matches!(code, ErrorCode::Locked),
            CrmError::LinkNotWritten { .. } => true,
        }
    }

    /// The id of a record that was created although the call failed
    /// ([`CrmError::LinkNotWritten`]).
    pub fn created_record(&self) -> Option<RecordId> {
        match self {
            CrmError::LinkNotWritten { record_id, .. } => Some(*record_id),
            _ => None,
        }
    }

    /// The CRM error code of a refused command, if this is one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            CrmError::Remote { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn parse(detail: impl Into<String>, body: &str) -> CrmError {
        CrmError::Parse {
            detail: detail.into(),
            excerpt: excerpt(body),
        }
    }
}

/// A short, single-line excerpt of an answer body for error messages.
pub fn excerpt(body: &str) -> String {
    let mut out = String::new();
    let mut last_space = false;
    for c in body.chars() {
        if out.chars().count() >= EXCERPT_CHARS {
            out.push('…');
            break;
        }
        if c.is_whitespace() || c.is_control() {
            if !last_space && !out.is_empty() {
                out.push(' ');
            }
            last_space = true;
        } else {
            out.push(c);
            last_space = false;
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_message_names_status_and_excerpt() {
        let e = CrmError::Transport {
            status: Some(503),
            excerpt: "<html>down</html>".into(),
        };
        assert_eq!(
            e.to_string(),
            "CRM.interface answered 503: <html>down</html>"
        );
        assert!(e.is_retryable());
    }

    #[test]
    fn retryable_classification() {
        let remote = |code| CrmError::Remote {
            code,
            message: String::new(),
        };
        assert!(CrmError::Timeout.is_retryable());
        assert!(remote(ErrorCode::Locked).is_retryable());
        for code in [
            ErrorCode::Auth,
            ErrorCode::Field,
            ErrorCode::Value,
            ErrorCode::Rights,
            ErrorCode::Impersonate,
            ErrorCode::NotFound,
        ] {
            assert!(!remote(code).is_retryable());
        }
        assert!(!CrmError::parse("x", "y").is_retryable());
        let link = CrmError::LinkNotWritten {
            record_id: 7,
            source: Box::new(remote(ErrorCode::Value)),
        };
        assert!(link.is_retryable());
        assert_eq!(link.created_record(), Some(7));
        assert!(link.to_string().contains("upsert_link"), "{link}");
    }

    #[test]
    fn excerpt_is_short_and_single_line() {
        let long = "a\n\n  b".to_string() + &"x".repeat(1000);
        let e = excerpt(&long);
        assert!(e.starts_with("a b"));
        assert!(!e.contains('\n'));
        assert!(e.chars().count() <= EXCERPT_CHARS + 1);
    }
}
