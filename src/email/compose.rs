//! Email an app service sends (`email.send` through `POST /v1/jobs`): a named template of
//! templates/app_email/ (a new template is three files — `.subject`, `.txt`, `.html` — and no
//! code), its variables checked against what the template uses, a recipient, and the tenant's
//! idempotency key. Accepted emails are written to the outbox before the answer, so the usual
//! send job (retries, dead letters, the outbox sweep) sends each once.
//!
//! An app cannot speak in Ballast's billing voice: Ballast's own templates (templates/email,
//! `super::Template`) are not among these and none of these may take one of their names; a
//! variable that is a link must be an http or https URL; and the email goes from the app
//! sender (`BALLAST_APP_EMAIL_FROM`) under the tenant's name, never from the billing sender.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;

use crate::assets::ConfigDir;
use crate::newtypes::TenantId;

/// The payload of `email.send` at intake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compose {
    /// A template's name (its files in templates/email/).
    pub template: String,
    /// The recipient's address.
    pub to: String,
    /// The template's variables: exactly those it uses.
    #[serde(default)]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

/// Why an email was refused.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// No template of that name.
    #[error("no template {0:?}; there are: {1}")]
    UnknownTemplate(String, String),
    /// Not an email address.
    #[error("to: {0:?} is not an email address")]
    BadAddress(String),
    /// The template uses a variable the request does not give.
    #[error("variables: the template uses {0:?}, which is missing")]
    MissingVariable(String),
    /// The request gives a variable the template does not use (a typo would go unnoticed).
    #[error("variables: the template does not use {0:?}")]
    ExtraVariable(String),
    /// A link variable that is not an http or https URL (`javascript:` and the like).
    #[error("variables: {0:?} must be an http or https URL")]
    BadUrl(String),
    /// The template failed to render with these values.
    #[error("the template does not render with these variables: {0}")]
    Render(String),
}

impl ComposeError {
    /// The variable named, for the error's `variable` field.
    pub fn variable(&self) -> Option<&str> {
        match self {
            ComposeError::MissingVariable(v) | ComposeError::ExtraVariable(v) | ComposeError::BadUrl(v) => Some(v),
            _ => None,
        }
    }
}

/// A template file set is incomplete or does not parse.
#[derive(Debug, thiserror::Error)]
#[error("email templates {path}: {problem}")]
pub struct TemplatesError {
    path: String,
    problem: String,
}

/// The templates app services may send, each with the variables it uses.
#[derive(Debug, Default)]
pub struct AppTemplates {
    templates: BTreeMap<String, ([String; 3], BTreeSet<String>)>,
}

/// A rendered email.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The subject line.
    pub subject: String,
    /// The text body.
    pub text: String,
    /// The HTML body (variables escaped).
    pub html: String,
}

fn environment() -> Environment<'static> {
    let mut env = super::environment();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

impl AppTemplates {
    /// Every complete template of `dir` (checked at start: a template missing a file, or one
    /// that does not parse, stops the member with its name).
    pub fn load(dir: &ConfigDir) -> Result<Self, TemplatesError> {
        let err = |problem: String| TemplatesError { path: dir.shown(), problem };
        let mut parts: BTreeMap<String, [Option<String>; 3]> = BTreeMap::new();
        for (i, ext) in ["subject", "txt", "html"].into_iter().enumerate() {
            for (path, text) in dir.files(ext).map_err(|(p, e)| err(format!("reading {} ({e})", p.display())))? {
                let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
                parts.entry(name).or_default()[i] = Some(text);
            }
        }
        let env = environment();
        let mut templates = BTreeMap::new();
        for (name, files) in parts {
            if super::Template::parse(&name).is_some() {
                return Err(err(format!("{name} is one of Ballast's own templates (templates/email): app templates cannot take its name")));
            }
            let [Some(subject), Some(text), Some(html)] = files else {
                return Err(err(format!("{name}: needs {name}.subject, {name}.txt and {name}.html")));
            };
            let mut used = BTreeSet::new();
            for (ext, src) in [("subject", &subject), ("txt", &text), ("html", &html)] {
                let t = env.template_from_str(src).map_err(|e| err(format!("{name}.{ext}: {e}")))?;
                used.extend(t.undeclared_variables(false));
            }
            templates.insert(name, ([subject, text, html], used));
        }
        Ok(Self { templates })
    }

