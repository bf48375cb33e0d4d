//! Hostile names, paths, configs and templates: nothing reaches a shell, nothing leaves the
//! worktree, nothing the tool creates is world-writable.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::support::*;

/// Paths a shell would choke on or run: quotes, `$()`, backticks, a newline, a glob.
const NASTY: &[&str] = &[
    "it's \"quoted\"",
    "$(touch PWNED)",
    "`touch PWNED2`",
    "new\nline",
    "semi;colon & amp | pipe",
    "star*and?[x]",
    "-dash-first",
];

#[test]
fn nasty_worktree_paths_never_reach_a_shell_and_never_break_the_hook() {
    let repo = TestRepo::new();
    repo.wp(["hooks", "install"]).succeeds();
    let parent = repo.path("nasty");
    std::fs::create_dir_all(&parent).unwrap();
    for (i, name) in NASTY.iter().enumerate() {
        let path = parent.join(name);
        let out = Out(repo.env.git_output(
            &repo.root,
            [
                OsStr::new("worktree"),
                OsStr::new("add"),
                OsStr::new("-q"),
                OsStr::new("-b"),
                OsStr::new(&format!("b{i}")),
                path.as_os_str(),
            ],
        ));
        assert!(out.0.status.success(), "{name:?}: {}", out.describe());
        assert!(
            !out.stderr().contains("warning"),
            "{name:?}: {}",
            out.describe()
        );
        assert!(path.join(".env").exists(), "{name:?}: the hook rendered");
        // Reachable by path, from inside, and by our own add.
        let web = repo
            .wp(["get", "web", "-w", path.to_str().unwrap()])
            .succeeds()
            .stdout();
        assert_eq!(repo.wp_in(&path, ["get", "web"]).succeeds().stdout(), web);
    }
    let via_add = parent.join("$(touch PWNED3) via add");
    repo.wp(["add", "-b", "via-add", via_add.to_str().unwrap()])
        .succeeds();
    for marker in ["PWNED", "PWNED2", "PWNED3"] {
        for dir in [&repo.root, &parent, &repo.env.root().to_path_buf()] {
            assert!(
                !dir.join(marker).exists(),
                "{marker} was created in {}",
                dir.display()
            );
        }
    }
    let reg = repo.registry();
    assert_eq!(
        reg["allocated_ports"].as_object().unwrap().len(),
        NASTY.len() + 2,
        "every nasty worktree, one more, and main (main-first)"
    );
    assert_unique(&all_registry_ports(&reg));
    // list prints them all without breaking.
    let list = repo.wp(["list", "--json"]).succeeds().json();
    assert_eq!(list["worktrees"].as_array().unwrap().len(), NASTY.len() + 2);
}

#[test]
fn a_non_utf8_worktree_path_works() {
    let repo = TestRepo::new();
    repo.wp(["hooks", "install"]).succeeds();
    let path: PathBuf = repo.path("bytes").join(OsStr::from_bytes(b"wt-\xff\xfe"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let out = Out(repo.env.git_output(
        &repo.root,
        [
            OsStr::new("worktree"),
            OsStr::new("add"),
            OsStr::new("-q"),
            path.as_os_str(),
        ],
    ));
    assert!(out.0.status.success(), "{}", out.describe());
    assert!(!out.stderr().contains("warning"), "{}", out.describe());
    assert!(path.join(".env").exists());
    let alloc = repo.wp_in(&path, ["allocate", "--json"]).succeeds().json();
    // Not UTF-8: the documented escaped key (issue 15, item 1).
    assert_eq!(alloc["worktree"], "bytes/wt-\\xff\\xfe");
    repo.wp_in(&path, ["get", "db"]).succeeds();
    repo.wp(["list"]).succeeds();
    // Prune does not mistake it for a dead worktree.
    assert_eq!(
        repo.wp(["prune", "--json"]).succeeds().json()["pruned"],
        serde_json::json!([])
    );
    // remove hands git the path byte for byte (a lossy path would name no worktree).
    let out = repo
        .wp(["remove", "bytes/wt-\\xff\\xfe", "--json"])
        .succeeds()
        .json();
    assert!(out["released"].get("web").is_some(), "{out}");
    assert!(!path.exists());
}

#[test]
fn env_var_names_are_validated() {
    for env in ["A B", "X;rm -rf /", "$(id)", "1ABC", "A-B", ""] {
        let block = port_block();
        let base = block.base;
        let config = format!(
            "[services.web]\nrange = [{base}, {}]\nenv = {env:?}\n",
            base + 5
        );
        let repo = TestRepo::with_config(&config, block);
        let out = repo.wp(["env"]).fails();
        assert!(
            out.stderr()
                .contains("not a valid environment variable name"),
            "{env:?}: {}",
            out.describe()
        );
    }
}

#[test]
fn templates_cannot_escape_through_symlinks_or_read_through_them() {
    let repo = TestRepo::new();
    let outside = repo.path("outside");
    write(&outside.join("secret.tera"), "SECRET {{ ports.web }}\n");
    // A template that is a symlink to a file outside, and a templates subdir that is one.
    let templates = repo.root.join(".worktree-ports/templates");
    write(&templates.join("ok.txt.tera"), "ok\n");
    std::os::unix::fs::symlink(
        outside.join("secret.tera"),
        templates.join("linked.txt.tera"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, templates.join("subdir")).unwrap();
    let out = repo.wp(["render", "--json"]).succeeds().json();
    let files: Vec<&str> = out["worktrees"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["ok.txt"], "symlinked templates are not followed");
    assert!(!repo.root.join("linked.txt").exists());
    assert!(!repo.root.join("subdir").exists());
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written outside"
    );
}

#[test]
fn files_the_tool_creates_are_never_world_writable() {
    let repo = TestRepo::new();
    commit_files(
        &repo,
        &[(
            ".worktree-ports/templates/deep/er/app.conf.tera",
            "{{ ports.web }}\n",
        )],
    );
    repo.wp(["hooks", "install"]).succeeds();
    let mut run = repo.wp(["allocate"]);
    // Run under umask 000 through a shell, the worst a user's environment can do.
    run.cmd = {
        let mut cmd = std::process::Command::new("sh");
        cmd.current_dir(&repo.root)
            .arg("-c")
            .arg(format!("umask 000; exec '{}' allocate", bin().display()));
        repo.env.apply(&mut cmd);
        cmd
    };
    run.succeeds();
    let mode = |p: PathBuf| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions())
            & 0o777
    };
    let reg = repo.common_dir().join("worktree-registry");
    for f in ["ports.json", "ports.json.bak", "ports.lock"] {
        assert_eq!(mode(reg.join(f)), 0o644, "{f}");
    }
    assert_eq!(mode(reg.clone()), 0o755, "the registry directory");
    assert_eq!(mode(repo.root.join("deep/er/app.conf")), 0o644);
    assert_eq!(mode(repo.root.join("deep")), 0o755);
    assert_eq!(mode(repo.root.join("deep/er")), 0o755);
    assert_eq!(
        mode(repo.common_dir().join("worktree-ports/rendered.json")),
        0o644
    );
    assert_eq!(mode(repo.common_dir().join("hooks/post-checkout")), 0o755);
}
