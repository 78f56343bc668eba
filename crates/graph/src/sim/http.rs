//! The simulator's HTTP surface: token endpoint, `/v1.0/...` Graph API, `/_sim/...` control API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Value, json};

use super::state::{
    ApiError, ApiResult, CommitFail, Kind, LoggedRequest, State, Sub, View, parse_expand,
};
use super::{GraphSim, Shared};
use crate::util::{decode_component, encode_component, parse_query};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// Splits a raw path into decoded segments; `name('x')` becomes `name`, `x`.
pub(crate) fn split_path(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        match raw.find('(') {
            Some(open) if raw.ends_with(')') && open > 0 => {
                out.push(decode_component(&raw[..open], false));
                let arg = &raw[open + 1..raw.len() - 1];
                out.push(decode_component(arg.trim_matches('\''), false));
            }
            _ => out.push(decode_component(raw, false)),
        }
    }
    out
}

fn json_resp(status: u16, v: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == 204 {
        return code.into_response();
    }
    let mut r = (code, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; odata.metadata=minimal"),
    );
    r
}

pub(crate) fn error_resp(e: ApiError) -> Response {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = json!({
        "error": {
            "code": e.code,
            "message": e.message,
            "innerError": {
                "date": now,
                "request-id": uuid::Uuid::new_v4().to_string(),
                "client-request-id": uuid::Uuid::new_v4().to_string(),
            }
        }
    });
    let mut r = json_resp(e.status, body);
    if let Some(ra) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&ra.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if let Some(loc) = e.location
        && let Ok(v) = HeaderValue::from_str(&loc)
    {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn result_resp(r: ApiResult) -> Response {
    match r {
        Ok((s, v)) => json_resp(s, v),
        Err(e) => error_resp(e),
    }
}

async fn dispatch(
    AxState(sh): AxState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let segs = split_path(uri.path());
    let query = uri.query().unwrap_or("").to_string();
    let first = segs.first().map(String::as_str).unwrap_or("");
    if first == "_sim" {
        return super::control::handle(GraphSim { shared: sh }, method, &segs[1..], &query, &body)
            .await;
    }
    if segs.len() == 4
        && segs[1] == "oauth2"
        && segs[2] == "v2.0"
        && segs[3] == "token"
        && method == Method::POST
    {
        return token(&sh, &segs[0], &headers, &body);
    }
    if first == "v1.0" {
        return graph(sh, method, &segs[1..], uri.path(), &query, &headers, &body).await;
    }
    error_resp(ApiError::new(
        404,
        "NotFound",
        format!("No such endpoint: {}", uri.path()),
    ))
}

// ---------------------------------------------------------------------------- token

fn aad_error(code: &str) -> Response {
    let n: u64 = code.trim_start_matches("AADSTS").parse().unwrap_or(0);
    let (status, error, text) = match n {
        7000215 => (
            401,
            "invalid_client",
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        ),
        7000222 => (
            401,
            "invalid_client",
            "The provided client secret keys for app are expired. Visit the Azure portal to create new keys for your app.",
        ),
        700016 => (
            400,
            "unauthorized_client",
            "Application was not found in the directory. This can happen if the application has not been installed by the administrator of the tenant.",
        ),
        90002 => (
            400,
            "invalid_request",
            "Tenant not found. Check to make sure you have the correct tenant ID.",
        ),
        70011 => (
            400,
            "invalid_scope",
            "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid.",
        ),
        70003 => (
            400,
            "unsupported_grant_type",
            "The app requested an unsupported grant type.",
        ),
        _ => (400, "invalid_request", "The request failed."),
    };
    let trace = uuid::Uuid::new_v4();
    let now = Utc::now().format("%Y-%m-%d %H:%M:%SZ");
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{n}: {text} Trace ID: {trace} Correlation ID: {trace} Timestamp: {now}"),
        "error_codes": [n],
        "timestamp": now.to_string(),
        "trace_id": trace.to_string(),
        "correlation_id": trace.to_string(),
        "error_uri": format!("https://login.microsoftonline.com/error?code={n}"),
    });
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn token(sh: &Shared, tenant: &str, _headers: &HeaderMap, body: &[u8]) -> Response {
    let mut st = sh.lock();
    st.token_requests += 1;
    if let Some(code) = st.faults.fail_token.clone() {
        if code.eq_ignore_ascii_case("html") {
            let mut r = (StatusCode::OK, "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>Proxy login</body></html>".to_string()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            return r;
        }
        return aad_error(&code);
    }
    let form = parse_query(&String::from_utf8_lossy(body));
    let get = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if !tenant.eq_ignore_ascii_case(&st.cfg.tenant_id) {
        return aad_error("AADSTS90002");
    }
    if get("grant_type") != "client_credentials" {
        return aad_error("AADSTS70003");
    }
    if get("client_id") != st.cfg.client_id {
        return aad_error("AADSTS700016");
    }
    if !get("scope").ends_with("/.default") {
        return aad_error("AADSTS70011");
    }
    if get("client_secret") != st.cfg.client_secret {
        return aad_error("AADSTS7000215");
    }
    let token = super::token::issue(
        &st.cfg.tenant_id,
        &st.cfg.client_id,
        st.faults.token_roles.as_deref(),
        3599,
    );
    st.tokens
        .insert(token.clone(), Instant::now() + Duration::from_secs(3599));
    json_resp(
        200,
        json!({ "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token }),
    )
}

// ---------------------------------------------------------------------------- Graph API

/// Decrements the in-flight counter of a mailbox when the request ends (also on cancel).
struct InflightGuard {
    sh: Arc<Shared>,
    key: String,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut st = self.sh.lock();
        if let Some(n) = st.inflight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

fn q<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// `Prefer` preferences of a request (every `Prefer` header, comma-separated parts).
#[derive(Default)]
struct Prefs {
    immutable: bool,
    page_size: Option<usize>,
    tz: Option<String>,
    text_body: bool,
}

fn prefs(headers: &HeaderMap) -> (Option<String>, Prefs) {
    let all: Vec<String> = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    if all.is_empty() {
        return (None, Prefs::default());
    }
    let joined = all.join(", ");
    let mut p = Prefs::default();
    for part in joined.split(',') {
        let part = part.trim();
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let (k, v) = (
            k.trim().to_ascii_lowercase(),
            v.trim().trim_matches('"').to_string(),
        );
        match k.as_str() {
            "idtype" => p.immutable = v.eq_ignore_ascii_case("immutableid"),
            "odata.maxpagesize" => p.page_size = v.parse().ok(),
            "outlook.timezone" => p.tz = Some(v),
            "outlook.body-content-type" => p.text_body = v.eq_ignore_ascii_case("text"),
            _ => {}
        }
    }
    (Some(joined), p)
}

/// A response that never completes: the connection is dropped without an answer.
fn abort_response() -> Response {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("simulated connection loss"))
    });
    Response::new(axum::body::Body::from_stream(stream))
}

/// POST of a new event / contact / task, or any PATCH, of a mailbox (the commit-fail fault).
fn is_item_write(method: &Method, segs: &[String]) -> bool {
    let last = segs
        .last()
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    (*method == Method::PATCH && segs.len() >= 4)
        || (*method == Method::POST && matches!(last.as_str(), "events" | "contacts" | "tasks"))
}

/// Collection reads the empty-listing fault applies to.
fn is_listing(method: &Method, segs: &[String]) -> bool {
    if *method != Method::GET || segs.len() < 3 {
        return false;
    }
    let l: Vec<String> = segs[2..].iter().map(|s| s.to_ascii_lowercase()).collect();
    let last = l.last().map(String::as_str).unwrap_or("");
    matches!(
        last,
        "events" | "contacts" | "tasks" | "messages" | "calendarview" | "instances" | "delta"
    )
}

async fn graph(
    sh: Arc<Shared>,
    method: Method,
    segs: &[String],
    raw_path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let pairs = parse_query(query);
    let (prefer, prefs) = prefs(headers);
    let if_match = header_str(headers, "if-match");
    let body_json: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(body).ok()
    };
    let arrived = Instant::now();
    let (key, early, latency, serial, commit_fail, empty_once) = {
        let mut st = sh.lock();
        st.request_count += 1;
        let mbx = if segs.len() >= 3 && eq(&segs[0], "users") {
            st.mailbox(&segs[1])
        } else {
            None
        };
        let mbx_key = mbx.map(|i| st.mailboxes[i].upn.to_ascii_lowercase());
        let serial = st.log_request(LoggedRequest {
            method: method.to_string(),
            path: decode_component(raw_path, false),
            query: query.to_string(),
            prefer: prefer.clone(),
            if_match: if_match.clone(),
            body: body_json.clone(),
            at: arrived,
            mailbox: mbx_key.clone(),
            status: 0,
            serial: 0,
        });
        if !body.is_empty() && body_json.is_none() {
            st.log_status(serial, 400);
            return error_resp(ApiError::bad("Unable to read JSON request payload."));
        }
        let bearer = header_str(headers, "authorization")
            .and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
            .unwrap_or_default();
        let valid = st
            .tokens
            .get(&bearer)
            .is_some_and(|exp| *exp > Instant::now());
        if !valid {
            st.log_status(serial, 401);
            return error_resp(ApiError::new(
                401,
                "InvalidAuthenticationToken",
                "Access token is empty or invalid.",
            ));
        }
        if let Err(e) = super::token::check(&bearer, &method, segs) {
            st.log_status(serial, e.status);
            return error_resp(e);
        }
        let mut key = None;
        let mut early = None;
        let mut commit_fail = None;
        let mut empty_once = false;
        if let (Some(i), Some(k)) = (mbx, mbx_key) {
            if st.mailboxes[i].denied {
                st.log_status(serial, 403);
                return error_resp(ApiError::new(
                    403,
                    "ErrorAccessDenied",
                    "Access to OData is disabled.",
                ));
            }
            let n = {
                let n = st.inflight.entry(k.clone()).or_default();
                *n += 1;
                *n
            };
            let seen = st.max_seen.entry(k.clone()).or_default();
            *seen = (*seen).max(n);
            key = Some(k.clone());
            // Line 13: inside a throttling window every request is answered 429 again; the
            // window itself is not extended.
            if let Some(until) = st.throttled_until.get(&k).copied()
                && until > arrived
            {
                let left = until - arrived;
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                let mut e = ApiError::new(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                );
                e.retry_after = Some(secs.max(1));
                early = Some(e);
            } else if n > st.mailbox_limit {
                let mut e = ApiError::new(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                );
                e.retry_after = Some(1);
                early = Some(e);
            }
            if early.is_none() && st.faults.throttle > 0 {
                st.faults.throttle -= 1;
                let mut e = ApiError::new(
                    429,
                    "TooManyRequests",
                    "Too many requests. Please retry after the time in Retry-After.",
                );
                e.retry_after = Some(st.faults.throttle_secs);
                early = Some(e);
            }
            if let Some(e) = &early
                && st.throttled_until.get(&k).is_none_or(|u| *u <= arrived)
            {
                let secs = e.retry_after.unwrap_or(0);
                if secs > 0 {
                    st.throttled_until
                        .insert(k.clone(), arrived + Duration::from_secs(secs));
                }
            }
            if early.is_none()
                && is_item_write(&method, segs)
                && let Some((left, mode)) = st.faults.commit_fail.get_mut(&k)
                && *left > 0
            {
                *left -= 1;
                commit_fail = Some(*mode);
            }
            if early.is_none()
                && is_listing(&method, segs)
                && st.faults.empty_listing.contains(&k)
                && q(&pairs, "$skip").is_none_or(|s| s == "0")
            {
                st.faults.empty_listing.remove(&k);
                empty_once = true;
            }
        } else if st.faults.throttle > 0 {
            st.faults.throttle -= 1;
            let mut e = ApiError::new(
                429,
                "TooManyRequests",
                "Too many requests. Please retry after the time in Retry-After.",
            );
            e.retry_after = Some(st.faults.throttle_secs);
            early = Some(e);
        }
        if early.is_none() && st.faults.unavailable > 0 {
            st.faults.unavailable -= 1;
            early = Some(ApiError::new(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
            ));
        }
        if let Some(e) = &early {
            st.log_status(serial, e.status);
        }
        (
            key,
            early,
            st.faults.latency,
            serial,
            commit_fail,
            empty_once,
        )
    };
    // Created outside the lock: its Drop takes the lock.
    let guard = key.map(|key| InflightGuard {
        sh: sh.clone(),
        key,
    });
    if let Some(e) = early {
        drop(guard);
        return error_resp(e);
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let ctx = Ctx {
        method,
        segs,
        raw_path,
        pairs: &pairs,
        if_match: if_match.as_deref(),
        body: body_json,
        immutable: prefs.immutable,
        page_size: prefs.page_size,
        tz: prefs.tz.clone(),
        text_body: prefs.text_body,
        empty_once,
    };
    let mut resp = if !segs.is_empty() && eq(&segs[0], "subscriptions") {
        subscriptions(&sh, &ctx).await
    } else {
        let r = {
            let mut st = sh.lock();
            route(&mut st, &ctx)
        };
        sh.wake.notify_one();
        match (commit_fail, &r) {
            (Some(mode), Ok(_)) => {
                let mut st = sh.lock();
                let (status, resp) = match mode {
                    CommitFail::Status500 => (
                        500,
                        error_resp(ApiError::new(
                            500,
                            "InternalServerError",
                            "An internal server error occurred. The operation failed.",
                        )),
                    ),
                    CommitFail::Status503 => (
                        503,
                        error_resp(ApiError::new(
                            503,
                            "ServiceUnavailable",
                            "The service is temporarily unavailable.",
                        )),
                    ),
                    CommitFail::Status504 => (
                        504,
                        error_resp(ApiError::new(
                            504,
                            "GatewayTimeout",
                            "The gateway did not receive a response in time.",
                        )),
                    ),
                    CommitFail::CloseConnection => (0, abort_response()),
                };
                st.log_status(serial, status);
                drop(st);
                drop(guard);
                return resp;
            }
            _ => result_resp(r),
        }
    };
    if ctx.text_body
        && let Ok(v) = HeaderValue::from_str("outlook.body-content-type=\"text\"")
    {
        resp.headers_mut().append("preference-applied", v);
    }
    sh.lock().log_status(serial, resp.status().as_u16());
    drop(guard);
    resp
}

struct Ctx<'a> {
    method: Method,
    segs: &'a [String],
    raw_path: &'a str,
    pairs: &'a [(String, String)],
    if_match: Option<&'a str>,
    body: Option<Value>,
    immutable: bool,
    page_size: Option<usize>,
    tz: Option<String>,
    text_body: bool,
    /// The empty-listing fault fires on this request.
    empty_once: bool,
}

impl Ctx<'_> {
    fn window(&self) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        let s = q(self.pairs, "startDateTime").and_then(parse_instant);
        let e = q(self.pairs, "endDateTime").and_then(parse_instant);
        match (s, e) {
            (Some(s), Some(e)) if s < e => Ok((s, e)),
            _ => Err(ApiError::new(
                400,
                "ErrorInvalidParameter",
                "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
            )),
        }
    }

    fn body(&self) -> Result<&Value, ApiError> {
        self.body
            .as_ref()
            .ok_or_else(|| ApiError::bad("A request body is required."))
    }
    fn view(&self) -> View {
        let (ext, links) = parse_expand(q(self.pairs, "$expand"));
        View {
            immutable: self.immutable,
            expand_ext: ext,
            expand_links: links,
            tz: self.tz.clone(),
            text_body: self.text_body,
        }
    }
}

