//! Ports written into a project's own files where a variable belongs, for `doctor`: host ports
//! in compose files (`ports:` entries whose host side is a number), `--port 3000` in
//! `package.json` scripts, `forwardPorts` in `.devcontainer/devcontainer.json`; a compose
//! override whose `ports:` appends to the base file's list (compose merges lists; `!override`
//! replaces); and port variables used without a fallback (`${WEB_PORT}` with no `:-8080`),
//! which break a checkout used without this tool. PURE: text in, findings out; never edits.
//!
//! The compose reader is line-based (no YAML parser): it knows block lists under `ports:`,
//! short (`"8080:80"`, `"127.0.0.1:8080:80"`) and long (`published: 8080`) syntax.

use crate::model::finding::FindingCode;

/// One thing found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    /// Finding code: `literal-port`, `compose-override-appends`, `no-fallback`.
    pub code: FindingCode,
    /// The file, relative to the worktree.
    pub file: String,
    /// 1-based line (0 when the file is JSON and the line is not known).
    pub line: usize,
    /// What was found.
    pub message: String,
    /// What to write instead.
    pub fix: String,
}

/// Compose files a project may have at its root.
pub fn is_compose_file(name: &str) -> bool {
    let yaml = name.ends_with(".yml") || name.ends_with(".yaml");
    yaml && (name.starts_with("compose.") || name.starts_with("docker-compose"))
}

/// An override file: merged over the base file by compose.
fn is_override(name: &str) -> bool {
    name.contains("override")
}

/// Findings in one compose file. `vars` are the port variables of the config (`WEB_PORT`).
pub fn compose(file: &str, text: &str, vars: &[String]) -> Vec<Literal> {
    let mut out = Vec::new();
    let mut in_ports: Option<usize> = None; // indent of the `ports:` key
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.split(" #").next().unwrap_or(raw);
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        out.extend(no_fallback(file, line_no, trimmed, vars));
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(key_indent) = in_ports
            && indent <= key_indent
            && !trimmed.starts_with('-')
        {
            in_ports = None;
        }
        if let Some(rest) = trimmed.strip_prefix("ports:") {
            let rest = rest.trim();
            in_ports = Some(indent);
            if is_override(file) && !rest.starts_with("!override") {
                out.push(Literal {
                    code: FindingCode::ComposeOverrideAppends,
                    file: file.to_string(),
                    line: line_no,
                    message: "`ports:` in an override file is appended to the base file's list (compose merges lists), so the base file's host ports are published too".into(),
                    fix: "write `ports: !override` to replace the base file's list".into(),
                });
            }
            // A flow list on the same line: `ports: ["8080:80"]`.
            if let Some(list) = rest
                .trim_start_matches("!override")
                .trim()
                .strip_prefix('[')
            {
                for entry in list.trim_end_matches(']').split(',') {
                    out.extend(short_entry(file, line_no, entry));
                }
            }
            continue;
        }
        if in_ports.is_none() {
            continue;
        }
        if let Some(entry) = trimmed.strip_prefix('-') {
            let entry = entry.trim();
            match entry.strip_prefix("published:") {
                Some(p) => out.extend(published(file, line_no, p)),
                None if entry.contains(':') && !entry.starts_with("target") => {
                    out.extend(short_entry(file, line_no, entry));
                }
                None => {}
            }
        } else if let Some(p) = trimmed.strip_prefix("published:") {
            out.extend(published(file, line_no, p));
        }
    }
    out
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches(|c| c == '"' || c == '\'')
}

