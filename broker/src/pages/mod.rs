//! Owns the hosted pages: the handlebars registry (defaults compiled in, an operator override
//! folder on top, strict mode), the English and Korean strings, and the static assets.

use std::collections::HashMap;
use std::path::Path;

use handlebars::Handlebars;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::Locale;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_templates.rs"));
}

/// The pages every template set must provide.
pub const PAGES: [&str; 11] = [
    "login",
    "account",
    "error",
    "signed_out",
    "form_post",
    "logout_confirm",
    "continue_as",
    "session_limit",
    "mfa_choose",
    "mfa_form",
    "mfa_recovery_codes",
];

/// Locale keys the code itself looks up (the templates use their own on top).
pub const TEXT_KEYS: &[&str] = &[
    "error_invalid_credentials",
    "error_account_disabled",
    "error_400_title",
    "error_400_message",
    "error_403_title",
    "error_403_message",
    "error_csrf_message",
    "error_404_title",
    "error_404_message",
    "error_405_title",
    "error_405_message",
    "error_413_title",
    "error_413_message",
    "error_429_title",
    "error_429_message",
    "error_500_title",
    "error_500_message",
    "error_503_title",
    "error_503_message",
    "channel_web",
    "channel_mobile",
    "channel_api",
    "upstream_local",
    "error_authorize_client",
    "error_authorize_redirect",
    "error_saml_idp_initiated",
    "error_logout_hint",
    "error_logout_redirect",
    "error_rate_limited",
    "error_locked_out",
    "error_session_limit_ticket",
    "error_link_required",
    "error_upstream_no_email",
    "error_upstream_refused",
    "error_upstream_failed",
    "error_upstream_unavailable",
    "error_upstream_expired",
    "error_proof_outdated",
    "error_unsolicited_not_linked",
    "mfa_unavailable_message",
    "mfa_removed",
    "mfa_codes_need_factor",
    "mfa_remove_last",
    "mfa_reprove_first",
    "mfa_wrong_code",
    "mfa_wrong_recovery",
];

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
    #[error("locale {locale}: {message}")]
    Locale { locale: String, message: String },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("rendering {page} failed: {message}")]
    Render { page: String, message: String },
}

/// A static asset served under `/static/`.
#[derive(Debug, Clone)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

pub struct Pages {
    hbs: Handlebars<'static>,
    strings: HashMap<Locale, Value>,
    assets: HashMap<String, Asset>,
    product_name: String,
}

fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    Some(match ext.as_str() {
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

impl Pages {
    /// Loads the compiled-in defaults, then the files of `override_dir` on top (same relative
    /// names: `pages/*.hbs`, `partials/*.hbs`, `locales/*.json` merged key by key, `static/*`).
    pub fn load(override_dir: Option<&Path>, product_name: &str) -> Result<Self, PageError> {
        let mut files: HashMap<String, Vec<u8>> = embedded::EMBEDDED
            .iter()
            .map(|(n, c)| ((*n).to_owned(), c.as_bytes().to_vec()))
            .collect();
        let mut locale_overrides: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(dir) = override_dir {
            for (rel, bytes) in read_tree(dir)? {
                if rel.starts_with("locales/") {
                    locale_overrides.push((rel, bytes));
                } else {
                    files.insert(rel, bytes);
                }
            }
        }

        let mut hbs = Handlebars::new();
        hbs.set_strict_mode(true);
        hbs.set_prevent_indent(true);
        let mut assets = HashMap::new();
        let mut base_strings: HashMap<Locale, Map<String, Value>> = HashMap::new();
        for (rel, bytes) in &files {
            let text = || {
                std::str::from_utf8(bytes).map_err(|_| PageError::Template {
                    name: rel.clone(),
                    message: "not UTF-8".into(),
                })
            };
            let tpl_err = |e: handlebars::TemplateError| PageError::Template {
                name: rel.clone(),
                message: e.to_string(),
            };
            if let Some(name) = rel
                .strip_prefix("pages/")
                .and_then(|n| n.strip_suffix(".hbs"))
            {
                hbs.register_template_string(name, text()?)
                    .map_err(tpl_err)?;
            } else if let Some(name) = rel
                .strip_prefix("partials/")
                .and_then(|n| n.strip_suffix(".hbs"))
            {
                hbs.register_partial(name, text()?).map_err(tpl_err)?;
            } else if let Some(tag) = rel
                .strip_prefix("locales/")
                .and_then(|n| n.strip_suffix(".json"))
            {
                if let Some(locale) = Locale::from_tag(tag) {
                    base_strings.insert(locale, parse_strings(tag, bytes)?);
                }
            } else if let Some(name) = rel.strip_prefix("static/")
                && let Some(ct) = content_type(name)
            {
                assets.insert(
                    name.to_owned(),
                    Asset {
                        content_type: ct,
                        body: bytes.clone(),
                    },
                );
            }
        }
        for (rel, bytes) in locale_overrides {
            let tag = rel.trim_start_matches("locales/").trim_end_matches(".json");
            if let Some(locale) = Locale::from_tag(tag) {
                let extra = parse_strings(tag, &bytes)?;
                base_strings.entry(locale).or_default().extend(extra);
            }
        }
        let english = base_strings
            .get(&Locale::En)
            .cloned()
            .ok_or_else(|| PageError::Locale {
                locale: "en".into(),
                message: "missing locales/en.json".into(),
            })?;
        let mut strings = HashMap::new();
        for locale in Locale::ALL {
            let map = base_strings
                .remove(&locale)
                .ok_or_else(|| PageError::Locale {
                    locale: locale.as_str().into(),
                    message: format!("missing locales/{}.json", locale.as_str()),
                })?;
            if let Some(missing) = english.keys().find(|k| !map.contains_key(*k)) {
                return Err(PageError::Locale {
                    locale: locale.as_str().into(),
                    message: format!("missing key `{missing}` (present in en)"),
                });
            }
            strings.insert(locale, Value::Object(map));
        }
        for page in PAGES {
            if !hbs.has_template(page) {
                return Err(PageError::Template {
                    name: format!("pages/{page}.hbs"),
                    message: "missing".into(),
                });
            }
        }
        let pages = Self {
            hbs,
            strings,
            assets,
            product_name: product_name.to_owned(),
        };
        pages.self_check()?;
        Ok(pages)
    }

    /// Renders a page: `vm`'s fields plus `lang`, `t`, `product_name` and `signed_in`.
    pub fn render<T: Serialize>(
        &self,
        page: &str,
        locale: Locale,
        signed_in: bool,
        vm: &T,
    ) -> Result<String, PageError> {
        let render_err = |message: String| PageError::Render {
            page: page.to_owned(),
            message,
        };
        let mut data = match serde_json::to_value(vm).map_err(|e| render_err(e.to_string()))? {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => return Err(render_err("view-model is not an object".into())),
        };
        data.insert("lang".into(), Value::String(locale.as_str().into()));
        data.insert(
            "t".into(),
            self.strings.get(&locale).cloned().unwrap_or(Value::Null),
        );
        data.insert(
            "product_name".into(),
            Value::String(self.product_name.clone()),
        );
        data.insert("signed_in".into(), Value::Bool(signed_in));
        self.hbs
            .render(page, &Value::Object(data))
            .map_err(|e| render_err(e.to_string()))
    }

    /// A UI string for messages the code chooses (errors, channel names).
    pub fn text(&self, locale: Locale, key: &str) -> String {
        self.strings
            .get(&locale)
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or(key)
            .to_owned()
    }

    pub fn asset(&self, name: &str) -> Option<&Asset> {
        self.assets.get(name)
    }

    /// Renders every page in every language with a representative view-model, so that a broken
    /// template or override (strict mode: a missing field is an error) stops the start, not a user.
    fn self_check(&self) -> Result<(), PageError> {
        let samples = sample_view_models();
        for locale in Locale::ALL {
            for (page, vm) in &samples {
                for signed_in in [false, true] {
                    self.render(page, locale, signed_in, vm)?;
                }
            }
        }
        Ok(())
    }
}

fn sample_view_models() -> Vec<(&'static str, Value)> {
    let session = serde_json::json!({
        "channel": "web", "user_agent": "ua", "ip": "127.0.0.1", "auth_time": "t", "last_seen": "t",
        "idle_expires_at": "t", "expires_at": "t", "upstream": "local", "amr": "pwd"
    });
    let device = serde_json::json!({
        "sid": "s1", "current": true, "channel": "web", "user_agent": "ua", "ip": "127.0.0.1",
        "auth_time": "t", "last_seen": "t"
    });
    vec![
        (
            "login",
            serde_json::json!({"csrf_token": "x", "journey": "j", "email": "", "error": null, "upstreams": [], "email_first": false}),
        ),
        (
            "login",
            serde_json::json!({"csrf_token": "x", "journey": "", "email": "a@b", "error": "e",
            "upstreams": [{"id": "corp", "name": "Corp", "url": "/u/corp"}], "email_first": true}),
        ),
        (
            "login",
            serde_json::json!({"csrf_token": "x", "journey": "j", "email": "", "error": null, "upstreams": [],
            "email_first": false, "passkey_options": "{\"publicKey\":{}}"}),
        ),
        (
            "account",
            serde_json::json!({"csrf_token": "x", "user": {"email": "a@b", "name": ""}, "session": session,
            "devices": [device.clone(), {"sid": "s2", "current": false, "channel": "web", "user_agent": "ua",
            "ip": "::1", "auth_time": "t", "last_seen": "t"}], "others": true, "mfa": true,
            "passkeys": [{"id": "AQID", "name": "Laptop", "added": "t", "last_used": null, "synced": true},
            {"id": "BAUG", "name": "Key", "added": "t", "last_used": "t", "synced": false}], "passkey_name_max": 64}),
        ),
        (
            "session_limit",
            serde_json::json!({"csrf_token": "x", "journey": "j", "sessions": [device]}),
        ),
        (
            "error",
            serde_json::json!({"status": 404, "title": "t", "message": "m", "request_id": "r"}),
        ),
        ("signed_out", serde_json::json!({"partial": false})),
        ("signed_out", serde_json::json!({"partial": true})),
        (
            "mfa_choose",
            serde_json::json!({"csrf_token": "x", "journey": "j", "factors": [{"id": "totp", "name": "App", "kind": "totp"}],
            "unavailable": [{"id": "sms", "name": "SMS", "kind": "sms-otp"}], "enroll": [{"id": "sms", "name": "SMS", "kind": "sms-otp"}],
            "recovery": true, "error": "e", "step_up": true, "phr_only": true}),
        ),
        (
            "mfa_choose",
            serde_json::json!({"csrf_token": "x", "journey": "j", "factors": [{"id": "totp", "name": "App", "kind": "totp"}],
            "unavailable": [], "enroll": [], "recovery": false, "error": null, "step_up": false, "phr_first": true}),
        ),
        (
            "mfa_choose",
            serde_json::json!({"csrf_token": "x", "journey": "j", "factors": [], "unavailable": [], "enroll": [],
            "recovery": false, "error": null, "step_up": false, "manage": true, "any_removable": true,
            "removable": [{"id": "totp", "name": "App", "kind": "totp"}],
            "removable_passkeys": [{"id": "AQID", "name": "Laptop"}, {"id": "BAUG", "name": "Key"}]}),
        ),
        (
            "mfa_choose",
            serde_json::json!({"csrf_token": "x", "journey": "j", "factors": [], "unavailable": [], "enroll": [],
            "recovery": false, "error": null, "step_up": false}),
        ),
        (
            "mfa_form",
            serde_json::json!({"csrf_token": "x", "journey": "j", "factor": "totp", "factor_name": "App", "intro": "i",
            "fields": [{"name": "code", "label": "Code", "hint": "h", "input_type": "text", "inputmode": "numeric",
            "autocomplete": "one-time-code", "max_length": 6}], "qr_svg": "<svg></svg>", "secret": "ABC", "error": "e", "enrolling": true}),
        ),
        (
            "mfa_form",
            serde_json::json!({"csrf_token": "x", "journey": "j", "factor": "totp", "factor_name": "App", "intro": "i",
            "fields": [{"name": "code", "label": "Code", "hint": null, "input_type": "text", "inputmode": "numeric",
            "autocomplete": "one-time-code", "max_length": 6}], "qr_svg": null, "secret": null, "error": null, "enrolling": false}),
        ),
        (
            "mfa_passkey",
            serde_json::json!({"csrf_token": "x", "journey": "j", "factor": "passkey", "enrolling": true, "error": "e",
            "data": {"mode": "register", "options": "{\"publicKey\":{}}"}}),
        ),
        (
            "mfa_passkey",
            serde_json::json!({"csrf_token": "x", "journey": "j", "factor": "passkey", "enrolling": false, "error": null,
            "data": {"mode": "authenticate", "options": "{}"}}),
        ),
        (
            "mfa_wait",
            serde_json::json!({"csrf_token": "x", "journey": "j", "factor": "approve", "factor_name": "Approve",
            "intro": "Approve it", "number": "42", "refresh": 2, "approved": false, "error": null}),
        ),
        (
            "mfa_wait",
            serde_json::json!({"csrf_token": "x", "journey": "j", "factor": "approve", "factor_name": "Approve",
            "intro": "Approve it", "number": null, "refresh": null, "approved": true, "error": null}),
        ),
        (
            "mfa_wait",
            serde_json::json!({"csrf_token": "x", "journey": "j", "factor": "approve", "factor_name": "Approve",
            "intro": "Approve it", "number": "42", "refresh": null, "approved": false, "error": "Denied"}),
        ),
        (
            "mfa_recovery_codes",
            serde_json::json!({"csrf_token": "x", "journey": "j", "codes": ["abcde-fghjk"]}),
        ),
        (
            "form_post",
            serde_json::json!({"action": "https://app/cb", "fields": [{"name": "code", "value": "c"}]}),
        ),
    ]
}

fn parse_strings(tag: &str, bytes: &[u8]) -> Result<Map<String, Value>, PageError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| PageError::Locale {
        locale: tag.into(),
        message: e.to_string(),
    })?;
    match v {
        Value::Object(m) if m.values().all(Value::is_string) => Ok(m),
        _ => Err(PageError::Locale {
            locale: tag.into(),
            message: "must be a flat object of strings".into(),
        }),
    }
}