fn not_allowed() -> ApiError {
    ApiError::new(
        405,
        "Request_BadRequest",
        "Method not allowed on this resource.",
    )
}

/// Pages a collection with `$top` / `$skip` and a nextLink.
fn paged(st: &State, ctx: &Ctx, items: Vec<Value>) -> ApiResult {
    let top = q(ctx.pairs, "$top")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(10)
        .clamp(1, 1000);
    let skip = q(ctx.pairs, "$skip")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(skip).take(top).collect();
    let mut out = json!({ "value": page });
    if skip + top < total {
        let mut qs: Vec<String> = ctx
            .pairs
            .iter()
            .filter(|(k, _)| !eq(k, "$skip"))
            .map(|(k, v)| format!("{k}={}", encode_component(v)))
            .collect();
        qs.push(format!("$skip={}", skip + top));
        out["@odata.nextLink"] =
            Value::String(format!("{}{}?{}", st.base_url, ctx.raw_path, qs.join("&")));
    }
    Ok((200, out))
}

fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

fn delta(
    st: &mut State,
    ctx: &Ctx,
    mbx: usize,
    kind: Kind,
    container: Option<String>,
    windowed: bool,
) -> ApiResult {
    if ctx.method != Method::GET {
        return Err(not_allowed());
    }
    let token = q(ctx.pairs, "$skiptoken")
        .map(|t| (true, t.to_string()))
        .or_else(|| q(ctx.pairs, "$deltatoken").map(|t| (false, t.to_string())));
    let window = if windowed && token.is_none() {
        Some(ctx.window()?)
    } else {
        None
    };
    let view = View {
        expand_ext: None,
        expand_links: false,
        ..ctx.view()
    };
    st.delta_page(
        mbx,
        kind,
        container,
        window,
        token,
        ctx.raw_path,
        &view,
        ctx.page_size,
        ctx.empty_once,
    )
}