/// `"8080:80"`, `"127.0.0.1:8080:80"`, `"8080-8081:80-81/tcp"`.
fn short_entry(file: &str, line: usize, entry: &str) -> Option<Literal> {
    let entry = unquote(entry);
    let entry = entry.split('/').next().unwrap_or(entry);
    // Split on ':' outside `${...}`.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in entry.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ':' if depth == 0 => {
                parts.push(&entry[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&entry[start..]);
    if parts.len() < 2 {
        return None; // container port only: compose picks a free host port
    }
    let host = parts[parts.len() - 2];
    literal_host(file, line, host, entry)
}

fn published(file: &str, line: usize, value: &str) -> Option<Literal> {
    let value = unquote(value);
    literal_host(file, line, value, &format!("published: {value}"))
}

fn literal_host(file: &str, line: usize, host: &str, entry: &str) -> Option<Literal> {
    let numeric = !host.is_empty() && host.chars().all(|c| c.is_ascii_digit() || c == '-');
    numeric.then(|| {
        let first = host.split('-').next().unwrap_or(host);
        Literal {
            code: FindingCode::LiteralPort,
            file: file.to_string(),
            line,
            message: format!(
                "host port {host} is written literally (`{entry}`): every worktree's stack publishes the same port"
            ),
            fix: format!("use the worktree's variable with a fallback: `${{WEB_PORT:-{first}}}` (the service's NAME_PORT)"),
        }
    })
}

/// `${WEB_PORT}` (or `$WEB_PORT`) of one of `vars`, without a `:-default`.
fn no_fallback(file: &str, line: usize, text: &str, vars: &[String]) -> Vec<Literal> {
    let mut out = Vec::new();
    for var in vars {
        let bare = [format!("${{{var}}}"), format!("${var}")];
        let hit = bare.iter().any(|b| {
            text.match_indices(b.as_str()).any(|(at, _)| {
                // `$WEB_PORT_X` is another variable.
                let after = text[at + b.len()..].chars().next();
                b.ends_with('}') || !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        });
        if hit {
            out.push(Literal {
                code: FindingCode::NoFallback,
                file: file.to_string(),
                line,
                message: format!(
                    "${{{var}}} has no fallback: a checkout used without git-worktree-ports (CI, a fresh clone) gets an empty port"
                ),
                fix: format!("write `${{{var}:-<default port>}}`"),
            });
        }
    }
    out
}

/// `--port 3000`, `--port=3000`, `-p 3000`, `PORT=3000` in `package.json` scripts.
pub fn package_json(file: &str, text: &str) -> Vec<Literal> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let Some(scripts) = doc.get("scripts").and_then(|s| s.as_object()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, script) in scripts {
        let Some(script) = script.as_str() else {
            continue;
        };
        let words: Vec<&str> = script.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let port = match *w {
                "--port" | "-p" => words.get(i + 1).copied(),
                _ => w
                    .strip_prefix("--port=")
                    .or_else(|| w.strip_prefix("PORT=")),
            };
            if let Some(p) = port.filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            {
                out.push(Literal {
                    code: FindingCode::LiteralPort,
                    file: file.to_string(),
                    line: line_of(text, &format!("\"{name}\"")),
                    message: format!(
                        "script {name:?} fixes port {p} (`{w}{}`): every worktree's server takes the same port",
                        if port == words.get(i + 1).copied() { format!(" {p}") } else { String::new() }
                    ),
                    fix: format!(
                        "read the worktree's port: `--port ${{WEB_PORT:-{p}}}`, or run it with `git worktree-ports exec -- npm run {name}`"
                    ),
                });
            }
        }
    }
    out
}

/// Numbers in `forwardPorts` of a devcontainer.json (JSON with comments).
pub fn devcontainer(file: &str, text: &str) -> Vec<Literal> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&strip_comments(text)) else {
        return Vec::new();
    };
    let Some(ports) = doc.get("forwardPorts").and_then(|p| p.as_array()) else {
        return Vec::new();
    };
    let line = line_of(text, "\"forwardPorts\"");
    ports
        .iter()
        .filter_map(|p| {
            let n = p.as_u64().or_else(|| p.as_str().and_then(|s| s.parse().ok()))?;
            Some(Literal {
                code: FindingCode::LiteralPort,
                file: file.to_string(),
                line,
                message: format!("forwardPorts forwards port {n}: every worktree's container forwards the same one"),
                fix: "render the file from a template (`.worktree-ports/templates/.devcontainer/devcontainer.json.tera` with `{{ ports.web }}`)".into(),
            })
        })
        .collect()
}

