//! Repository templates, the managed `.env` block, and what rendering never does.

use crate::support::*;

const APP_TOML: &str = r#"# {{ repo.name }} at {{ repo.common_dir }}
[server]
port = {{ ports.web }}
[worktree]
name = "{{ worktree.name }}"
path = "{{ worktree.path }}"
branch = "{{ worktree.branch }}"
is_main = {{ worktree.is_main }}
compose = "{{ compose_project_name }}"
{% for s in services %}
[services.{{ s.name }}]
port = {{ s.port }}
env = "{{ s.env }}"
protocol = "{{ s.protocol }}"
{% endfor %}"#;

fn with_templates() -> TestRepo {
    let repo = TestRepo::new();
    commit_files(
        &repo,
        &[
            (
                ".worktree-ports/templates/.env.tera",
                "APP_PORT={{ ports.web }}\nDATABASE_URL=postgres://localhost:{{ ports.db }}/app\n",
            ),
            (".worktree-ports/templates/config/app.toml.tera", APP_TOML),
            (
                ".worktree-ports/templates/deep/er/still.txt.tera",
                "{{ worktree.name }}\n",
            ),
        ],
    );
    repo
}

#[test]
fn repo_templates_render_nested_paths_with_every_context_variable() {
    let repo = with_templates();
    let path = repo.path("feature");
    let out = repo
        .wp(["add", "-b", "feature", path.to_str().unwrap(), "--json"])
        .succeeds()
        .json();
    let files: Vec<&str> = out["rendered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, [".env", "config/app.toml", "deep/er/still.txt"]);
    let app = std::fs::read_to_string(path.join("config/app.toml")).unwrap();
    insta::assert_snapshot!("repo_template_app_toml", redact(&app, &repo));
    // It is valid TOML with the real values.
    let parsed: toml::Table = toml::from_str(&app).unwrap();
    assert_eq!(
        parsed["server"]["port"].as_integer(),
        out["ports"]["web"].as_i64()
    );
    assert_eq!(parsed["worktree"]["branch"].as_str(), Some("feature"));
    assert_eq!(parsed["worktree"]["is_main"].as_bool(), Some(false));
    assert_eq!(parsed["services"]["db"]["env"].as_str(), Some("DB_PORT"));
    let env = std::fs::read_to_string(path.join(".env")).unwrap();
    assert!(
        env.contains(&format!("APP_PORT={}\n", out["ports"]["web"])),
        "{env}"
    );
    assert_eq!(
        std::fs::read_to_string(path.join("deep/er/still.txt")).unwrap(),
        "feature\n"
    );
    assert_eq!(repo.env.git(&path, ["status", "--porcelain"]), "");
    assert_eq!(repo.git(["status", "--porcelain"]), "");
}

#[test]
fn a_broken_template_fails_cleanly_and_writes_nothing() {
    let repo = TestRepo::new();
    commit_files(
        &repo,
        &[
            (
                ".worktree-ports/templates/a-good.txt.tera",
                "{{ ports.web }}\n",
            ),
            (
                ".worktree-ports/templates/b-bad.txt.tera",
                "line one\n{% if %}\n",
            ),
        ],
    );
    let path = repo.path("feature");
    let out = repo
        .wp(["add", "-b", "feature", path.to_str().unwrap()])
        .fails();
    let err = out.stderr();
    assert!(
        err.contains("b-bad.txt.tera:2:"),
        "names file and line: {err}"
    );
    assert!(
        err.contains("git worktree-ports render"),
        "says how to re-render: {err}"
    );
    // The worktree and its ports stay; nothing was rendered, not even the good template.
    assert!(path.is_dir());
    assert!(repo.registry()["allocated_ports"].get("feature").is_some());
    assert!(!path.join("a-good.txt").exists());
    assert!(!path.join("b-bad.txt").exists());

    // An unknown variable is a template error too, with its line.
    write(
        &path.join(".worktree-ports/templates/b-bad.txt.tera"),
        "ok\nok\n{{ ports.nope }}\n",
    );
    let json = repo.wp_in(&path, ["render", "--json"]).fails().json();
    assert_eq!(json["error"], "TEMPLATE_ERROR");
    assert_eq!(json["details"]["line"], 3);
    assert!(json["message"].as_str().unwrap().contains("nope"), "{json}");
    // Fixed: render works.
    write(
        &path.join(".worktree-ports/templates/b-bad.txt.tera"),
        "{{ ports.db }}\n",
    );
    repo.wp_in(&path, ["render"]).succeeds();
    assert!(path.join("a-good.txt").exists() && path.join("b-bad.txt").exists());
}

#[test]
fn the_users_env_lines_survive_re_rendering() {
    let repo = TestRepo::new();
    let b = repo.base;
    write(
        &repo.root.join(".env"),
        "SECRET_KEY=hunter2\n# my comment\n",
    );
    repo.wp(["allocate"]).succeeds();
    write(
        &repo.root.join(".env"),
        &(std::fs::read_to_string(repo.root.join(".env")).unwrap() + "AFTER_BLOCK=1\n"),
    );
    repo.wp(["allocate", "--port", &format!("web={}", b + 9)])
        .succeeds();
    let env = std::fs::read_to_string(repo.root.join(".env")).unwrap();
    assert!(
        env.starts_with("SECRET_KEY=hunter2\n# my comment\n# >>> git-worktree-ports"),
        "{env}"
    );
    assert!(
        env.ends_with("# <<< git-worktree-ports <<<\nAFTER_BLOCK=1\n"),
        "{env}"
    );
    assert!(env.contains(&format!("WEB_PORT={}\n", b + 9)), "{env}");
    assert_eq!(env.matches("WEB_PORT=").count(), 1, "{env}");
}

#[test]
fn a_file_the_tool_did_not_write_is_not_overwritten_without_force() {
    let repo = TestRepo::new();
    commit_files(
        &repo,
        &[(
            ".worktree-ports/templates/app.conf.tera",
            "port={{ ports.web }}\n",
        )],
    );
    write(&repo.root.join("app.conf"), "hand written\n");
    let out = repo.wp(["render"]).fails();
    assert!(
        out.stderr()
            .contains("app.conf exists and was not written by git-worktree-ports"),
        "{}",
        out.describe()
    );
    assert!(out.stderr().contains("--force"), "{}", out.describe());
    assert_eq!(
        std::fs::read_to_string(repo.root.join("app.conf")).unwrap(),
        "hand written\n"
    );
    // Refused means nothing written: the hand-written file is the only untracked one.
    assert_eq!(repo.git(["status", "--porcelain"]), "?? app.conf\n");
    assert!(!repo.root.join(".env").exists());

    repo.wp(["render", "--force"]).succeeds();
    assert_eq!(
        std::fs::read_to_string(repo.root.join("app.conf")).unwrap(),
        format!("port={}\n", repo.base)
    );
    // Written by the tool: a later render may update it.
    repo.wp(["allocate", "--port", &format!("web={}", repo.base + 3)])
        .succeeds();
    assert_eq!(
        std::fs::read_to_string(repo.root.join("app.conf")).unwrap(),
        format!("port={}\n", repo.base + 3)
    );
    // Edited since: refused again.
    write(&repo.root.join("app.conf"), "port=1 # mine now\n");
    repo.wp(["render"]).fails();
    assert_eq!(
        std::fs::read_to_string(repo.root.join("app.conf")).unwrap(),
        "port=1 # mine now\n"
    );
}

#[test]
fn a_symlink_pointing_out_of_the_worktree_is_not_followed() {
    let repo = TestRepo::new();
    commit_files(
        &repo,
        &[(
            ".worktree-ports/templates/config/app.toml.tera",
            "port = {{ ports.web }}\n",
        )],
    );
    let outside = repo.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, repo.root.join("config")).unwrap();
    let out = repo.wp(["render", "--json"]).fails().json();
    assert_eq!(out["error"], "TEMPLATE_ERROR");
    assert!(
        out["message"].as_str().unwrap().contains("symlink"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    // --force does not change that.
    repo.wp(["render", "--force"]).fails();
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn a_tracked_file_is_reported_not_dirtied() {
    let repo = TestRepo::new();
    commit_files(&repo, &[(".env", "COMMITTED=1\n")]);
    let out = repo.wp(["allocate"]).succeeds();
    assert!(
        out.stderr().contains(".env is tracked by git"),
        "{}",
        out.describe()
    );
    assert_eq!(
        std::fs::read_to_string(repo.root.join(".env")).unwrap(),
        "COMMITTED=1\n"
    );
    assert_eq!(repo.git(["status", "--porcelain"]), "");
}

#[test]
fn render_all_and_render_of_a_worktree_without_ports() {
    let repo = TestRepo::new();
    let a = repo.add_worktree("a");
    let bwt = repo.add_worktree("b");
    let c = repo.add_worktree("c");
    // render allocates first when the worktree has no ports; main gets its ports first
    // (main-first), but no .env: it was not rendered.
    repo.wp_in(&a, ["render"]).succeeds();
    assert!(!repo.root.join(".env").exists());
    repo.wp_in(&bwt, ["allocate", "--no-render"]).succeeds();
    assert!(!bwt.join(".env").exists());
    let out = repo.wp(["render", "--all", "--json"]).succeeds().json();
    let names: Vec<&str> = out["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worktree"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main", "a", "b"], "only worktrees with ports");
    assert!(bwt.join(".env").exists());
    assert!(!c.join(".env").exists());
}

#[test]
fn init_writes_commented_starting_files_and_never_overwrites() {
    let repo = TestRepo::without_config();
    let out = repo.wp(["init"]).succeeds().stdout();
    assert!(out.contains("wrote .worktree-ports/config.toml"), "{out}");
    let config = std::fs::read_to_string(repo.root.join(".worktree-ports/config.toml")).unwrap();
    let template =
        std::fs::read_to_string(repo.root.join(".worktree-ports/templates/.env.tera")).unwrap();
    insta::assert_snapshot!("init_config_toml", config);
    insta::assert_snapshot!("init_env_tera", template);
    // The files work as written: the config gives the built-in services.
    let env = repo.wp(["env", "--format", "json"]).succeeds().json();
    let vars: Vec<&String> = env.as_object().unwrap().keys().collect();
    assert_eq!(
        vars.len(),
        10,
        "five services, WORKTREE_SLOT, the URLs of web and api, the hostname, the compose project name: {vars:?}"
    );
    repo.wp(["render"]).succeeds();
    let rendered = std::fs::read_to_string(repo.root.join(".env")).unwrap();
    assert!(
        rendered.contains(&format!("WEB_PORT={}\n", env["WEB_PORT"])),
        "{rendered}"
    );
    assert!(
        !rendered.contains("Variables:"),
        "the template's comment is not rendered: {rendered}"
    );
    write(&repo.root.join(".worktree-ports/config.toml"), "# mine\n");
    let out = repo.wp(["init"]).succeeds().stdout();
    assert!(
        out.contains("kept .worktree-ports/config.toml (it exists)"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.root.join(".worktree-ports/config.toml")).unwrap(),
        "# mine\n"
    );
}

/// Template arithmetic with a float exponent calls `pow`, which the binary defines itself
/// (src/main.rs: no libm loaded at start) from the `libm` crate: the same digits as glibc's.
#[test]
fn float_powers_in_a_template_are_computed_exactly_as_before() {
    let repo = TestRepo::new();
    commit_files(
        &repo,
        &[(
            ".worktree-ports/templates/powers.txt.tera",
            "{{ 2.0 ** 0.5 }} {{ 10.0 ** -2 }} {{ 1.5 ** 3.0 }} {{ 0.0 ** 0.0 }} {{ 7.0 ** 0.1 }} {{ ports.web ** 0.5 > 1.0 }}\n",
        )],
    );
    repo.wp(["render"]).succeeds();
    let text = std::fs::read_to_string(repo.root.join("powers.txt")).unwrap();
    // glibc's pow and Rust's shortest round-trip printing of each f64.
    let expected = format!(
        "{:?} {:?} {:?} {:?} {:?} true\n",
        2f64.powf(0.5),
        10f64.powf(-2.0),
        1.5f64.powf(3.0),
        0f64.powf(0.0),
        7f64.powf(0.1)
    );
    assert_eq!(text, expected);
}
