//! What an installer reports on `POST /events/<mac>`: the body, JSON or an HTML form
//! (`application/x-www-form-urlencoded`, what busybox `wget --post-data` and `curl -d` send),
//! with the fields `event` (`started`, `progress`, `installed` or `failed`), an optional
//! `message` and, for clients that cannot set a header, the machine's `token`.
//!
//! Pure: the daemon hands in the body's bytes (already bounded by [`MAX_BODY`]) and its
//! content type. Fields other than these are ignored, so a tool that posts more (cloud-init's
//! `phone_home` adds host keys) is not refused for it; a body that does not parse, a missing or
//! unknown `event`, a field given twice or an over-long message is refused.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest event body accepted (the daemon answers 413 beyond it).
pub const MAX_BODY: usize = 4096;
/// The longest message kept, in characters.
pub const MAX_MESSAGE: usize = 1024;

/// What happened, as the installer says it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Started,
    Progress,
    /// The machine's disk is written: with `after_install: local` it now boots from it.
    Installed,
    Failed,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [EventKind::Started, EventKind::Progress, EventKind::Installed, EventKind::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Progress => "progress",
            EventKind::Installed => "installed",
            EventKind::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parsed report.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Report {
    pub kind: EventKind,
    /// Control characters replaced by spaces, at most [`MAX_MESSAGE`] characters.
    pub message: Option<String>,
    /// The token, when the body carries it.
    pub token: Option<String>,
}

/// Why a body is refused (answered 400, nothing recorded).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum BadEvent {
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error("the body is not UTF-8 form data")]
    NotUtf8,
    #[error("the field {0:?} is given more than once")]
    Duplicate(String),
    #[error("the field {0:?} is not a string")]
    NotAString(&'static str),
    #[error("no `event` field (one of started, progress, installed, failed)")]
    MissingEvent,
    #[error("unknown event {0:?} (expected one of started, progress, installed, failed)")]
    UnknownEvent(String),
    #[error("the message is longer than {MAX_MESSAGE} characters")]
    MessageTooLong,
}

/// Parses an event body. `content_type` is the request's header, if any: JSON for
/// `application/json`, form data for `application/x-www-form-urlencoded`, and otherwise by
/// the first character (`{` is JSON).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Report, BadEvent> {
    let media = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let json = match media.as_deref() {
        Some("application/json") => true,
        Some("application/x-www-form-urlencoded") => false,
        _ => body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
    };
    let fields = if json { json_fields(body)? } else { form_fields(body)? };
    let get = |name: &'static str| -> Result<Option<String>, BadEvent> {
        let mut found = fields.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = found.next().cloned();
        match (first, found.next()) {
            (_, Some(_)) => Err(BadEvent::Duplicate(name.into())),
            (Some(Field::Text(v)), None) => Ok(Some(v)),
            (Some(Field::Other), None) => Err(BadEvent::NotAString(name)),
            (None, None) => Ok(None),
        }
    };
    let event = get("event")?.ok_or(BadEvent::MissingEvent)?;
    let kind =
        EventKind::parse(event.trim()).ok_or_else(|| BadEvent::UnknownEvent(event.chars().take(40).collect()))?;
    let message = match get("message")? {
        Some(m) if m.chars().count() > MAX_MESSAGE => return Err(BadEvent::MessageTooLong),
        Some(m) => Some(m.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>()),
        None => None,
    };
    let message = message.map(|m| m.trim().to_string()).filter(|m| !m.is_empty());
    Ok(Report { kind, message, token: get("token")? })
}

#[derive(Clone, Debug)]
enum Field {
    Text(String),
    /// A JSON value that is not a string.
    Other,
}

/// The members of a JSON object, in order and duplicates included (a map would keep one).
struct Pairs(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = map.next_entry::<String, serde_json::Value>()? {
                    out.push(pair);
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(Members)
    }
}

fn json_fields(body: &[u8]) -> Result<Vec<(String, Field)>, BadEvent> {
    let pairs: Pairs = serde_json::from_slice(body).map_err(|e| BadEvent::Json(e.to_string()))?;
    Ok(pairs
        .0
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, Field::Text(s)),
            _ => (k, Field::Other),
        })
        .collect())
}

