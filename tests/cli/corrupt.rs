//! A damaged registry never leads to a port handed out twice.

use crate::support::*;

/// main, a and b allocated; returns the repo and c, a worktree not yet allocated.
fn populated() -> (TestRepo, std::path::PathBuf) {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    for name in ["a", "b"] {
        let p = repo.add_worktree(name);
        repo.wp_in(&p, ["allocate"]).succeeds();
    }
    let c = repo.add_worktree("c");
    (repo, c)
}

#[test]
fn truncated_garbage_or_empty_file_recovers_from_the_backup() {
    let good = std::fs::read(populated().0.registry_path()).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated at 1", good[..1].to_vec()),
        ("truncated in the middle", good[..good.len() / 2].to_vec()),
        ("truncated before the end", good[..good.len() - 3].to_vec()),
        ("garbage", b"\x00\x01not json at all\xff".to_vec()),
        ("wrong shape", b"[1, 2, 3]".to_vec()),
    ];
    for (what, bytes) in cases {
        let (repo, c) = populated();
        std::fs::write(repo.registry_path(), &bytes).unwrap();
        let out = repo.wp_in(&c, ["allocate", "--json"]).succeeds();
        assert!(
            out.stderr().contains("recovered"),
            "{what}: {}",
            out.describe()
        );
        let reg = repo.registry();
        let keys: Vec<&String> = reg["allocated_ports"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b", "c", "main"], "{what}");
        assert_unique(&all_registry_ports(&reg));
    }
}

#[test]
fn damaged_file_and_damaged_backup_are_refused_and_left_alone() {
    let (repo, c) = populated();
    std::fs::write(repo.registry_path(), b"{\"allocated_ports\": {\"main\"").unwrap();
    let backup = repo.common_dir().join("worktree-registry/ports.json.bak");
    std::fs::write(&backup, b"garbage").unwrap();
    let before = repo.registry_snapshot();
    let out = repo.wp_in(&c, ["allocate", "--json"]).fails().json();
    assert_eq!(out["error"], "REGISTRY_CORRUPT");
    assert!(
        out["message"].as_str().unwrap().contains("ports.json.bak"),
        "{out}"
    );
    assert_eq!(before, repo.registry_snapshot());
    // Without any backup: still refused, never a fresh empty registry.
    std::fs::remove_file(&backup).unwrap();
    let out = repo.wp_in(&c, ["allocate", "--json"]).fails().json();
    assert_eq!(out["error"], "REGISTRY_CORRUPT");
    assert_eq!(repo.wp(["get", "web"]).fails().code(), Some(1));
}

#[test]
fn empty_file_without_backup_starts_empty() {
    let repo = TestRepo::new();
    write(&repo.registry_path(), "");
    let out = repo.wp(["allocate", "--json"]).succeeds();
    assert!(out.stderr().contains("empty"), "{}", out.describe());
    assert_eq!(out.json()["ports"]["web"], repo.base);
}