fn read_tree(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, PageError> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), PageError> {
        let read_err = |e: std::io::Error| PageError::Read {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if path.is_dir() {
                walk(&path, base, out)?;
            } else if let Ok(rel) = path.strip_prefix(base) {
                let bytes = std::fs::read(&path).map_err(|e| PageError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                out.push((rel.to_string_lossy().replace('\\', "/"), bytes));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_render_in_both_languages() {
        let p = Pages::load(None, "Concierge").unwrap();
        let vm =
            serde_json::json!({"status": 404, "title": "T", "message": "M", "request_id": "rid"});
        let ko = p.render("error", Locale::Ko, false, &vm).unwrap();
        assert!(ko.contains("lang=\"ko\"") && ko.contains("rid"));
        assert!(p.asset("style.css").is_some());
        assert_ne!(
            p.text(Locale::Ko, "error_404_title"),
            p.text(Locale::En, "error_404_title")
        );
    }

    #[test]
    fn every_key_the_code_uses_exists() {
        let p = Pages::load(None, "Concierge").unwrap();
        for key in TEXT_KEYS {
            for l in Locale::ALL {
                assert_ne!(p.text(l, key), *key, "{key} missing in {}", l.as_str());
            }
        }
    }

    #[test]
    fn overrides_replace_templates_and_merge_strings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("locales")).unwrap();
        std::fs::create_dir_all(dir.path().join("static")).unwrap();
        std::fs::write(
            dir.path().join("locales/ko.json"),
            r#"{"error_404_title": "없음!"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("static/theme.css"), ":root{--accent:#f00}").unwrap();
        let p = Pages::load(Some(dir.path()), "Acme").unwrap();
        assert_eq!(p.text(Locale::Ko, "error_404_title"), "없음!");
        assert_eq!(p.asset("theme.css").unwrap().body, b":root{--accent:#f00}");
    }

    #[test]
    fn a_broken_override_stops_the_start_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pages")).unwrap();
        std::fs::write(dir.path().join("pages/error.hbs"), "{{no_such_field}}").unwrap();
        let e = Pages::load(Some(dir.path()), "Acme")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("error"), "{e}");
    }
}