/// Item collection + item routes shared by events, contacts, tasks and messages.
fn items(
    st: &mut State,
    ctx: &Ctx,
    mbx: usize,
    kind: Kind,
    container: &str,
    rest: &[String],
) -> ApiResult {
    let view = ctx.view();
    match rest {
        [] => match ctx.method {
            Method::GET if ctx.empty_once => Ok((200, json!({ "value": [] }))),
            Method::GET => {
                let list = st.list_items(
                    mbx,
                    kind,
                    if container.is_empty() {
                        None
                    } else {
                        Some(container)
                    },
                    q(ctx.pairs, "$filter"),
                    &view,
                )?;
                paged(st, ctx, list)
            }
            Method::POST if kind != Kind::Message => {
                let body = ctx.body()?.clone();
                st.create_item(
                    mbx,
                    kind,
                    container,
                    &body,
                    true,
                    &View {
                        expand_ext: None,
                        expand_links: kind == Kind::Task,
                        ..view
                    },
                )
            }
            _ => Err(not_allowed()),
        },
        [id] if kind == Kind::Event && st.mailboxes[mbx].find(kind, id).is_none() => {
            // An occurrence or exception of a series.
            match ctx.method {
                Method::GET => st
                    .get_occurrence(mbx, id, &view)
                    .map(|v| (200, v))
                    .ok_or_else(|| ApiError::not_found(id)),
                Method::PATCH => {
                    let body = ctx.body()?.clone();
                    st.patch_item(mbx, kind, id, &body, ctx.if_match, true, &view)
                }
                Method::DELETE => st.delete_item(mbx, kind, id, true),
                _ => Err(not_allowed()),
            }
        }
        [id, action]
            if kind == Kind::Event && eq(action, "instances") && ctx.method == Method::GET =>
        {
            if ctx.empty_once {
                return Ok((200, json!({ "value": [] })));
            }
            let w = ctx.window()?;
            st.instances(mbx, id, w, &view)
        }
        [id] => {
            let idx = st.mailboxes[mbx]
                .find(kind, id)
                .ok_or_else(|| ApiError::not_found(id))?;
            if !container.is_empty() && st.mailboxes[mbx].items[idx].container != container {
                return Err(ApiError::not_found(id));
            }
            match ctx.method {
                Method::GET => Ok((
                    200,
                    st.mailboxes[mbx].render(&st.mailboxes[mbx].items[idx], &view),
                )),
                Method::PATCH => {
                    let body = ctx.body()?.clone();
                    st.patch_item(
                        mbx,
                        kind,
                        id,
                        &body,
                        ctx.if_match,
                        true,
                        &View {
                            expand_ext: None,
                            expand_links: false,
                            ..view
                        },
                    )
                }
                Method::DELETE => {
                    if let Some(m) = ctx.if_match {
                        let item = &st.mailboxes[mbx].items[idx];
                        let bare = m.trim().trim_start_matches("W/").trim_matches('"');
                        if m.trim() != "*" && bare != item.change_key {
                            return Err(ApiError::new(
                                412,
                                "ErrorIrresolvableConflict",
                                "The change key passed in the request does not match the current change key for the item.",
                            ));
                        }
                    }
                    st.delete_item(mbx, kind, id, true)
                }
                _ => Err(not_allowed()),
            }
        }
        [id, action] if kind == Kind::Task && eq(action, "linkedResources") => match ctx.method {
            Method::GET => st.task_links(mbx, container, id),
            Method::POST => {
                let body = ctx.body()?.clone();
                st.add_task_link(mbx, container, id, &body, true)
            }
            _ => Err(not_allowed()),
        },
        [id, action]
            if kind == Kind::Message && eq(action, "move") && ctx.method == Method::POST =>
        {
            let dest = ctx.body()?["destinationId"].as_str().map(str::to_string);
            let dest = dest.ok_or_else(|| ApiError::bad("destinationId is required."))?;
            st.move_message(mbx, id, &dest, &view)
        }
        _ => Err(ApiError::bad(format!(
            "Resource not found for the segment '{}'.",
            rest.join("/")
        ))),
    }
}

