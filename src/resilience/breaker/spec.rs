//! The cbreaker middleware's JSON, as vulcand stores it: `Condition`, `Fallback` (a
//! `response` or a `redirect`), `OnTripped` / `OnStandby` (webhooks) and the durations in
//! nanoseconds. Actions may be objects or strings holding JSON, as vulcand accepts both.

use serde::Deserialize;
use serde_json::Value;

use super::condition::Condition;

/// vulcand's defaults for durations that are 0 or absent.
const DEFAULT_FALLBACK_MS: u64 = 10_000;
const DEFAULT_RECOVERY_MS: u64 = 10_000;
const DEFAULT_CHECK_MS: u64 = 100;

/// What a tripped breaker answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Fallback {
    Response {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
    /// 302 to `url` (followed by the request's path with `preserve_path`).
    Redirect { url: String, preserve_path: bool },
}

/// An HTTP request sent when the breaker trips or returns to standby.
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    /// Form values, sent URL-encoded as the body (they win over `body`, as in oxy).
    pub form: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A parsed cbreaker middleware.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSpec {
    pub condition_text: String,
    pub condition: Condition,
    pub fallback: Fallback,
    pub on_tripped: Option<Webhook>,
    pub on_standby: Option<Webhook>,
    pub fallback_ms: u64,
    pub recovery_ms: u64,
    pub check_ms: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SpecDoc {
    condition: String,
    #[serde(default)]
    fallback: Value,
    #[serde(default)]
    on_tripped: Value,
    #[serde(default)]
    on_standby: Value,
    #[serde(default)]
    fallback_duration: Value,
    #[serde(default)]
    recovery_duration: Value,
    #[serde(default)]
    check_period: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ActionDoc {
    r#type: String,
    #[serde(default)]
    action: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResponseDoc {
    status_code: u16,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    body: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RedirectDoc {
    #[serde(rename = "URL")]
    url: String,
    #[serde(default)]
    preserve_path: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WebhookDoc {
    #[serde(rename = "URL")]
    url: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    form: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    body: Value,
}

/// An action given as an object, or as a string holding one; `None` when absent or empty.
fn action(field: &str, v: &Value) -> Result<Option<ActionDoc>, String> {
    let v = match v {
        Value::Null => return Ok(None),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .map_err(|e| format!("{field}: not a JSON action: {e}"))?,
        other => other.clone(),
    };
    ActionDoc::deserialize(&v)
        .map(Some)
        .map_err(|e| format!("{field}: {e}"))
}

/// A body given as a string (its text) or as a JSON object (as written).
fn body(field: &str, v: &Value) -> Result<Vec<u8>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(s.clone().into_bytes()),
        Value::Object(_) | Value::Array(_) => Ok(v.to_string().into_bytes()),
        other => Err(format!(
            "{field}: expected a string or an object, got {other}"
        )),
    }
}

/// A duration in nanoseconds (vulcand's `time.Duration`), or a Go duration string; 0 or
/// absent gives `default_ms`.
fn duration_ms(field: &str, v: &Value, default_ms: u64) -> Result<u64, String> {
    let ms = match v {
        Value::Null => 0,
        Value::Number(n) => match n.as_u64() {
            Some(ns) => ns / 1_000_000 + u64::from(ns % 1_000_000 != 0),
            None => return Err(format!("{field}: expected nanoseconds, got {n}")),
        },
        Value::String(s) if s.is_empty() => 0,
        Value::String(s) => crate::route::duration::parse_go_duration(s)
            .map_err(|e| format!("{field}: {e}"))?
            .as_millis() as u64,
        other => return Err(format!("{field}: expected nanoseconds, got {other}")),
    };
    Ok(if ms == 0 { default_ms } else { ms })
}

fn webhook(field: &str, v: &Value, notes: &mut Vec<String>) -> Result<Option<Webhook>, String> {
    let Some(a) = action(field, v)? else {
        return Ok(None);
    };
    if a.r#type != "webhook" {
        return Err(format!(
            "{field}: Type {:?} is not supported (only \"webhook\")",
            a.r#type
        ));
    }
    let doc = WebhookDoc::deserialize(&a.action).map_err(|e| format!("{field}: {e}"))?;
    if !crate::http::fields::is_token(doc.method.as_bytes()) {
        return Err(format!(
            "{field}: Method {:?} is not a method name",
            doc.method
        ));
    }
    if doc.url.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err(format!(
            "{field}: URL {:?} holds a space or a control byte",
            doc.url
        ));
    }
    if doc
        .headers
        .keys()
        .any(|k| k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("content-length"))
    {
        return Err(format!(
            "{field}: Headers may not set Host or Content-Length"
        ));
    }
    let lower = doc.url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        notes.push(format!(
            "{field}: https webhooks are not sent (ringway has no TLS client yet); the breaker \
             still works"
        ));
        return Ok(None);
    }
    if !lower.starts_with("http://") {
        return Err(format!(
            "{field}: URL {:?} must be http://host[:port]/path",
            doc.url
        ));
    }
    let pairs = |m: std::collections::BTreeMap<String, Vec<String>>| {
        m.into_iter()
            .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
            .collect()
    };
    Ok(Some(Webhook {
        url: doc.url,
        method: doc.method,
        headers: pairs(doc.headers),
        form: pairs(doc.form),
        body: body(&format!("{field}.Body"), &doc.body)?,
    }))
}

