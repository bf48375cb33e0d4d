//! `doctor`: every finding about this repository and the machine (gone entries, ports held
//! by others or twice, stale files, the hook, the index, ports written literally), most
//! severe first, and the safe fixes `--fix` applies.

use std::collections::BTreeMap;
use std::path::Path;

use crate::machine::Machine;
use crate::model::allocate::Want;
use crate::model::attribution::{self, KnownWorktree, Whose};
use crate::model::config::Strategy;
use crate::model::finding::{FindingCode, Severity};
use crate::model::literals;
use crate::output::progress::Progress;
use crate::registry::Ports;
use crate::sys::procs;

use super::{FileState, RepoView, Workspace, canonical, ports_inline};

/// A safe fix `--fix` may apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Prune a gone worktree's entry.
    Prune(String),
    /// Move a service of a worktree off a port another process holds.
    Move { worktree: String, service: String },
    /// Render a worktree's files.
    Render(String),
    /// Update our hook.
    Hook,
}

/// One finding.
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// Its stable code.
    pub code: FindingCode,
    /// What is wrong, naming the file, port, worktree or process.
    pub message: String,
    /// What to do about it.
    pub fix: String,
    /// The safe fix `--fix` applies, when there is one.
    pub action: Option<Action>,
    /// After `--fix`: what happened.
    pub outcome: Option<Result<String, String>>,
}

impl Finding {
    fn new(severity: Severity, code: FindingCode, message: String, fix: String) -> Finding {
        Finding {
            severity,
            code,
            message,
            fix,
            action: None,
            outcome: None,
        }
    }

    fn with(mut self, action: Action) -> Finding {
        self.action = Some(action);
        self
    }

    /// Still needs the user's attention.
    pub fn open(&self) -> bool {
        self.severity != Severity::Info && !matches!(self.outcome, Some(Ok(_)))
    }
}

/// Every finding of the current repository, most severe first; with `fix`, the safe fixes
/// applied (each finding then says what happened).
pub fn diagnose(fix_them: bool) -> anyhow::Result<Vec<Finding>> {
    let ws = Workspace::open()?;
    let mut findings = Vec::new();
    let view = ws.view()?;
    registry_and_git(&view, &mut findings)?;
    processes(&view, &mut findings)?;
    hook(&ws, &mut findings);
    index(&mut findings);
    shared(&view, &mut findings);
    files(&ws, &mut findings);
    findings.sort_by_key(|f| f.severity);
    if fix_them {
        fix(&ws, &mut findings);
    }
    Ok(findings)
}

/// Entries of gone worktrees, worktrees without ports, ports outside their range or of
/// services the config dropped, stale rendered files.
fn registry_and_git(view: &RepoView, out: &mut Vec<Finding>) -> anyhow::Result<()> {
    let (ws, reg) = (view.workspace(), &view.registry);
    for (key, why) in view.gone("")? {
        let ports = reg.ports(&key).map(Ports::to_map).unwrap_or_default();
        let path = reg.record(&key).map(|r| r.path).unwrap_or_default();
        out.push(
            Finding::new(
                Severity::Warning,
                FindingCode::GoneAllocation,
                format!(
                    "worktree {key} ({path}): {why}; its entry still holds {}",
                    if ports.is_empty() {
                        "no ports".to_string()
                    } else {
                        ports_inline(&ports)
                    }
                ),
                "git worktree-ports prune".into(),
            )
            .with(Action::Prune(key)),
        );
    }
    let worktrees = view.worktrees()?;
    let mut progress = Progress::new("doctor", worktrees.len());
    for (i, wt) in worktrees.iter().cloned().enumerate() {
        progress.step(i, &wt.key);
        if wt.prunable || !wt.path.is_dir() {
            continue;
        }
        let Some(ports) = reg.ports(&wt.key).map(Ports::to_map) else {
            out.push(Finding::new(
                Severity::Info,
                FindingCode::NoAllocation,
                format!("worktree {} ({}) has no ports", wt.key, wt.path.display()),
                format!("git worktree-ports allocate {}", wt.key),
            ));
            continue;
        };
        let key = wt.key.clone();
        let target = match ws.target_of(wt) {
            Ok(t) => t,
            Err(e) => {
                out.push(Finding::new(
                    Severity::Error,
                    FindingCode::ConfigInvalid,
                    format!("worktree {key}: {e:#}"),
                    "fix the file it names".into(),
                ));
                continue;
            }
        };
        let claim = reg.claim();
        for (service, port) in &ports {
            let Some(svc) = target.config.service(service) else {
                out.push(Finding::new(
                    Severity::Warning,
                    FindingCode::ServiceNotInConfig,
                    format!("worktree {key} holds port {port} for service {service}, which its config no longer has"),
                    format!("git worktree-ports allocate {key} (gives it back)"),
                ));
                continue;
            };
            let range = match (target.config.strategy, claim) {
                (Strategy::Block(_), Some(c)) => (*c.ports().start(), *c.ports().end()),
                _ => svc.range,
            };
            if !(range.0..=range.1).contains(port) {
                out.push(Finding::new(
                    Severity::Warning,
                    FindingCode::PortOutsideRange,
                    format!(
                        "worktree {key}: {service} {port} is outside {}-{} (the config changed since it was allocated)",
                        range.0, range.1
                    ),
                    format!("git worktree-ports release {key} --service {service} && git worktree-ports allocate {key}"),
                ));
            }
        }
        let held = view.holding(&key);
        match ws.file_states(&target, &held) {
            Ok(files) if files.iter().any(|(_, s)| *s == FileState::Stale) => {
                let stale: Vec<String> = (files.iter())
                    .filter(|(_, s)| *s == FileState::Stale)
                    .map(|(p, _)| p.display().to_string())
                    .collect();
                out.push(
                    Finding::new(
                        Severity::Warning,
                        FindingCode::StaleFiles,
                        format!("worktree {key}: {} out of date", stale.join(", ")),
                        format!("git worktree-ports render -w {key}"),
                    )
                    .with(Action::Render(key.clone())),
                );
            }
            Ok(_) => {}
            Err(e) => out.push(Finding::new(
                Severity::Error,
                FindingCode::RenderFails,
                format!("worktree {key}: {e:#}"),
                "fix the template it names, then `git worktree-ports render`".into(),
            )),
        }
    }
    Ok(())
}