fn route(st: &mut State, ctx: &Ctx) -> ApiResult {
    let segs = ctx.segs;
    if segs.len() < 2 || !eq(&segs[0], "users") {
        return Err(ApiError::bad(format!(
            "Resource not found for the segment '{}'.",
            segs.first().map(String::as_str).unwrap_or("")
        )));
    }
    let Some(mbx) = st.mailbox(&segs[1]) else {
        return Err(ApiError::new(
            404,
            "Request_ResourceNotFound",
            format!(
                "Resource '{}' does not exist or one of its queried reference-property objects are not present.",
                segs[1]
            ),
        ));
    };
    let rest: Vec<&str> = segs[2..].iter().map(String::as_str).collect();
    let owned: Vec<String> = segs[2..].to_vec();
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match l.as_slice() {
        [] => {
            if ctx.method != Method::GET {
                return Err(not_allowed());
            }
            let mb = &st.mailboxes[mbx];
            Ok((
                200,
                json!({
                    "id": mb.user_id,
                    "userPrincipalName": mb.upn,
                    "mail": mb.upn,
                    "displayName": mb.display_name,
                    "accountEnabled": true,
                }),
            ))
        }
        ["calendarview", "delta"] | ["calendar", "calendarview", "delta"] => {
            delta(st, ctx, mbx, Kind::Event, None, true)
        }
        ["calendarview"] | ["calendar", "calendarview"] => {
            if ctx.method != Method::GET {
                return Err(not_allowed());
            }
            let w = ctx.window()?;
            if ctx.empty_once {
                return Ok((200, json!({ "value": [] })));
            }
            let list = st.mailboxes[mbx].calendar_view(w, &ctx.view(), false);
            paged(st, ctx, list)
        }
        ["events", ..] => items(st, ctx, mbx, Kind::Event, "", &owned[1..]),
        ["calendar", "events", ..] => items(st, ctx, mbx, Kind::Event, "", &owned[2..]),
        ["contacts", "delta"] | ["contactfolders", _, "contacts", "delta"] => {
            delta(st, ctx, mbx, Kind::Contact, None, false)
        }
        ["contacts", ..] => {
            let folder = st.mailboxes[mbx].contacts_folder.clone();
            items(st, ctx, mbx, Kind::Contact, &folder, &owned[1..])
        }
        ["todo", "lists"] => {
            if ctx.method != Method::GET {
                return Err(not_allowed());
            }
            let lists: Vec<Value> = st.mailboxes[mbx]
                .lists
                .iter()
                .map(|l| json!({ "id": l.id, "displayName": l.name, "wellknownListName": l.wellknown, "isOwner": true, "isShared": false }))
                .collect();
            Ok((200, json!({ "value": lists })))
        }
        ["todo", "lists", _, ..] => {
            let list = rest[2];
            let Some(li) = st.mailboxes[mbx].lists.iter().position(|x| x.id == list) else {
                return Err(ApiError::new(
                    404,
                    "ErrorItemNotFound",
                    "The specified list was not found.",
                ));
            };
            let list_id = st.mailboxes[mbx].lists[li].id.clone();
            match &l[3..] {
                [] => {
                    let x = &st.mailboxes[mbx].lists[li];
                    Ok((
                        200,
                        json!({ "id": x.id, "displayName": x.name, "wellknownListName": x.wellknown, "isOwner": true, "isShared": false }),
                    ))
                }
                ["tasks", "delta"] => delta(st, ctx, mbx, Kind::Task, Some(list_id), false),
                ["tasks", ..] => items(st, ctx, mbx, Kind::Task, &list_id, &owned[4..]),
                _ => Err(ApiError::bad("Unsupported To Do segment.")),
            }
        }
        ["mailfolders"] => match ctx.method {
            Method::GET => {
                let mb = &st.mailboxes[mbx];
                let list: Vec<Value> = mb
                    .folders
                    .iter()
                    .filter(|f| f.parent.is_none())
                    .map(|f| mb.render_folder(f))
                    .collect();
                paged(st, ctx, list)
            }
            Method::POST => create_folder(st, ctx, mbx, None),
            _ => Err(not_allowed()),
        },
        ["mailfolders", _, ..] => {
            let key = rest[1];
            let Some(fid) = st.mailboxes[mbx].folder(key).map(|f| f.id.clone()) else {
                return Err(ApiError::new(
                    404,
                    "ErrorItemNotFound",
                    "The specified folder could not be found in the store.",
                ));
            };
            match &l[2..] {
                [] if ctx.method == Method::GET => {
                    let mb = &st.mailboxes[mbx];
                    let f = mb
                        .folders
                        .iter()
                        .find(|f| f.id == fid)
                        .map(|f| mb.render_folder(f))
                        .unwrap_or(Value::Null);
                    Ok((200, f))
                }
                ["childfolders"] => match ctx.method {
                    Method::GET => {
                        let mb = &st.mailboxes[mbx];
                        let list: Vec<Value> = mb
                            .folders
                            .iter()
                            .filter(|f| f.parent.as_deref() == Some(fid.as_str()))
                            .map(|f| mb.render_folder(f))
                            .collect();
                        paged(st, ctx, list)
                    }
                    Method::POST => create_folder(st, ctx, mbx, Some(fid)),
                    _ => Err(not_allowed()),
                },
                ["messages", "delta"] => delta(st, ctx, mbx, Kind::Message, Some(fid), false),
                ["messages", ..] => items(st, ctx, mbx, Kind::Message, &fid, &owned[3..]),
                _ => Err(ApiError::bad("Unsupported mailFolder segment.")),
            }
        }
        ["messages", ..] => items(st, ctx, mbx, Kind::Message, "", &owned[1..]),
        _ => Err(ApiError::bad(format!(
            "Resource not found for the segment '{}'.",
            rest.join("/")
        ))),
    }
}