    /// The templates' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.templates.keys().map(String::as_str)
    }

    /// Checks an email and renders it.
    pub fn render(&self, email: &Compose) -> Result<Rendered, ComposeError> {
        let Some(([subject, text, html], used)) = self.templates.get(&email.template) else {
            return Err(ComposeError::UnknownTemplate(email.template.clone(), self.names().collect::<Vec<_>>().join(", ")));
        };
        if email.to.len() > 254 || email.to.parse::<lettre::Address>().is_err() {
            return Err(ComposeError::BadAddress(email.to.clone()));
        }
        if let Some(missing) = used.iter().find(|v| !email.variables.contains_key(*v)) {
            return Err(ComposeError::MissingVariable(missing.clone()));
        }
        if let Some(extra) = email.variables.keys().find(|v| !used.contains(*v)) {
            return Err(ComposeError::ExtraVariable(extra.clone()));
        }
        if let Some((name, _)) = email.variables.iter().find(|(name, value)| !safe_link(name, value)) {
            return Err(ComposeError::BadUrl(name.clone()));
        }
        let env = environment();
        let vars = serde_json::Value::Object(email.variables.clone());
        let render = |name: &str, src: &str| env.render_named_str(name, src, &vars).map_err(|e| ComposeError::Render(e.to_string()));
        Ok(Rendered { subject: render("subject.txt", subject)?.trim().to_owned(), text: render("body.txt", text)?, html: render("body.html", html)? })
    }
}

/// Whether a variable is safe where a link goes: one named as a link (`…url`, `…link`, `href`)
/// must be an absolute http or https URL, and no value may be a script or data URL whatever
/// its name (a template could put any variable in an `href`).
fn safe_link(name: &str, value: &serde_json::Value) -> bool {
    let Some(text) = value.as_str() else { return true };
    let squeezed: String = text.chars().filter(|c| !c.is_whitespace() && !c.is_control()).collect::<String>().to_ascii_lowercase();
    if ["javascript:", "vbscript:", "data:", "file:"].iter().any(|scheme| squeezed.starts_with(scheme)) {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    if lower.ends_with("url") || lower.ends_with("link") || lower == "href" {
        return reqwest::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    }
    true
}

/// An email an app service's request put in the outbox.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Its outbox row.
    pub outbox_id: uuid::Uuid,
    /// The job that sends it ([`super::job_id`]).
    pub job_id: crate::newtypes::JobId,
    /// The idempotency key had been used: this is the first request's email.
    pub duplicate: bool,
}

/// Why an email was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The email is wrong.
    #[error(transparent)]
    Invalid(#[from] ComposeError),
    /// PostgreSQL failed.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

impl From<sqlx::Error> for AcceptError {
    fn from(e: sqlx::Error) -> Self {
        AcceptError::Db(crate::db::DbError::Sql(e))
    }
}

fn dedup_key(tenant: TenantId, idempotency_key: &str) -> String {
    format!("app:{}:{idempotency_key}", tenant.0)
}

/// What the intake reads before it counts an email: whether an earlier request with this
/// idempotency key wrote it (a repeat is answered without counting against the tenant's email
/// limit again), and the tenant's name, which its app email is sent under. One statement.
pub async fn prior(pool: &crate::db::TenantPool, tenant: TenantId, idempotency_key: Option<&str>) -> Result<(bool, String), AcceptError> {
    let mut tx = pool.begin(tenant).await?;
    let (repeat, name): (bool, Option<String>) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM email_outbox WHERE $1::text IS NOT NULL AND dedup_key = $1), (SELECT name FROM tenants WHERE id = $2)",
    )
    .bind(idempotency_key.map(|k| dedup_key(tenant, k)))
    .bind(tenant.0)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((repeat, name.unwrap_or_default()))
}

/// The sender of a tenant's app email: the app sender's address under the tenant's name.
pub fn sender(app_from: &str, tenant_name: &str) -> String {
    match app_from.parse::<lettre::message::Mailbox>() {
        Ok(mailbox) => lettre::message::Mailbox::new(Some(tenant_name.chars().filter(|c| !c.is_control()).take(100).collect()), mailbox.email).to_string(),
        Err(_) => app_from.to_owned(),
    }
}

