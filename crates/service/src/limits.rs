//! What the service accepts from outside, and how much of it: the shape of Meta's ids and the
//! longest texts it keeps. Pure; the webhook parsers (`messenger::webhook`,
//! `dialogflow::webhook`) and the settings use it. Dialogflow session names are checked in
//! `dialogflow::session`.

/// Meta's ids (PSIDs, Page ids, app ids) are 64-bit numbers, sent as digit strings or JSON
/// numbers (reference, messenger-platform.md: "normalise to u64"); today's are 15 to 17
/// digits. Twenty digits hold any `u64`.
pub const MAX_META_ID_DIGITS: usize = 20;

/// Longest message id kept. Meta's `mid`s are `m_` and about 90 characters of base64 (older
/// ones `mid.<ms>:<hex>`, shorter); a `mid` is the dedupe key of its event, so a longer one is
/// refused rather than cut (two cut ids could collide).
pub const MAX_MID_CHARS: usize = 512;

/// Longest message text kept: the Send API's limit for a text message. Texts only matter when
/// they are a whole return phrase, so a longer one is stored cut to this length.
pub const MAX_TEXT_CHARS: usize = 2000;

/// Longest payload, title or metadata kept: Meta limits message metadata to under 1000
/// characters (reference, messenger-platform.md §1.1) and button payloads to 1000. Longer
/// ones are stored cut.
pub const MAX_LABEL_CHARS: usize = 1000;

/// Why `value` is not a Meta id: `None` when it is one (1 to 20 ASCII digits, a `u64`).
pub fn meta_id_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        Some("is empty".to_owned())
    } else if !value.bytes().all(|b| b.is_ascii_digit()) {
        Some("is not a string of digits".to_owned())
    } else if value.len() > MAX_META_ID_DIGITS {
        Some(format!(
            "has {} digits; Meta's ids have at most {MAX_META_ID_DIGITS}",
            value.len()
        ))
    } else if value.parse::<u64>().is_err() {
        Some("is larger than a 64-bit number, as Meta's ids are".to_owned())
    } else {
        None
    }
}

pub fn is_meta_id(value: &str) -> bool {
    meta_id_problem(value).is_none()
}

/// Cuts `text` to at most `max` characters; whether it was cut.
pub fn truncate_chars(text: &mut String, max: usize) -> bool {
    match text.char_indices().nth(max) {
        Some((at, _)) => {
            text.truncate(at);
            true
        }
        None => false,
    }
}

/// What kind of JSON value this is, for an error that says what was found instead.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_ids_are_digit_strings_that_fit_a_u64() {
        for ok in [
            "1",
            "263902037430900",
            "1534862223272449",
            "18446744073709551615",
        ] {
            assert!(is_meta_id(ok), "{ok}");
        }
        for bad in [
            "",
            "../../x?y=1#z",
            " 1",
            "+1",
            "-1",
            "1.0",
            "１２３",
            "18446744073709551616",
            &"9".repeat(500_000),
        ] {
            let problem = meta_id_problem(bad);
            assert!(problem.is_some(), "{bad:?}");
            // The problem never repeats the value (it may be huge, or hostile).
            assert!(!problem.unwrap().contains("999"), "{bad:?}");
        }
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        let mut text = "é".repeat(5);
        assert!(!truncate_chars(&mut text, 5));
        assert_eq!(text, "ééééé");
        assert!(truncate_chars(&mut text, 3));
        assert_eq!(text, "ééé");
        let mut empty = String::new();
        assert!(!truncate_chars(&mut empty, 0));
    }
}
