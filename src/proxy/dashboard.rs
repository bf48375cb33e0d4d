//! The proxy's own page, at `http://localhost:<port>/` (a request for no worktree's name):
//! every repository of the machine, its worktrees (main first), each one's slot, branch,
//! services, ports, whether anything listens, and links through the proxy and direct. One
//! embedded HTML file (`dashboard.html`) with a little plain JavaScript that follows
//! `/worktrees.json` (`list --all --json`, the answer the caller's [`Listing`] gives) once a
//! second; the rows are rendered here too, the same markup, so the page reads without
//! JavaScript. Pure: text in, text out.

use serde_json::Value;

/// The page's template: `<!--ROWS-->` is where the rows go.
pub const PAGE: &str = include_str!("dashboard.html");

/// `list --all --json`'s answer, as text (None: it could not be made; the page says so).
pub type Listing = std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The page, its rows rendered from `answer` (`list --all --json`) for a proxy on `port`.
pub fn page(answer: &Value, port: u16) -> String {
    PAGE.replacen("<!--ROWS-->", &rows(answer, port), 1)
}

/// Text for HTML, in an element or an attribute: the one escape of the proxy's pages (the
/// dashboard's rows, its error pages).
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// Main first, then by slot, then by name (as the page's script orders them).
fn order(a: &Value, b: &Value) -> std::cmp::Ordering {
    let main = |w: &Value| w["name"] != "main";
    let slot = |w: &Value| w["slot"].as_u64().unwrap_or(1_000_000_000);
    (main(a), slot(a), a["name"].as_str()).cmp(&(main(b), slot(b), b["name"].as_str()))
}

/// The repositories' sections: the markup `render()` in dashboard.html makes.
fn rows(answer: &Value, port: u16) -> String {
    let empty = Vec::new();
    let repos = answer["repositories"].as_array().unwrap_or(&empty);
    if repos.is_empty() {
        return "<p>No repository has allocated on this machine yet.</p>".into();
    }
    let mut out = String::new();
    for r in repos {
        let mut worktrees: Vec<&Value> =
            r["worktrees"].as_array().unwrap_or(&empty).iter().collect();
        worktrees.sort_by(|a, b| order(a, b));
        let mut body = String::new();
        for w in worktrees {
            let name = esc(&text(&w["name"]));
            let exists = w["exists"] == true;
            let Some(ports) = w["ports"].as_object() else {
                continue;
            };
            let n = ports.len();
            for (i, (s, p)) in ports.iter().enumerate() {
                let svc = esc(s);
                let state = text(&w["live"][s]);
                let label = match state.as_str() {
                    "up" => "up",
                    "down" => "down",
                    "foreign" => "another user&#39;s",
                    _ => "",
                };
                let links = match (w["urls"][s].as_str(), w["hostname"].as_str()) {
                    (Some(url), Some(host)) => format!(
                        "<a class=\"proxied\" data-worktree=\"{name}\" data-service=\"{svc}\" href=\"http://{svc}.{h}:{port}/\">{svc}.{h}</a> · <a class=\"direct\" data-worktree=\"{name}\" data-service=\"{svc}\" href=\"{u}/\">port {p}</a>",
                        h = esc(host),
                        u = esc(url),
                    ),
                    _ => String::new(),
                };
                let head = match i {
                    0 => format!(
                        "<td rowspan=\"{n}\">{name}{gone}</td><td rowspan=\"{n}\">{slot}</td><td rowspan=\"{n}\">{branch}</td>",
                        gone = if exists { "" } else { " (gone)" },
                        slot = text(&w["slot"]),
                        branch = esc(&text(&w["branch"])),
                    ),
                    _ => String::new(),
                };
                body.push_str(&format!(
                    "<tr class=\"{class}\" data-worktree=\"{name}\">{head}<td>{svc}</td><td class=\"port\">{p}</td><td class=\"state {state}\" data-worktree=\"{name}\" data-service=\"{svc}\">{label}</td><td>{links}</td></tr>",
                    class = if exists { "" } else { "gone" },
                    state = esc(&state),
                ));
            }
        }
        out.push_str(&format!(
            "<section class=\"repo\" data-repository=\"{rn}\"><h2>{rn} <small>{path}{gone}</small></h2><table><thead><tr><th>worktree</th><th>slot</th><th>branch</th><th>service</th><th>port</th><th>state</th><th>links</th></tr></thead><tbody>{body}</tbody></table></section>",
            rn = esc(&text(&r["name"])),
            path = esc(&text(&r["path"])),
            gone = if r["gone"] == true { " (gone)" } else { "" },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The page's weight (HTML, CSS and script) stays under 30 KB.
    #[test]
    fn the_page_weighs_under_30_kb() {
        assert!(PAGE.len() < 30 * 1024, "{} bytes", PAGE.len());
    }

    /// Rows without JavaScript: main first, a link per HTTP service through the proxy and
    /// direct, the state, and names escaped.
    #[test]
    fn rows_render_without_javascript() {
        let answer = json!({"schema": 1, "repositories": [{"name": "app", "path": "/src/app", "gone": false,
        "worktrees": [
            {"name": "feat<b>", "path": "/src/feat", "branch": "feat", "exists": true, "slot": 1,
             "hostname": "feat.app.localhost", "ports": {"db": 5433, "web": 8081},
             "urls": {"web": "http://feat.app.localhost:8081"}, "live": {"db": "down", "web": "up"}},
            {"name": "main", "path": "/src/app", "branch": "main", "exists": true, "slot": 0,
             "hostname": "app.localhost", "ports": {"web": 8080}, "urls": {"web": "http://app.localhost:8080"}}
        ]}]});
        let page = page(&answer, 7355);
        let main = page.find("data-worktree=\"main\"").unwrap();
        let feat = page.find("data-worktree=\"feat&lt;b&gt;\"").unwrap();
        assert!(main < feat, "main first");
        assert!(page.contains("<a class=\"proxied\" data-worktree=\"feat&lt;b&gt;\" data-service=\"web\" href=\"http://web.feat.app.localhost:7355/\">"));
        assert!(page.contains("href=\"http://feat.app.localhost:8081/\">port 8081</a>"));
        assert!(page.contains(
            "<td class=\"state up\" data-worktree=\"feat&lt;b&gt;\" data-service=\"web\">up</td>"
        ));
        assert!(!page.contains("<!--ROWS-->"));
        // One proxied link per HTTP service (the script's template has one more).
        assert_eq!(rows(&answer, 7355).matches("class=\"proxied\"").count(), 2);
    }
}
