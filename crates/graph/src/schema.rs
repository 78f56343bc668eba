//! Checks JSON bodies against `shared/protocols/graph-v1.0-schema.json`
//! (rules in `graph-v1.0-schema.md`): declared properties only, right JSON types,
//! enum members, annotations (`@...`) skipped, navigation only where expanded.
//!
//! The schema file is not embedded: load it with [`Schema::load`] (tests do) or [`Schema::from_json`].

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read schema file {path}: {message}")]
    Io { path: String, message: String },
    #[error("schema file is not valid: {0}")]
    Invalid(String),
    #[error("type `{0}` is not in the schema subset")]
    UnknownType(String),
}

#[derive(Debug, Deserialize)]
struct PropDef {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    collection: bool,
    #[serde(default = "yes")]
    nullable: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct NavDef {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    collection: bool,
}

#[derive(Debug, Deserialize)]
struct TypeDef {
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    open: bool,
    #[serde(default)]
    properties: HashMap<String, PropDef>,
    #[serde(default)]
    navigation: HashMap<String, NavDef>,
}

/// The parsed schema subset.
#[derive(Debug, Deserialize)]
pub struct Schema {
    types: HashMap<String, TypeDef>,
    enums: HashMap<String, Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    /// Unknown key on an open type.
    Warning,
}

/// One finding.
#[derive(Clone, Debug)]
pub struct Issue {
    pub severity: Severity,
    /// JSON path, e.g. `$.attendees[0].type`.
    pub path: String,
    /// The schema type the offending key or value belongs to.
    pub type_name: String,
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} at {} ({}): {}",
            self.severity, self.path, self.type_name, self.message
        )
    }
}

/// Types whose unknown keys are expected (custom data / notification resourceData).
const OPEN_BY_DESIGN: &[&str] = &["openTypeExtension", "resourceData"];

