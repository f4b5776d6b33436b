//! TOML text to the raw structs, reporting every type error at once.
//!
//! A syntax error stops everything (key `(syntax)`, with line and column).
//! A type error or unknown key is reported with its key path (and, for
//! the first one, its line and column); the offending key is then taken
//! out of the document and the rest read again, so one run finds every
//! such error and validation still checks all the other values.

use std::path::Path;

use serde_path_to_error::Segment;

use super::error::{ConfigError, ConfigErrors};
use super::raw::RawConfig;

/// At most this many type errors are collected from one file.
const MAX_TYPE_ERRORS: usize = 100;

/// The raw config (with the ill-typed keys left out) and the type errors;
/// `Err` for a syntax error, or a type error about the whole file.
pub(super) fn parse_raw(
    text: &str,
    file: &Path,
) -> Result<(RawConfig, Vec<ConfigError>), ConfigErrors> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| {
        let reason = with_position(e.message(), e.span(), text);
        ConfigError::new(file, "(syntax)", reason)
    })?;
    let first = match serde_path_to_error::deserialize(deserializer) {
        Ok(raw) => return Ok((raw, Vec::new())),
        Err(error) => error,
    };
    let mut errors = vec![ConfigError::new(
        file,
        key_of(first.path()),
        with_position(first.inner().message(), first.inner().span(), text),
    )];
    let Ok(document) = toml::from_str::<toml::Table>(text) else {
        return Err(ConfigErrors { errors });
    };
    let mut document = toml::Value::Table(document);
    let mut path: Vec<Segment> = first.path().iter().cloned().collect();
    // Each round takes one more key out, so the loop ends.
    while errors.len() < MAX_TYPE_ERRORS && remove(&mut document, &path) {
        match serde_path_to_error::deserialize(document.clone()) {
            Ok(raw) => return Ok((raw, errors)),
            Err(error) => {
                let key = key_of(error.path());
                if errors.last().is_some_and(|last| last.key == key) {
                    break;
                }
                errors.push(ConfigError::new(
                    file,
                    key,
                    error.inner().message().trim_end(),
                ));
                path = error.path().iter().cloned().collect();
            }
        }
    }
    Err(ConfigErrors { errors })
}

/// The key path as reported (`listeners[0].address`), `(syntax)` for the root.
fn key_of(path: &serde_path_to_error::Path) -> String {
    let path = path.to_string();
    if path == "." {
        "(syntax)".to_owned()
    } else {
        path
    }
}

/// Takes the value at `path` out of `value` (an array entry becomes an
/// empty table, so later entries keep their indexes); `false` when there
/// is nothing to take out (the error is about the whole document).
fn remove(value: &mut toml::Value, path: &[Segment]) -> bool {
    match path {
        [] => false,
        [last] => match (value, last) {
            (toml::Value::Table(table), Segment::Map { key }) => table.remove(key).is_some(),
            (toml::Value::Array(array), Segment::Seq { index }) if *index < array.len() => {
                array[*index] = toml::Value::Table(toml::Table::new());
                true
            }
            _ => false,
        },
        [first, rest @ ..] => {
            let child = match (value, first) {
                (toml::Value::Table(table), Segment::Map { key }) => table.get_mut(key),
                (toml::Value::Array(array), Segment::Seq { index }) => array.get_mut(*index),
                _ => None,
            };
            child.is_some_and(|child| remove(child, rest))
        }
    }
}

/// `message` plus ` (line L, column C)` when the span is known (1-based).
pub(crate) fn with_position(
    message: &str,
    span: Option<std::ops::Range<usize>>,
    text: &str,
) -> String {
    let message = message.trim_end();
    let Some(offset) = span.map(|s| s.start.min(text.len())) else {
        return message.to_owned();
    };
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("{message} (line {line}, column {column})")
}
