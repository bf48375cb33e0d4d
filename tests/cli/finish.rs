//! The finish of a git command: man pages (`install-man`, `git worktree-ports --help`),
//! shell completions (bash through git's own completion, zsh, fish, PowerShell, elvish),
//! `--color`, and `add`'s git options as real, typed options.

use std::path::Path;
use std::process::Command;

use crate::support::{TestRepo, bin, skip};

/// Whether `program` runs here; when not, the test says why it skips.
fn have(program: &str, test: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(&format!(
            "{test}: {program} is not installed (.ci/run installs it)"
        ));
    }
    ok
}

/// `man -l` renders `page` as plain text.
fn man_text(page: &Path) -> String {
    let out = Command::new("man")
        .args(["--nh", "--nj", "-l"])
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "200")
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "man -l {}: {out:?}", page.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_man_writes_a_page_per_command_that_man_renders_with_its_options() {
    if !have("man", "install_man_writes_a_page_per_command") {
        return;
    }
    let repo = TestRepo::new();
    let dir = repo.env.root().join("man/man1");
    repo.wp(["install-man", "--dir", dir.to_str().unwrap()])
        .stdout_is(format!(
            "wrote 32 man pages to {}\nman finds them when {} is in MANPATH\n",
            dir.display(),
            dir.parent().unwrap().display()
        ))
        .stderr_is("")
        .succeeds();
    // Every visible command has a page naming each of its long options.
    let cmd = git_worktree_ports::commands::completions::command();
    let mut checked = 0;
    // Every visible command, nested ones (`proxy run`, `hooks status`) included.
    let mut todo: Vec<(String, String, &clap::Command)> = (cmd.get_subcommands())
        .filter(|s| !s.is_hide_set())
        .map(|s| (s.get_name().to_string(), s.get_name().to_string(), s))
        .collect();
    let mut pages = 1;
    while let Some((file, typed, sub)) = todo.pop() {
        pages += 1;
        for nested in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
            let n = nested.get_name();
            todo.push((format!("{file}-{n}"), format!("{typed} {n}"), nested));
        }
        let page = dir.join(format!("git-worktree-ports-{file}.1"));
        let text = man_text(&page);
        assert!(
            text.contains(&format!("git worktree-ports {typed}")),
            "{}:\n{text}",
            page.display()
        );
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                assert!(
                    text.contains(&format!("--{long}")),
                    "{} does not name --{long}:\n{text}",
                    page.display()
                );
                checked += 1;
            }
        }
    }
    assert_eq!(pages, 32, "one page per command");
    assert!(checked > 50, "only {checked} options checked");
    let add = man_text(&dir.join("git-worktree-ports-add.1"));
    for opt in ["--detach", "--orphan", "-b <NAME>", "--port <SERVICE=PORT>"] {
        assert!(add.contains(opt), "add's page lacks {opt}:\n{add}");
    }
    let main = man_text(&dir.join("git-worktree-ports.1"));
    assert!(
        main.contains("git-worktree-ports-status(1)") || main.contains("status"),
        "{main}"
    );
}

