//! Checksummed state files: what the operator gave (a stored spec, a service's desired state)
//! carries a SHA-256 of its content, so a file damaged on disk is told from a good one
//! instead of being acted on or silently dropped.
//!
//! - A spec's text gets a first line `# strata-sha256: <hex>` (a TOML comment: the file stays
//!   readable, and the text below it is exactly what the operator wrote).
//! - A JSON object gets a `"sha256"` member: the hash of the object without it, written
//!   compactly with its keys sorted, so the file stays JSON.
//!
//! Files written before checksums (no header, no member) are accepted as they are: the
//! upgrade path from older agents.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// The first line of a sealed text, before the hex digest.
const TEXT_HEADER: &str = "# strata-sha256: ";
/// The member of a sealed JSON object that holds the digest.
const JSON_MEMBER: &str = "sha256";

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `body` with its checksum line in front.
pub fn seal_text(body: &str) -> String {
    format!("{TEXT_HEADER}{}\n{body}", hex_digest(body.as_bytes()))
}

/// The text a sealed (or older, unsealed) file holds, or why it is damaged.
pub fn unseal_text(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("it is not UTF-8 text ({e})"))?
        .to_string();
    let Some(rest) = text.strip_prefix(TEXT_HEADER) else {
        if text.trim().is_empty() {
            return Err("it is empty".into());
        }
        return Ok(text);
    };
    let (digest, body) = rest
        .split_once('\n')
        .ok_or_else(|| "its checksum line has no text after it".to_string())?;
    if digest != hex_digest(body.as_bytes()) {
        return Err("its content does not match its checksum".into());
    }
    Ok(body.to_string())
}

/// `value` as pretty JSON with its checksum member.
pub fn seal_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let serde_json::Value::Object(mut object) = serde_json::to_value(value)? else {
        return serde_json::to_vec_pretty(value);
    };
    let digest = hex_digest(&serde_json::to_vec(&object)?);
    object.insert(JSON_MEMBER.into(), digest.into());
    serde_json::to_vec_pretty(&object)
}

/// The value a sealed (or older, unsealed) JSON file holds, or why it is damaged.
pub fn unseal_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("it is not valid JSON ({e})"))?;
    if let Some(object) = value.as_object_mut()
        && let Some(stored) = object.remove(JSON_MEMBER)
    {
        let digest = serde_json::to_vec(object).map_err(|e| e.to_string())?;
        if stored.as_str() != Some(hex_digest(&digest).as_str()) {
            return Err("its content does not match its checksum".into());
        }
    }
    serde_json::from_value(value).map_err(|e| format!("it does not hold what it should ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_sealed_text_round_trips_and_keeps_the_operators_text() {
        let body = "name = \"web\"\n# a comment\ncommand = [\"x\"]\n";
        let sealed = seal_text(body);
        assert!(sealed.starts_with(TEXT_HEADER));
        assert!(sealed.ends_with(body));
        assert_eq!(unseal_text(sealed.as_bytes()), Ok(body.to_string()));
    }

    #[test]
    fn damage_to_a_sealed_text_is_found() {
        let sealed = seal_text("name = \"web\"\n");
        let flipped = sealed.replace("web", "wex");
        assert!(
            unseal_text(flipped.as_bytes())
                .unwrap_err()
                .contains("checksum")
        );
        assert!(
            unseal_text(&[0xff, 0xfe, 0x00])
                .unwrap_err()
                .contains("UTF-8")
        );
        assert!(unseal_text(b"").unwrap_err().contains("empty"));
        let cut = &sealed[..TEXT_HEADER.len() + 10];
        assert!(unseal_text(cut.as_bytes()).is_err());
    }

    #[test]
    fn an_older_unsealed_text_is_taken_as_it_is() {
        assert_eq!(
            unseal_text(b"name = \"old\"\n"),
            Ok("name = \"old\"\n".into())
        );
    }

    #[test]
    fn sealed_json_stays_json_and_finds_changed_values() {
        let value: BTreeMap<String, u32> = [("a".to_string(), 1), ("b".to_string(), 2)].into();
        let sealed = seal_json(&value).unwrap();
        let as_json: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        assert!(as_json[JSON_MEMBER].is_string());
        assert_eq!(unseal_json::<BTreeMap<String, u32>>(&sealed), Ok(value));
        let changed = String::from_utf8(sealed).unwrap().replace(": 2", ": 3");
        let err = unseal_json::<BTreeMap<String, u32>>(changed.as_bytes()).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
        assert!(unseal_json::<BTreeMap<String, u32>>(b"{not json").is_err());
    }

    #[test]
    fn older_unsealed_json_is_taken_as_it_is() {
        let old: BTreeMap<String, u32> = unseal_json(br#"{"a": 1}"#).unwrap();
        assert_eq!(old.get("a"), Some(&1));
    }
}
