//! Matching what people type against configured phrases.
//!
//! Case, accents, punctuation and surrounding or repeated spaces are ignored, so "  Back to
//! BOT! " and "back to bot" match. `#` is kept: an agent's `#bot` must not match a plain "bot".

pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Split into words before transliterating: after a non-ASCII character deunicode drops
    // control characters, so "báck\tto\tbot" would become one word.
    for piece in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        let ascii = deunicode::deunicode(piece).to_lowercase();
        for word in ascii
            .split(|c: char| c.is_whitespace() || (c.is_ascii_punctuation() && c != '#'))
            .filter(|w| !w.is_empty())
        {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    out
}

/// Phrases prepared once, from settings.
#[derive(Clone, Debug, Default)]
pub struct PhraseSet {
    normalized: Vec<String>,
}

impl PhraseSet {
    pub fn new<S: AsRef<str>>(phrases: &[S]) -> Self {
        let normalized = phrases
            .iter()
            .map(|p| normalize(p.as_ref()))
            .filter(|p| !p.is_empty())
            .collect();
        Self { normalized }
    }

    /// The whole message is one of the phrases.
    pub fn matches(&self, text: &str) -> bool {
        let candidate = normalize(text);
        !candidate.is_empty() && self.normalized.contains(&candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_accents_punctuation_and_spaces_are_ignored() {
        let set = PhraseSet::new(&["back to bot", "talk to the bot"]);
        for text in [
            "Back to bot!",
            "  BACK   to bot ",
            "báck tó bót?!",
            "Talk to the bot.",
        ] {
            assert!(set.matches(text), "{text}");
        }
        for text in ["back to the bot please", "bot", "", "!!!"] {
            assert!(!set.matches(text), "{text}");
        }
    }

    /// Found by the property tests: a tab or newline after an accented letter glued two
    /// words together.
    #[test]
    fn tabs_and_newlines_separate_words_after_accents_too() {
        let set = PhraseSet::new(&["back to bot"]);
        for text in ["báck\tto\tbot", "bäck\nto bot", "Báck\r\nto\u{0}bot"] {
            assert!(set.matches(text), "{text:?}");
        }
        assert_eq!(normalize("á\thvwuqfj"), "a hvwuqfj");
    }

    #[test]
    fn hash_is_significant_for_agent_phrases() {
        let set = PhraseSet::new(&["#bot"]);
        assert!(set.matches("#BOT"));
        assert!(set.matches(" #bot. "));
        assert!(!set.matches("bot"));
    }
}
