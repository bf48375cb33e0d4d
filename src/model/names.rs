//! Hostnames: `<worktree>.<repo>.localhost`, and `<repo>.localhost` for the main worktree.
//! Labels are made DNS-safe here (lower case, `a-z0-9-`, at most 63 bytes, no leading or
//! trailing `-`). And names made safe for a shell ([`shell_word`]). PURE.

use std::path::{Path, PathBuf};

/// The top-level domain every name ends in: `*.localhost` resolves to loopback in Chrome,
/// Firefox, curl >= 7.85 and systemd-resolved (not in Safari, or Node's `fetch` on macOS).
pub const TLD: &str = "localhost";

/// The longest DNS label.
const MAX_LABEL: usize = 63;

/// `Feature/Login_2` -> `feature-login-2`; empty or nothing usable -> `x`.
pub fn dns_label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut dash = false;
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
            dash = false;
        } else if !dash && !out.is_empty() {
            out.push('-');
            dash = true;
        }
    }
    out.truncate(MAX_LABEL);
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { "x".to_string() } else { out }
}

/// `label` with `-2`, `-3`... until `taken` says no, kept within 63 bytes.
pub fn unique_label(label: &str, taken: &dyn Fn(&str) -> bool) -> String {
    if !taken(label) {
        return label.to_string();
    }
    (2..)
        .map(|n| {
            let suffix = format!("-{n}");
            let keep = MAX_LABEL - suffix.len();
            let base = label.get(..keep.min(label.len())).unwrap_or(label);
            format!("{}{suffix}", base.trim_end_matches('-'))
        })
        .find(|l| !taken(l))
        .expect("a free suffix")
}

/// The hostname of a worktree: `<worktree>.<repo>.localhost`, or `<repo>.localhost` for the
/// main worktree (`worktree` None).
pub fn hostname(repo: &str, worktree: Option<&str>) -> String {
    match worktree {
        Some(w) => format!("{w}.{repo}.{TLD}"),
        None => format!("{repo}.{TLD}"),
    }
}

/// A Host header value (`name` or `name:port`) -> the name, lower case; None when it is not
/// a plain DNS name (an IP literal in brackets, spaces, `@`, an empty label...).
pub fn host_of(header: &str) -> Option<String> {
    let name = match header.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => header,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= MAX_LABEL
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    ok.then_some(name)
}

/// `/src/app/.git` -> `/src/app`; a bare repository's git dir stays as it is.
pub fn display_path(common: &Path) -> PathBuf {
    match common.file_name() {
        Some(n) if n == ".git" => common.parent().unwrap_or(common).to_path_buf(),
        _ => common.to_path_buf(),
    }
}

/// A character no shell treats specially (`feature-x`, `8080`, `/src/app` are made of them).
fn shell_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c)
}

/// `text` as one shell word: as it is when it is made only of [`shell_safe`] characters, else
/// in single quotes (a `'` inside as `'\''`). The escape function of `[on]` commands'
/// templates.
pub fn shell_word(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.is_empty() && text.chars().all(shell_safe) {
        return text.into();
    }
    format!("'{}'", text.replace('\'', "'\\''")).into()
}

/// `text` as bash's completion inserts a word: each character a shell treats specially
/// behind a backslash (`x\$\(y\)`), so that what the user typed so far (`x`, or `x\$`) is a
/// prefix of it and bash's matching keeps it. A control character cannot be escaped that way:
/// then the whole word in single quotes ([`shell_word`]).
pub fn bash_word(text: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| shell_safe(c) || !c.is_ascii();
    if text.chars().all(plain) {
        return text.into();
    }
    if text.chars().any(|c| c.is_control()) {
        return shell_word(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !plain(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_words_escape_each_special_character() {
        assert_eq!(bash_word("feature-x"), "feature-x");
        assert_eq!(bash_word("x$(touch-PWNED)"), "x\\$\\(touch-PWNED\\)");
        assert_eq!(bash_word("a b'c"), "a\\ b\\'c");
        assert_eq!(bash_word("é"), "é");
        assert_eq!(bash_word("a\nb"), "'a\nb'");
    }

    #[test]
    fn labels_are_dns_safe() {
        assert_eq!(dns_label("Feature/Login_2"), "feature-login-2");
        assert_eq!(dns_label("--x--y--"), "x-y");
        assert_eq!(dns_label("café"), "caf");
        assert_eq!(dns_label("日本"), "x");
        assert_eq!(dns_label(""), "x");
        let long = "a".repeat(70) + "-b";
        assert_eq!(dns_label(&long).len(), 63);
        assert_eq!(
            dns_label(&("a".repeat(62) + "-b")),
            "a".repeat(62),
            "no trailing dash after the cut"
        );
    }

    #[test]
    fn unique_labels_take_a_suffix_within_63_bytes() {
        let taken = |l: &str| l == "app" || l == "app-2";
        assert_eq!(unique_label("app", &taken), "app-3");
        assert_eq!(unique_label("web", &taken), "web");
        let long = "a".repeat(63);
        let t = |l: &str| l == long;
        let u = unique_label(&long, &t);
        assert_eq!(u.len(), 63);
        assert!(u.ends_with("-2"));
    }

    #[test]
    fn hostnames_and_host_headers() {
        assert_eq!(hostname("app", None), "app.localhost");
        assert_eq!(hostname("app", Some("feat")), "feat.app.localhost");
        assert_eq!(
            host_of("Feat.App.localhost:7355").as_deref(),
            Some("feat.app.localhost")
        );
        assert_eq!(host_of("app.localhost.").as_deref(), Some("app.localhost"));
        for bad in [
            "",
            "a b",
            "evil@app.localhost",
            "[::1]:80",
            "a..b",
            "x:",
            "x:y",
            "a_b.localhost",
        ] {
            assert_eq!(host_of(bad), None, "{bad:?}");
        }
    }
}
