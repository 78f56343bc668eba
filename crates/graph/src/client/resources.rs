//! Users, events, contacts, To Do tasks and mail.

use reqwest::Method;
use serde_json::{Value, json};

use super::{Call, GraphClient, GraphError};
use crate::util::odata_literal;
use crate::{CRM_ID_PROPERTY, LINKED_RESOURCE_APP, SYNC_STATE_PROPERTY};

/// Well-known mail folder names accepted as the first segment of a folder path.
pub const WELL_KNOWN_FOLDERS: &[&str] = &[
    "inbox",
    "sentitems",
    "drafts",
    "deleteditems",
    "archive",
    "junkemail",
    "outbox",
    "msgfolderroot",
    "conversationhistory",
    "scheduled",
];

/// Expands both connector properties (CRM id and sync state) on events and contacts.
fn expand_crm_id() -> String {
    format!(
        "singleValueExtendedProperties($filter=id eq {} or id eq {})",
        odata_literal(CRM_ID_PROPERTY),
        odata_literal(SYNC_STATE_PROPERTY)
    )
}

fn properties_patch(props: &[(&str, &str)]) -> Value {
    let list: Vec<Value> = props
        .iter()
        .map(|(id, value)| json!({ "id": id, "value": value }))
        .collect();
    json!({ "singleValueExtendedProperties": list })
}

fn crm_id_filter(crm_id: &str) -> String {
    format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq {} and ep/value eq {})",
        odata_literal(CRM_ID_PROPERTY),
        odata_literal(crm_id)
    )
}

fn object(body: &Value, what: &str) -> Result<serde_json::Map<String, Value>, GraphError> {
    match body {
        Value::Object(m) => Ok(m.clone()),
        other => Err(GraphError::parse(
            format!("{what} must be a JSON object"),
            &other.to_string(),
        )),
    }
}