impl BreakerSpec {
    /// Parse a cbreaker middleware's document. Notes on what is read but not done go to
    /// `notes` (the report of unsupported settings).
    pub fn parse(config: &Value, notes: &mut Vec<String>) -> Result<BreakerSpec, String> {
        let doc = SpecDoc::deserialize(config).map_err(|e| format!("cbreaker: {e}"))?;
        let condition = Condition::parse(&doc.condition)
            .map_err(|e| format!("cbreaker: Condition {:?}: {e}", doc.condition))?;
        let fallback = match action("Fallback", &doc.fallback)? {
            None => Fallback::Response {
                status: 503,
                content_type: None,
                body: b"Service Unavailable".to_vec(),
            },
            Some(a) => match a.r#type.as_str() {
                "response" => {
                    let r = ResponseDoc::deserialize(&a.action)
                        .map_err(|e| format!("Fallback: {e}"))?;
                    if !(200..=599).contains(&r.status_code) || matches!(r.status_code, 204 | 304) {
                        return Err(format!(
                            "Fallback: StatusCode {} must be between 200 and 599, and not 204 \
                             or 304 (which carry no body)",
                            r.status_code
                        ));
                    }
                    if r.content_type.bytes().any(|b| b < 0x20 || b == 0x7f) {
                        return Err("Fallback: ContentType holds a control character".into());
                    }
                    Fallback::Response {
                        status: r.status_code,
                        content_type: Some(r.content_type).filter(|c| !c.is_empty()),
                        body: body("Fallback.Body", &r.body)?,
                    }
                }
                "redirect" => {
                    let r = RedirectDoc::deserialize(&a.action)
                        .map_err(|e| format!("Fallback: {e}"))?;
                    if r.url.is_empty() || r.url.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
                        return Err(format!("Fallback: URL {:?} is not a URL", r.url));
                    }
                    Fallback::Redirect {
                        url: r.url,
                        preserve_path: r.preserve_path,
                    }
                }
                other => {
                    return Err(format!(
                        "Fallback: Type {other:?} is not supported (\"response\" or \"redirect\")"
                    ))
                }
            },
        };
        Ok(BreakerSpec {
            condition_text: doc.condition,
            condition,
            fallback,
            on_tripped: webhook("OnTripped", &doc.on_tripped, notes)?,
            on_standby: webhook("OnStandby", &doc.on_standby, notes)?,
            fallback_ms: duration_ms(
                "FallbackDuration",
                &doc.fallback_duration,
                DEFAULT_FALLBACK_MS,
            )?,
            recovery_ms: duration_ms(
                "RecoveryDuration",
                &doc.recovery_duration,
                DEFAULT_RECOVERY_MS,
            )?,
            check_ms: duration_ms("CheckPeriod", &doc.check_period, DEFAULT_CHECK_MS)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<BreakerSpec, String> {
        BreakerSpec::parse(&v, &mut Vec::new())
    }

    #[test]
    fn vulcands_documents_parse_with_their_defaults() {
        let s = parse(json!({
            "Condition": "NetworkErrorRatio() > 0.5",
            "Fallback": {"Type": "response", "Action": {"StatusCode": 400, "ContentType": "text/plain", "Body": "Come back later"}},
            "OnTripped": {"Type": "webhook", "Action": {"URL": "http://127.0.0.1:1/t", "Method": "POST", "Form": {"Key": ["Val"]}}},
            "FallbackDuration": 1_500_000_000u64,
            "CheckPeriod": 0
        }))
        .unwrap();
        assert_eq!(
            s.fallback,
            Fallback::Response {
                status: 400,
                content_type: Some("text/plain".into()),
                body: b"Come back later".to_vec()
            }
        );
        assert_eq!(
            (s.fallback_ms, s.recovery_ms, s.check_ms),
            (1_500, 10_000, 100)
        );
        let hook = s.on_tripped.unwrap();
        assert_eq!(hook.form, [("Key".to_string(), "Val".to_string())]);
        assert!(s.on_standby.is_none());
        // Actions given as strings holding JSON, as `vctl` writes them.
        let s = parse(json!({
            "Condition": "LatencyAtQuantileMS(50.0) > 50",
            "Fallback": "{\"Type\": \"redirect\", \"Action\": {\"URL\": \"http://fallback.local\", \"PreservePath\": true}}",
            "OnStandby": ""
        }))
        .unwrap();
        assert_eq!(
            s.fallback,
            Fallback::Redirect {
                url: "http://fallback.local".into(),
                preserve_path: true
            }
        );
        // No Fallback: 503.
        let s = parse(json!({"Condition": "NetworkErrorRatio() > 0.5"})).unwrap();
        assert!(matches!(s.fallback, Fallback::Response { status: 503, .. }));
    }

    #[test]
    fn bad_documents_name_the_field() {
        for (doc, field) in [
            (json!({"Condition": "Nope() > 1"}), "Condition"),
            (
                json!({"Condition": "NetworkErrorRatio() > 0.5", "Fallback": {"Type": "reply"}}),
                "Fallback",
            ),
            (
                json!({"Condition": "NetworkErrorRatio() > 0.5", "Fallback": {"Type": "response", "Action": {"StatusCode": 99}}}),
                "Fallback",
            ),
            (
                json!({"Condition": "NetworkErrorRatio() > 0.5", "OnTripped": {"Type": "webhook", "Action": {"URL": "http://a/"}}}),
                "OnTripped",
            ),
            (
                json!({"Condition": "NetworkErrorRatio() > 0.5", "OnStandby": {"Type": "email", "Action": {}}}),
                "OnStandby",
            ),
            (
                json!({"Condition": "NetworkErrorRatio() > 0.5", "CheckPeriod": -5}),
                "CheckPeriod",
            ),
            (
                json!({"Condition": "NetworkErrorRatio() > 0.5", "Fallback": "{not json"}),
                "Fallback",
            ),
        ] {
            let err = parse(doc.clone()).unwrap_err();
            assert!(err.contains(field), "{doc}: {err}");
        }
        let mut notes = Vec::new();
        let s = BreakerSpec::parse(
            &json!({"Condition": "NetworkErrorRatio() > 0.5", "OnTripped": {"Type": "webhook", "Action": {"URL": "https://hooks.local/", "Method": "POST"}}}),
            &mut notes,
        )
        .unwrap();
        assert!(
            s.on_tripped.is_none() && notes[0].contains("https"),
            "{notes:?}"
        );
    }
}
