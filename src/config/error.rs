//! The one error of configuration: a mistake, phrased for the person who edits the file.

/// A configuration mistake, phrased for the person who edits the file.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

pub(super) fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}