/// `body` with the CRM-id extended property set (replacing an earlier value of that property).
fn with_crm_property(body: &Value, crm_id: &str, what: &str) -> Result<Value, GraphError> {
    let mut m = object(body, what)?;
    let mut props: Vec<Value> = m
        .get("singleValueExtendedProperties")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|p| {
                    !p["id"]
                        .as_str()
                        .is_some_and(|id| id.eq_ignore_ascii_case(CRM_ID_PROPERTY))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    props.push(json!({ "id": CRM_ID_PROPERTY, "value": crm_id }));
    m.insert("singleValueExtendedProperties".into(), Value::Array(props));
    Ok(Value::Object(m))
}

fn ok_if_missing(r: Result<super::Reply, GraphError>) -> Result<(), GraphError> {
    match r {
        Ok(_) | Err(GraphError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The body for an event create (exposed for snapshot tests).
pub fn event_create_body(
    body: &Value,
    transaction_id: &str,
    crm_id: &str,
) -> Result<Value, GraphError> {
    let mut v = with_crm_property(body, crm_id, "event body")?;
    if let Value::Object(m) = &mut v {
        m.insert(
            "transactionId".into(),
            Value::String(transaction_id.to_string()),
        );
    }
    Ok(v)
}

/// The body for a task create (exposed for snapshot tests).
pub fn task_create_body(body: &Value, crm_id: &str) -> Result<Value, GraphError> {
    let mut m = object(body, "task body")?;
    let mut links: Vec<Value> = m
        .get("linkedResources")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|l| l["applicationName"].as_str() != Some(LINKED_RESOURCE_APP))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    links.push(json!({
        "applicationName": LINKED_RESOURCE_APP,
        "externalId": crm_id,
        "displayName": format!("CRM record {crm_id}"),
    }));
    m.insert("linkedResources".into(), Value::Array(links));
    Ok(Value::Object(m))
}

impl GraphClient {
    // ---------------------------------------------------------------- users

    /// A user by UPN or object id; `None` when Graph does not know it.
    pub async fn get_user(&self, upn: &str) -> Result<Option<Value>, GraphError> {
        self.get_opt(Call::new(Method::GET, self.api(&["users", upn], &[])))
            .await
    }

    // ---------------------------------------------------------------- events

    pub async fn get_event(&self, mailbox: &str, id: &str) -> Result<Option<Value>, GraphError> {
        let url = self.api(
            &["users", mailbox, "events", id],
            &[("$expand", &expand_crm_id())],
        );
        self.get_opt(Call::new(Method::GET, url).outlook(mailbox))
            .await
    }

    /// Creates an event carrying `transactionId` (so the POST may be retried) and the CRM id.
    pub async fn create_event(
        &self,
        mailbox: &str,
        body: &Value,
        transaction_id: &str,
        crm_id: &str,
    ) -> Result<Value, GraphError> {
        let body = event_create_body(body, transaction_id, crm_id)?;
        let url = self.api(&["users", mailbox, "events"], &[]);
        let call = Call::new(Method::POST, url)
            .outlook(mailbox)
            .body(&body)
            .idempotent(true);
        self.execute(call).await?.json()
    }

    pub async fn update_event(
        &self,
        mailbox: &str,
        id: &str,
        patch: &Value,
        if_match: Option<&str>,
    ) -> Result<Value, GraphError> {
        object(patch, "event patch")?;
        let url = self.api(&["users", mailbox, "events", id], &[]);
        let call = Call::new(Method::PATCH, url)
            .outlook(mailbox)
            .body(patch)
            .if_match(if_match);
        self.execute(call).await?.json()
    }

    /// Deletes an event; an event that is already gone counts as deleted.
    pub async fn delete_event(&self, mailbox: &str, id: &str) -> Result<(), GraphError> {
        let url = self.api(&["users", mailbox, "events", id], &[]);
        ok_if_missing(
            self.execute(Call::new(Method::DELETE, url).outlook(mailbox))
                .await,
        )
    }

    pub async fn set_event_crm_id(
        &self,
        mailbox: &str,
        id: &str,
        crm_id: &str,
    ) -> Result<(), GraphError> {
        self.set_event_properties(mailbox, id, &[(CRM_ID_PROPERTY, crm_id)])
            .await
            .map(|_| ())
    }

    /// Sets single-value extended properties (`(id, value)` pairs, e.g. [`CRM_ID_PROPERTY`] and
    /// [`SYNC_STATE_PROPERTY`]) on an event: one PATCH carrying only them, so no meeting mail.
    pub async fn set_event_properties(
        &self,
        mailbox: &str,
        id: &str,
        props: &[(&str, &str)],
    ) -> Result<Value, GraphError> {
        let body = properties_patch(props);
        let url = self.api(&["users", mailbox, "events", id], &[]);
        // The answer (the item, with its new change key) when the server sends one.
        let reply = self
            .execute(Call::new(Method::PATCH, url).outlook(mailbox).body(&body))
            .await?;
        Ok(reply.json().unwrap_or(Value::Null))
    }

    pub async fn find_event_by_crm_id(
        &self,
        mailbox: &str,
        crm_id: &str,
    ) -> Result<Option<Value>, GraphError> {
        let url = self.api(
            &["users", mailbox, "events"],
            &[
                ("$filter", &crm_id_filter(crm_id)),
                ("$expand", &expand_crm_id()),
            ],
        );
        Ok(self.get_all(url, mailbox, true).await?.into_iter().next())
    }

    /// The occurrences and exceptions of a series master that overlap `start..end`
    /// (`/events/{id}/instances`; cancelled occurrences are not among them, graph.md 3.1). A
    /// master Graph no longer knows gives none.
    pub async fn instances(
        &self,
        mailbox: &str,
        master_id: &str,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Value>, GraphError> {
        let (s, e) = (crate::util::rfc3339(start), crate::util::rfc3339(end));
        let url = self.api(
            &["users", mailbox, "events", master_id, "instances"],
            &[("startDateTime", &s), ("endDateTime", &e)],
        );
        match self.get_all(url, mailbox, true).await {
            Err(GraphError::NotFound) => Ok(Vec::new()),
            r => r,
        }
    }

    pub async fn find_events_by_ical_uid(
        &self,
        mailbox: &str,
        ical_uid: &str,
    ) -> Result<Vec<Value>, GraphError> {
        let filter = format!("iCalUId eq {}", odata_literal(ical_uid));
        let url = self.api(
            &["users", mailbox, "events"],
            &[("$filter", &filter), ("$expand", &expand_crm_id())],
        );
        self.get_all(url, mailbox, true).await
    }

    // ---------------------------------------------------------------- contacts

    pub async fn get_contact(&self, mailbox: &str, id: &str) -> Result<Option<Value>, GraphError> {
        let url = self.api(
            &["users", mailbox, "contacts", id],
            &[("$expand", &expand_crm_id())],
        );
        self.get_opt(Call::new(Method::GET, url).outlook(mailbox))
            .await
    }

    /// Creates a contact carrying the CRM id. Not retried on 5xx (no transactionId for
    /// contacts): on `Unavailable`/`Timeout` look it up with `find_contact_by_crm_id` first.
    pub async fn create_contact(
        &self,
        mailbox: &str,
        body: &Value,
        crm_id: &str,
    ) -> Result<Value, GraphError> {
        let body = with_crm_property(body, crm_id, "contact body")?;
        let url = self.api(&["users", mailbox, "contacts"], &[]);
        self.execute(Call::new(Method::POST, url).outlook(mailbox).body(&body))
            .await?
            .json()
    }

    pub async fn update_contact(
        &self,
        mailbox: &str,
        id: &str,
        patch: &Value,
        if_match: Option<&str>,
    ) -> Result<Value, GraphError> {
        object(patch, "contact patch")?;
        let url = self.api(&["users", mailbox, "contacts", id], &[]);
        let call = Call::new(Method::PATCH, url)
            .outlook(mailbox)
            .body(patch)
            .if_match(if_match);
        self.execute(call).await?.json()
    }

    pub async fn delete_contact(&self, mailbox: &str, id: &str) -> Result<(), GraphError> {
        let url = self.api(&["users", mailbox, "contacts", id], &[]);
        ok_if_missing(
            self.execute(Call::new(Method::DELETE, url).outlook(mailbox))
                .await,
        )
    }

    pub async fn set_contact_crm_id(
        &self,
        mailbox: &str,
        id: &str,
        crm_id: &str,
    ) -> Result<(), GraphError> {
        self.set_contact_properties(mailbox, id, &[(CRM_ID_PROPERTY, crm_id)])
            .await
            .map(|_| ())
    }

    /// Like [`GraphClient::set_event_properties`] for a contact.
    pub async fn set_contact_properties(
        &self,
        mailbox: &str,
        id: &str,
        props: &[(&str, &str)],
    ) -> Result<Value, GraphError> {
        let body = properties_patch(props);
        let url = self.api(&["users", mailbox, "contacts", id], &[]);
        // The answer (the item, with its new change key) when the server sends one.
        let reply = self
            .execute(Call::new(Method::PATCH, url).outlook(mailbox).body(&body))
            .await?;
        Ok(reply.json().unwrap_or(Value::Null))
    }

    pub async fn find_contact_by_crm_id(
        &self,
        mailbox: &str,
        crm_id: &str,
    ) -> Result<Option<Value>, GraphError> {
        let url = self.api(
            &["users", mailbox, "contacts"],
            &[
                ("$filter", &crm_id_filter(crm_id)),
                ("$expand", &expand_crm_id()),
            ],
        );
        Ok(self.get_all(url, mailbox, true).await?.into_iter().next())
    }

    // ---------------------------------------------------------------- To Do

    /// The task of a list that carries the connector's linkedResource for `crm_id` (a task a
    /// create made whose link on CRM was never written, or whose answer was lost).
    pub async fn find_task_by_crm_id(
        &self,
        mailbox: &str,
        list: &str,
        crm_id: &str,
    ) -> Result<Option<Value>, GraphError> {
        let want: Option<u64> = crm_id.trim().parse().ok();
        if want.is_none() {
            return Ok(None);
        }
        let url = self.api(
            &["users", mailbox, "todo", "lists", list, "tasks"],
            &[("$expand", "linkedResources")],
        );
        Ok(self
            .get_all(url, mailbox, false)
            .await?
            .into_iter()
            .find(|t| crate::crm_id_on_item(t) == want))
    }

    pub async fn todo_lists(&self, mailbox: &str) -> Result<Vec<Value>, GraphError> {
        self.get_all(
            self.api(&["users", mailbox, "todo", "lists"], &[]),
            mailbox,
            false,
        )
        .await
    }

    /// Id of the list with `wellknownListName` = `defaultList`; `NotFound` if there is none.
    pub async fn default_todo_list(&self, mailbox: &str) -> Result<String, GraphError> {
        self.todo_lists(mailbox)
            .await?
            .iter()
            .find(|l| l["wellknownListName"].as_str() == Some("defaultList"))
            .and_then(|l| l["id"].as_str().map(str::to_string))
            .ok_or(GraphError::NotFound)
    }

    pub async fn get_task(
        &self,
        mailbox: &str,
        list: &str,
        id: &str,
    ) -> Result<Option<Value>, GraphError> {
        let url = self.api(
            &["users", mailbox, "todo", "lists", list, "tasks", id],
            &[("$expand", "linkedResources")],
        );
        self.get_opt(Call::new(Method::GET, url).mailbox(mailbox))
            .await
    }

    /// Creates a task with an inline linkedResource (`applicationName` crm-graph-connector,
    /// `externalId` = the CRM id). Not retried on 5xx.
    pub async fn create_task(
        &self,
        mailbox: &str,
        list: &str,
        body: &Value,
        crm_id: &str,
    ) -> Result<Value, GraphError> {
        let body = task_create_body(body, crm_id)?;
        let url = self.api(&["users", mailbox, "todo", "lists", list, "tasks"], &[]);
        self.execute(Call::new(Method::POST, url).mailbox(mailbox).body(&body))
            .await?
            .json()
    }

    /// Adds the connector's linkedResource (`applicationName` crm-graph-connector, `externalId`
    /// = the CRM id) to an existing task: `POST …/tasks/{id}/linkedResources` (graph.md 3.3).
    /// Used for a task first created in To Do, once its CRM record exists.
    pub async fn add_task_link(
        &self,
        mailbox: &str,
        list: &str,
        id: &str,
        crm_id: &str,
    ) -> Result<Value, GraphError> {
        let body = json!({
            "applicationName": LINKED_RESOURCE_APP,
            "externalId": crm_id,
            "displayName": format!("CRM record {crm_id}"),
        });
        let url = self.api(
            &[
                "users",
                mailbox,
                "todo",
                "lists",
                list,
                "tasks",
                id,
                "linkedResources",
            ],
            &[],
        );
        self.execute(Call::new(Method::POST, url).mailbox(mailbox).body(&body))
            .await?
            .json()
    }

    pub async fn update_task(
        &self,
        mailbox: &str,
        list: &str,
        id: &str,
        patch: &Value,
    ) -> Result<Value, GraphError> {
        object(patch, "task patch")?;
        let url = self.api(&["users", mailbox, "todo", "lists", list, "tasks", id], &[]);
        self.execute(Call::new(Method::PATCH, url).mailbox(mailbox).body(patch))
            .await?
            .json()
    }

    pub async fn delete_task(&self, mailbox: &str, list: &str, id: &str) -> Result<(), GraphError> {
        let url = self.api(&["users", mailbox, "todo", "lists", list, "tasks", id], &[]);
        ok_if_missing(
            self.execute(Call::new(Method::DELETE, url).mailbox(mailbox))
                .await,
        )
    }

    // ---------------------------------------------------------------- mail

    async fn top_folder(&self, mailbox: &str, name: &str) -> Result<Option<String>, GraphError> {
        let lower = name.to_ascii_lowercase();
        if WELL_KNOWN_FOLDERS.contains(&lower.as_str()) {
            let url = self.api(&["users", mailbox, "mailFolders", &lower], &[]);
            if let Some(f) = self
                .get_opt(Call::new(Method::GET, url).outlook(mailbox))
                .await?
            {
                return Ok(f["id"].as_str().map(str::to_string));
            }
        }
        let url = self.api(&["users", mailbox, "mailFolders"], &[("$top", "100")]);
        Ok(find_by_name(self.get_all(url, mailbox, true).await?, name))
    }

    async fn child_folder(
        &self,
        mailbox: &str,
        parent: &str,
        name: &str,
    ) -> Result<Option<String>, GraphError> {
        let url = self.api(
            &["users", mailbox, "mailFolders", parent, "childFolders"],
            &[("$top", "100")],
        );
        match self.get_all(url, mailbox, true).await {
            Ok(list) => Ok(find_by_name(list, name)),
            Err(GraphError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `"Inbox/CRM"` -> folder id, walking childFolders by displayName (letter case ignored);
    /// the first segment may be a well-known name (`inbox`, `sentitems`, ...).
    pub async fn find_mail_folder(
        &self,
        mailbox: &str,
        path: &str,
    ) -> Result<Option<String>, GraphError> {
        let segs: Vec<&str> = path
            .split('/')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let mut current: Option<String> = None;
        for seg in segs {
            let found = match &current {
                None => self.top_folder(mailbox, seg).await?,
                Some(parent) => self.child_folder(mailbox, parent, seg).await?,
            };
            match found {
                Some(id) => current = Some(id),
                None => return Ok(None),
            }
        }
        Ok(current)
    }

    /// A folder found by display name anywhere in the mailbox (breadth first, letter case
    /// ignored; at most 500 folders looked at).
    pub async fn find_folder_anywhere(
        &self,
        mailbox: &str,
        name: &str,
    ) -> Result<Option<String>, GraphError> {
        let url = self.api(&["users", mailbox, "mailFolders"], &[("$top", "100")]);
        let mut level = self.get_all(url, mailbox, true).await?;
        let mut seen = 0usize;
        while !level.is_empty() && seen < 500 {
            if let Some(id) = find_by_name(level.clone(), name) {
                return Ok(Some(id));
            }
            let mut next = Vec::new();
            for f in &level {
                seen += 1;
                let has_children = f["childFolderCount"].as_u64().is_none_or(|n| n > 0);
                let Some(id) = f["id"].as_str().filter(|_| has_children) else {
                    continue;
                };
                let url = self.api(
                    &["users", mailbox, "mailFolders", id, "childFolders"],
                    &[("$top", "100")],
                );
                match self.get_all(url, mailbox, true).await {
                    Ok(children) => next.extend(children),
                    Err(GraphError::NotFound) => {}
                    Err(e) => return Err(e),
                }
                if seen >= 500 {
                    break;
                }
            }
            level = next;
        }
        Ok(None)
    }

    /// Like [`GraphClient::find_mail_folder`] but creates missing folders. A one-segment path
    /// that is not a well-known folder (the success and failure folders) is first looked for by
    /// display name anywhere in the mailbox (expected-behaviour.md 33).
    pub async fn ensure_mail_folder(
        &self,
        mailbox: &str,
        path: &str,
    ) -> Result<String, GraphError> {
        let segs: Vec<&str> = path
            .split('/')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if let [only] = segs.as_slice() {
            if !WELL_KNOWN_FOLDERS.contains(&only.to_ascii_lowercase().as_str()) {
                if let Some(id) = self.find_folder_anywhere(mailbox, only).await? {
                    return Ok(id);
                }
            }
        }
        if segs.is_empty() {
            return Err(GraphError::Http {
                status: 400,
                code: "InvalidFolderPath".into(),
                message: "mail folder path is empty".into(),
            });
        }
        let mut current: Option<String> = None;
        for seg in segs {
            let found = match &current {
                None => self.top_folder(mailbox, seg).await?,
                Some(parent) => self.child_folder(mailbox, parent, seg).await?,
            };
            let id = match found {
                Some(id) => id,
                None => {
                    let url = match &current {
                        None => self.api(&["users", mailbox, "mailFolders"], &[]),
                        Some(p) => {
                            self.api(&["users", mailbox, "mailFolders", p, "childFolders"], &[])
                        }
                    };
                    let body = json!({ "displayName": seg });
                    match self
                        .execute(Call::new(Method::POST, url).outlook(mailbox).body(&body))
                        .await
                    {
                        Ok(r) => r.json()?["id"]
                            .as_str()
                            .map(str::to_string)
                            .ok_or_else(|| {
                                GraphError::parse("created folder without id", &r.body)
                            })?,
                        Err(GraphError::Http { status: 409, .. }) => {
                            // Created concurrently: look it up again.
                            let again = match &current {
                                None => self.top_folder(mailbox, seg).await?,
                                Some(parent) => self.child_folder(mailbox, parent, seg).await?,
                            };
                            again.ok_or(GraphError::NotFound)?
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            current = Some(id);
        }
        current.ok_or(GraphError::NotFound)
    }

    pub async fn list_messages(
        &self,
        mailbox: &str,
        folder_id: &str,
    ) -> Result<Vec<Value>, GraphError> {
        let url = self.api(
            &["users", mailbox, "mailFolders", folder_id, "messages"],
            &[("$top", "50")],
        );
        self.get_all(url, mailbox, true).await
    }

    pub async fn get_message(&self, mailbox: &str, id: &str) -> Result<Option<Value>, GraphError> {
        let url = self.api(&["users", mailbox, "messages", id], &[]);
        self.get_opt(Call::new(Method::GET, url).outlook(mailbox))
            .await
    }

    /// Moves a message; with immutable ids the id stays the same, so a retry is harmless.
    pub async fn move_message(
        &self,
        mailbox: &str,
        id: &str,
        destination_folder_id: &str,
    ) -> Result<Value, GraphError> {
        let url = self.api(&["users", mailbox, "messages", id, "move"], &[]);
        let body = json!({ "destinationId": destination_folder_id });
        self.execute(
            Call::new(Method::POST, url)
                .outlook(mailbox)
                .body(&body)
                .idempotent(true),
        )
        .await?
        .json()
    }
}

fn find_by_name(list: Vec<Value>, name: &str) -> Option<String> {
    list.iter()
        .find(|f| {
            f["displayName"]
                .as_str()
                .is_some_and(|d| d.eq_ignore_ascii_case(name))
        })
        .and_then(|f| f["id"].as_str().map(str::to_string))
}
