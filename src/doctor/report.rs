//! What `doctor` found, and its two renderings: a short checklist for a person (text) and a
//! stable JSON shape for scripts. Pure.
//!
//! The JSON shape:
//!
//! ```json
//! {"target": {"kind": "deployment", "namespace": "shop", "name": "payments"},
//!  "ok": true,
//!  "steps": [{"id": "webhook-configuration", "title": "...", "result": "pass", "detail": "...", "fix": null}, ...],
//!  "injection": {"source": "dry-run", "secret": "payments", "annotation": "...", "initContainer": {...},
//!                "containers": [{"name": "app", "env": [{"name": "ALIBABA_CLOUD_ROLE_ARN", "value": "..."}]}],
//!                "warnings": []},
//!  "tokenChecks": {"token": {"iss": "...", ...}, "checks": [...], "ok": true},
//!  "assumeRole": {"endpoint": "...", "roleArn": "...", ..., "answer": {...}} }
//! ```
//!
//! Every step of [`STEPS`] is always there, in that order (`skip` when it did not apply);
//! `injection`, `tokenChecks` and `assumeRole` are `null` when there is nothing to show.

use serde::Serialize;
use serde_json::Value;

use crate::idaas::check;
use crate::time::rfc3339;

/// The steps, in the order they run and are shown: id and title. The ids are stable.
pub const STEPS: [(&str, &str); 9] = [
    ("webhook-configuration", "Webhook configuration"),
    ("webhook-routing", "Routing to the webhook"),
    ("opt-in", "Opt-in"),
    ("dry-run", "Dry-run injection"),
    ("m2m-token", "M2MToken"),
    ("secret", "Token Secret"),
    ("token", "Token checks"),
    ("pod-injection", "Running pod's injection"),
    ("assume-role", "AssumeRoleWithOIDC"),
];

/// The result of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// Something to look at, or a check that could not be made (not a failure).
    Warn,
    /// Did not apply, or had nothing to check.
    Skip,
}

impl Outcome {
    /// `PASS`, `FAIL`, `WARN`, `SKIP`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Warn => "WARN",
            Outcome::Skip => "SKIP",
        }
    }
}

/// One step's finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub id: &'static str,
    pub title: &'static str,
    pub result: Outcome,
    pub detail: String,
    /// What to do about it (a failure's or a warning's fix).
    pub fix: Option<String>,
}

impl Step {
    /// A step of [`STEPS`] by its id.
    ///
    /// # Panics
    /// On an id that is not in [`STEPS`] (a programming error).
    pub fn new(id: &'static str, result: Outcome, detail: impl Into<String>) -> Self {
        let title = STEPS
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, t)| *t)
            .expect("a step id of STEPS");
        Self {
            id,
            title,
            result,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn pass(id: &'static str, detail: impl Into<String>) -> Self {
        Self::new(id, Outcome::Pass, detail)
    }

    pub fn fail(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(id, Outcome::Fail, detail).with_fix(fix)
    }

    pub fn warn(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(id, Outcome::Warn, detail).with_fix(fix)
    }

    pub fn skip(id: &'static str, detail: impl Into<String>) -> Self {
        Self::new(id, Outcome::Skip, detail)
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// What `doctor` looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetRef {
    /// `pod`, `deployment`, `statefulset`, `daemonset`, `job` or `cronjob`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

/// One environment variable the webhook set (or the container already had).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVar {
    pub name: String,
    /// The value; `(valueFrom)` when the container takes it from elsewhere.
    pub value: String,
}

/// A container that reads the token, with its `ALIBABA_CLOUD_*` variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerEnv {
    pub name: String,
    pub env: Vec<EnvVar>,
}

/// The injected `idaas-projector-wait` init container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitContainer {
    pub image: String,
    /// Its `--timeout` (the pod's `token-wait`).
    pub timeout: Option<String>,
}

/// What a pod carries from the webhook: read from the dry run's answer, or (when there was
/// none) from the webhook's rules applied here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Injection {
    /// `dry-run` (the API server's answer, the webhook's real configuration) or `local` (the
    /// webhook's rules applied by `doctor`, with its `--default-*` flags).
    pub source: &'static str,
    /// The Secret the token volume reads.
    pub secret: Option<String>,
    /// The `idaas-projector.io/injected` annotation.
    pub annotation: Option<String>,
    pub init_container: Option<InitContainer>,
    pub containers: Vec<ContainerEnv>,
    /// The admission warnings.
    pub warnings: Vec<String>,
}

