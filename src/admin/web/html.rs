//! HTML pieces of the admin page: escaping, the page frame, values and times as text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Text made safe for HTML content and attribute values (quoted with `"`).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text for a URL query value (percent-encoded).
pub fn query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A canonical value as escaped HTML: a string as itself, null as "(empty)", anything else as
/// compact JSON.
pub fn value(v: &Value) -> String {
    match v {
        Value::Null => "<span class=\"muted\">(empty)</span>".into(),
        Value::String(s) if s.is_empty() => "<span class=\"muted\">(empty)</span>".into(),
        Value::String(s) => format!("<span class=\"v\">{}</span>", esc(s)),
        other => format!("<code>{}</code>", esc(&other.to_string())),
    }
}

/// A time as RFC 3339 with how long ago (or ahead) it is.
pub fn time(t: DateTime<Utc>) -> String {
    let secs = (Utc::now() - t).num_seconds();
    let rel = if secs >= 0 {
        format!("{} ago", span(secs))
    } else {
        format!("in {}", span(-secs))
    };
    format!(
        "{} <span class=\"muted\">({rel})</span>",
        esc(&t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    )
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// A hidden CSRF field for a form.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2430;background:#f5f6f8}\
header{background:#1f3b57;color:#fff;padding:10px 24px;display:flex;gap:20px;align-items:center}\
header a{color:#fff;text-decoration:none;font-weight:600}header form{margin-left:auto}\
main{padding:16px 24px}h1{font-size:1.4em}h2{font-size:1.05em;margin:0 0 6px}\
section.card{background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:12px 16px;margin-bottom:16px}\
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #e3e6ea;padding:6px 8px;text-align:left;vertical-align:top}\
th{background:#eef1f5;font-weight:600}.muted{color:#6b7685}.error{color:#a4161a;font-weight:600}\
.ok{color:#1b7a3a;font-weight:600}.v{white-space:pre-wrap}code{font-size:.9em;word-break:break-all}\
button{padding:5px 12px;margin-right:6px;border:1px solid #1f3b57;border-radius:4px;background:#fff;cursor:pointer}\
button.primary{background:#1f3b57;color:#fff}input[type=text],input[type=password]{padding:5px;width:95%}\
td.crm{background:#f3f8ff}td.graph{background:#fff8ef}";

/// A whole page: the frame (with the navigation and logout when logged in) around `body`.
pub fn page(title: &str, csrf: Option<&str>, body: &str) -> String {
    let nav = match csrf {
        Some(csrf) => format!(
            "<a href=\"/ui/conflicts\">Conflicts</a><a href=\"/ui/mailboxes\">Mailboxes</a>\
             <a href=\"/ui/dead-letters\">Dead letters</a><a href=\"/ui/audit\">Audit</a>\
             <form method=\"post\" action=\"/ui/logout\">{}<button type=\"submit\">Log out</button></form>",
            csrf_field(csrf)
        ),
        None => String::new(),
    };
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{} · crm-graph-connector</title><style>{STYLE}</style></head>\
         <body><header><span>crm-graph-connector admin</span>{nav}</header><main>{body}</main></body></html>",
        esc(title)
    )
}

/// [`page`] as a response, with headers that keep it out of caches and frames and forbid
/// every script.
pub fn page_response(status: StatusCode, title: &str, csrf: Option<&str>, body: &str) -> Response {
    let mut r = (status, page(title, csrf, body)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

pub fn login_form(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"login-error\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "<section class=\"card\" style=\"max-width:420px\"><h1>Log in</h1>{error}\
         <form method=\"post\" action=\"/ui/login\">\
         <p><label for=\"token\">Admin token (<code>[admin] token</code>)</label><br>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" autofocus></p>\
         <p><button class=\"primary\" id=\"login\" type=\"submit\">Log in</button></p></form></section>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert(\"x\") & 'y'</script>"),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert!(!value(&Value::String("<b>".into())).contains("<b>"));
        assert!(!value(&serde_json::json!(["<i>"])).contains("<i>"));
    }

    #[test]
    fn empty_values_say_so() {
        assert!(value(&Value::Null).contains("(empty)"));
        assert!(value(&Value::String(String::new())).contains("(empty)"));
    }
}