fn create_folder(st: &mut State, ctx: &Ctx, mbx: usize, parent: Option<String>) -> ApiResult {
    let name = ctx.body()?["displayName"]
        .as_str()
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return Err(ApiError::bad("displayName is required."));
    }
    let mb = &mut st.mailboxes[mbx];
    if mb
        .folders
        .iter()
        .any(|f| f.parent == parent && f.name.eq_ignore_ascii_case(&name))
    {
        return Err(ApiError::new(
            409,
            "ErrorFolderExists",
            "A folder with the specified name already exists.",
        ));
    }
    let path = match &parent {
        None => name.clone(),
        Some(p) => {
            // Build via folder_path on a unique parent chain: create directly instead.
            let id = format!(
                "AAMkADF{}AQ==",
                uuid::Uuid::new_v4().simple().to_string().to_uppercase()
            );
            mb.folders.push(super::state::Folder {
                id: id.clone(),
                parent: Some(p.clone()),
                name: name.clone(),
                wellknown: None,
            });
            let f = mb
                .folders
                .iter()
                .find(|f| f.id == id)
                .map(|f| mb.render_folder(f))
                .unwrap_or(Value::Null);
            return Ok((201, f));
        }
    };
    let id = mb.folder_path(&path, true).unwrap_or_default();
    let f = mb
        .folders
        .iter()
        .find(|f| f.id == id)
        .map(|f| mb.render_folder(f))
        .unwrap_or(Value::Null);
    Ok((201, f))
}