impl Injection {
    /// A variable of the first container that reads the token.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.containers
            .iter()
            .flat_map(|c| c.env.iter())
            .find(|v| v.name == name)
            .map(|v| v.value.as_str())
    }
}

/// What `--assume-role` asked STS and what it answered (secrets redacted).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssumeRole {
    pub endpoint: String,
    pub role_arn: String,
    pub oidc_provider_arn: String,
    pub role_session_name: String,
    /// STS's answer, `AccessKeyId` masked, no `AccessKeySecret` or `SecurityToken`.
    pub answer: Option<Value>,
    /// STS's refusal (`httpStatus`, `code`, `message`, `requestId`, `explanation`).
    pub error: Option<Value>,
}

/// Everything `doctor` found about one pod or workload.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub target: TargetRef,
    /// No step failed.
    pub ok: bool,
    pub steps: Vec<Step>,
    pub injection: Option<Injection>,
    pub token_checks: Option<check::Report>,
    pub assume_role: Option<AssumeRole>,
}

impl Report {
    /// A report of these steps; `ok` when none failed.
    pub fn new(target: TargetRef, steps: Vec<Step>) -> Self {
        let ok = !steps.iter().any(|s| s.result == Outcome::Fail);
        Self {
            target,
            ok,
            steps,
            injection: None,
            token_checks: None,
            assume_role: None,
        }
    }

    /// The ids of the failed steps.
    pub fn failed(&self) -> Vec<&'static str> {
        self.steps
            .iter()
            .filter(|s| s.result == Outcome::Fail)
            .map(|s| s.id)
            .collect()
    }

    /// The JSON form.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The text form: the target, one entry per step (result, title, id; the detail and the
    /// fix indented below), what was injected, the token's checks, STS's answer, the result.
    pub fn text(&self) -> String {
        let t = &self.target;
        let mut out = vec![format!(
            "doctor: {} {} in namespace {}",
            t.kind, t.name, t.namespace
        )];
        out.push(String::new());
        for step in &self.steps {
            out.push(format!(
                "{}  {} ({})",
                step.result.label(),
                step.title,
                step.id
            ));
            out.extend(indented(&step.detail, "      "));
            if let Some(fix) = &step.fix {
                out.extend(indented(&format!("fix: {fix}"), "      "));
            }
        }
        if let Some(injection) = &self.injection {
            out.push(String::new());
            out.extend(injection_text(injection));
        }
        if let Some(checks) = &self.token_checks {
            out.push(String::new());
            out.extend(checks_text(checks));
        }
        if let Some(call) = &self.assume_role {
            out.push(String::new());
            out.extend(assume_role_text(call));
        }
        out.push(String::new());
        let failed = self.failed();
        out.push(match failed.len() {
            0 => "result: no step failed".to_owned(),
            n => format!(
                "result: {n} step{} failed: {}",
                if n == 1 { "" } else { "s" },
                failed.join(", ")
            ),
        });
        out.join("\n")
    }
}

fn indented(text: &str, prefix: &str) -> Vec<String> {
    text.lines().map(|l| format!("{prefix}{l}")).collect()
}

fn injection_text(i: &Injection) -> Vec<String> {
    let source = match i.source {
        "dry-run" => "the API server's dry run",
        _ => "the webhook's rules applied here",
    };
    let mut out = vec![format!("Injection (from {source}):")];
    out.push(format!(
        "  Secret:         {} (key token)",
        i.secret.as_deref().unwrap_or("-")
    ));
    out.push(format!(
        "  annotation:     idaas-projector.io/injected={}",
        i.annotation.as_deref().unwrap_or("-")
    ));
    match &i.init_container {
        Some(init) => out.push(format!(
            "  init container: idaas-projector-wait, image {}, --timeout {}",
            init.image,
            init.timeout.as_deref().unwrap_or("-")
        )),
        None => out.push("  init container: none".to_owned()),
    }
    for c in &i.containers {
        out.push(format!("  container {}:", c.name));
        out.extend(c.env.iter().map(|v| format!("    {}={}", v.name, v.value)));
    }
    if !i.warnings.is_empty() {
        out.push("  warnings:".to_owned());
        out.extend(i.warnings.iter().map(|w| format!("    - {w}")));
    }
    out
}

fn checks_text(r: &check::Report) -> Vec<String> {
    let mut out = vec!["Token checks (the token itself is never shown):".to_owned()];
    if let Some(t) = &r.token {
        out.push(format!(
            "  iss: {}  sub: {}  aud: {}",
            t.iss,
            t.sub.as_deref().unwrap_or("-"),
            t.aud.join(",")
        ));
        out.push(format!(
            "  alg: {}  kid: {}  iat: {}  exp: {}",
            t.alg,
            t.kid.as_deref().unwrap_or("-"),
            rfc3339(t.iat),
            rfc3339(t.exp)
        ));
    }
    for c in &r.checks {
        out.push(format!(
            "  {} {:<14} {}",
            c.result.label(),
            c.name,
            c.detail
        ));
    }
    out
}