/// `git worktree-ports --help` is git's `man git-worktree-ports`: after `install-man`
/// without --dir, man finds the page beside the binary (man-db derives <prefix>/share/man
/// from <prefix>/bin in PATH).
#[test]
fn help_through_git_shows_the_installed_man_page() {
    if !have("man", "help_through_git_shows_the_installed_man_page") {
        return;
    }
    let repo = TestRepo::new();
    let prefix = repo.env.root().join("prefix");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    let installed = prefix.join("bin/git-worktree-ports");
    std::fs::copy(bin(), &installed).unwrap();
    let path = std::env::join_paths(std::iter::once(prefix.join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(if args[0] == "git" {
            "git"
        } else {
            installed.to_str().unwrap()
        });
        cmd.args(&args[1..]).current_dir(&repo.root);
        repo.env.apply(&mut cmd);
        cmd.env("PATH", &path)
            .env("MANPAGER", "cat")
            .env("GIT_PAGER", "cat")
            .env("MANWIDTH", "200")
            .env_remove("MANPATH");
        cmd.output().unwrap()
    };
    let before = run(&["git", "worktree-ports", "--help"]);
    assert!(
        !before.status.success(),
        "no page yet, git's help fails: {before:?}"
    );
    let out = run(&["self", "install-man"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&prefix.join("share/man/man1").display().to_string()),
        "{said}"
    );
    let help = run(&["git", "worktree-ports", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{help:?}");
    assert!(
        text.contains("NAME") && text.contains("git-worktree-ports"),
        "{text}"
    );
    assert!(text.contains("--color"), "{text}");
}

/// A bin directory nobody may write to: the pages go to $XDG_DATA_HOME/man/man1.
#[test]
fn install_man_falls_back_to_the_user_data_dir() {
    let repo = TestRepo::new();
    let prefix = repo.env.root().join("ro");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    let installed = prefix.join("bin/git-worktree-ports");
    std::fs::copy(bin(), &installed).unwrap();
    let mut perms = std::fs::metadata(&prefix).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(&prefix, perms).unwrap();
    if nix_is_root() {
        eprintln!("skipped install_man_falls_back_to_the_user_data_dir: root may write anywhere");
        return;
    }
    let mut cmd = Command::new(&installed);
    cmd.arg("install-man").current_dir(&repo.root);
    repo.env.apply(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let want = repo
        .env
        .root()
        .join("home/.local/share/man/man1/git-worktree-ports.1");
    assert!(want.is_file(), "{out:?}");
    assert!(!prefix.join("share").exists());
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Run `script` in bash with git's completion and ours loaded; `complete WORDS...` prints
/// the candidates as [a][b].
fn bash_complete(repo: &TestRepo, lines: &str) -> String {
    let ours = repo.wp(["completions", "bash"]).succeeds().stdout();
    let file = repo.env.root().join("completion.bash");
    std::fs::write(&file, ours).unwrap();
    let script = format!(
        r#"source /usr/share/bash-completion/completions/git
source {}
complete_words() {{
    COMP_WORDS=("$@"); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
    COMP_LINE="$*"; COMP_POINT=${{#COMP_LINE}}; COMPREPLY=()
    if [[ $1 == git ]]; then __git_wrap__git_main; else _clap_complete_git_worktree_ports "$1" "${{COMP_WORDS[COMP_CWORD]}}"; fi
    printf '[%s]' "${{COMPREPLY[@]}}"; echo
}}
{lines}
"#,
        file.display()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-c", &script])
        .current_dir(&repo.root);
    repo.env.apply(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bash_completes_through_gits_own_completion_with_worktrees_and_services() {
    if !Path::new("/usr/share/bash-completion/completions/git").is_file() {
        skip("bash_completes_through_gits_own_completion: git's bash completion is not installed");
        return;
    }
    let repo = TestRepo::new();
    repo.wp(["add", "../feature-x"]).succeeds();
    // Another repository, completed through `git -C <it>` from this one.
    let other = repo.another("other", None);
    repo.env
        .git(&other, ["worktree", "add", "-q", "../other-wt"]);
    let out = bash_complete(
        &repo,
        "complete_words git worktree-ports sta\n\
         complete_words git worktree-ports status -w ''\n\
         complete_words git worktree-ports get ''\n\
         complete_words git worktree-ports allocate --port ''\n\
         complete_words git worktree-ports release --service ''\n\
         complete_words git -C . worktree-ports st\n\
         complete_words git-worktree-ports li\n\
         complete_words git -C ../other worktree-ports status -w ''",
    );
    // One line per question: commands, worktree names (from `git -C`'s repository for the
    // last), services (then get's options), SERVICE= for --port, services for --service.
    assert_eq!(
        out,
        "[status ]\n\
         [main ][feature-x ]\n\
         [web ][db ][--worktree ][--color ][--repo ][--json ][--help ]\n\
         [web=][db=]\n\
         [web ][db ]\n\
         [status ]\n\
         [list]\n\
         [main ][other-wt ]\n"
    );
}

#[test]
fn zsh_loads_the_script_and_plugs_into_gits_completion() {
    if !have("zsh", "zsh_loads_the_script_and_plugs_into_gits_completion") {
        return;
    }
    let repo = TestRepo::new();
    let file = repo.env.root().join("completion.zsh");
    std::fs::write(&file, repo.wp(["completions", "zsh"]).succeeds().stdout()).unwrap();
    let script = format!(
        "autoload -U compinit && compinit -u -d {dump}\nsource {file} || exit 3\n\
         (( $+functions[_git-worktree-ports] )) && print git-ok\nprint ${{_comps[git-worktree-ports]}}",
        dump = repo.env.root().join("zcompdump").display(),
        file = file.display()
    );
    let mut cmd = Command::new("zsh");
    cmd.args(["-f", "-c", &script]).current_dir(&repo.root);
    repo.env.apply(&mut cmd);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("git-ok"), "{text}");
    assert!(
        text.contains("_clap_dynamic_completer_git_worktree_ports"),
        "{text}"
    );
}

/// An interactive zsh on a pty (zsh's own zpty module) with compinit, git's completion
/// (`_git`) and ours: `line<TAB>` is typed, and every candidate the completion system adds
/// is printed (compadd wrapped), then the shell exits.
fn zsh_complete(repo: &TestRepo, file: &Path, line: &str) -> Vec<String> {
    let out = zsh_on_a_pty(
        repo,
        file,
        line,
        r#"zpty -w z 'compadd () { local -a h; builtin compadd -O h "$@"; (( $#h )) && print -r -l -- "HI""T:"${^h}; builtin compadd "$@"; }'
zpty -w z 'comppostfuncs=( exit )'
zpty -n -w z "$2"$'	'
while zpty -r z line; do
  [[ $line == *HIT:* ]] && print -r -- ${${line##*HIT:}%$'
'}
done
"#,
    );
    let mut hits: Vec<String> = out.lines().map(str::to_string).collect();
    hits.sort();
    hits.dedup();
    hits
}

/// zsh -f running a driver: an interactive zsh on a pty (zsh's own zpty module), prompt
/// empty, compinit, then `file` sourced; `rest` types `line` (`$2`) and reads what it
/// prints. Its stdout.
fn zsh_on_a_pty(repo: &TestRepo, file: &Path, line: &str, rest: &str) -> String {
    let driver = repo.env.root().join("zsh-driver.zsh");
    std::fs::write(
        &driver,
        format!(
            "zmodload zsh/zpty\n\
             zpty z zsh -f -i\n\
             zpty -w z 'PROMPT=\"\"; RPROMPT=\"\"'\n\
             zpty -w z \"autoload -U compinit && compinit -u -d $HOME/zcompdump-pty\"\n\
             zpty -w z \"source $1\"\n{rest}"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("timeout");
    cmd.args(["30", "zsh", "-f"])
        .arg(&driver)
        .arg(file)
        .arg(line)
        .current_dir(&repo.root);
    repo.env.apply(&mut cmd);
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn zsh_completes_through_gits_completion() {
    if !have("zsh", "zsh_completes_through_gits_completion") {
        return;
    }
    let repo = TestRepo::new();
    repo.wp(["add", "../feature-z"]).succeeds();
    let file = repo.env.root().join("completion.zsh");
    std::fs::write(&file, repo.wp(["completions", "zsh"]).succeeds().stdout()).unwrap();
    assert_eq!(
        zsh_complete(&repo, &file, "git worktree-ports sta"),
        ["status"]
    );
    let names = zsh_complete(&repo, &file, "git worktree-ports status -w ");
    assert_eq!(names, ["feature-z", "main"]);
    let services = zsh_complete(&repo, &file, "git-worktree-ports get ");
    assert!(
        services.contains(&"web".to_string()) && services.contains(&"db".to_string()),
        "{services:?}"
    );
}

#[test]
fn fish_completes_commands_and_worktree_names() {
    if !have("fish", "fish_completes_commands_and_worktree_names") {
        return;
    }
    let repo = TestRepo::new();
    repo.wp(["add", "../feature-y"]).succeeds();
    let file = repo.env.root().join("completion.fish");
    std::fs::write(&file, repo.wp(["completions", "fish"]).succeeds().stdout()).unwrap();
    let script = format!(
        "source {}; complete -C 'git-worktree-ports sta'; complete -C 'git-worktree-ports env -w '",
        file.display()
    );
    let mut cmd = Command::new("fish");
    cmd.args(["--no-config", "-c", &script])
        .current_dir(&repo.root);
    repo.env.apply(&mut cmd);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.lines().any(|l| l.starts_with("status\t")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("feature-y\t")), "{text}");
}

#[test]
fn powershell_and_elvish_scripts_register_the_command() {
    let repo = TestRepo::new();
    let ps = repo.wp(["completions", "powershell"]).succeeds().stdout();
    assert!(
        ps.contains("Register-ArgumentCompleter") && ps.contains("git-worktree-ports"),
        "{ps}"
    );
    let elvish = repo.wp(["completions", "elvish"]).succeeds().stdout();
    assert!(
        elvish.contains("arg-completer[git-worktree-ports]"),
        "{elvish}"
    );
    let unknown = repo.wp(["completions", "tcsh"]).output();
    assert_eq!(unknown.code(), Some(2), "{}", unknown.describe());
}

#[test]
fn color_always_never_and_no_color() {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    // Through a pipe: auto is plain, always colours (even with NO_COLOR: the flag wins),
    // never is plain.
    let auto = repo.wp(["doctor"]).succeeds().stdout();
    assert!(!auto.contains('\x1b'), "{auto}");
    let always = repo.wp(["--color", "always", "doctor"]).succeeds().stdout();
    assert!(always.contains("\x1b[2minfo\x1b[0m"), "{always}");
    let always_after = repo.wp(["doctor", "--color=always"]).succeeds().stdout();
    assert_eq!(always, always_after);
    let never = repo
        .wp(["doctor", "--color", "never"])
        .env_remove("NO_COLOR")
        .succeeds()
        .stdout();
    assert!(!never.contains('\x1b'), "{never}");
    // Errors and warnings: the label only.
    let message = "worktree main has no port for service \"nope\"; it has: db, web\n";
    repo.wp(["--color=always", "get", "nope"])
        .stderr_is(format!(
            "git-worktree-ports: \x1b[31merror:\x1b[0m {message}"
        ))
        .fails();
    repo.wp(["get", "nope"])
        .stderr_is(format!("git-worktree-ports: error: {message}"))
        .fails();
    let bad = repo.wp(["--color=sometimes", "list"]).output();
    assert_eq!(bad.code(), Some(2), "{}", bad.describe());
}

#[test]
fn add_takes_gits_options_as_typed_options() {
    let repo = TestRepo::new();
    let help = repo.wp(["add", "--help"]).succeeds().stdout();
    for opt in [
        "--detach",
        "--lock",
        "--reason <TEXT>",
        "--orphan",
        "-b <NAME>",
        "--port <SERVICE=PORT>",
    ] {
        assert!(help.contains(opt), "{help}");
    }
    // git gets them: a locked worktree with its reason, on a new branch.
    let out = repo
        .wp([
            "add",
            "--lock",
            "--reason",
            "-in use-",
            "-b",
            "locked-br",
            "../locked",
            "--json",
        ])
        .succeeds()
        .json();
    assert_eq!(out["branch"], "locked-br");
    let list = repo.git(["worktree", "list", "--porcelain"]);
    assert!(list.contains("locked -in use-"), "{list}");
    // An option git does not have is a usage error before anything runs.
    let bad = repo.wp(["add", "--frobnicate", "../nope"]).output();
    assert_eq!(bad.code(), Some(2), "{}", bad.describe());
    assert!(bad.stderr().contains("--frobnicate"), "{}", bad.describe());
    assert!(!repo.root.parent().unwrap().join("nope").exists());
    // --orphan with -b: an unborn branch of that name (git's own combination).
    let out = repo
        .wp([
            "add",
            "--no-render",
            "--orphan",
            "-b",
            "fresh",
            "../orphaned",
            "--json",
        ])
        .succeeds()
        .json();
    assert_eq!(out["branch"], "fresh", "{out}");
    let bad = repo.wp(["add", "--orphan", "--detach", "../nope"]).output();
    assert_eq!(bad.code(), Some(2), "{}", bad.describe());
    // A path that starts with `-` after `--` stays a path.
    repo.wp(["add", "--no-render", "-b", "dashed", "--", "-dash"])
        .succeeds();
    assert!(repo.root.join("-dash").is_dir());
}

/// A progress line on a terminal's stderr (a pty from script(1)) for `render --all` and
/// `prune --all`, erased at the end; never through a pipe.
#[test]
fn progress_lines_only_on_a_terminal() {
    let repo = TestRepo::new();
    repo.wp(["allocate"]).succeeds();
    for name in ["p1", "p2"] {
        repo.wp(["add", repo.path(name).to_str().unwrap()])
            .succeeds();
    }
    // A second repository, so that `prune --all` has more than one to go through.
    let other = repo.another("other", None);
    repo.wp_in(&other, ["allocate"]).succeeds();
    let on_pty = |args: &str| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &format!("{} {args}", bin().display()), "/dev/null"])
            .current_dir(&repo.root);
        repo.env.apply(&mut cmd);
        cmd.env("GIT_WORKTREE_PORTS_PROGRESS_AFTER_MS", "0");
        cmd.output()
    };
    let Ok(out) = on_pty("render --all") else {
        skip("progress_lines_only_on_a_terminal: script(1) is not installed");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    for step in ["render 1/3 ", "render 2/3 ", "render 3/3 "] {
        assert!(
            text.contains(&format!("\r\x1b[2Kgit-worktree-ports: {step}")),
            "{text:?}"
        );
    }
    assert!(text.contains("up to date"), "{text:?}");
    let out = on_pty("prune --all --dry-run").unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("git-worktree-ports: prune 1/"), "{text:?}");
    // Through a pipe: nothing but the answer.
    let piped = repo
        .wp(["render", "--all"])
        .env("GIT_WORKTREE_PORTS_PROGRESS_AFTER_MS", "0")
        .succeeds();
    assert!(
        !piped.stderr().contains("render 1/"),
        "{}",
        piped.describe()
    );
    assert!(!piped.stdout().contains('\r'), "{}", piped.describe());
}

/// Issue 26, item 10: bash completion put worktree names on the command line unquoted: a
/// name with `$(...)` became shell code that Enter runs, and a name with a space two words.
/// bash now gets them quoted.
#[test]
fn bash_completion_quotes_hostile_worktree_names() {
    if !Path::new("/usr/share/bash-completion/completions/git").is_file() {
        skip(
            "bash_completion_quotes_hostile_worktree_names: git's bash completion is not installed",
        );
        return;
    }
    let repo = TestRepo::new();
    for (name, branch) in [("x$(touch PWNED)", "hostile"), ("a b", "spaced")] {
        let path = repo.path(name);
        repo.git([
            "worktree",
            "add",
            "-q",
            "-b",
            branch,
            path.to_str().unwrap(),
        ]);
    }
    let out = bash_complete(
        &repo,
        "complete_words git worktree-ports release ''\n\
         complete_words git-worktree-ports release ''",
    );
    // git makes the names `x$(touch-PWNED)` and `a-b` (its worktree names have no spaces).
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("[main ][a-b ][x\\$\\(touch-PWNED\\) ]"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("[main][a-b][x\\$\\(touch-PWNED\\)]"),
        "{out}"
    );
    assert!(!repo.root.join("PWNED").exists());
}

/// A worktree named `x$(touch-PWNED)` (git turns the space of `x$(touch PWNED)` into `-`),
/// beside main.
fn hostile_worktree(repo: &TestRepo) {
    let path = repo.path("x$(touch PWNED)");
    repo.git([
        "worktree",
        "add",
        "-q",
        "-b",
        "hostile",
        path.to_str().unwrap(),
    ]);
}

/// fish installed as the README says (conf.d), in an interactive fish on a pty (script(1)):
/// `keys` are typed, then ^X prints the command line and exits.
fn fish_line_after(repo: &TestRepo, keys: &str) -> String {
    let conf = repo.env.root().join("home/.config/fish/conf.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("git-worktree-ports.fish"),
        repo.wp(["completions", "fish"]).succeeds().stdout(),
    )
    .unwrap();
    std::fs::write(
        conf.join("zz-test.fish"),
        "function fish_prompt; end\nfunction fish_greeting; end\n\
         bind \\cx 'echo; echo LINE:(commandline); exit'\n",
    )
    .unwrap();
    let mut cmd = Command::new("timeout");
    cmd.args(["30", "script", "-qfec", "fish -i", "/dev/null"])
        .current_dir(&repo.root)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    repo.env.apply(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // Typed ahead: fish reads it once its prompt is up. stdin stays open until it exits.
        stdin.write_all(format!("{keys}\x18").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("LINE:"))
            .unwrap_or_else(|| panic!("no command line printed: {text:?}"))
            .trim_end_matches('\r')
            .to_string()
    }
}

/// Issue 26, item 10: fish offered file names for `git worktree-ports <TAB>` (its git
/// completion asks `git-git-worktree-ports`), and never offered `worktree-ports` after
/// `git `; a hostile worktree name goes on the command line quoted.
#[test]
fn fish_completes_after_git_and_inserts_hostile_names_quoted() {
    if !have(
        "fish",
        "fish_completes_after_git_and_inserts_hostile_names_quoted",
    ) || !have(
        "script",
        "fish_completes_after_git_and_inserts_hostile_names_quoted",
    ) {
        return;
    }
    let repo = TestRepo::new();
    hostile_worktree(&repo);
    assert_eq!(
        fish_line_after(&repo, "git worktree-p\t"),
        "git worktree-ports "
    );
    assert_eq!(
        fish_line_after(&repo, "git worktree-ports rel\t"),
        "git worktree-ports release "
    );
    assert_eq!(
        fish_line_after(&repo, "git worktree-ports release x\t"),
        "git worktree-ports release x\\$\\(touch-PWNED\\) "
    );
    assert_eq!(
        fish_line_after(&repo, "git-worktree-ports env -w x\t"),
        "git-worktree-ports env -w x\\$\\(touch-PWNED\\) "
    );
    assert!(!repo.root.join("PWNED").exists());
}

/// zsh on a pty (zpty) with compinit and git's completion: `line<TAB>`, then the command
/// line as typed, and its words as zsh parses them (unquoted), all joined by `|`.
fn zsh_words_after(repo: &TestRepo, file: &Path, line: &str) -> String {
    zsh_on_a_pty(
        repo,
        file,
        line,
        r#"zpty -w z 'dump() { print -r -- "WO""RDS:$BUFFER|${(j:|:)${(@Q)${(@z)BUFFER}}}|END"; exit }; zle -N dump; bindkey "^X" dump'
zpty -n -w z "$2"$'\t\x18'
while zpty -r z line; do
  [[ $line == *WORDS:* ]] && { print -r -- ${${line##*WORDS:}%%\|END*}; break }
done
"#,
    )
    .trim_end()
    .to_string()
}

/// Issue 26, item 10: zsh never offered `worktree-ports` after `git `; a hostile worktree
/// name goes on the command line as one word that means the name.
#[test]
fn zsh_offers_the_command_after_git_and_inserts_hostile_names_as_one_word() {
    if !have(
        "zsh",
        "zsh_offers_the_command_after_git_and_inserts_hostile_names_as_one_word",
    ) {
        return;
    }
    let repo = TestRepo::new();
    hostile_worktree(&repo);
    let file = repo.env.root().join("completion.zsh");
    std::fs::write(&file, repo.wp(["completions", "zsh"]).succeeds().stdout()).unwrap();
    assert!(zsh_complete(&repo, &file, "git worktree-p").contains(&"worktree-ports".to_string()));
    // Quoted on the line; the one word it is means the name.
    assert_eq!(
        zsh_words_after(&repo, &file, "git worktree-ports release x"),
        "git worktree-ports release x\\$\\(touch-PWNED\\) |git|worktree-ports|release|x$(touch-PWNED)"
    );
    assert_eq!(
        zsh_words_after(&repo, &file, "git-worktree-ports env -w x"),
        "git-worktree-ports env -w x\\$\\(touch-PWNED\\) |git-worktree-ports|env|-w|x$(touch-PWNED)"
    );
    assert!(!repo.root.join("PWNED").exists());
}

/// Issue 26, item 10: the README's bash path ignored `XDG_DATA_HOME`, where bash-completion
/// looks; and a quoted candidate (`'x$(...)'`) no longer matched what was typed (`x`).
/// Installed as the README says, git's completion loads the file when it first meets
/// `worktree-ports`, and a typed prefix of a hostile name completes, escaped.
#[test]
fn bash_loads_the_file_from_xdg_data_home_and_completes_a_typed_prefix_escaped() {
    let loader = Path::new("/usr/share/bash-completion/bash_completion");
    if !loader.is_file() {
        skip(
            "bash_loads_the_file_from_xdg_data_home: bash-completion is not installed (.ci/run installs it)",
        );
        return;
    }
    let repo = TestRepo::new();
    hostile_worktree(&repo);
    let dir = repo
        .env
        .root()
        .join("home/.local/share/bash-completion/completions");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("git-worktree-ports"),
        repo.wp(["completions", "bash"]).succeeds().stdout(),
    )
    .unwrap();
    let script = r#"source /usr/share/bash-completion/bash_completion
_comp_load git 2>/dev/null || __load_completion git 2>/dev/null || _completion_loader git
complete_words() {
    COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
    COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
    __git_wrap__git_main
    printf '[%s]' "${COMPREPLY[@]}"; echo
}
complete_words git worktree-ports sta
complete_words git worktree-ports release x
complete_words git worktree-ports release 'x\$'
"#;
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-c", script])
        .current_dir(&repo.root);
    repo.env.apply(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[status ]\n[x\\$\\(touch-PWNED\\) ]\n[x\\$\\(touch-PWNED\\) ]\n"
    );
    assert!(!repo.root.join("PWNED").exists());
}

/// The binary starts without loading libz, libm or libgcc_s (each 0.05-0.2 ms of every
/// start): zlib is linked in (libz-sys's `static`), `pow` is the binary's own (src/main.rs;
/// `templates::float_powers_in_a_template_are_computed_exactly_as_before` checks its digits),
/// and GCC's unwinder is linked in wherever the C compiler has a `libgcc_eh.a` (build.rs). A
/// panic still unwinds: the unit test `a_panic_unwinds_through_the_unwinder_linked_in` runs in
/// a binary linked the same way.
/// build.rs gives the linker `benches/symbol-order.txt` (the functions the everyday commands
/// run, for a release build): where the linker took it, the functions of the list that this
/// binary has (a debug build shares the C ones and some of Rust's) come first in its text, in
/// the list's order. Without the ordering they are spread over the whole text in any order.
#[cfg(target_os = "linux")]
#[test]
fn the_everyday_functions_are_laid_out_together_in_the_order_listed() {
    let test = "the_everyday_functions_are_laid_out_together_in_the_order_listed";
    let applied = env!("GWP_SYMBOL_ORDER");
    if applied != "applied" {
        return skip(&format!("{test}: build.rs says: {applied}"));
    }
    if !have("nm", test) {
        return;
    }
    let out = Command::new("nm").arg(bin()).output().unwrap();
    assert!(out.status.success());
    let mut at = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        if let (Some(addr), Some("t" | "T" | "w" | "W"), Some(name)) =
            (f.next(), f.next(), f.next())
        {
            at.entry(name.to_string())
                .or_insert_with(|| u64::from_str_radix(addr, 16).unwrap());
        }
    }
    let list = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/symbol-order.txt"),
    )
    .unwrap();
    let found: Vec<(&str, u64)> = list
        .lines()
        .filter_map(|n| Some((n, *at.get(n)?)))
        .collect();
    assert!(
        found.len() >= 50,
        "only {} of the listed functions are in the binary; rerun `bash benches/symbol-order.sh`",
        found.len()
    );
    for pair in found.windows(2) {
        assert!(
            pair[0].1 <= pair[1].1,
            "{} (at {:#x}) should come before {} (at {:#x})",
            pair[0].0,
            pair[0].1,
            pair[1].0,
            pair[1].1
        );
    }
    // First in the text: nothing else of the binary lies below the first listed function.
    let lowest = at.values().copied().min().unwrap();
    let below = at.values().filter(|&&a| a < found[0].1).count();
    assert!(
        below <= 8,
        "{below} functions below the listed ones (lowest at {lowest:#x})"
    );
}

/// The symbol order is one mangled name a line and nothing else: the linker takes every line
/// for a name, so a comment or a blank line would be a name that matches nothing.
#[test]
fn the_symbol_order_is_names_only() {
    let list = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/symbol-order.txt"),
    )
    .unwrap();
    assert!(list.ends_with('\n'));
    let mut seen = std::collections::HashSet::new();
    for (i, name) in list.lines().enumerate() {
        assert!(
            !name.is_empty() && !name.starts_with('#') && !name.contains(char::is_whitespace),
            "line {}: {name:?}",
            i + 1
        );
        assert!(seen.insert(name), "line {}: {name} twice", i + 1);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_binary_loads_neither_libz_nor_libm_nor_libgcc_s() {
    if !have("ldd", "the_binary_loads_neither_libz_nor_libm_nor_libgcc_s") {
        return;
    }
    let out = Command::new("ldd").arg(bin()).output().unwrap();
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{libs}");
    assert!(!libs.contains("libz.so"), "{libs}");
    assert!(!libs.contains("libm.so"), "{libs}");
    let eh = Command::new("cc")
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match eh {
        Ok(p) if Path::new(&p).is_absolute() => {
            assert!(!libs.contains("libgcc_s"), "{libs}")
        }
        _ => skip(
            "the_binary_loads_neither_libz_nor_libm_nor_libgcc_s: the C compiler has no libgcc_eh.a",
        ),
    }
}