// ---------------------------------------------------------------------------- subscriptions

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_url(name: &str, value: &str) -> Result<(), ApiError> {
    let url = reqwest::Url::parse(value)
        .map_err(|_| ApiError::bad(format!("{name} is not a valid URL.")))?;
    let ok = url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url));
    if !ok {
        return Err(ApiError::new(
            400,
            "InvalidRequest",
            format!("Subscription validation request failed. {name} must use https."),
        ));
    }
    Ok(())
}

/// `users/{m}/events` etc. -> (mailbox index, kind, container).
fn subscription_target(
    st: &State,
    resource: &str,
) -> Result<(usize, Kind, Option<String>), ApiError> {
    let path = resource.split('?').next().unwrap_or("");
    let segs = split_path(path);
    let unsupported = || {
        ApiError::new(
            400,
            "InvalidRequest",
            format!("Unsupported resource '{resource}'."),
        )
    };
    if segs.len() < 3 || !eq(&segs[0], "users") {
        if segs.first().is_some_and(|s| eq(s, "me")) {
            return Err(ApiError::new(
                400,
                "InvalidRequest",
                "/me is not valid with an application token.",
            ));
        }
        return Err(unsupported());
    }
    let mbx = st.mailbox(&segs[1]).ok_or_else(|| {
        ApiError::new(
            404,
            "ResourceNotFound",
            format!("User '{}' not found.", segs[1]),
        )
    })?;
    let l: Vec<String> = segs[2..].iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = l.iter().map(String::as_str).collect();
    match l.as_slice() {
        ["events"] | ["calendar", "events"] => Ok((mbx, Kind::Event, None)),
        ["contacts"] | ["contactfolders", _, "contacts"] => Ok((mbx, Kind::Contact, None)),
        ["messages"] => Ok((mbx, Kind::Message, None)),
        ["mailfolders", _, "messages"] => {
            let f = st.mailboxes[mbx]
                .folder(&segs[3])
                .map(|f| f.id.clone())
                .ok_or_else(unsupported)?;
            Ok((mbx, Kind::Message, Some(f)))
        }
        ["todo", "lists", _, "tasks"] => {
            let list = &segs[4];
            if !st.mailboxes[mbx].lists.iter().any(|x| &x.id == list) {
                return Err(unsupported());
            }
            Ok((mbx, Kind::Task, Some(list.clone())))
        }
        _ => Err(unsupported()),
    }
}