fn form_fields(body: &[u8]) -> Result<Vec<(String, Field)>, BadEvent> {
    let text = std::str::from_utf8(body).map_err(|_| BadEvent::NotUtf8)?;
    Ok(form_pairs(text)?.into_iter().map(|(k, v)| (k, Field::Text(v))).collect())
}

/// The `name=value` pairs of form data or a query string: `+` is a space, `%XX` a byte, and
/// the decoded bytes must be UTF-8.
pub fn form_pairs(text: &str) -> Result<Vec<(String, String)>, BadEvent> {
    let decode = |s: &str| -> Result<String, BadEvent> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                    let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or(BadEvent::NotUtf8)?;
                    out.push(byte);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).map_err(|_| BadEvent::NotUtf8)
    };
    text.trim_end_matches(['\r', '\n'])
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ct: Option<&str>, body: &str) -> Report {
        parse(ct, body.as_bytes()).unwrap_or_else(|e| panic!("{body:?}: {e}"))
    }

    #[test]
    fn json_and_form_bodies_say_the_same() {
        let want = Report { kind: EventKind::Installed, message: Some("disk written, sha256 ok".into()), token: None };
        assert_eq!(ok(Some("application/json"), r#"{"event":"installed","message":"disk written, sha256 ok"}"#), want);
        assert_eq!(
            ok(Some("application/x-www-form-urlencoded"), "event=installed&message=disk+written%2C%20sha256+ok"),
            want
        );
        // Without a content type, the first character decides.
        assert_eq!(ok(None, " {\"event\": \"installed\", \"message\": \"disk written, sha256 ok\"}"), want);
        assert_eq!(ok(Some("text/plain"), "event=installed&message=disk written, sha256 ok\n"), want);
        let r = ok(Some("application/json; charset=utf-8"), r#"{"event":"failed","token":"ab12","extra":[1,2]}"#);
        assert_eq!((r.kind, r.message, r.token.as_deref()), (EventKind::Failed, None, Some("ab12")));
        for kind in EventKind::ALL {
            assert_eq!(ok(None, &format!("event={kind}")).kind, kind);
        }
    }

    #[test]
    fn messages_lose_control_characters_and_have_a_limit() {
        let r = ok(None, "event=progress&message=50%25%0d%0adone%1b[2J");
        assert_eq!(r.message.as_deref(), Some("50%  done [2J"));
        assert_eq!(ok(None, "event=started&message=+++").message, None);
        let long = "x".repeat(MAX_MESSAGE + 1);
        assert_eq!(parse(None, format!("event=progress&message={long}").as_bytes()), Err(BadEvent::MessageTooLong));
        assert!(parse(None, format!("event=progress&message={}", &long[1..]).as_bytes()).is_ok());
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let err = |ct: Option<&str>, body: &[u8]| parse(ct, body).unwrap_err();
        assert_eq!(err(None, b""), BadEvent::MissingEvent);
        assert_eq!(err(None, b"message=hello"), BadEvent::MissingEvent);
        assert_eq!(err(None, b"event=done"), BadEvent::UnknownEvent("done".into()));
        assert_eq!(err(None, b"event=installed&event=failed"), BadEvent::Duplicate("event".into()));
        assert_eq!(err(None, b"event=%zz"), BadEvent::NotUtf8);
        assert_eq!(err(None, b"event=%ff"), BadEvent::NotUtf8);
        assert_eq!(err(None, b"event=inst\xffalled"), BadEvent::NotUtf8);
        assert!(matches!(err(Some("application/json"), b"event=installed"), BadEvent::Json(_)));
        assert!(matches!(err(None, b"{\"event\": \"installed\""), BadEvent::Json(_)));
        assert!(matches!(err(None, b"{\"event\": 1}"), BadEvent::NotAString("event")));
        assert!(matches!(err(Some("application/json"), b"[\"installed\"]"), BadEvent::Json(_)));
        assert_eq!(err(None, br#"{"event":"installed","event":"failed"}"#), BadEvent::Duplicate("event".into()));
    }

    #[test]
    fn query_strings_decode_like_forms() {
        assert_eq!(
            form_pairs("token=ab%63&x").unwrap(),
            [("token".to_string(), "abc".to_string()), ("x".into(), "".into())]
        );
    }
}
