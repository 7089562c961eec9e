//! Typed reads of `config.json` fields, with errors that name the file and the field.

use serde_json::{Map, Value};

use super::FILE;
use crate::err;
use crate::error::Result;

/// Typed access to a JSON object with errors that name `config.json` and the field.
pub(super) struct Fields<'a>(pub(super) &'a Map<String, Value>);

impl Fields<'_> {
    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| err!(InvalidConfig, "{FILE}: \"{key}\" must be a non-negative integer, got {v}"))
            })
            .transpose()
    }

    pub(super) fn req_usize(&self, key: &str) -> Result<usize> {
        self.usize(key)?.ok_or_else(|| err!(InvalidConfig, "{FILE}: required field \"{key}\" is missing"))
    }

    pub(super) fn u32(&self, key: &str) -> Result<Option<u32>> {
        Ok(self.usize(key)?.map(|n| n as u32))
    }

    /// A token id field that may hold one id or a list of ids (`eos_token_id`).
    pub(super) fn u32_list(&self, key: &str) -> Result<Vec<u32>> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .map(|n| n as u32)
                        .ok_or_else(|| err!(InvalidConfig, "{FILE}: \"{key}\" must hold token ids, got {v}"))
                })
                .collect(),
            Some(_) => Ok(self.u32(key)?.into_iter().collect()),
            None => Ok(Vec::new()),
        }
    }

    pub(super) fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| err!(InvalidConfig, "{FILE}: \"{key}\" must be a number, got {v}")))
            .transpose()
    }

    pub(super) fn req_f64(&self, key: &str, within: &str) -> Result<f64> {
        self.f64(key)?.ok_or_else(|| err!(InvalidConfig, "{FILE}: {within} needs \"{key}\""))
    }

    pub(super) fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| err!(InvalidConfig, "{FILE}: \"{key}\" must be true or false, got {v}")))
            .transpose()
    }

    pub(super) fn str(&self, key: &str) -> Result<Option<String>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err!(InvalidConfig, "{FILE}: \"{key}\" must be a string, got {v}"))
            })
            .transpose()
    }
}

/// A JSON object field, `None` when absent or null.
pub(super) fn object<'a>(f: &Fields<'a>, key: &str) -> Result<Option<&'a Map<String, Value>>> {
    match f.0.get(key) {
        Some(Value::Object(p)) => Ok(Some(p)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(err!(InvalidConfig, "{FILE}: {key} must be an object or null")),
    }
}