fn expiry_limit_minutes(kind: Kind) -> i64 {
    if kind == Kind::Task { 4230 } else { 10080 }
}

fn check_expiry(v: &Value, kind: Kind) -> Result<DateTime<Utc>, ApiError> {
    let s = v
        .as_str()
        .ok_or_else(|| ApiError::bad("expirationDateTime is required."))?;
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::bad("expirationDateTime is not a valid DateTimeOffset."))?;
    let now = Utc::now();
    let max = expiry_limit_minutes(kind);
    if t > now + chrono::Duration::minutes(max) {
        return Err(ApiError::new(
            400,
            "ExtensionError",
            format!("Subscription expiration can only be {max} minutes in the future."),
        ));
    }
    let min = now + chrono::Duration::minutes(45);
    Ok(if t < min { min } else { t })
}

async fn subscriptions(sh: &Arc<Shared>, ctx: &Ctx<'_>) -> Response {
    let segs = ctx.segs;
    match (segs.len(), &ctx.method) {
        (1, &Method::GET) => {
            let st = sh.lock();
            let list: Vec<Value> = st
                .subs
                .iter()
                .map(|s| s.render(&st.cfg.client_id))
                .collect();
            json_resp(200, json!({ "value": list }))
        }
        (1, &Method::POST) => create_subscription(sh, ctx).await,
        (2, m) => {
            let mut st = sh.lock();
            let app = st.cfg.client_id.clone();
            let Some(pos) = st.subs.iter().position(|s| s.id == segs[1]) else {
                return error_resp(ApiError::new(
                    404,
                    "ResourceNotFound",
                    "The object was not found.",
                ));
            };
            match *m {
                Method::GET => json_resp(200, st.subs[pos].render(&app)),
                Method::DELETE => {
                    st.subs.remove(pos);
                    json_resp(204, Value::Null)
                }
                Method::PATCH => {
                    let Some(body) = ctx.body.as_ref() else {
                        return error_resp(ApiError::bad("A request body is required."));
                    };
                    if body.get("lifecycleNotificationUrl").is_some() {
                        return error_resp(ApiError::bad(
                            "lifecycleNotificationUrl can only be set when the subscription is created.",
                        ));
                    }
                    match check_expiry(&body["expirationDateTime"], st.subs[pos].kind) {
                        Ok(t) => {
                            st.subs[pos].expiration = t;
                            json_resp(200, st.subs[pos].render(&app))
                        }
                        Err(e) => error_resp(e),
                    }
                }
                _ => error_resp(not_allowed()),
            }
        }
        (3, &Method::POST) if eq(&segs[2], "reauthorize") => {
            let st = sh.lock();
            if st.subs.iter().any(|s| s.id == segs[1]) {
                json_resp(204, Value::Null)
            } else {
                error_resp(ApiError::new(
                    404,
                    "ResourceNotFound",
                    "The object was not found.",
                ))
            }
        }
        _ => error_resp(not_allowed()),
    }
}

