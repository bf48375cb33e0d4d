use crate::support::*;

#[test]
fn main_and_linked_worktrees_get_distinct_ports() {
    let repo = TestRepo::new();
    let b = repo.base;
    let main = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(main["worktree"], "main");
    assert_eq!(main["ports"]["web"], b);
    assert_eq!(main["ports"]["db"], b + 20);

    let feature = repo.add_worktree("feature");
    let out = repo
        .wp_in(&feature, ["allocate", "--json"])
        .succeeds()
        .json();
    assert_eq!(out["worktree"], "feature");
    assert_eq!(out["path"], feature.to_str().unwrap());
    assert_eq!(out["ports"]["web"], b + 1);
    assert_eq!(out["ports"]["db"], b + 21);

    let reg = repo.registry();
    assert_eq!(reg["version"], 1);
    assert_eq!(reg["allocated_ports"]["feature"]["web"], b + 1);
    assert_eq!(reg["worktrees"]["feature"]["branch"], "feature");
    assert_eq!(reg["port_ranges"]["web"], serde_json::json!([b, b + 19]));
    assert_unique(&all_registry_ports(&reg));
}

#[test]
fn allocation_is_idempotent_and_writes_nothing_the_second_time() {
    let repo = TestRepo::new();
    let first = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(first["rendered"][0]["action"], "written");
    let before = repo.registry_snapshot();
    let env_before = std::fs::metadata(repo.root.join(".env"))
        .unwrap()
        .modified()
        .unwrap();
    let second = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(first["ports"], second["ports"]);
    assert_eq!(second["rendered"][0]["action"], "unchanged");
    assert_eq!(before, repo.registry_snapshot());
    let env_after = std::fs::metadata(repo.root.join(".env"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(env_before, env_after, ".env was rewritten");
}

#[test]
fn a_worktree_named_from_elsewhere_allocates_with_its_own_config() {
    let repo = TestRepo::new();
    let feature = repo.add_worktree("feature");
    // The feature branch moves its web range; allocating it from main must use that config.
    let b = repo.base;
    write(
        &feature.join(".worktree-ports/config.toml"),
        &format!("[services.web]\nrange = [{}, {}]\n", b + 10, b + 19),
    );
    let out = repo.wp(["allocate", "feature", "--json"]).succeeds().json();
    assert_eq!(out["ports"]["web"], b + 10);
    assert!(out["ports"].get("db").is_none());
    let by_path = repo
        .wp(["allocate", feature.to_str().unwrap(), "--json"])
        .succeeds()
        .json();
    assert_eq!(by_path["worktree"], "feature");
}

#[test]
fn human_output_lists_services_in_config_order() {
    let repo = TestRepo::new();
    let out = repo.wp(["allocate"]).succeeds().stdout();
    let b = repo.base;
    assert!(out.starts_with("ports of worktree main ("), "{out}");
    let web = out.find(&format!("web  {b}")).expect("web line");
    let db = out.find(&format!("db   {}", b + 20)).expect("db line");
    assert!(web < db, "{out}");
}

#[test]
fn the_seed_example_gives_the_next_worktree_the_next_ports() {
    // The seed's file, written by hand (no version), with this test's ports in place of
    // 8080/5432: main on web b / db b+20, feature-login on b+1 / b+21.
    let repo = TestRepo::new();
    let b = repo.base;
    let reg = repo.registry_path();
    write(
        &reg,
        &format!(
            r#"{{"port_ranges": {{"web": [{b}, {}], "db": [{}, {}]}},
 "allocated_ports": {{"main": {{"web": {b}, "db": {}}}, "feature-login": {{"web": {}, "db": {}}}}}}}"#,
            b + 19,
            b + 20,
            b + 39,
            b + 20,
            b + 1,
            b + 21
        ),
    );
    let next = repo.add_worktree("next");
    let out = repo.wp_in(&next, ["allocate", "--json"]).succeeds().json();
    assert_eq!(out["ports"]["web"], b + 2);
    assert_eq!(out["ports"]["db"], b + 22);
    // The seed's entries are kept as they were; main keeps its ports.
    let reg = repo.registry();
    assert_eq!(reg["allocated_ports"]["feature-login"]["web"], b + 1);
    let main = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(main["ports"]["web"], b);
    assert_eq!(main["ports"]["db"], b + 20);
}

#[test]
fn builtin_services_apply_without_a_config() {
    let repo = TestRepo::new();
    std::fs::remove_file(repo.root.join(".worktree-ports/config.toml")).unwrap();
    // Pin every service so the test does not depend on 8080 etc. being free here.
    let b = repo.base;
    let out = repo
        .wp([
            "allocate",
            "--json",
            &format!("--port=web={b}"),
            &format!("--port=api={}", b + 1),
            &format!("--port=db={}", b + 2),
            &format!("--port=test={}", b + 3),
            &format!("--port=debug={}", b + 4),
        ])
        .succeeds()
        .json();
    let names: Vec<String> = ports_of(&out["ports"])
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(names, ["api", "db", "debug", "test", "web"]);
    let reg = repo.registry();
    assert_eq!(reg["port_ranges"]["db"], serde_json::json!([5432, 5499]));
}

#[test]
fn invalid_config_names_file_and_line_and_writes_nothing() {
    let repo = TestRepo::new();
    let cfg = repo.root.join(".worktree-ports/config.toml");
    for (text, needle) in [
        (
            "[services.web]\nrange = [9000, 8000]\n",
            ":2: [services.web] range [9000, 8000] is reversed",
        ),
        ("[services.web]\nrange = [80, 90]\n", "outside 1024-65535"),
        ("[services.web]\nrange = [8000, 8001]\nport = 3\n", ":3:"),
        ("[services.web\n", ":1:"),
    ] {
        write(&cfg, text);
        let out = repo.wp(["allocate"]).fails();
        assert!(
            out.stderr().contains(cfg.to_str().unwrap()),
            "{}",
            out.describe()
        );
        assert!(
            out.stderr().contains(needle),
            "{needle}: {}",
            out.describe()
        );
        let json = repo.wp(["allocate", "--json"]).fails().json();
        assert_eq!(json["error"], "CONFIG_INVALID");
        assert!(!repo.registry_path().exists());
    }
}

#[test]
fn outside_a_repository_is_not_a_repository() {
    let env = TestEnv::new();
    let out = env.wp_in(env.root(), ["allocate"]).fails();
    assert!(
        out.stderr().contains("not a git repository"),
        "{}",
        out.describe()
    );
    let json = env.wp_in(env.root(), ["list", "--json"]).fails().json();
    assert_eq!(json["error"], "NOT_A_REPOSITORY");
    assert_eq!(json["success"], false);
}

#[test]
fn usage_errors_exit_2() {
    let repo = TestRepo::new();
    assert_eq!(
        repo.wp(["allocate", "--port", "web"]).output().code(),
        Some(2)
    );
    assert_eq!(repo.wp(["frobnicate"]).output().code(), Some(2));
    assert_eq!(repo.wp(["check"]).output().code(), Some(2));
    // -h reaches the binary (git turns --help into `git help`).
    assert!(repo.wp(["-h"]).succeeds().stdout().contains("allocate"));
}
