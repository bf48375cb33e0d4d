//! Hostnames: `<worktree>.<repo>.localhost`, DNS-safe, unique on the machine, decided once;
//! URLs in templates, env, list and status.

use crate::support::*;

fn record(repo: &TestRepo, key: &str) -> serde_json::Value {
    repo.registry()["worktrees"][key].clone()
}

#[test]
fn hostnames_are_dns_safe_unique_and_kept() {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    assert_eq!(record(&repo, "main")["hostname"], "repo.localhost");
    // Git names that sanitise to the same label: the second gets a suffix, never the first's.
    let a = repo.path("Feat_X");
    repo.git(["worktree", "add", "-q", "-b", "one", a.to_str().unwrap()]);
    let b = repo.path("feat-x");
    repo.git(["worktree", "add", "-q", "-b", "two", b.to_str().unwrap()]);
    let env_a = repo
        .wp_in(&a, ["env", "--format", "json"])
        .succeeds()
        .json();
    let env_b = repo
        .wp_in(&b, ["env", "--format", "json"])
        .succeeds()
        .json();
    assert_eq!(env_a["WORKTREE_HOSTNAME"], "feat-x.repo.localhost");
    assert_eq!(env_b["WORKTREE_HOSTNAME"], "feat-x-2.repo.localhost");
    assert_eq!(
        env_a["WEB_URL"],
        format!("http://feat-x.repo.localhost:{}", env_a["WEB_PORT"])
    );
    assert!(env_a.get("DB_URL").is_none(), "db does not speak HTTP");
    // A second repository with the same name gets its own label, decided once.
    let other = repo.another("elsewhere/repo", None);
    repo.wp_in(
        &other,
        [
            "allocate",
            "--no-render",
            "--port",
            &format!("web={}", repo.base + 10),
            "--port",
            &format!("db={}", repo.base + 30),
        ],
    )
    .succeeds();
    let other_env = repo
        .wp_in(&other, ["env", "--format", "json"])
        .succeeds()
        .json();
    assert_eq!(other_env["WORKTREE_HOSTNAME"], "elsewhere-repo.localhost");
    let reg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(other.join(".git/worktree-registry/ports.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(reg["hostname_label"], "elsewhere-repo");
    // list and status show them.
    let list = repo.wp(["list", "--json"]).succeeds().json();
    let names: Vec<&str> = list["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["hostname"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"feat-x-2.repo.localhost"), "{names:?}");
    let status = repo.wp_in(&a, ["status", "--json"]).succeeds().json();
    assert_eq!(status["worktrees"][0]["hostname"], "feat-x.repo.localhost");
    assert_eq!(
        status["worktrees"][0]["urls"][0]["url"],
        format!("http://feat-x.repo.localhost:{}", env_a["WEB_PORT"])
    );
}

#[test]
fn a_label_template_names_worktrees_and_a_collision_is_refused() {
    let block = port_block();
    let config = format!(
        "hostname = \"lane-{{{{ slot }}}}\"\n{}",
        default_config(block.base)
    );
    let repo = TestRepo::with_config(&config, block);
    let one = repo.add_worktree("worktree-lane-3");
    repo.wp_in(&one, ["allocate"]).succeeds();
    // main first (slot 0), then this one (slot 1).
    assert_eq!(
        record(&repo, "worktree-lane-3")["hostname"],
        "lane-1.repo.localhost"
    );
    assert_eq!(record(&repo, "main")["hostname"], "repo.localhost");

    let block = port_block();
    let config = format!("hostname = \"same\"\n{}", default_config(block.base));
    let repo = TestRepo::with_config(&config, block);
    let first = repo.add_worktree("first");
    repo.wp_in(&first, ["allocate"]).succeeds();
    let second = repo.add_worktree("second");
    let before = repo.registry_snapshot();
    let err = repo.wp_in(&second, ["allocate", "--json"]).fails().json();
    assert_eq!(err["error"], "HOSTNAME_TAKEN");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("same.repo.localhost") && msg.contains("worktree first's"),
        "{msg}"
    );
    assert_eq!(repo.registry_snapshot(), before, "nothing changed");
}

#[test]
fn templates_see_the_hostname_and_urls_and_proxy_urls_once_the_proxy_is_set_up() {
    let block = port_block();
    let b = block.base;
    let config = format!(
        "[services.web]\nrange = [{b}, {}]\n[services.api]\nrange = [{}, {}]\n",
        b + 9,
        b + 10,
        b + 19
    );
    let repo = TestRepo::with_config(&config, block);
    commit_files(
        &repo,
        &[(
            ".worktree-ports/templates/.env.tera",
            "HOST={{ hostname }}\nWEB={{ urls.web }}\nAPI={{ urls.api }}\n{% if proxy_urls.web %}PROXY_api={{ proxy_urls.api }}\nPROXY_web={{ proxy_urls.web }}\n{% endif %}",
        )],
    );
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate"]).succeeds();
    let env = std::fs::read_to_string(feature.join(".env")).unwrap();
    assert!(
        env.contains(&format!(
            "\nHOST=feature.repo.localhost\nWEB=http://feature.repo.localhost:{}\nAPI=http://feature.repo.localhost:{}\n#",
            b + 1,
            b + 11
        )),
        "{env}"
    );
    let state = repo.env.state_dir();
    write(&state.join("proxy.json"), "{\"port\": 7355}\n");
    repo.wp_in(&feature, ["render"]).succeeds();
    let env = std::fs::read_to_string(feature.join(".env")).unwrap();
    assert!(
        env.contains("\nPROXY_api=http://api.feature.repo.localhost:7355\nPROXY_web=http://feature.repo.localhost:7355\n"),
        "{env}"
    );
}
