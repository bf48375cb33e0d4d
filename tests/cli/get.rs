use crate::support::*;

#[test]
fn get_prints_the_port_alone() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate"]).succeeds();
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate"]).succeeds();

    assert_eq!(
        repo.wp(["get", "web"]).succeeds().stdout(),
        format!("{b}\n")
    );
    assert_eq!(
        repo.wp_in(&feature, ["get", "db"]).succeeds().stdout(),
        format!("{}\n", b + 21)
    );
    assert_eq!(
        repo.wp(["get", "web", "-w", "feature"]).succeeds().stdout(),
        format!("{}\n", b + 1)
    );
    assert_eq!(
        repo.wp(["get", "web", "--worktree", feature.to_str().unwrap()])
            .succeeds()
            .stdout(),
        format!("{}\n", b + 1)
    );
    // From a subdirectory of the worktree.
    let sub = feature.join("src/deep");
    std::fs::create_dir_all(&sub).unwrap();
    assert_eq!(
        repo.wp_in(&sub, ["get", "web"]).succeeds().stdout(),
        format!("{}\n", b + 1)
    );
    assert_eq!(
        repo.wp_in(&sub, ["get", "web", "-w", "main"])
            .succeeds()
            .stdout(),
        format!("{b}\n")
    );
}

#[test]
fn get_fails_without_an_allocation_or_service() {
    let repo = TestRepo::new();
    let out = repo.wp(["get", "web"]).fails();
    assert!(out.stdout().is_empty());
    assert!(
        out.stderr().contains("git worktree-ports allocate"),
        "{}",
        out.describe()
    );
    repo.wp(["allocate"]).succeeds();
    let out = repo.wp(["get", "cache"]).fails();
    assert!(
        out.stderr().contains("it has: db, web"),
        "{}",
        out.describe()
    );
    let out = repo.wp(["get", "web", "-w", "nope"]).fails();
    assert!(
        out.stderr().contains("no worktree named"),
        "{}",
        out.describe()
    );
}

/// Issue 28: `get` of one worktree reads `ports.json` only as far as `allocated_ports` and
/// builds no other entry. Whatever state the file is in, it answers what a read of the whole
/// file answers, warnings included: a truncated file (recovered from its backup), one with a
/// port twice (hand edit, backup kept), one whose tail is damaged at the backup's length
/// (answered from the ports, which are whole; the next locked command recovers), a file with
/// sorted keys and indentation (jq -S), a name with escapes.
#[test]
fn get_of_one_worktree_answers_as_the_whole_file_does_in_every_state() {
    let repo = TestRepo::new();
    let b = repo.base;
    repo.wp(["allocate", "--no-render"]).succeeds();
    let feature = repo.add_worktree("feature");
    repo.wp_in(&feature, ["allocate", "--no-render"]).succeeds();
    let file = repo.registry_path();
    let backup = file.with_extension("json.bak");
    let good = std::fs::read(&file).unwrap();
    let get = |args: &[&str]| {
        let out = repo.wp(args).output();
        (out.stdout(), out.stderr(), out.0.status.code())
    };
    assert_eq!(
        get(&["get", "web", "-w", "feature"]).0,
        format!("{}\n", b + 1)
    );

    // Truncated: read whole, recovered from the backup, said.
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    let (out, err, code) = get(&["get", "web", "-w", "feature"]);
    assert_eq!(
        (out.as_str(), code),
        (format!("{}\n", b + 1).as_str(), Some(0))
    );
    assert!(err.contains("recovered"), "{err}");

    // A port twice, at the backup's length: refused by the scan, read whole: recovered.
    let twice = String::from_utf8(good.clone()).unwrap().replacen(
        &format!("\"web\":{}", b + 1),
        &format!("\"web\":{b:05}"),
        1,
    );
    assert_eq!(twice.len(), good.len());
    std::fs::write(&file, &twice).unwrap();
    let (out, err, _) = get(&["get", "web", "-w", "feature"]);
    assert_eq!(out, format!("{}\n", b + 1), "{err}");
    assert!(err.contains("registered twice"), "{err}");

    // Damage after the ports, at the backup's length: the ports are whole and answered.
    let mut tail = good.clone();
    let at = tail.len() - 3;
    tail[at] = b'!';
    std::fs::write(&file, &tail).unwrap();
    let (out, err, _) = get(&["get", "db", "-w", "main"]);
    assert_eq!(out, format!("{}\n", b + 20), "{err}");
    repo.wp(["allocate", "--no-render"]).succeeds();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        good,
        "the next locked command recovers it"
    );

    // Sorted keys, indented, an escaped name: as the whole file says.
    let mut reg: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let ports = reg["allocated_ports"]["feature"].take();
    reg["allocated_ports"]
        .as_object_mut()
        .unwrap()
        .remove("feature");
    reg["allocated_ports"]["f\u{e9}a\"ture"] = ports;
    let text = serde_json::to_string_pretty(&reg).unwrap();
    std::fs::write(&file, &text).unwrap();
    std::fs::write(&backup, &text).unwrap();
    let (out, err, _) = get(&["get", "web", "-w", "f\u{e9}a\"ture"]);
    assert_eq!(out, format!("{}\n", b + 1), "{err}");
    let (out, err, _) = get(&["get", "web", "-w", "main"]);
    assert_eq!(out, format!("{b}\n"), "{err}");
    assert_eq!(err, "");
}
