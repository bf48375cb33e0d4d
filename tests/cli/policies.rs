//! Port policies people already follow (issue 17): named ranges, slots, blocks, suggestions and
//! leases. Pins into this
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

/// The 100-port project policy: `base = 30000, size = 10, span = 100`, fixed offsets.
const TEAM: &str = "strategy = \"block\"\n\
    [block]\nbase = 30000\nsize = 10\nspan = 100\n\
    [services.web]\noffset = 0\n[services.api]\noffset = 1\n[services.db]\noffset = 2\n\
    [services.supabase-api]\noffset = 3\n[services.studio]\noffset = 4\n";

fn ports_json(out: &serde_json::Value) -> Vec<(String, u16)> {
    ports_of(&out["ports"])
}

#[test]
fn team_blocks_give_30000_30010_and_30100_with_fixed_offsets() {
    let _fixed = fixed_ports();
    let repo = TestRepo::with_config(TEAM, port_block());
    let main = repo.wp(["allocate", "--json"]).succeeds().json();
    assert_eq!(
        ports_json(&main),
        [
            ("api".to_string(), 30001),
            ("db".into(), 30002),
            ("studio".into(), 30004),
            ("supabase-api".into(), 30003),
            ("web".into(), 30000)
        ]
    );
    assert_eq!(main["slot"], 0);
    // Instance 1 of the project: base + 10, through `add` and the real hook.
    let feature = repo.path("feature");
    repo.wp(["add", feature.to_str().unwrap()]).succeeds();
    let env = repo
        .wp_in(&feature, ["env", "--format", "json"])
        .succeeds()
        .json();
    assert_eq!(env["WEB_PORT"], 30010);
    assert_eq!(env["SUPABASE_API_PORT"], 30013);
    assert_eq!(env["WORKTREE_SLOT"], 1);
    // Project 2 claims the next block.
    let other = repo.another("other", Some(TEAM));
    let out = repo.wp_in(&other, ["allocate", "--json"]).succeeds().json();
    assert_eq!(out["ports"]["web"], 30100);
    assert_eq!(out["ports"]["studio"], 30104);
    // Each claim is in its registry and in the machine index.
    assert_eq!(
        repo.registry()["block"],
        serde_json::json!({"start": 30000, "base": 30000, "size": 10, "span": 100})
    );
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            repo.env
                .root()
                .join("home/.local/state/git-worktree-ports/index.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let blocks: Vec<serde_json::Value> = index["repositories"]
        .as_object()
        .unwrap()
        .values()
        .map(|e| e["block"].clone())
        .collect();
    assert!(
        blocks.contains(&serde_json::json!([30000, 30099])),
        "{index}"
    );
    assert!(
        blocks.contains(&serde_json::json!([30100, 30199])),
        "{index}"
    );
    // The next instance of project 1 is slot 2; web alone, as JSON too.
    let text = repo.wp(["suggest"]).succeeds().stdout();
    assert!(
        text.starts_with("next suggested slot: 2 (web 30020, api 30021, db 30022, supabase-api 30023, studio 30024) (blocks of 100 from 30000, 10 ports per worktree: this repository's block 30000-30099)\n  then slot 3 (web 30030,"),
        "{text}"
    );
    let json = repo.wp(["suggest", "web", "--json"]).succeeds().json();
    assert_eq!(
        json["suggestions"][0],
        serde_json::json!({"ports": {"web": 30020}, "slot": 2, "block": [30000, 30099]})
    );
    assert_eq!(json["suggestions"].as_array().unwrap().len(), 3);
    // A repository not yet allocated is told about the block it would claim.
    let third = repo.another("third", Some(TEAM));
    let json = repo.wp_in(&third, ["suggest", "--json"]).succeeds().json();
    assert_eq!(
        json["suggestions"][0]["block"],
        serde_json::json!([30200, 30299])
    );
    assert_eq!(json["suggestions"][0]["ports"]["web"], 30200);
}

#[test]
fn suggest_in_the_ranges_strategy_skips_registered_and_busy_ports_and_writes_nothing() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate"]).succeeds();
    let _busy = std::net::TcpListener::bind(("127.0.0.1", b + 2)).unwrap();
    let before = repo.registry_snapshot();
    let text = repo.wp(["suggest", "web"]).succeeds().stdout();
    assert_eq!(
        text,
        format!(
            "web: next suggested port: {} (lowest free in {b}-{}); then {}, {}\n",
            b + 1,
            b + 19,
            b + 3,
            b + 4
        )
    );
    let json = repo
        .wp(["suggest", "--count", "1", "--json"])
        .succeeds()
        .json();
    assert_eq!(
        json,
        serde_json::json!({
            "schema": 1,
            "strategy": "ranges",
            "convention": "the lowest free port of each service's range",
            "suggestions": [{"ports": {"web": b + 1, "db": b + 21}}],
        })
    );
    assert_eq!(repo.registry_snapshot(), before);
    let err = repo.wp(["suggest", "nope", "--json"]).fails().json();
    assert_eq!(err["error"], "UNKNOWN_SERVICE");
}

