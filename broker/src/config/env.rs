//! Owns the environment overlay: `CONCIERGE__SECTION__KEY` variables applied to the file's
//! tree, typed by the defaults, and which source a failing key came from.

use super::{ENV_PREFIX, RawSettings};
use std::collections::BTreeMap;

/// Says whether a failing key came from an environment variable or from the file.
pub(super) fn origin_of(
    key: &str,
    from_env: &BTreeMap<String, String>,
    file_origin: &str,
) -> String {
    from_env
        .iter()
        .find(|(k, _)| {
            key == k.as_str()
                || key.starts_with(&format!("{k}."))
                || k.starts_with(&format!("{key}."))
        })
        .map(|(_, var)| format!("environment variable {var}"))
        .unwrap_or_else(|| file_origin.to_owned())
}

/// Keys holding secrets (wrapped in [`SecretString`](secrecy::SecretString), never shown by
/// `Debug`).
const SECRET_KEYS: &[&str] = &["client_secret", "password", "token", "key_encryption_key"];

/// Applies `CONCIERGE__A__B=v` to `tree` as `a.b = v`. Values are typed by the default value at
/// that key (number, bool, list), else kept as strings. Returns key path -> variable name.
pub(super) fn overlay_env(
    tree: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    let defaults = toml::Value::try_from(RawSettings::default()).ok();
    let mut applied = BTreeMap::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            continue;
        }
        let default = defaults.as_ref().and_then(|d| lookup(d, &path));
        // A secret is text even when it looks like a number (`CONCIERGE__MFA__SMTP__PASSWORD=1234`).
        let typed = if path
            .last()
            .is_some_and(|k| SECRET_KEYS.contains(&k.as_str()))
        {
            toml::Value::String(value)
        } else {
            coerce(&value, default)
        };
        if let Some(key) = insert(tree, &path, typed) {
            applied.insert(key, var);
        }
    }
    applied
}

fn lookup<'a>(v: &'a toml::Value, path: &[String]) -> Option<&'a toml::Value> {
    path.iter().try_fold(v, |v, k| v.as_table()?.get(k))
}

fn coerce(value: &str, default: Option<&toml::Value>) -> toml::Value {
    let parsed = || {
        toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
    };
    match default {
        Some(toml::Value::String(_)) => toml::Value::String(value.to_owned()),
        Some(_) => parsed().unwrap_or_else(|| toml::Value::String(value.to_owned())),
        // Keys without a default (optional ones): numbers, bools and lists parse, the rest is text.
        None => match parsed() {
            Some(
                v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Array(_)),
            ) => v,
            _ => toml::Value::String(value.to_owned()),
        },
    }
}

/// Sets `path` in `tree`; returns the key as errors name it (`upstreams[0].client_secret`), or
/// `None` when the path cannot be set. The segment after `upstreams` picks an existing
/// `[[upstreams]]` table by its index or its `id`: `CONCIERGE__UPSTREAMS__CORP__CLIENT_SECRET`.
fn insert(tree: &mut toml::Table, path: &[String], value: toml::Value) -> Option<String> {
    let (last, parents) = path.split_last()?;
    let mut table = tree;
    let mut key = String::new();
    let mut segments = parents.iter();
    while let Some(p) = segments.next() {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(p);
        let entry = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            // Only `[[upstreams]]`, for their secrets; clients and plugins stay file-only.
            toml::Value::Array(items) if key == "upstreams" => {
                let pick = segments.next()?;
                let index = match pick.parse::<usize>() {
                    Ok(i) => i,
                    Err(_) => items.iter().position(|item| {
                        item.get("id").and_then(toml::Value::as_str) == Some(pick.as_str())
                    })?,
                };
                key.push_str(&format!("[{index}]"));
                items.get_mut(index)?.as_table_mut()?
            }
            _ => return None,
        };
    }
    table.insert(last.clone(), value);
    if !key.is_empty() {
        key.push('.');
    }
    key.push_str(last);
    Some(key)
}