#[test]
fn a_registry_listing_a_port_twice_recovers_from_the_backup() {
    let (repo, c) = populated();
    let mut reg = repo.registry();
    let main_web = reg["allocated_ports"]["main"]["web"].clone();
    reg["allocated_ports"]["a"]["web"] = main_web;
    std::fs::write(repo.registry_path(), reg.to_string()).unwrap();
    let out = repo.wp_in(&c, ["allocate"]).succeeds();
    assert!(
        out.stderr().contains("registered twice"),
        "{}",
        out.describe()
    );
    assert_unique(&all_registry_ports(&repo.registry()));
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bak {
    Good,
    Missing,
    Bad,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// Recovered from the backup with a warning.
    Recovered,
    /// Treated as an empty registry with a warning.
    Empty,
    /// REGISTRY_CORRUPT naming `repair`.
    Corrupt,
    /// REGISTRY_CORRUPT naming an upgrade.
    Newer,
}

/// The documented outcome of each damage with each backup state, and in every case: no port
/// that a surviving record holds is handed out again.
type Damage = Box<dyn Fn(&[u8]) -> Vec<u8>>;

#[test]
fn corruption_table() {
    let cut =
        |f: fn(usize) -> usize| -> Damage { Box::new(move |g: &[u8]| g[..f(g.len())].to_vec()) };
    let fixed = |b: &'static [u8]| -> Damage { Box::new(move |_| b.to_vec()) };
    let cases: Vec<(&str, Damage)> = vec![
        ("empty", fixed(b"")),
        ("truncated at 1", cut(|_| 1)),
        ("truncated at 10", cut(|_| 10)),
        ("truncated at a third", cut(|n| n / 3)),
        ("truncated at half", cut(|n| n / 2)),
        ("truncated 2 before the end", cut(|n| n - 2)),
        ("garbage", fixed(b"\x00\x01\x02garbage\xff\xfe")),
        ("a JSON array", fixed(b"[1, 2, 3]")),
        (
            "allocated_ports not a map",
            fixed(br#"{"allocated_ports": []}"#),
        ),
        (
            "a port that is a string",
            fixed(br#"{"allocated_ports": {"main": {"web": "x"}}}"#),
        ),
        (
            "unknown version",
            Box::new(|g: &[u8]| edit(g, |r| r["version"] = serde_json::json!(99))),
        ),
        (
            "a port registered twice",
            Box::new(|g: &[u8]| {
                edit(g, |r| {
                    r["allocated_ports"]["a"]["web"] = r["allocated_ports"]["main"]["web"].clone()
                })
            }),
        ),
        (
            "a worktree named twice (a hand merge)",
            Box::new(|g: &[u8]| {
                String::from_utf8_lossy(g)
                    .replacen(r#""allocated_ports":{"#, r#""allocated_ports":{"a":{},"#, 1)
                    .into_bytes()
            }),
        ),
        (
            "allocated_ports twice",
            Box::new(|g: &[u8]| {
                String::from_utf8_lossy(g)
                    .replacen(
                        r#""allocated_ports":{"#,
                        r#""allocated_ports":{},"allocated_ports":{"#,
                        1,
                    )
                    .into_bytes()
            }),
        ),
        (
            "port 80",
            Box::new(|g: &[u8]| {
                edit(g, |r| {
                    r["allocated_ports"]["a"]["web"] = serde_json::json!(80)
                })
            }),
        ),
        (
            "port 70000",
            Box::new(|g: &[u8]| {
                edit(g, |r| {
                    r["allocated_ports"]["a"]["web"] = serde_json::json!(70000)
                })
            }),
        ),
    ];
    let mut checked = 0;
    for (name, damage) in &cases {
        for bak in [Bak::Good, Bak::Missing, Bak::Bad] {
            let expected = match (*name, bak) {
                ("unknown version", _) => Outcome::Newer,
                ("empty", Bak::Missing) => Outcome::Empty,
                (_, Bak::Good) => Outcome::Recovered,
                _ => Outcome::Corrupt,
            };
            check_case(name, damage, bak, expected);
            checked += 1;
        }
    }
    eprintln!("corruption table: {checked} cases");
}

fn edit(good: &[u8], f: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(good).unwrap();
    f(&mut v);
    v.to_string().into_bytes()
}

fn check_case(name: &str, damage: &Damage, bak: Bak, expected: Outcome) {
    let what = format!("{name} / backup {bak:?}");
    let (repo, c) = populated();
    let before = repo.registry();
    let held: Vec<u16> = all_registry_ports(&before);
    let bak_path = repo.common_dir().join("worktree-registry/ports.json.bak");
    let bytes = damage(&std::fs::read(repo.registry_path()).unwrap());
    std::fs::write(repo.registry_path(), &bytes).unwrap();
    match bak {
        Bak::Good => {}
        Bak::Missing => std::fs::remove_file(&bak_path).unwrap(),
        Bak::Bad => std::fs::write(&bak_path, b"{\"allocated_ports\": {\"ma").unwrap(),
    }
    let snapshot = repo.registry_snapshot();
    let out = repo
        .wp_in(&c, ["allocate", "--json", "--no-render"])
        .output();
    match expected {
        Outcome::Recovered => {
            assert_eq!(out.code(), Some(0), "{what}: {}", out.describe());
            assert!(
                out.stderr().contains("recovered"),
                "{what}: {}",
                out.describe()
            );
            let reg = repo.registry();
            for w in ["main", "a", "b"] {
                assert_eq!(
                    reg["allocated_ports"][w], before["allocated_ports"][w],
                    "{what}: {w} kept"
                );
            }
            let new: Vec<u16> = ports_of(&out.json()["ports"])
                .into_iter()
                .map(|(_, p)| p)
                .collect();
            assert!(
                new.iter().all(|p| !held.contains(p)),
                "{what}: a held port was given again"
            );
        }
        Outcome::Empty => {
            assert_eq!(out.code(), Some(0), "{what}: {}", out.describe());
            assert!(out.stderr().contains("empty"), "{what}: {}", out.describe());
        }
        Outcome::Corrupt | Outcome::Newer => {
            assert_eq!(out.code(), Some(1), "{what}: {}", out.describe());
            let err = out.json();
            assert_eq!(err["error"], "REGISTRY_CORRUPT", "{what}");
            let msg = err["message"].as_str().unwrap();
            let hint = if expected == Outcome::Newer {
                "upgrade"
            } else {
                "git worktree-ports repair"
            };
            assert!(msg.contains(hint), "{what}: {msg}");
            assert_eq!(
                snapshot,
                repo.registry_snapshot(),
                "{what}: nothing changed"
            );
        }
    }
    if expected != Outcome::Corrupt {
        return;
    }
    // repair rebuilds from what can be read; afterwards no held port is given twice.
    let rep = repo.wp(["repair", "--json"]).succeeds().json();
    let reg = repo.registry();
    for kept in rep["kept"].as_array().unwrap() {
        let w = kept["worktree"].as_str().unwrap();
        for (svc, port) in kept["ports"].as_object().unwrap() {
            assert_eq!(
                &before["allocated_ports"][w][svc], port,
                "{what}: repair changed {w} {svc}"
            );
        }
    }
    let out = repo
        .wp_in(&c, ["allocate", "--json", "--no-render"])
        .succeeds()
        .json();
    let salvaged: Vec<u16> = all_registry_ports(&reg);
    let new: Vec<u16> = ports_of(&out["ports"])
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert!(
        new.iter().all(|p| !salvaged.contains(p)),
        "{what}: a salvaged port was given again"
    );
    assert_unique(&all_registry_ports(&repo.registry()));
    assert!(
        std::fs::read_dir(repo.common_dir().join("worktree-registry"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("ports.json.corrupt-"))
            || bytes.is_empty(),
        "{what}: the damaged file is kept"
    );
}

#[test]
fn repair_salvages_a_truncated_file_with_no_backup() {
    let (repo, c) = populated();
    let before = repo.registry();
    let good = std::fs::read(repo.registry_path()).unwrap();
    // Cut inside b's entry: main and a are complete before it (keys sort: a, b, main... so cut
    // just before "main" keeps a and b).
    let text = String::from_utf8(good.clone()).unwrap();
    let cut = text.find("\"main\":").unwrap() + 3;
    std::fs::write(repo.registry_path(), &good[..cut]).unwrap();
    std::fs::remove_file(repo.common_dir().join("worktree-registry/ports.json.bak")).unwrap();
    let out = repo.wp(["repair"]).succeeds().stdout();
    assert!(out.contains("damaged, salvaged"), "{out}");
    let reg = repo.registry();
    assert_eq!(reg["allocated_ports"]["a"], before["allocated_ports"]["a"]);
    assert_eq!(reg["allocated_ports"]["b"], before["allocated_ports"]["b"]);
    assert!(
        reg["allocated_ports"].get("main").is_none(),
        "main's entry was cut"
    );
    // main allocates anew, away from a's and b's ports; c too.
    repo.wp(["allocate", "--no-render"]).succeeds();
    repo.wp_in(&c, ["allocate", "--no-render"]).succeeds();
    assert_unique(&all_registry_ports(&repo.registry()));
}

/// Issue 28, item 2: with the records apart, `ports.json` names a records file; a records
/// file that is gone is damage, never "no records": every command that writes refuses
/// (nothing changed, the records file named), and `repair` keeps every port and makes the
/// records again from git's worktree list.
#[test]
fn a_missing_records_file_is_refused_and_repair_keeps_every_port() {
    const APART: &str = "GIT_WORKTREE_PORTS_RECORDS_APART_FROM";
    let repo = TestRepo::new();
    repo.wp(["allocate"]).env(APART, "2").succeeds();
    let mut worktrees = Vec::new();
    for name in ["a", "b"] {
        let p = repo.add_worktree(name);
        repo.wp_in(&p, ["allocate"]).env(APART, "2").succeeds();
        worktrees.push(p);
    }
    let before = repo.registry();
    let dir = repo.common_dir().join("worktree-registry");
    let text = std::fs::read_to_string(dir.join("ports.json")).unwrap();
    assert!(text.starts_with("{\"version\":2,"), "{text}");
    std::fs::remove_file(dir.join("records-1.jsonl")).unwrap();
    let snapshot = repo.registry_snapshot();

    let c = repo.add_worktree("c");
    let out = repo
        .wp_in(&c, ["allocate", "--json"])
        .env(APART, "2")
        .fails()
        .json();
    assert_eq!(out["error"], "REGISTRY_CORRUPT", "{out}");
    let message = out["message"].as_str().unwrap();
    assert!(
        message.contains("records-1.jsonl is missing") && message.contains("repair"),
        "{message}"
    );
    assert_eq!(repo.registry_snapshot(), snapshot, "nothing changed");

    repo.wp(["repair"]).env(APART, "2").succeeds();
    let reg = repo.registry();
    for key in ["main", "a", "b"] {
        assert_eq!(
            reg["allocated_ports"][key], before["allocated_ports"][key],
            "{key}"
        );
    }
    for (key, path) in [("a", &worktrees[0]), ("b", &worktrees[1])] {
        assert_eq!(
            reg["worktrees"][key]["path"],
            path.to_str().unwrap(),
            "{reg}"
        );
    }
    repo.wp_in(&c, ["allocate", "--no-render"])
        .env(APART, "2")
        .succeeds();
    assert_unique(&all_registry_ports(&repo.registry()));
}