async fn create_subscription(sh: &Arc<Shared>, ctx: &Ctx<'_>) -> Response {
    let Some(body) = ctx.body.clone() else {
        return error_resp(ApiError::bad("A request body is required."));
    };
    // Phase 1: validate the body (under the lock).
    let checked = {
        let st = sh.lock();
        (|| -> Result<Sub, ApiError> {
            let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
            let change_type =
                s("changeType").ok_or_else(|| ApiError::bad("changeType is required."))?;
            let valid = !change_type.trim().is_empty()
                && change_type
                    .split(',')
                    .all(|c| matches!(c.trim(), "created" | "updated" | "deleted"));
            if !valid {
                return Err(ApiError::bad(
                    "changeType must be a comma-separated subset of created, updated, deleted.",
                ));
            }
            let notification_url = s("notificationUrl")
                .ok_or_else(|| ApiError::bad("notificationUrl is required."))?;
            check_url("notificationUrl", &notification_url)?;
            let lifecycle_url = s("lifecycleNotificationUrl");
            if let Some(u) = &lifecycle_url {
                check_url("lifecycleNotificationUrl", u)?;
            }
            let resource = s("resource").ok_or_else(|| ApiError::bad("resource is required."))?;
            let client_state = s("clientState");
            if client_state
                .as_ref()
                .is_some_and(|c| c.chars().count() > 128)
            {
                return Err(ApiError::bad("clientState must be at most 128 characters."));
            }
            if body.get("includeResourceData") == Some(&Value::Bool(true)) {
                return Err(ApiError::bad(
                    "includeResourceData is not supported by the simulator.",
                ));
            }
            let (mbx, kind, container) = subscription_target(&st, &resource)?;
            let expiration = check_expiry(&body["expirationDateTime"], kind)?;
            if kind == Kind::Task && st.faults.reject_todo_subscriptions {
                return Err(ApiError::new(
                    403,
                    "ExtensionError",
                    "Operation: Create; Exception: [Status Code: Forbidden; Reason: Application permissions are not supported for todoTask subscriptions.]",
                ));
            }
            let upn = st.mailboxes[mbx].upn.clone();
            let count = st
                .subs
                .iter()
                .filter(|x| x.mailbox.eq_ignore_ascii_case(&upn) && x.kind != Kind::Task)
                .count();
            if kind != Kind::Task && count >= 1000 {
                return Err(ApiError::new(
                    403,
                    "ExtensionError",
                    "Subscription quota exceeded: 1000 subscriptions per mailbox.",
                ));
            }
            Ok(Sub {
                id: uuid::Uuid::new_v4().to_string(),
                resource,
                change_type,
                notification_url,
                lifecycle_url,
                expiration,
                client_state,
                immutable: ctx.immutable,
                mailbox: upn,
                kind,
                container,
                tls: s("latestSupportedTlsVersion").unwrap_or_else(|| "v1_2".into()),
            })
        })()
    };
    let sub = match checked {
        Ok(s) => s,
        Err(e) => return error_resp(e),
    };
    // Phase 2: the validation handshake with both URLs (no lock held).
    let timeout = sh.lock().validation_timeout;
    let mut urls = vec![sub.notification_url.clone()];
    urls.extend(sub.lifecycle_url.clone());
    for url in urls {
        if let Err(why) = super::delivery::validate_endpoint(&sh.http, &url, timeout).await {
            return error_resp(ApiError::new(
                400,
                "ValidationError",
                format!(
                    "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request. ({why})"
                ),
            ));
        }
    }
    // Phase 3: store.
    let mut st = sh.lock();
    let app = st.cfg.client_id.clone();
    let rendered = sub.render(&app);
    st.subs.push(sub);
    json_resp(201, rendered)
}