/// The 1-based line where `needle` first appears (0 if nowhere).
fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle)
        .map_or(0, |at| text[..at].matches('\n').count() + 1)
}

/// JSON with `//` and `/* */` comments (and trailing commas left alone) -> JSON: comments are
/// blanked outside strings, keeping line numbers.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                out.extend(chars.next());
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            _ => out.push(c),
        }
    }
    // Trailing commas, which JSONC allows.
    let mut cleaned = String::with_capacity(out.len());
    let bytes: Vec<char> = out.chars().collect();
    for (i, c) in bytes.iter().enumerate() {
        if *c == ',' {
            let next = bytes[i + 1..].iter().find(|c| !c.is_whitespace());
            if matches!(next, Some(']') | Some('}')) {
                continue;
            }
        }
        cleaned.push(*c);
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(found: &[Literal]) -> Vec<(&str, usize)> {
        found.iter().map(|l| (l.code.as_str(), l.line)).collect()
    }

    #[test]
    fn compose_literal_host_ports_in_every_syntax() {
        let text = "services:\n  web:\n    image: nginx\n    ports:\n      - \"8080:80\"\n      - 127.0.0.1:8443:443\n      - \"${WEB_PORT:-8081}:80\"\n      - \"9229\"\n      - target: 80\n        published: 8000\n    environment:\n      PORT: 3000\n  db:\n    ports: [\"5432:5432\"]\n";
        let found = compose("compose.yaml", text, &["WEB_PORT".into()]);
        assert_eq!(
            codes(&found),
            [
                ("literal-port", 5),
                ("literal-port", 6),
                ("literal-port", 10),
                ("literal-port", 14)
            ]
        );
        assert!(
            found[0].fix.contains("${WEB_PORT:-8080}"),
            "{}",
            found[0].fix
        );
    }

    #[test]
    fn compose_overrides_must_say_override_and_variables_need_fallbacks() {
        let text = "services:\n  web:\n    ports:\n      - \"${WEB_PORT}:80\"\n    environment:\n      URL: http://localhost:$WEB_PORT/x\n      OTHER: $WEB_PORT_X\n";
        let found = compose("docker-compose.override.yml", text, &["WEB_PORT".into()]);
        assert_eq!(
            codes(&found),
            [
                ("compose-override-appends", 3),
                ("no-fallback", 4),
                ("no-fallback", 6)
            ]
        );
        let good = "services:\n  web:\n    ports: !override\n      - \"${WEB_PORT:-8080}:80\"\n";
        assert!(compose("compose.override.yaml", good, &["WEB_PORT".into()]).is_empty());
    }

    #[test]
    fn package_scripts_and_devcontainer_forward_ports() {
        let pkg = "{\n  \"scripts\": {\n    \"dev\": \"vite --port 5173\",\n    \"api\": \"PORT=3000 node api.js\",\n    \"ok\": \"vite --port $WEB_PORT\",\n    \"eq\": \"next dev --port=3001\"\n  }\n}\n";
        let found = package_json("package.json", pkg);
        assert_eq!(
            codes(&found),
            [
                ("literal-port", 4),
                ("literal-port", 3),
                ("literal-port", 6)
            ]
        );
        let dc = "// a comment\n{\n  \"name\": \"x // not a comment\",\n  /* block */\n  \"forwardPorts\": [3000, \"5432\"],\n}\n";
        let found = devcontainer(".devcontainer/devcontainer.json", dc);
        assert_eq!(codes(&found), [("literal-port", 5), ("literal-port", 5)]);
        assert!(devcontainer("d.json", "{\"forwardPorts\": []}").is_empty());
    }
}