/// Allocated ports that a process outside their worktree listens on.
fn processes(view: &RepoView, out: &mut Vec<Finding>) -> anyhow::Result<()> {
    let (ws, reg) = (view.workspace(), &view.registry);
    let owners: BTreeMap<u16, (String, String)> = reg
        .allocations()
        .flat_map(|(k, p)| {
            p.iter()
                .map(move |(s, port)| (port, (k.to_string(), s.to_string())))
                .collect::<Vec<_>>()
        })
        .collect();
    let ports: Vec<u16> = owners.keys().copied().collect();
    let listeners = procs::listeners(&ports);
    if listeners.is_empty() {
        return Ok(());
    }
    let mut known = view.known_worktrees()?;
    known.extend(ws.known_elsewhere());
    for l in &listeners {
        let Some((key, service)) = owners.get(&l.port) else {
            continue;
        };
        let this = known
            .iter()
            .find(|k| k.repository.is_none() && k.name == *key && k.exists)
            .cloned()
            .or_else(|| {
                reg.record(key).map(|r| KnownWorktree {
                    path: canonical(Path::new(&r.path)),
                    repository: None,
                    name: key.clone(),
                    exists: false,
                })
            });
        let whose = attribution::classify(l.process.as_ref(), &known, this.as_ref());
        let holder = attribution::describe(l);
        match whose {
            Whose::This => {}
            Whose::Orphan { .. } => out.push(Finding::new(
                Severity::Warning,
                FindingCode::PortHeldByOrphan,
                format!(
                    "{service} {} of worktree {key} is held by {holder}, {whose}",
                    l.port
                ),
                "git worktree-ports prune --reap --yes".into(),
            )),
            _ if this.as_ref().is_some_and(|t| !t.exists) => out.push(Finding::new(
                Severity::Warning,
                FindingCode::PortHeldElsewhere,
                format!(
                    "{service} {} of gone worktree {key} is held by {holder} ({whose})",
                    l.port
                ),
                "git worktree-ports prune".into(),
            )),
            _ => out.push(
                Finding::new(
                    Severity::Warning,
                    FindingCode::PortHeldElsewhere,
                    format!(
                        "{service} {} of worktree {key} is held by {holder} ({whose})",
                        l.port
                    ),
                    format!("git worktree-ports allocate {key} --move {service}"),
                )
                .with(Action::Move {
                    worktree: key.clone(),
                    service: service.clone(),
                }),
            ),
        }
    }
    Ok(())
}

/// The post-checkout hook: missing, outdated, or in a directory a manager owns.
fn hook(ws: &Workspace, out: &mut Vec<Finding>) {
    let Ok(state) = ws.hook_state() else {
        return;
    };
    let hook = state.hook.display();
    if state.ours && !state.current {
        out.push(
            Finding::new(
                Severity::Warning,
                FindingCode::HookOutdated,
                format!("{hook} is an older version of our hook"),
                "git worktree-ports hooks install".into(),
            )
            .with(Action::Hook),
        );
    } else if !state.ours && !state.through_manager {
        match state.manager {
            Some(m) => out.push(Finding::new(
                Severity::Info,
                FindingCode::HookManager,
                format!(
                    "{} manages {}: a plain `git worktree add` allocates only if its config runs `git worktree-ports hook post-checkout`",
                    m.name(),
                    state.dir.display()
                ),
                "`git worktree-ports hooks install` prints the lines to add".into(),
            )),
            None => out.push(Finding::new(
                Severity::Info,
                FindingCode::HookMissing,
                format!("no post-checkout hook of ours in {}: a plain `git worktree add` does not allocate", state.dir.display()),
                "git worktree-ports hooks install".into(),
            )),
        }
    }
}

