//! Port policies people already follow (issue 17): named ranges so far. Pins into this
//! repository's high test block keep the tests independent of what listens on 3000 or 8080
//! here; the ranges themselves are checked where the registry records them.

use crate::support::*;

fn ranges_of(repo: &TestRepo) -> serde_json::Value {
    repo.registry()["port_ranges"].clone()
}

#[test]
fn project_type_ranges_and_system_reserved_with_the_sources_numbers() {
    let block = port_block();
    let b = block.base;
    let config = "reserved = [\"system\"]\n\
                  [services.node]\nrange = \"node\"\n\
                  [services.static]\nrange = \"static\"\n\
                  [services.python]\nrange = \"python\"\n\
                  [services.php]\nrange = \"php\"\n";
    let repo = TestRepo::with_config(config, block);
    let out = repo
        .wp([
            "allocate",
            "--json",
            "--no-render",
            &format!("--port=node={b}"),
            &format!("--port=static={}", b + 1),
            &format!("--port=python={}", b + 2),
            &format!("--port=php={}", b + 3),
        ])
        .succeeds()
        .json();
    assert_eq!(out["ports"]["php"], b + 3);
    assert_eq!(
        ranges_of(&repo),
        serde_json::json!({"node": [3000, 3999], "static": [4000, 4999], "python": [5000, 5999], "php": [8080, 8980]})
    );
    let err = repo
        .wp(["allocate", "--json", "--no-render", "--port=node=2650"])
        .fails()
        .json();
    assert_eq!(err["error"], "SYSTEM_RESERVED");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("the `system` range, 2601-2699"), "{msg}");
}

#[test]
fn category_ranges_with_the_sources_numbers() {
    let names = [
        ("databases", 20000, 20999),
        ("cache", 21000, 21999),
        ("search", 22000, 22999),
        ("storage", 23000, 23999),
        ("monitoring", 25000, 25999),
        ("security", 26000, 26999),
        ("ci", 27000, 27999),
        ("docs", 28000, 28999),
        ("scenarios", 30000, 34999),
        ("ide", 35000, 35999),
        ("debuggers", 36000, 36999),
        ("build", 37000, 37999),
        ("testing", 38000, 38999),
        ("dynamic", 40000, 49999),
    ];
    let block = port_block();
    let b = block.base;
    let config: String = names
        .iter()
        .map(|(n, _, _)| format!("[services.{n}]\nrange = \"{n}\"\n"))
        .collect();
    let repo = TestRepo::with_config(&config, block);
    let mut args = vec![
        "allocate".to_string(),
        "--json".into(),
        "--no-render".into(),
    ];
    for (i, (n, _, _)) in names.iter().enumerate() {
        args.push(format!("--port={n}={}", b + i as u16));
    }
    repo.wp(&args).succeeds();
    let ranges = ranges_of(&repo);
    for (n, lo, hi) in names {
        assert_eq!(ranges[n], serde_json::json!([lo, hi]), "{n}");
    }
    // A name that is not one is refused with the list.
    write(
        &repo.root.join(".worktree-ports/config.toml"),
        "[services.web]\nrange = \"nodejs\"\n",
    );
    let err = repo.wp(["allocate", "--json"]).fails().json();
    assert_eq!(err["error"], "CONFIG_INVALID");
    assert!(
        err["message"].as_str().unwrap().contains("\"node\""),
        "{err}"
    );
}

#[test]
fn range_auto_picks_the_project_type_from_the_worktrees_files_and_says_so() {
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config("[services.app]\nrange = \"auto\"\n", block);
    for (file, kind, lo, hi) in [
        ("package.json", "node", 3000, 3999),
        ("pyproject.toml", "python", 5000, 5999),
        ("requirements.txt", "python", 5000, 5999),
        ("setup.py", "python", 5000, 5999),
        ("composer.json", "php", 8080, 8980),
        ("", "static", 4000, 4999),
    ] {
        if !file.is_empty() {
            write(&repo.root.join(file), "{}\n");
        }
        let out = repo
            .wp([
                "allocate",
                "--json",
                "--no-render",
                &format!("--port=app={b}"),
            ])
            .succeeds()
            .json();
        let choice = out["range_choices"][0].as_str().unwrap().to_string();
        assert!(
            choice.contains(&format!("is {kind} {lo}-{hi}")),
            "{file}: {choice}"
        );
        assert_eq!(
            ranges_of(&repo)["app"],
            serde_json::json!([lo, hi]),
            "{file}"
        );
        let text = repo
            .wp(["allocate", "--no-render", &format!("--port=app={b}")])
            .succeeds()
            .stdout();
        assert!(text.contains("range \"auto\" is"), "{text}");
        if !file.is_empty() {
            std::fs::remove_file(repo.root.join(file)).unwrap();
        }
    }
}

#[test]
fn slots_are_small_stable_reused_after_release_and_in_list_env_and_templates() {
    let repo = TestRepo::new();
    commit_files(
        &repo,
        &[(
            ".worktree-ports/templates/.env.tera",
            "WEB_PORT={{ ports.web }}\nCALLBACK=https://wt-{{ slot }}.example.test/cb\n",
        )],
    );
    let a = repo.add_worktree("a");
    let b = repo.add_worktree("b");
    let c = repo.add_worktree("c");
    for d in [&a, &b, &c] {
        repo.wp_in(d, ["allocate"]).succeeds();
    }
    let slot_of = |d: &std::path::Path| {
        repo.wp_in(d, ["env", "--format", "json"]).succeeds().json()["WORKTREE_SLOT"].clone()
    };
    assert_eq!(
        slot_of(&repo.root),
        0,
        "main is 0 (allocated first: main-first)"
    );
    assert_eq!(
        (slot_of(&a), slot_of(&b), slot_of(&c)),
        (1.into(), 2.into(), 3.into())
    );
    assert!(
        std::fs::read_to_string(b.join(".env"))
            .unwrap()
            .contains("CALLBACK=https://wt-2.example.test/cb\n")
    );
    // Stable: moving a port keeps the slot.
    repo.wp_in(
        &c,
        ["allocate", "--port", &format!("web={}", repo.base + 15)],
    )
    .succeeds();
    assert_eq!(slot_of(&c), 3);
    // Released, its slot is the lowest free one again.
    repo.wp(["release", "a"]).succeeds();
    let d = repo.add_worktree("d");
    let out = repo.wp_in(&d, ["allocate", "--json"]).succeeds().json();
    assert_eq!(out["slot"], 1, "{out}");
    let list = repo.wp(["list", "--json"]).succeeds().json();
    let slots: Vec<(String, serde_json::Value)> = list["worktrees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_string(), w["slot"].clone()))
        .collect();
    assert!(slots.contains(&("d".into(), 1.into())), "{slots:?}");
    assert!(slots.contains(&("c".into(), 3.into())), "{slots:?}");
}