impl Schema {
    pub fn from_json(text: &str) -> Result<Self, SchemaError> {
        serde_json::from_str(text).map_err(|e| SchemaError::Invalid(e.to_string()))
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self, SchemaError> {
        let p = path.as_ref();
        let text = std::fs::read_to_string(p).map_err(|e| SchemaError::Io {
            path: p.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_json(&text)
    }

    pub fn has_type(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }

    fn derives_from(&self, ty: &str, ancestor: &str) -> bool {
        let mut cur = Some(ty.to_string());
        let mut guard = 0;
        while let Some(t) = cur {
            if t == ancestor {
                return true;
            }
            guard += 1;
            if guard > 32 {
                return false;
            }
            cur = self.types.get(&t).and_then(|d| d.base.clone());
        }
        false
    }

    fn chain(&self, ty: &str) -> Vec<&TypeDef> {
        let mut out = Vec::new();
        let mut cur = Some(ty.to_string());
        while let Some(t) = cur {
            let Some(d) = self.types.get(&t) else { break };
            out.push(d);
            if out.len() > 32 {
                break;
            }
            cur = d.base.clone();
        }
        out
    }

    /// Checks `value` as an instance of `type_name`. `expanded` lists navigation
    /// properties that may appear (inlined or `$expand`ed), at any depth.
    pub fn check(
        &self,
        type_name: &str,
        value: &Value,
        expanded: &[&str],
    ) -> Result<Vec<Issue>, SchemaError> {
        if !self.types.contains_key(type_name) {
            return Err(SchemaError::UnknownType(type_name.to_string()));
        }
        let mut issues = Vec::new();
        self.check_value(type_name, false, true, value, "$", expanded, &mut issues);
        Ok(issues)
    }

    /// Errors plus warnings, except warnings on `openTypeExtension` / `resourceData`
    /// (our own bodies must not carry unknown keys elsewhere). Empty = clean.
    pub fn strict_problems(
        &self,
        type_name: &str,
        value: &Value,
        expanded: &[&str],
    ) -> Vec<String> {
        match self.check(type_name, value, expanded) {
            Ok(issues) => issues
                .into_iter()
                .filter(|i| {
                    i.severity == Severity::Error || !OPEN_BY_DESIGN.contains(&i.type_name.as_str())
                })
                .map(|i| i.to_string())
                .collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_value(
        &self,
        ty: &str,
        collection: bool,
        nullable: bool,
        v: &Value,
        path: &str,
        expanded: &[&str],
        issues: &mut Vec<Issue>,
    ) {
        let err = |issues: &mut Vec<Issue>, msg: String| {
            issues.push(Issue {
                severity: Severity::Error,
                path: path.to_string(),
                type_name: ty.to_string(),
                message: msg,
            })
        };
        if v.is_null() {
            if !nullable {
                err(issues, "null is not allowed here".into());
            }
            return;
        }
        if collection {
            let Some(arr) = v.as_array() else {
                err(
                    issues,
                    format!("expected an array of {ty}, got {}", kind_of(v)),
                );
                return;
            };
            for (i, el) in arr.iter().enumerate() {
                self.check_value(
                    ty,
                    false,
                    nullable,
                    el,
                    &format!("{path}[{i}]"),
                    expanded,
                    issues,
                );
            }
            return;
        }
        if let Some(edm) = ty.strip_prefix("Edm.") {
            if let Some(msg) = check_edm(edm, v) {
                err(issues, msg);
            }
            return;
        }
        if let Some(members) = self.enums.get(ty) {
            match v.as_str() {
                Some(s) if members.iter().any(|m| m == s) => {}
                Some(s) => err(issues, format!("{s:?} is not a member of enum {ty}")),
                None => err(
                    issues,
                    format!("expected an enum string, got {}", kind_of(v)),
                ),
            }
            return;
        }
        if !self.types.contains_key(ty) {
            // Outside the subset (e.g. `calendar`): not checked.
            return;
        }
        let Some(obj) = v.as_object() else {
            err(issues, format!("expected an object, got {}", kind_of(v)));
            return;
        };
        // A derived type named by @odata.type replaces the declared one.
        let mut actual = ty.to_string();
        if let Some(t) = obj.get("@odata.type").and_then(Value::as_str) {
            let t = t.trim_start_matches('#');
            let short = if t.len() > 16 && t[..16].eq_ignore_ascii_case("microsoft.graph.") {
                &t[16..]
            } else {
                t
            };
            if let Some(found) = self.types.keys().find(|k| k.as_str() == short)
                && found != ty
                && self.derives_from(found, ty)
            {
                actual = found.clone();
            }
        }
        let chain = self.chain(&actual);
        let open = chain.first().is_some_and(|d| d.open);
        for (k, val) in obj {
            if k.contains('@') {
                continue;
            }
            let p = format!("{path}.{k}");
            if let Some(prop) = chain.iter().find_map(|d| d.properties.get(k)) {
                self.check_value(
                    &prop.ty,
                    prop.collection,
                    prop.nullable,
                    val,
                    &p,
                    expanded,
                    issues,
                );
            } else if let Some(nav) = chain.iter().find_map(|d| d.navigation.get(k)) {
                if expanded.contains(&k.as_str()) {
                    self.check_value(&nav.ty, nav.collection, true, val, &p, expanded, issues);
                } else {
                    issues.push(Issue {
                        severity: Severity::Error,
                        path: p,
                        type_name: actual.clone(),
                        message: format!(
                            "navigation property `{k}` present but not expanded/inlined"
                        ),
                    });
                }
            } else {
                issues.push(Issue {
                    severity: if open {
                        Severity::Warning
                    } else {
                        Severity::Error
                    },
                    path: p,
                    type_name: actual.clone(),
                    message: format!("`{k}` is not a property of {actual}"),
                });
            }
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_edm(edm: &str, v: &Value) -> Option<String> {
    let want = |what: &str| Some(format!("expected {what} for Edm.{edm}, got {}", kind_of(v)));
    match edm {
        "String" => (!v.is_string()).then(|| want("a string")).flatten(),
        "Boolean" => (!v.is_boolean()).then(|| want("true/false")).flatten(),
        "Int32" | "Int16" | "Byte" | "SByte" => match v.as_i64() {
            Some(n) if i32::try_from(n).is_ok() => None,
            Some(n) => Some(format!("{n} does not fit Edm.{edm}")),
            None => want("an integer"),
        },
        "Int64" => (v.as_i64().is_none()).then(|| want("an integer")).flatten(),
        "Double" | "Single" | "Decimal" => match v {
            Value::Number(_) => None,
            Value::String(s) if matches!(s.as_str(), "NaN" | "INF" | "-INF") => None,
            _ => want("a number"),
        },
        "Guid" => match v.as_str() {
            Some(s) if uuid::Uuid::parse_str(s).is_ok() && s.len() == 36 => None,
            Some(s) => Some(format!("{s:?} is not a GUID")),
            None => want("a GUID string"),
        },
        "DateTimeOffset" => match v.as_str() {
            Some(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => None,
            Some(s) => Some(format!("{s:?} is not an ISO 8601 date-time with offset")),
            None => want("a date-time string"),
        },
        "Date" => match v.as_str() {
            Some(s)
                if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() && s.len() == 10 =>
            {
                None
            }
            Some(s) => Some(format!("{s:?} is not YYYY-MM-DD")),
            None => want("a date string"),
        },
        "TimeOfDay" => match v.as_str() {
            Some(s) if chrono::NaiveTime::parse_from_str(s, "%H:%M:%S%.f").is_ok() => None,
            Some(s) => Some(format!("{s:?} is not hh:mm:ss")),
            None => want("a time string"),
        },
        "Binary" => match v.as_str() {
            Some(s)
                if s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
                }) =>
            {
                None
            }
            Some(_) => Some("not base64".into()),
            None => want("a base64 string"),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mini() -> Schema {
        let text = json!({
            "enums": { "importance": ["low", "normal", "high"] },
            "types": {
                "entity": { "kind": "entity", "base": null, "open": false,
                            "properties": { "id": { "type": "Edm.String", "collection": false, "nullable": false } },
                            "navigation": {} },
                "thing": { "kind": "entity", "base": "entity", "open": false,
                           "properties": {
                               "when": { "type": "Edm.DateTimeOffset", "collection": false, "nullable": true },
                               "tags": { "type": "Edm.String", "collection": true, "nullable": false },
                               "importance": { "type": "importance", "collection": false, "nullable": true },
                               "n": { "type": "Edm.Int32", "collection": false, "nullable": true }
                           },
                           "navigation": { "parts": { "type": "entity", "collection": true } } },
                "openThing": { "kind": "complex", "base": null, "open": true, "properties": {}, "navigation": {} }
            }
        })
        .to_string();
        match Schema::from_json(&text) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn clean_body_has_no_issues() {
        let s = mini();
        let v = json!({"@odata.etag": "x", "id": "1", "when": "2025-01-01T00:00:00.1234567Z", "tags": ["a"], "importance": "high", "n": 3});
        assert!(s.strict_problems("thing", &v, &[]).is_empty());
    }

    #[test]
    fn wrong_types_and_unknown_keys_are_errors() {
        let s = mini();
        let v = json!({"id": 1, "when": "yesterday", "tags": "a", "importance": "urgent", "n": 1.5, "bogus": true});
        let issues = s.check("thing", &v, &[]).unwrap_or_default();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for p in ["$.id", "$.when", "$.tags", "$.importance", "$.n", "$.bogus"] {
            assert!(paths.contains(&p), "missing issue at {p}: {issues:?}");
        }
        assert!(issues.iter().all(|i| i.severity == Severity::Error));
    }

    #[test]
    fn navigation_only_when_expanded() {
        let s = mini();
        let v = json!({"id": "1", "parts": [{"id": "p"}]});
        assert_eq!(s.strict_problems("thing", &v, &[]).len(), 1);
        assert!(s.strict_problems("thing", &v, &["parts"]).is_empty());
    }

    #[test]
    fn open_types_warn() {
        let s = mini();
        let issues = s
            .check("openThing", &json!({"x": 1}), &[])
            .unwrap_or_default();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].severity, Severity::Warning);
        assert_eq!(
            s.strict_problems("openThing", &json!({"x": 1}), &[]).len(),
            1
        );
    }

    #[test]
    fn unknown_type_is_an_error() {
        assert!(matches!(
            mini().check("nope", &json!({}), &[]),
            Err(SchemaError::UnknownType(_))
        ));
    }
}