/// Index entries of repositories that are gone (moved, deleted, or another repository at
/// their path): they keep their ports, so no safe fix drops them (`prune --all` does).
fn index(out: &mut Vec<Finding>) {
    let Ok(machine) = Machine::from_env() else {
        return;
    };
    let (index, _) = machine.read();
    for (common, entry, displaced) in index.gone() {
        let held: Vec<String> = entry.held().map(|p| p.to_string()).collect();
        out.push(Finding::new(
            Severity::Info,
            FindingCode::IndexGoneRepository,
            format!(
                "the machine index lists repository {} ({}), which is gone{}: {}",
                entry.name,
                common.display(),
                match displaced {
                    true => " (another repository is at its path)",
                    false => " (moved or deleted)",
                },
                match held.is_empty() {
                    true => "it keeps no ports".to_string(),
                    false => format!(
                        "it keeps ports {} until it allocates again where it is now",
                        held.join(", ")
                    ),
                }
            ),
            "git worktree-ports prune --all (when it was deleted)".into(),
        ));
    }
}

/// Ports held twice on the machine.
fn shared(view: &RepoView, out: &mut Vec<Finding>) {
    for s in view.workspace().shared_ports(&view.registry) {
        out.push(Finding::new(
            Severity::Warning,
            FindingCode::PortShared,
            format!("port {} is held by {} and by {}", s.port, s.first, s.second),
            "`git worktree-ports allocate --move SERVICE` in the worktree that should move (a lease: `release --lease ID`)".into(),
        ));
    }
}

/// Ports written literally in the project's files (the current worktree's).
fn files(ws: &Workspace, out: &mut Vec<Finding>) {
    let Ok(Some(wt)) = ws.repo().current() else {
        return;
    };
    let Ok(config) = crate::sys::config_file::load(&wt.path) else {
        return;
    };
    let vars: Vec<String> = config.services.iter().map(|s| s.env.clone()).collect();
    let read = |rel: &str| {
        crate::sys::fsio::read_regular(&wt.path.join(rel))
            .ok()
            .flatten()
    };
    let mut found = Vec::new();
    let mut compose_files: Vec<String> = std::fs::read_dir(&wt.path)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| literals::is_compose_file(n))
                .collect()
        })
        .unwrap_or_default();
    compose_files.sort();
    for name in compose_files {
        if let Some(bytes) = read(&name) {
            found.extend(literals::compose(
                &name,
                &String::from_utf8_lossy(&bytes),
                &vars,
            ));
        }
    }
    if let Some(bytes) = read("package.json") {
        found.extend(literals::package_json(
            "package.json",
            &String::from_utf8_lossy(&bytes),
        ));
    }
    let dc = ".devcontainer/devcontainer.json";
    if let Some(bytes) = read(dc) {
        found.extend(literals::devcontainer(dc, &String::from_utf8_lossy(&bytes)));
    }
    for l in found {
        let at = match l.line {
            0 => l.file.clone(),
            n => format!("{}:{n}", l.file),
        };
        out.push(Finding::new(
            Severity::Warning,
            l.code,
            format!("{at}: {}", l.message),
            l.fix,
        ));
    }
}

/// Apply the safe fixes.
fn fix(ws: &Workspace, findings: &mut [Finding]) {
    for f in findings.iter_mut() {
        let Some(action) = f.action.clone() else {
            continue;
        };
        let result: anyhow::Result<String> = (|| match &action {
            Action::Prune(key) => {
                ws.before_release(key);
                let lock = ws.lock()?;
                let view = ws.view_of(ws.load_locked(&lock, None)?);
                // Decided again under the lock: a worktree that came back keeps its ports.
                if !view.gone("")?.iter().any(|(k, _)| k == key) {
                    return Ok(format!("kept {key}: it is back"));
                }
                let mut reg = view.registry;
                let ports = reg.remove_gone_worktree(key);
                ws.save(&lock, &mut reg)?;
                Ok(format!("pruned {key} ({})", ports_inline(&ports)))
            }
            Action::Move { worktree, service } => {
                let target = ws.target(Some(worktree))?;
                let wants = BTreeMap::from([(service.clone(), Want::Move)]);
                let held = ws.ensure_ports(&target, &wants)?;
                ws.render(&target, &held, false)?;
                Ok(format!(
                    "moved {service} of {worktree} to {}",
                    held.ports.get(service).copied().unwrap_or_default()
                ))
            }
            Action::Render(key) => {
                let target = ws.target(Some(key))?;
                let held = ws.view()?.holding(key);
                ws.render(&target, &held, false)?;
                Ok(format!("rendered {key}"))
            }
            Action::Hook => {
                ws.install_hook()?;
                Ok("updated the hook".to_string())
            }
        })();
        f.outcome = Some(result.map_err(|e| format!("{e:#}")));
    }
}