/// Writes an app's checked and rendered email (its outbox row, from `from`, and its job's
/// status row) in one tenant transaction. The caller then queues it with [`super::push`]; a
/// lost push is queued by the outbox sweep under the same job id.
pub async fn accept(
    pool: &crate::db::TenantPool,
    tenant: TenantId,
    email: &Compose,
    rendered: &Rendered,
    from: &str,
    idempotency_key: Option<&str>,
) -> Result<Accepted, AcceptError> {
    let fresh = uuid::Uuid::now_v7().to_string();
    let dedup = dedup_key(tenant, idempotency_key.unwrap_or(&fresh));
    let mut tx = pool.begin(tenant).await?;
    let parts = [rendered.subject.as_str(), rendered.text.as_str(), rendered.html.as_str()];
    let (outbox_id, duplicate) = match super::insert(&mut tx, tenant, &dedup, &email.template, &email.to, parts, Some(from)).await? {
        Some(id) => (id, false),
        None => (sqlx::query_scalar("SELECT id FROM email_outbox WHERE dedup_key = $1").bind(&dedup).fetch_one(&mut *tx).await?, true),
    };
    let job_id = super::job_id(outbox_id);
    crate::queue::status::queued(&mut tx, tenant, &job_id.0, super::JOB_KIND).await?;
    tx.commit().await?;
    Ok(Accepted { outbox_id, job_id, duplicate })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose(template: &str, vars: serde_json::Value) -> Compose {
        Compose { template: template.into(), to: "a@example.com".into(), variables: vars.as_object().cloned().unwrap_or_default() }
    }

    #[test]
    fn the_shipped_templates_load_and_variables_are_checked_both_ways() {
        let t = AppTemplates::load(&crate::assets::app_email_templates()).expect("templates/app_email");
        assert!(t.names().any(|n| n == "password_reset"));
        let used: Vec<String> = t.templates["password_reset"].1.iter().cloned().collect();
        let mut vars = serde_json::Map::new();
        for v in &used {
            vars.insert(v.clone(), serde_json::json!(if v.ends_with("url") { "https://app.test/x" } else { "x" }));
        }
        assert!(t.render(&compose("password_reset", serde_json::Value::Object(vars.clone()))).is_ok(), "{used:?}");
        let first = used.first().expect("password_reset uses variables").clone();
        let mut missing = vars.clone();
        missing.remove(&first);
        assert_eq!(t.render(&compose("password_reset", serde_json::Value::Object(missing))).unwrap_err().variable(), Some(first.as_str()));
        vars.insert("typo".into(), serde_json::json!(1));
        assert_eq!(t.render(&compose("password_reset", serde_json::Value::Object(vars))).unwrap_err().variable(), Some("typo"));
        assert!(matches!(t.render(&compose("nope", serde_json::json!({}))), Err(ComposeError::UnknownTemplate(..))));
    }

    #[test]
    fn no_app_template_speaks_in_ballasts_voice_and_links_are_http() {
        let t = AppTemplates::load(&crate::assets::app_email_templates()).expect("templates/app_email");
        for own in super::super::Template::ALL {
            assert!(!t.names().any(|n| n == own.name()), "{} is Ballast's own: apps cannot send it", own.name());
        }
        // A folder that carries one of Ballast's templates is refused at start.
        let dir = tempfile::tempdir().expect("tmp");
        for ext in ["subject", "txt", "html"] {
            std::fs::write(dir.path().join(format!("payment_failed.{ext}")), "Pay {{ amount }}").expect("write");
        }
        let refused = AppTemplates::load(&ConfigDir::Path(dir.path().to_owned())).expect_err("refused").to_string();
        assert!(refused.contains("payment_failed") && refused.contains("Ballast's own"), "{refused}");

        let vars = |url: &str| serde_json::json!({"name": "Ada", "reset_url": url, "expires_in": "30 minutes"});
        assert!(t.render(&compose("password_reset", vars("https://app.test/r?t=1"))).is_ok());
        for bad in ["javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,x", "//evil.test/x", "ftp://x.test/", "reset"] {
            let refused = t.render(&compose("password_reset", vars(bad))).expect_err(bad);
            assert!(matches!(&refused, ComposeError::BadUrl(v) if v == "reset_url"), "{bad}: {refused}");
        }
        let script_in_any = serde_json::json!({"name": "java\tscript:alert(1)", "reset_url": "https://app.test/", "expires_in": "1h"});
        assert!(matches!(t.render(&compose("password_reset", script_in_any)), Err(ComposeError::BadUrl(_))), "a script URL in any variable");
        assert_eq!(sender("Notifications <notifications@example.com>", "Acme"), "Acme <notifications@example.com>");
    }
}