fn assume_role_text(call: &AssumeRole) -> Vec<String> {
    let mut out = vec![format!("AssumeRoleWithOIDC at {}:", call.endpoint)];
    out.push(format!("  role:            {}", call.role_arn));
    out.push(format!("  OIDC provider:   {}", call.oidc_provider_arn));
    out.push(format!("  session name:    {}", call.role_session_name));
    if let Some(answer) = &call.answer {
        out.extend(
            crate::sts::text(answer, false)
                .into_iter()
                .map(|l| format!("  {l}")),
        );
    }
    if let Some(error) = &call.error {
        out.push(format!(
            "  refused:         {} ({})",
            error["code"].as_str().unwrap_or("-"),
            error["message"].as_str().unwrap_or("-")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(results: &[Outcome]) -> Report {
        let steps = STEPS
            .iter()
            .zip(results)
            .map(|((id, _), r)| Step::new(id, *r, format!("detail of {id}\nsecond line")))
            .collect();
        let target = TargetRef {
            kind: "deployment",
            namespace: "shop".into(),
            name: "payments".into(),
        };
        Report::new(target, steps)
    }

    #[test]
    fn ok_unless_a_step_failed() {
        use Outcome::*;
        let r = report(&[Pass, Pass, Pass, Warn, Pass, Pass, Pass, Skip, Skip]);
        assert!(r.ok);
        assert!(r.text().ends_with("result: no step failed"));
        let r = report(&[Pass, Pass, Pass, Pass, Fail, Fail, Skip, Skip, Skip]);
        assert!(!r.ok);
        assert_eq!(r.failed(), ["m2m-token", "secret"]);
        assert!(
            r.text()
                .ends_with("result: 2 steps failed: m2m-token, secret")
        );
    }

    #[test]
    fn text_is_a_checklist() {
        use Outcome::*;
        let mut r = report(&[Pass, Fail, Pass, Pass, Pass, Pass, Pass, Skip, Skip]);
        r.steps[1].fix = Some("label the namespace".into());
        let text = r.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "doctor: deployment payments in namespace shop");
        assert_eq!(
            lines[2],
            "PASS  Webhook configuration (webhook-configuration)"
        );
        assert_eq!(lines[3], "      detail of webhook-configuration");
        assert_eq!(lines[4], "      second line");
        assert_eq!(lines[5], "FAIL  Routing to the webhook (webhook-routing)");
        assert_eq!(lines[8], "      fix: label the namespace");
    }

    #[test]
    fn json_shape() {
        use Outcome::*;
        let mut r = report(&[Pass, Pass, Pass, Pass, Pass, Pass, Pass, Skip, Skip]);
        r.injection = Some(Injection {
            source: "dry-run",
            secret: Some("payments".into()),
            annotation: Some("0123456789abcdef".into()),
            init_container: Some(InitContainer {
                image: "idaas-projector:1".into(),
                timeout: Some("5m".into()),
            }),
            containers: vec![ContainerEnv {
                name: "app".into(),
                env: vec![EnvVar {
                    name: "ALIBABA_CLOUD_ROLE_ARN".into(),
                    value: "acs:ram::1:role/r".into(),
                }],
            }],
            warnings: vec![],
        });
        let v: Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(
            v["target"],
            serde_json::json!({"kind": "deployment", "namespace": "shop", "name": "payments"})
        );
        assert_eq!(v["ok"], true);
        let ids: Vec<&str> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, STEPS.map(|(id, _)| id));
        let step = &v["steps"][0];
        for key in ["id", "title", "result", "detail", "fix"] {
            assert!(step.get(key).is_some(), "{key}");
        }
        assert_eq!(step["result"], "pass");
        assert_eq!(v["steps"][8]["result"], "skip");
        assert_eq!(v["injection"]["initContainer"]["timeout"], "5m");
        assert_eq!(
            v["injection"]["containers"][0]["env"][0]["name"],
            "ALIBABA_CLOUD_ROLE_ARN"
        );
        assert_eq!(v["tokenChecks"], Value::Null);
        assert_eq!(v["assumeRole"], Value::Null);
        assert_eq!(
            r.injection.as_ref().unwrap().var("ALIBABA_CLOUD_ROLE_ARN"),
            Some("acs:ram::1:role/r")
        );
    }
}