#[test]
fn poem_installations_at_9500_9510_9520_and_a_deleted_ones_gap_refilled() {
    let _fixed = fixed_ports();
    let poem = "strategy = \"block\"\n[block]\nbase = 9500\nsize = 10\nspan = 10\n\
                [services.http]\noffset = 0\n";
    let repo = TestRepo::with_config(poem, port_block());
    let second = repo.another("second", Some(poem));
    let third = repo.another("third", Some(poem));
    let mut got = Vec::new();
    for dir in [&repo.root, &second, &third] {
        let out = repo.wp_in(dir, ["allocate", "--json"]).succeeds().json();
        got.push(out["ports"]["http"].as_u64().unwrap());
    }
    assert_eq!(got, [9500, 9510, 9520]);
    // One installation is deleted; `prune --all` drops it and its block.
    std::fs::remove_dir_all(&second).unwrap();
    let pruned = repo.wp(["prune", "--all"]).succeeds().stdout();
    assert!(pruned.contains("9510-9519"), "{pruned}");
    let fourth = repo.another("fourth", Some(poem));
    let out = repo
        .wp_in(&fourth, ["allocate", "--json"])
        .succeeds()
        .json();
    assert_eq!(out["ports"]["http"], 9510, "the gap is filled again");
    let fifth = repo.another("fifth", Some(poem));
    let out = repo.wp_in(&fifth, ["allocate", "--json"]).succeeds().json();
    assert_eq!(out["ports"]["http"], 9530);
    // The next installation: 9540 is held by a stranger, so 9550, named after the convention.
    let _stranger = std::net::TcpListener::bind(("0.0.0.0", 9540)).unwrap();
    let before = repo.registry_snapshot();
    let text = repo.wp(["suggest"]).succeeds().stdout();
    assert_eq!(
        text,
        "next suggested port: 9550 (increment of 10 from 9500); then 9560, 9570\n  ports: http 9550\n"
    );
    let json = repo
        .wp(["suggest", "--count", "2", "--json"])
        .succeeds()
        .json();
    assert_eq!(
        json,
        serde_json::json!({
            "schema": 1,
            "strategy": "block",
            "convention": "increment of 10 from 9500",
            "suggestions": [
                {"ports": {"http": 9550}, "slot": 0, "block": [9550, 9559]},
                {"ports": {"http": 9560}, "slot": 0, "block": [9560, 9569]},
            ]
        })
    );
    assert_eq!(repo.registry_snapshot(), before, "suggest writes nothing");
}

/// Three slots of 10 inside this test's own high block of 40 ports.
fn small_blocks(base: u16) -> String {
    format!(
        "strategy = \"block\"\n[block]\nbase = {base}\nsize = 10\nspan = 30\n\
         [services.web]\noffset = 0\n[services.db]\noffset = 2\n"
    )
}

#[test]
fn a_slot_with_a_busy_port_is_skipped_whole_and_a_full_block_fails_with_range_exhausted() {
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&small_blocks(b), block);
    repo.wp(["allocate"]).succeeds();
    // A stranger on slot 1's port 7, which no service uses.
    let _stranger = std::net::TcpListener::bind(("127.0.0.1", b + 17)).unwrap();
    let a = repo.add_worktree("a");
    let out = repo.wp_in(&a, ["allocate", "--json"]).succeeds().json();
    assert_eq!(out["ports"]["web"], b + 20);
    assert_eq!(out["ports"]["db"], b + 22);
    assert_eq!(out["slot"], 2);
    // Slot 1 is the only one left, and it is busy: the block is full.
    let c = repo.add_worktree("c");
    let before = repo.registry_snapshot();
    let err = repo.wp_in(&c, ["allocate", "--json"]).fails();
    assert_eq!(err.code(), Some(1));
    let err = err.json();
    assert_eq!(err["error"], "RANGE_EXHAUSTED");
    let msg = err["message"].as_str().unwrap();
    for part in [
        format!("block {b}-{}", b + 29),
        "main (slot 0), a (slot 2)".to_string(),
        format!(
            "slot 1 skipped: port {} is in use by pid {}",
            b + 17,
            std::process::id()
        ),
        "widen span in [block]".to_string(),
    ] {
        assert!(msg.contains(&part), "{part}: {msg}");
    }
    assert_eq!(repo.registry_snapshot(), before, "nothing changed");
}

#[test]
fn a_changed_block_config_keeps_existing_ports_and_says_they_no_longer_follow_it() {
    let block = port_block();
    let b = block.base;
    let repo = TestRepo::with_config(&small_blocks(b), block);
    let a = repo.add_worktree("a");
    repo.wp_in(&a, ["allocate"]).succeeds();
    assert_eq!(repo.registry()["allocated_ports"]["a"]["web"], b + 10);
    // Slots of 5 now: a new worktree follows the new config, the old ones keep their ports.
    let changed = small_blocks(b).replace("size = 10\nspan = 30", "size = 5\nspan = 30");
    commit_files(&repo, &[(".worktree-ports/config.toml", &changed)]);
    let c = repo.add_worktree("c");
    let out = repo.wp_in(&c, ["allocate", "--json"]).output();
    let stderr = out.stderr();
    assert!(stderr.contains("the block config changed"), "{stderr}");
    assert!(
        stderr.contains("release -w NAME && git worktree-ports allocate -w NAME"),
        "{stderr}"
    );
    let out = out.json();
    // Slots 0 and 1 of the new layout (b..b+9) overlap main's and... main holds b, b+2; a
    // holds b+10, b+12: the first slot of 5 clear of both is slot 3 (b+15).
    assert_eq!(out["ports"]["web"], b + 15, "{out}");
    assert_eq!(
        repo.registry()["allocated_ports"]["a"]["web"],
        b + 10,
        "kept"
    );
}

/// The README's per-service, category and project-type configs, with their sources' exact
/// numbers. These are well-known ports a developer's machine may be using: then the test says
/// which and skips, rather than fail for a reason that is not ours.
#[test]
fn the_readme_policies_give_their_exact_numbers() {
    let _fixed = fixed_ports();
    let per_service = "[services.web]\nrange = [8080, 8099]\n[services.db]\nrange = [5432, 5439]\n";
    let repo = TestRepo::with_config(per_service, port_block());
    // `check` probes as an allocation does (binding without listening, so it never makes a
    // parallel test's probe see these ports busy).
    let wanted = [
        "8080", "8081", "5432", "5433", "20000", "21000", "22000", "23000", "25000", "3000",
    ];
    let mut check = vec!["check"];
    check.extend(wanted);
    if !repo.wp(&check).output().0.status.success() {
        eprintln!(
            "skipped the_readme_policies_give_their_exact_numbers: one of {wanted:?} is in use on this machine"
        );
        return;
    }
    let main = repo
        .wp(["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(
        ports_json(&main),
        [("db".to_string(), 5432), ("web".into(), 8080)]
    );
    let login = repo.add_worktree("feature-login");
    let out = repo
        .wp_in(&login, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(
        ports_json(&out),
        [("db".to_string(), 5433), ("web".into(), 8081)]
    );

    let categories = "[services.postgres]\nrange = \"databases\"\n[services.redis]\nrange = \"cache\"\n\
        [services.meilisearch]\nrange = \"search\"\n[services.minio]\nrange = \"storage\"\n\
        [services.grafana]\nrange = \"monitoring\"\n";
    let platform = repo.another("platform", Some(categories));
    let out = repo
        .wp_in(&platform, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(
        ports_json(&out),
        [
            ("grafana".to_string(), 25000),
            ("meilisearch".into(), 22000),
            ("minio".into(), 23000),
            ("postgres".into(), 20000),
            ("redis".into(), 21000)
        ]
    );

    let agent = repo.another(
        "agent",
        Some("reserved = [\"system\"]\n[services.web]\nrange = \"auto\"\n"),
    );
    write(&agent.join("package.json"), "{}\n");
    let out = repo
        .wp_in(&agent, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    assert_eq!(out["ports"]["web"], 3000);
    let err = repo
        .wp_in(
            &agent,
            ["allocate", "--json", "--no-render", "--port=web=2650"],
        )
        .fails()
        .json();
    assert_eq!(err["error"], "SYSTEM_RESERVED");
}

#[test]
fn pins_and_reserved_ports_work_in_the_block_strategy_as_in_ranges() {
    let block = port_block();
    let b = block.base;
    let config = format!("reserved = [{}]\n{}", b + 25, small_blocks(b));
    let repo = TestRepo::with_config(&config, block);
    // A pin anywhere free is honoured; the other service still sits in the slot.
    let out = repo
        .wp([
            "allocate",
            "--json",
            "--no-render",
            &format!("--port=web={}", b + 27),
        ])
        .succeeds()
        .json();
    assert_eq!(
        (out["ports"]["web"].clone(), out["ports"]["db"].clone()),
        ((b + 27).into(), (b + 2).into())
    );
    let a = repo.add_worktree("a");
    let err = repo
        .wp_in(
            &a,
            [
                "allocate",
                "--json",
                "--no-render",
                &format!("--port=web={}", b + 25),
            ],
        )
        .fails()
        .json();
    assert_eq!(err["error"], "SYSTEM_RESERVED");
    let err = repo
        .wp_in(
            &a,
            [
                "allocate",
                "--json",
                "--no-render",
                &format!("--port=web={}", b + 27),
            ],
        )
        .fails()
        .json();
    assert_eq!(err["error"], "PORT_ALLOCATED");
    // Alternatives come from the repository's block.
    let alternatives: Vec<u64> = err["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(
        alternatives,
        [u64::from(b) + 26, u64::from(b) + 28, u64::from(b) + 29]
    );
}
