//! Tera templates -> files inside a worktree. Reads the worktree's templates and the files it
//! would replace; writes only inside the worktree, plus its manifest in the worktree's git dir
//! and the rendered paths in `<common-dir>/info/exclude`.
//!
//! Every `*.tera` under `<worktree>/.worktree-ports/templates/` renders to the same relative path
//! without `.tera`; with no templates dir, the built-in `templates/env.tera` renders `.env`.
//!
//! Nothing is destroyed and nothing is half-done:
//! - every template renders to memory first; any error writes nothing;
//! - `.env`-style files keep the user's lines: only the marked block is ours;
//! - any other file is overwritten only if the tool wrote it and nobody edited it since (the
//!   manifest remembers a hash of what was written), or with `--force`;
//! - a target that git tracks is reported and left alone (unless `--force`);
//! - no path leaves the worktree: no `..`, no `.git`, no symlink anywhere on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::model::config::Config;
use crate::model::error::{Code, Details, Error, Refused, TemplateAt};
use crate::sys::fsio::{self, Durability, Mode, Sweep, WriteOptions};
use crate::sys::git::WorktreeInfo;

/// The built-in `.env` template.
pub const BUILTIN_ENV: &str = include_str!("../../templates/env.tera");

/// Where a repository's templates live inside a worktree.
pub const TEMPLATES_DIR: &str = ".worktree-ports/templates";

/// First line of the block the tool manages inside `.env`-style files.
pub const BLOCK_BEGIN: &str = "# >>> git-worktree-ports >>> managed block: edits here are overwritten by `git worktree-ports render`";
/// Last line of that block.
pub const BLOCK_END: &str = "# <<< git-worktree-ports <<<";

const EXCLUDE_BEGIN: &str = "# >>> git-worktree-ports: rendered files >>>";
const EXCLUDE_END: &str = "# <<< git-worktree-ports: rendered files <<<";

/// What templates see.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateContext {
    /// service -> port.
    pub ports: BTreeMap<String, u16>,
    /// Services in config order.
    pub services: Vec<ServiceContext>,
    /// The worktree being rendered.
    pub worktree: WorktreeContext,
    /// The repository.
    pub repo: RepoContext,
    /// `<repo>-<worktree>`, as docker compose accepts it.
    pub compose_project_name: String,
    /// The worktree's slot (main 0, then the lowest free; stable for its life).
    pub slot: Option<u32>,
    /// Its hostname (`feature.app.localhost`; empty before it has one).
    pub hostname: String,
    /// HTTP service -> `http://<hostname>:<port>`.
    pub urls: BTreeMap<String, String>,
    /// HTTP service -> its URL through the proxy (empty when the proxy is not set up): the
    /// first HTTP service at `http://<hostname>:<proxy port>`, the others at
    /// `http://<service>.<hostname>:<proxy port>`.
    pub proxy_urls: BTreeMap<String, String>,
}

/// Every repository of the machine index, by display name: its path and its worktrees'
/// ports. What `port(repo="backend", service="api")` reads.
#[derive(Debug, Clone, Default)]
pub struct Peers(pub BTreeMap<String, (PathBuf, PortsByWorktree)>);

/// Worktree key -> service -> port.
pub type PortsByWorktree = BTreeMap<String, BTreeMap<String, u16>>;

impl Peers {
    /// The port of `service` in repository `repo` (display name or path): in its worktree
    /// named `worktree` when it has one, else in its main worktree. The error says what the
    /// repository has.
    pub fn port(&self, repo: &str, service: &str, worktree: &str) -> Result<u16, String> {
        self.port_of(repo, service, worktree).map(|(_, port)| port)
    }

    /// [`Peers::port`], with the worktree it was read from (`worktree`, else `main`).
    pub fn port_of<'p>(
        &'p self,
        repo: &str,
        service: &str,
        worktree: &'p str,
    ) -> Result<(&'p str, u16), String> {
        let (which, ports) = self.worktree_ports(repo, worktree)?;
        ports.get(service).map(|p| (which, *p)).ok_or_else(|| {
            let names: Vec<&str> = ports.keys().map(String::as_str).collect();
            format!(
                "worktree {which} of repository {repo} has no service {service:?}; it has: {}",
                names.join(", ")
            )
        })
    }

    /// The repository `repo` names: its path; else the one whose display name or trailing
    /// path (`app`, `y/app`) it is. Two such repositories are an error that lists them, never
    /// a guess (a second repository named `app` must not take over templates that meant the
    /// first). None: no repository has that name.
    pub fn find(&self, repo: &str) -> Result<Option<&(PathBuf, PortsByWorktree)>, String> {
        let wanted = Path::new(repo);
        if wanted.is_absolute()
            && let Some(found) = self.0.values().find(|(path, _)| path == wanted)
        {
            return Ok(Some(found));
        }
        let candidates: Vec<(&String, &(PathBuf, PortsByWorktree))> = (self.0.iter())
            .filter(|(name, (path, _))| {
                *name == repo || (!repo.is_empty() && path.ends_with(wanted))
            })
            .collect();
        match candidates.as_slice() {
            [] => Ok(None),
            [(_, one)] => Ok(Some(one)),
            many => Err(format!(
                "{repo:?} names {} repositories on this machine: {}; name one by more of its path (`y/app`), or by its whole path",
                many.len(),
                (many.iter())
                    .map(|(name, (path, _))| format!("{} (name {name})", path.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// The worktree of `repo` that [`Peers::port`] reads (same name, else main) and its ports.
    pub fn worktree_ports<'p>(
        &'p self,
        repo: &str,
        worktree: &'p str,
    ) -> Result<(&'p str, &'p BTreeMap<String, u16>), String> {
        let found = self.find(repo)?;
        let Some((path, worktrees)) = found else {
            let names: Vec<&str> = self.0.keys().map(String::as_str).collect();
            return Err(format!(
                "no repository {repo:?} on this machine; repositories: {}",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ));
        };
        match worktrees.get(worktree) {
            Some(p) => Ok((worktree, p)),
            None => match worktrees.get("main") {
                Some(p) => Ok(("main", p)),
                None => {
                    let names: Vec<&str> = worktrees.keys().map(String::as_str).collect();
                    Err(format!(
                        "repository {repo} ({}) has no worktree {worktree:?} and no main worktree with ports; it has: {}",
                        path.display(),
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ))
                }
            },
        }
    }
}

/// One service, for templates.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceContext {
    /// Service name.
    pub name: String,
    /// Its port.
    pub port: u16,
    /// Its environment variable name.
    pub env: String,
    /// tcp, udp or both.
    pub protocol: String,
    /// It speaks HTTP.
    pub http: bool,
    /// HTTP services: `http://<hostname>:<port>`.
    pub url: Option<String>,
    /// The URL's variable: `WEB_URL` for `WEB_PORT`.
    pub url_env: String,
    /// HTTP services, with the proxy set up: the URL through it.
    pub proxy_url: Option<String>,
}

/// `WEB_PORT` -> `WEB_URL`; `PORT_HTTP` -> `PORT_HTTP_URL`.
pub fn url_env_name(port_env: &str) -> String {
    match port_env.strip_suffix("_PORT") {
        Some(stem) if !stem.is_empty() => format!("{stem}_URL"),
        _ => format!("{port_env}_URL"),
    }
}

/// The worktree, for templates.
#[derive(Debug, Clone, Serialize)]
pub struct WorktreeContext {
    /// Registry key (`main` for the main worktree).
    pub name: String,
    /// Absolute path.
    pub path: String,
    /// Branch, or empty when detached.
    pub branch: String,
    /// The main worktree.
    pub is_main: bool,
}

/// The repository, for templates.
#[derive(Debug, Clone, Serialize)]
pub struct RepoContext {
    /// Name (directory of the main worktree, or of the bare repository without `.git`).
    pub name: String,
    /// Absolute path of the common dir.
    pub common_dir: String,
}

impl TemplateContext {
    /// Build the context for a worktree and its ports.
    pub fn new(
        wt: &WorktreeInfo,
        common_dir: &Path,
        config: &Config,
        ports: &BTreeMap<String, u16>,
        compose_project_name: &str,
    ) -> TemplateContext {
        let services = config
            .services
            .iter()
            .filter_map(|s| {
                Some(ServiceContext {
                    name: s.name.clone(),
                    port: *ports.get(&s.name)?,
                    env: s.env.clone(),
                    protocol: s.protocol.as_str().to_string(),
                    http: s.http,
                    url: None,
                    url_env: url_env_name(&s.env),
                    proxy_url: None,
                })
            })
            .collect();
        let repo = repo_name(common_dir);
        TemplateContext {
            ports: ports.clone(),
            services,
            compose_project_name: compose_project_name.to_string(),
            worktree: WorktreeContext {
                name: wt.key.clone(),
                path: wt.path.to_string_lossy().into_owned(),
                branch: wt.branch.clone().unwrap_or_default(),
                is_main: wt.is_main,
            },
            repo: RepoContext {
                name: repo,
                common_dir: common_dir.to_string_lossy().into_owned(),
            },
            slot: None,
            hostname: String::new(),
            urls: BTreeMap::new(),
            proxy_urls: BTreeMap::new(),
        }
    }

    /// Give it the worktree's hostname, and the URLs of its HTTP services (through the proxy
    /// too when `proxy_port` is set).
    pub fn with_hostname(mut self, hostname: Option<&str>, proxy_port: Option<u16>) -> Self {
        let Some(host) = hostname else {
            return self;
        };
        self.hostname = host.to_string();
        let mut first = true;
        for s in self.services.iter_mut().filter(|s| s.http) {
            let url = format!("http://{host}:{}", s.port);
            self.urls.insert(s.name.clone(), url.clone());
            s.url = Some(url);
            if let Some(pp) = proxy_port {
                let proxied = match first {
                    true => format!("http://{host}:{pp}"),
                    false => format!("http://{}.{host}:{pp}", s.name),
                };
                self.proxy_urls.insert(s.name.clone(), proxied.clone());
                s.proxy_url = Some(proxied);
            }
            first = false;
        }
        self
    }

    /// `WEB_URL=http://feature.app.localhost:8081` for each HTTP service, `WORKTREE_HOSTNAME`
    /// and `COMPOSE_PROJECT_NAME`: the text variables `env` and `exec` add to the port
    /// variables (`.env` and `[on]` commands have the same).
    pub fn text_vars(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = (self.services.iter())
            .filter_map(|s| Some((s.url_env.clone(), s.url.clone()?)))
            .collect();
        if !self.hostname.is_empty() {
            out.push(("WORKTREE_HOSTNAME".to_string(), self.hostname.clone()));
        }
        if !self.compose_project_name.is_empty() {
            out.push((
                "COMPOSE_PROJECT_NAME".to_string(),
                self.compose_project_name.clone(),
            ));
        }
        out
    }
}

/// `/x/app/.git` -> `app`; `/x/app.git` -> `app`; `/x/app/.git/modules/lib` -> `lib`.
pub fn repo_name(common_dir: &Path) -> String {
    let name = common_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = if name == ".git" {
        common_dir
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        name
    };
    name.strip_suffix(".git")
        .map(str::to_string)
        .unwrap_or(name)
}

/// What docker compose accepts as a project name: lowercase letters, digits, `-` and `_`,
/// starting with a letter or digit.
pub fn compose_project_name(repo: &str, worktree: &str) -> String {
    let out: String = compose_chars(repo, worktree).collect();
    if out.is_empty() {
        "worktree".to_string()
    } else {
        out
    }
}

/// True when [`compose_project_name`]`(repo, worktree)` is `name`, without building it: a
/// fresh allocation in a 10,000-worktree registry asks this of every other worktree.
pub fn compose_project_name_is(repo: &str, worktree: &str, name: &str) -> bool {
    let mut chars = compose_chars(repo, worktree).peekable();
    if chars.peek().is_none() {
        return name == "worktree";
    }
    chars.eq(name.chars())
}

/// False only where [`compose_project_name`] gives worktrees `a` and `b` of `repo` different
/// names, found without building either (a fresh allocation among 10,000 worktrees asks it
/// of every record written before names were kept): once `repo` has a letter or digit, every
/// letter, digit and `_` of a worktree's name is kept, lower-cased and in order, so names of
/// worktrees whose such characters differ differ.
pub fn may_share_compose_name(repo: &str, a: &str, b: &str) -> bool {
    if !repo.bytes().any(|c| c.is_ascii_alphanumeric()) {
        return true;
    }
    kept(a).eq(kept(b))
}

/// The letters, digits and `_` of `s`, lower-cased.
fn kept(s: &str) -> impl Iterator<Item = u8> + '_ {
    (s.bytes())
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'_')
        .map(|c| c.to_ascii_lowercase())
}

/// The characters of a compose project name: `<repo>-<worktree>` lower-cased, anything but
/// `[a-z0-9_]` as `-`, runs of `-` as one, no leading `-`/`_`, no trailing `-`.
fn compose_chars<'a>(repo: &'a str, worktree: &'a str) -> impl Iterator<Item = char> + 'a {
    let mut raw = repo
        .chars()
        .chain(std::iter::once('-'))
        .chain(worktree.chars());
    let (mut last_dash, mut started, mut pending_dash) = (false, false, false);
    let mut queued: Option<char> = None;
    std::iter::from_fn(move || {
        if let Some(c) = queued.take() {
            return Some(c);
        }
        for c in raw.by_ref() {
            let c = c.to_ascii_lowercase();
            let c = if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            };
            if c == '-' && last_dash {
                continue;
            }
            last_dash = c == '-';
            if !started {
                if c.is_ascii_alphanumeric() {
                    started = true;
                    return Some(c);
                }
                continue;
            }
            if c == '-' {
                pending_dash = true;
                continue;
            }
            if std::mem::take(&mut pending_dash) {
                queued = Some(c);
                return Some('-');
            }
            return Some(c);
        }
        None
    })
}

/// A file the render will produce.
#[derive(Debug, Clone)]
struct Output {
    /// Relative to the worktree.
    rel: PathBuf,
    /// The template it came from (for messages).
    template: String,
    /// Rendered text.
    text: String,
}

/// What happens (in a [`Plan`]) or happened (in [`Rendered`]) to one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    /// Written (created or updated); in a plan: stale, would be written.
    Written,
    /// Already had this content.
    Unchanged,
    /// Tracked by git: reported, not written.
    SkippedTracked,
    /// Written by the tool from a template that is gone, and not edited since: removed (for a
    /// `.env`-style file, only the managed block).
    Removed,
}

/// What a render would do, decided without writing anything: every template rendered to
/// memory, every target read and checked. [`apply`] carries it out; `status` and a dry run
/// can ask whether files are stale without writing.
#[derive(Debug)]
pub struct Plan {
    /// (path relative to the worktree, what would happen).
    pub files: Vec<(PathBuf, FileAction)>,
    /// Things the user should hear about.
    pub warnings: Vec<String>,
    /// Relative paths that must be in `info/exclude` (every rendered file).
    pub exclude: Vec<PathBuf>,
    worktree: PathBuf,
    writes: Vec<(PathBuf, Vec<u8>, Durability)>,
    removals: Vec<PathBuf>,
    manifest_path: PathBuf,
    manifest: BTreeMap<String, String>,
    /// How the manifest is written ([`durability_of`]).
    manifest_durability: Durability,
    /// How the manifest (in the worktree's git dir) is written: a shared repository's modes
    /// (set by the caller that applies the plan).
    pub manifest_mode: Mode,
}

impl Plan {
    /// True when every file already has the content it would get.
    pub fn is_up_to_date(&self) -> bool {
        self.writes.is_empty() && self.removals.is_empty()
    }
}

/// Where a worktree's render manifest lives (in its own git dir).
fn manifest_path(wt: &WorktreeInfo) -> PathBuf {
    wt.git_dir.join("worktree-ports/rendered.json")
}

/// True once the worktree's files have been rendered (its manifest exists).
pub fn was_rendered(wt: &WorktreeInfo) -> bool {
    manifest_path(wt).exists()
}

/// The result of a render.
#[derive(Debug, Default)]
pub struct Rendered {
    /// (path relative to the worktree, what happened).
    pub files: Vec<(PathBuf, FileAction)>,
    /// Things the user should hear about.
    pub warnings: Vec<String>,
    /// Relative paths that must be in `info/exclude` (every rendered file).
    pub exclude: Vec<PathBuf>,
}

/// Decide what rendering a worktree's templates would write. Reads the templates, the targets
/// and the manifest; writes nothing. `is_tracked` answers whether git tracks a relative path
/// (asked only for files that would change); `peers` reads the other repositories' ports,
/// asked only when a template calls `port(`. A refusal (a file the tool did not write, a
/// broken managed block) or a template error is an error: then nothing may be written.
pub fn plan(
    wt: &WorktreeInfo,
    ctx: &TemplateContext,
    force: bool,
    is_tracked: &dyn Fn(&[PathBuf]) -> anyhow::Result<BTreeSet<PathBuf>>,
    peers: &dyn Fn() -> Peers,
) -> anyhow::Result<Plan> {
    let mut warnings = Vec::new();
    let outputs = render_templates(&wt.path, ctx, &mut warnings, peers)?;
    let manifest_path = manifest_path(wt);
    let read = read_manifest(&manifest_path);
    let manifest_existed = read.is_some();
    let mut manifest = read.unwrap_or_default();

    let mut changed: Vec<(PathBuf, Vec<u8>, Durability)> = Vec::new();
    let mut files = Vec::new();
    let mut exclude = Vec::new();
    let mut refusals = Vec::new();
    for out in &outputs {
        let target = checked_target(&wt.path, &out.rel, &out.template)?;
        let existing = match fsio::read_regular(&target) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                refusals.push(format!("{e}; move it aside"));
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("could not read {}", target.display()));
            }
        };
        let new = if is_env_file(&out.rel) {
            match merge_env_block(existing.as_deref(), &out.text) {
                Ok(bytes) => bytes,
                Err(msg) if force => {
                    warnings.push(format!(
                        "{}: {msg}; replaced because of --force",
                        target.display()
                    ));
                    replace_blocks(existing.as_deref().unwrap_or_default(), &out.text)
                }
                Err(msg) => {
                    refusals.push(format!("{}: {msg}", target.display()));
                    continue;
                }
            }
        } else {
            let new = out.text.clone().into_bytes();
            if let Some(old) = &existing
                && *old != new
                && !force
                && manifest.get(&rel_key(&out.rel)) != Some(&hash(old))
            {
                refusals.push(format!(
                    "{} exists and was not written by git-worktree-ports (or was edited since)",
                    target.display()
                ));
                continue;
            }
            new
        };
        exclude.push(out.rel.clone());
        if existing.as_deref() == Some(&new[..]) {
            manifest.insert(rel_key(&out.rel), hash(&new));
            files.push((out.rel.clone(), FileAction::Unchanged));
        } else {
            let durability = durability_of(&out.rel, existing.is_some());
            changed.push((out.rel.clone(), new, durability));
        }
    }
    if !refusals.is_empty() {
        return Err(Error::new(
            Code::TemplateError,
            format!(
                "not rendering, nothing was written: {}; move the file aside, or run `git worktree-ports render --force` to overwrite",
                refusals.join("; ")
            ),
        )
        .with(Details::Refused(Refused { refused: refusals }))
        .into());
    }

    // Files the tool wrote from templates that are gone: removed when nobody edited them
    // since, kept (and said so) when someone did.
    let produced: BTreeSet<String> = outputs.iter().map(|o| rel_key(&o.rel)).collect();
    let gone: Vec<String> = (manifest.keys())
        .filter(|k| !produced.contains(*k))
        .cloned()
        .collect();
    let mut removals = Vec::new();
    // Files that keep the user's lines once our block is gone: written, but no longer ours
    // (not in the manifest, so never removed later).
    let mut stripped = Vec::new();
    for key in gone {
        let written = manifest.remove(&key).unwrap_or_default();
        let rel = PathBuf::from(&key);
        let Ok(target) = checked_target(&wt.path, &rel, "the render manifest") else {
            continue;
        };
        match fsio::read_regular(&target) {
            Ok(Some(bytes)) if hash(&bytes) == written => {
                let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
                match blocks(&lines)[..] {
                    [(begin, Some(end))] if is_env_file(&rel) => {
                        let mut rest = lines[..begin].concat();
                        rest.extend_from_slice(&lines[end + 1..].concat());
                        if rest.iter().all(u8::is_ascii_whitespace) {
                            removals.push(rel.clone());
                        } else {
                            stripped.push((rel.clone(), rest));
                        }
                    }
                    _ => removals.push(rel.clone()),
                }
                files.push((rel, FileAction::Removed));
            }
            Ok(Some(_)) => warnings.push(format!(
                "{} was rendered from a template that is gone, and edited since: kept (delete it if it is not needed)",
                target.display()
            )),
            _ => {}
        }
    }

    let rels: Vec<PathBuf> = changed.iter().map(|(r, _, _)| r.clone()).collect();
    let tracked = if rels.is_empty() || force {
        BTreeSet::new()
    } else {
        is_tracked(&rels)?
    };
    let mut writes = Vec::new();
    for (rel, bytes, durability) in changed {
        if tracked.contains(&rel) {
            warnings.push(format!(
                "{} is tracked by git; not rendering it, so the worktree stays clean (stop tracking it with `git rm --cached {}`, or render with --force)",
                rel.display(),
                rel.display()
            ));
            exclude.retain(|r| r != &rel);
            files.push((rel, FileAction::SkippedTracked));
            continue;
        }
        manifest.insert(rel_key(&rel), hash(&bytes));
        files.push((rel.clone(), FileAction::Written));
        writes.push((rel, bytes, durability));
    }
    // The manifest is only needed to tell our files from the user's where a template is not
    // `.env`-style; a first one that lists none of those can be lost to a crash for nothing.
    let manifest_durability =
        match !manifest_existed && manifest.keys().all(|k| is_env_file(Path::new(k))) {
            true => Durability::Lazy,
            false => Durability::File,
        };
    let stripped = stripped
        .into_iter()
        .map(|(rel, bytes)| (rel, bytes, Durability::File));
    Ok(Plan {
        files,
        warnings,
        exclude,
        worktree: wt.path.clone(),
        writes: writes.into_iter().chain(stripped).collect(),
        removals,
        manifest_path,
        manifest,
        manifest_durability,
        manifest_mode: Mode::Fixed(0o644),
    })
}

/// Carry out a plan: write the stale files (each atomically), then the manifest.
pub fn apply(plan: Plan) -> anyhow::Result<Rendered> {
    for (rel, bytes, durability) in &plan.writes {
        // The worktree may be removed while we render (git takes no lock of ours): never
        // re-create it with only our files in it.
        if !plan.worktree.is_dir() {
            return Err(Error::new(
                Code::WorktreeNotFound,
                format!(
                    "{} was removed while rendering; nothing more was written",
                    plan.worktree.display()
                ),
            )
            .into());
        }
        write_file(&plan.worktree.join(rel), bytes, *durability)?;
    }
    // A render killed mid-write leaves `.<name>.wp-tmp.<pid>`; sweep every directory this
    // render writes to, not only at the same target's next render (its template may be gone).
    let dirs: BTreeSet<PathBuf> = (plan.files.iter())
        .filter_map(|(rel, _)| plan.worktree.join(rel).parent().map(Path::to_path_buf))
        .collect();
    for dir in dirs {
        fsio::sweep(&dir, None, Sweep::DeadWriters);
    }
    for rel in &plan.removals {
        let target = plan.worktree.join(rel);
        match fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("could not remove {}", target.display()));
            }
            _ => {}
        }
    }
    write_manifest(
        &plan.manifest_path,
        &plan.manifest,
        plan.manifest_mode,
        plan.manifest_durability,
    )?;
    Ok(Rendered {
        files: plan.files,
        warnings: plan.warnings,
        exclude: plan.exclude,
    })
}

/// Refuse a templates directory that is a symlink, or that resolves outside the worktree (a
/// committed `.worktree-ports/templates -> /` would render every `*.tera` of the machine into
/// the worktree): nothing outside the repository is ever read as a template.
fn templates_dir_inside(worktree: &Path, dir: &Path) -> anyhow::Result<()> {
    let linked = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
    let outside = match (dir.canonicalize(), worktree.canonicalize()) {
        (Ok(d), Ok(w)) => !d.starts_with(&w),
        _ => true,
    };
    if linked || outside {
        return Err(Error::new(
            Code::TemplateError,
            format!(
                "{} is {}; templates are read only from a real directory inside the worktree, so nothing was rendered (make it a directory, or remove it to get the built-in .env)",
                dir.display(),
                if linked { "a symlink" } else { "outside the worktree" }
            ),
        )
        .with(Details::Template(TemplateAt {
            template: dir.display().to_string(),
            line: None,
        }))
        .into());
    }
    Ok(())
}

/// Render every template to memory; any error is a TEMPLATE_ERROR and nothing is written.
fn render_templates(
    worktree: &Path,
    ctx: &TemplateContext,
    warnings: &mut Vec<String>,
    peers: &dyn Fn() -> Peers,
) -> anyhow::Result<Vec<Output>> {
    let dir = worktree.join(TEMPLATES_DIR);
    // (rel output, or None for a partial; template name; text)
    let mut sources: Vec<(Option<PathBuf>, String, String)> = Vec::new();
    if dir.is_dir() {
        templates_dir_inside(worktree, &dir)?;
        for entry in walkdir::WalkDir::new(&dir)
            .follow_root_links(false)
            .sort_by_file_name()
        {
            let entry = entry.with_context(|| format!("could not read {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy();
            if !name.ends_with(".tera") || entry.file_type().is_dir() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&dir)
                .expect("under dir")
                .to_path_buf();
            if !entry.file_type().is_file() {
                // Not followed: a link could read any file on the machine into a worktree.
                warnings.push(format!(
                    "{} is not a regular file (a symlink?); templates are read from regular files only, so it was skipped",
                    entry.path().display()
                ));
                continue;
            }
            let text = fsio::read_regular(entry.path())
                .with_context(|| format!("could not read {}", entry.path().display()))?
                .unwrap_or_default();
            let text = String::from_utf8(text).map_err(|_| {
                Error::new(
                    Code::TemplateError,
                    format!("{} is not valid UTF-8", entry.path().display()),
                )
            })?;
            let out_rel = if is_partial(&rel) {
                None
            } else {
                // One `.tera` goes: `app.tera.tera` renders `app.tera`.
                let out = name.strip_suffix(".tera").unwrap_or(&name);
                if out.is_empty() {
                    return Err(Error::new(
                        Code::TemplateError,
                        format!(
                            "{}: a template named `.tera` renders to no file name; name it after the file it renders (`.env.tera` renders `.env`)",
                            entry.path().display()
                        ),
                    )
                    .into());
                }
                Some(rel.with_file_name(out))
            };
            sources.push((out_rel, rel.to_string_lossy().into_owned(), text));
        }
    } else {
        sources.push((
            Some(PathBuf::from(".env")),
            "env.tera".into(),
            BUILTIN_ENV.into(),
        ));
    }
    let template_path = |name: &str| {
        if name.is_empty() {
            dir.display().to_string()
        } else if dir.is_dir() {
            dir.join(name).display().to_string()
        } else {
            format!("built-in template {name}")
        }
    };

    let mut tera = tera::Tera::new();
    tera.autoescape_on(Vec::<&str>::new());
    // The other repositories' registries are read only for templates that ask for them.
    let peers = if sources.iter().any(|(_, _, text)| text.contains("port(")) {
        peers()
    } else {
        Peers::default()
    };
    let me = ctx.worktree.name.clone();
    tera.register_function(
        "port",
        move |kwargs: tera::Kwargs, _: &tera::State| -> tera::TeraResult<u16> {
            let repo: String = kwargs.must_get::<&str>("repo")?.to_string();
            let service: String = kwargs.must_get::<&str>("service")?.to_string();
            let worktree: String = kwargs
                .get::<&str>("worktree")?
                .map_or_else(|| me.clone(), str::to_string);
            peers
                .port(&repo, &service, &worktree)
                .map_err(tera::Error::message)
        },
    );
    let context = tera::Context::from_serialize(ctx).map_err(|e| {
        Error::new(
            Code::TemplateError,
            format!("could not build the template context: {e}"),
        )
    })?;
    // All at once, so that `include` and `extends` find their template whatever the order of
    // the file names.
    tera.add_raw_templates(
        sources
            .iter()
            .map(|(_, name, text)| (name.as_str(), text.as_str())),
    )
    .map_err(|e| template_error(&e, "", &template_path))?;
    sources
        .into_iter()
        .filter_map(|(rel, name, _)| Some((rel?, name)))
        .map(|(rel, name)| {
            let text = tera
                .render(&name, &context)
                .map_err(|e| template_error(&e, &name, &template_path))?;
            Ok(Output {
                rel,
                template: template_path(&name),
                text,
            })
        })
        .collect()
}

/// A template that renders no file of its own, only as part of others (`include`,
/// `extends`): its name starts with `_`, or it is under `partials/`.
fn is_partial(rel: &Path) -> bool {
    rel.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('_'))
        || rel
            .components()
            .next()
            .is_some_and(|c| c.as_os_str() == "partials")
}

/// TEMPLATE_ERROR naming the file (the template the error is in, which may be another than
/// the one rendered: an included one) and the line.
fn template_error(e: &tera::Error, name: &str, path_of: &dyn Fn(&str) -> String) -> anyhow::Error {
    let (file, line, msg) = match e.kind() {
        tera::ErrorKind::SyntaxError(r) | tera::ErrorKind::RenderingError(r) => {
            let file = if r.filename().is_empty() {
                path_of(name)
            } else {
                path_of(r.filename())
            };
            (file, Some(r.span().start_line), r.message().to_string())
        }
        _ => (path_of(name), None, e.to_string()),
    };
    let at = match line {
        Some(l) => format!("{file}:{l}"),
        None => file.clone(),
    };
    Error::new(
        Code::TemplateError,
        format!("{at}: {msg}; nothing was written (fix the template, then run `git worktree-ports render`)"),
    )
    .with(Details::Template(TemplateAt {
        template: file.to_string(),
        line,
    }))
    .into()
}

/// `.env`, `.env.local`, `app.env`: files where the tool manages only its block.
pub fn is_env_file(rel: &Path) -> bool {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name == ".env" || name.starts_with(".env.") || name.ends_with(".env")
}

const BEGIN_PREFIX: &[u8] = b"# >>> git-worktree-ports >>>";

/// A line without its line ending or trailing blanks.
fn trimmed(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &line[..end]
}

/// (begin, end) line indexes of each managed block; `end` None when a block has no end
/// marker.
fn blocks(lines: &[&[u8]]) -> Vec<(usize, Option<usize>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if trimmed(lines[i]).starts_with(BEGIN_PREFIX) {
            let end = (i + 1..lines.len()).find(|&j| trimmed(lines[j]) == BLOCK_END.as_bytes());
            out.push((i, end));
            i = end.map_or(lines.len(), |e| e + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// The file with our block replaced (or appended). Works on bytes: every byte of the user's
/// lines stays as it was, valid UTF-8 or not. Refuses (so that nothing is half-updated) a
/// block without its end marker, and two blocks (two files concatenated: a loader that takes
/// the last value would read the stale one).
fn merge_env_block(existing: Option<&[u8]>, block: &str) -> Result<Vec<u8>, String> {
    let block = format_block(block);
    let Some(existing) = existing else {
        return Ok(block.into_bytes());
    };
    let lines: Vec<&[u8]> = existing.split_inclusive(|b| *b == b'\n').collect();
    match blocks(&lines)[..] {
        [] => {
            let mut out = existing.to_vec();
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(block.as_bytes());
            Ok(out)
        }
        [(begin, Some(end))] => {
            let mut out = lines[..begin].concat();
            out.extend_from_slice(block.as_bytes());
            out.extend_from_slice(&lines[end + 1..].concat());
            Ok(out)
        }
        [(begin, None)] => Err(format!(
            "the managed block that starts at line {} has no end marker (was it deleted?); restore the line `{BLOCK_END}`, or render with --force to replace everything from that line on",
            begin + 1
        )),
        ref many => Err(format!(
            "has {} managed blocks (at lines {}; two files concatenated?); delete all but one, or render with --force to keep the first and remove the others",
            many.len(),
            many.iter()
                .map(|(b, _)| (b + 1).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// With --force and broken blocks: our block where the first one starts; every block, and
/// everything after a block without an end marker, is ours and goes.
fn replace_blocks(existing: &[u8], block: &str) -> Vec<u8> {
    let lines: Vec<&[u8]> = existing.split_inclusive(|b| *b == b'\n').collect();
    let found = blocks(&lines);
    let mut out = Vec::with_capacity(existing.len() + block.len());
    let mut i = 0;
    for (n, (begin, end)) in found.iter().enumerate() {
        out.extend_from_slice(&lines[i..*begin].concat());
        if n == 0 {
            out.extend_from_slice(format_block(block).as_bytes());
        }
        i = end.map_or(lines.len(), |e| e + 1);
    }
    out.extend_from_slice(&lines[i..].concat());
    if found.is_empty() {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(format_block(block).as_bytes());
    }
    out
}

fn format_block(body: &str) -> String {
    let mut s = format!("{BLOCK_BEGIN}\n{body}");
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(BLOCK_END);
    s.push('\n');
    s
}

/// The absolute target for `rel`, refusing anything that would leave the worktree.
fn checked_target(worktree: &Path, rel: &Path, template: &str) -> anyhow::Result<PathBuf> {
    let refuse = |why: String| -> anyhow::Error {
        Error::new(
            Code::TemplateError,
            format!(
                "{template}: refusing to write {}: {why}; nothing was written",
                rel.display()
            ),
        )
        .into()
    };
    let mut path = worktree.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(part) if part == ".git" => {
                return Err(refuse("it is inside .git".into()));
            }
            Component::Normal(part) => {
                path.push(part);
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(refuse(format!(
                            "{} is a symlink, and writes never follow one",
                            path.display()
                        )));
                    }
                    _ => {}
                }
            }
            _ => return Err(refuse("the path leaves the worktree".into())),
        }
    }
    Ok(path)
}

/// How a rendered file is written. A new `.env`-style file holds nothing but our block: a
/// crash may leave it missing or empty (as it may the files git checked out beside it, which
/// git does not fsync either), and the next render merges the block into whatever is there;
/// so it is not fsynced. A file that existed may hold the user's lines, and a file that is not
/// `.env`-style is told from the user's by its hash in the manifest: those are fsynced before
/// they replace anything, so a crash brings back the old file, never an empty one.
fn durability_of(rel: &Path, existed: bool) -> Durability {
    match !existed && is_env_file(rel) {
        true => Durability::Lazy,
        false => Durability::File,
    }
}

/// Write one file inside a worktree (or the manifest, or `info/exclude`): sweep temp files a
/// killed render left for this target, then the one atomic writer.
fn write_file(target: &Path, bytes: &[u8], durability: Durability) -> anyhow::Result<()> {
    if let (Some(dir), Some(name)) = (target.parent(), target.file_name()) {
        fsio::sweep(dir, Some(name), Sweep::DeadWriters);
    }
    fsio::write_atomic(
        target,
        bytes,
        WriteOptions {
            durability,
            mode: Mode::KeepExisting,
            label: "render",
        },
    )
}

fn rel_key(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

/// FNV-1a 64: enough to notice an edit; not a security boundary.
fn hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}-{}", bytes.len())
}

/// The manifest at `path`; None when there is no file (one that does not parse is empty).
fn read_manifest(path: &Path) -> Option<BTreeMap<String, String>> {
    let bytes = fs::read(path).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap_or_default())
}

fn write_manifest(
    path: &Path,
    manifest: &BTreeMap<String, String>,
    mode: Mode,
    durability: Durability,
) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
    if fs::read(path).ok().as_deref() == Some(&bytes[..]) {
        return Ok(());
    }
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        fsio::sweep(dir, Some(name), Sweep::DeadWriters);
    }
    fsio::write_atomic(
        path,
        &bytes,
        WriteOptions {
            durability,
            mode,
            label: "render",
        },
    )
}

/// Temp files a killed render may leave, at any depth: never in `git status`.
pub const TEMP_EXCLUDE: &str = ".*.wp-tmp.*";

/// The `info/exclude` lines for rendered paths (anchored, special characters escaped), and
/// the temp-file pattern.
pub fn exclude_patterns(rels: &[PathBuf]) -> BTreeSet<String> {
    std::iter::once(TEMP_EXCLUDE.to_string())
        .chain(rels.iter().map(|rel| {
            let mut p = String::from("/");
            for c in rel.to_string_lossy().chars() {
                if matches!(c, '*' | '?' | '[' | '\\' | '!' | '#') || c == ' ' {
                    p.push('\\');
                }
                p.push(c);
            }
            p
        }))
        .collect()
}

/// Patterns of `wanted` missing from the managed block of `<common-dir>/info/exclude`.
pub fn missing_excludes(common_dir: &Path, wanted: &BTreeSet<String>) -> BTreeSet<String> {
    let text = fs::read_to_string(common_dir.join("info/exclude")).unwrap_or_default();
    let have = managed_excludes(&text);
    wanted.difference(&have).cloned().collect()
}

fn managed_excludes(text: &str) -> BTreeSet<String> {
    let mut inside = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line == EXCLUDE_BEGIN {
            inside = true;
        } else if line == EXCLUDE_END {
            inside = false;
        } else if inside {
            out.insert(line.to_string());
        }
    }
    out
}

/// The paths (relative to the worktree) the last render of `wt` wrote, from its manifest.
pub fn rendered_paths(wt: &WorktreeInfo) -> BTreeSet<PathBuf> {
    read_manifest(&manifest_path(wt))
        .unwrap_or_default()
        .into_keys()
        .map(PathBuf::from)
        .collect()
}

/// The lines of the managed block of `<common-dir>/info/exclude` that are among `patterns`.
pub fn present_excludes(common_dir: &Path, patterns: &BTreeSet<String>) -> BTreeSet<String> {
    let text = fs::read_to_string(common_dir.join("info/exclude")).unwrap_or_default();
    managed_excludes(&text)
        .intersection(patterns)
        .cloned()
        .collect()
}

/// Add `patterns` to the managed block of `<common-dir>/info/exclude` (shared by every
/// worktree). Call under the registry lock: parallel renders must not lose each other's lines.
pub fn add_excludes(common_dir: &Path, patterns: &BTreeSet<String>) -> anyhow::Result<()> {
    update_excludes(common_dir, patterns, &BTreeSet::new())
}

/// Add `add` to the managed block of `<common-dir>/info/exclude` and take `remove` out of it
/// (the temp-file pattern stays); the user's lines outside the block are kept byte for byte.
/// Call under the registry lock.
pub fn update_excludes(
    common_dir: &Path,
    add: &BTreeSet<String>,
    remove: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let patterns = add;
    let path = common_dir.join("info/exclude");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    let mut all = managed_excludes(&text);
    let before = all.clone();
    all.extend(patterns.iter().cloned());
    all.retain(|p| p == TEMP_EXCLUDE || !remove.contains(p) || patterns.contains(p));
    if all == before {
        return Ok(());
    }
    let mut block = format!("{EXCLUDE_BEGIN}\n");
    for p in &all {
        block.push_str(p);
        block.push('\n');
    }
    block.push_str(EXCLUDE_END);
    block.push('\n');
    let new = match (text.find(EXCLUDE_BEGIN), text.find(EXCLUDE_END)) {
        (Some(b), Some(e)) if e > b => {
            let after = &text[e + EXCLUDE_END.len()..];
            format!(
                "{}{block}{}",
                &text[..b],
                after.strip_prefix('\n').unwrap_or(after)
            )
        }
        _ => {
            let mut t = text.clone();
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            t.push_str(&block);
            t
        }
    };
    write_file(&path, new.as_bytes(), Durability::File)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_name_comparison_agrees_with_the_name() {
        for (r, w) in [
            ("myapp", "feature-login"),
            ("My.App", "worktrees/main"),
            ("app", "wörk trëe"),
            ("_x", "Feat_1"),
            ("", ""),
            ("a--_", "--b-"),
            ("-_-", "x"),
            ("app", "feat.x"),
        ] {
            let name = compose_project_name(r, w);
            assert!(compose_project_name_is(r, w, &name), "{r} {w} {name}");
            assert!(!compose_project_name_is(r, w, &format!("{name}x")));
            assert!(!compose_project_name_is(r, w, &name[..name.len() - 1]));
        }
    }

    /// The quick test never says "different" of two worktrees that get the same name: every
    /// pair of names of up to 3 characters from letters of both cases, a digit, `_`, `-`,
    /// `.` and a non-ASCII letter, under repositories with and without letters.
    #[test]
    fn names_said_different_are_different() {
        let alphabet = ["a", "B", "1", "_", "-", ".", "é"];
        let mut names = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = (names.iter())
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        names.sort();
        names.dedup();
        let short: Vec<&String> = names.iter().filter(|n| n.chars().count() <= 2).collect();
        let mut said_different = 0;
        for repo in ["app", "_x", "", "é", "-_", "A.b"] {
            for a in &names {
                for b in &short {
                    if !may_share_compose_name(repo, a, b) {
                        said_different += 1;
                        assert_ne!(
                            compose_project_name(repo, a),
                            compose_project_name(repo, b),
                            "{repo:?} {a:?} {b:?}"
                        );
                    }
                }
            }
        }
        assert!(said_different > 10_000, "{said_different}");
    }

    #[test]
    fn compose_names_are_what_compose_accepts() {
        assert_eq!(
            compose_project_name("myapp", "feature-login"),
            "myapp-feature-login"
        );
        assert_eq!(
            compose_project_name("My.App", "worktrees/main"),
            "my-app-worktrees-main"
        );
        assert_eq!(compose_project_name("app", "wörk trëe"), "app-w-rk-tr-e");
        assert_eq!(compose_project_name("_x", "Feat_1"), "x-feat_1");
        assert_eq!(compose_project_name("", ""), "worktree");
    }

    #[test]
    fn repo_names() {
        assert_eq!(repo_name(Path::new("/x/app/.git")), "app");
        assert_eq!(repo_name(Path::new("/x/app.git")), "app");
        assert_eq!(repo_name(Path::new("/x/app/.git/modules/lib")), "lib");
    }

    #[test]
    fn env_block_keeps_user_lines_and_replaces_only_ours() {
        let first = merge_env_block(Some(b"SECRET=1\n"), "WEB_PORT=1\n").unwrap();
        let first = String::from_utf8(first).unwrap();
        assert_eq!(
            first,
            format!("SECRET=1\n{BLOCK_BEGIN}\nWEB_PORT=1\n{BLOCK_END}\n")
        );
        let with_more = format!("{first}AFTER=2\n");
        let second = merge_env_block(Some(with_more.as_bytes()), "WEB_PORT=2\n").unwrap();
        assert_eq!(
            String::from_utf8(second).unwrap(),
            format!("SECRET=1\n{BLOCK_BEGIN}\nWEB_PORT=2\n{BLOCK_END}\nAFTER=2\n")
        );
        // No trailing newline in the user's file.
        let third = merge_env_block(Some(b"A=1"), "B=2").unwrap();
        assert_eq!(
            String::from_utf8(third).unwrap(),
            format!("A=1\n{BLOCK_BEGIN}\nB=2\n{BLOCK_END}\n")
        );
        // A start marker without its end is refused (the user's lines after it would go).
        let broken = format!("A=1\n{BLOCK_BEGIN}\nB=2\nMINE=3\n");
        assert!(merge_env_block(Some(broken.as_bytes()), "B=3\n").is_err());
        assert_eq!(
            replace_blocks(broken.as_bytes(), "B=3\n"),
            format!("A=1\n{BLOCK_BEGIN}\nB=3\n{BLOCK_END}\n").into_bytes()
        );
    }

    /// Regression (issue 15, item 7): the user's lines lost every non-UTF-8 byte (U+FFFD),
    /// also with --force.
    #[test]
    fn env_block_keeps_every_byte_of_the_users_lines() {
        let mine = b"LATIN1=caf\xe9\r\nBIN=\xff\xfe\n";
        let first = merge_env_block(Some(mine), "WEB_PORT=1\n").unwrap();
        assert!(first.starts_with(mine));
        let mut edited = first.clone();
        edited.extend_from_slice(b"AFTER=\x80\n");
        let second = merge_env_block(Some(&edited), "WEB_PORT=2\n").unwrap();
        let mut want = mine.to_vec();
        want.extend_from_slice(format!("{BLOCK_BEGIN}\nWEB_PORT=2\n{BLOCK_END}\n").as_bytes());
        want.extend_from_slice(b"AFTER=\x80\n");
        assert_eq!(second, want);
        let forced = replace_blocks(&edited, "WEB_PORT=2\n");
        assert_eq!(forced, want);
    }

    /// Low item of issue 15: two managed blocks (two files concatenated) updated only the
    /// first, and loaders that take the last value read the stale one.
    #[test]
    fn two_managed_blocks_are_refused_or_with_force_made_one() {
        let two = format!(
            "A=1\n{BLOCK_BEGIN}\nWEB_PORT=1\n{BLOCK_END}\nB=2\n{BLOCK_BEGIN}\nWEB_PORT=9\n{BLOCK_END}\nC=3\n"
        );
        let err = merge_env_block(Some(two.as_bytes()), "WEB_PORT=5\n").unwrap_err();
        assert!(err.contains("2 managed blocks (at lines 2, 6"), "{err}");
        assert_eq!(
            String::from_utf8(replace_blocks(two.as_bytes(), "WEB_PORT=5\n")).unwrap(),
            format!("A=1\n{BLOCK_BEGIN}\nWEB_PORT=5\n{BLOCK_END}\nB=2\nC=3\n")
        );
    }

    #[test]
    fn targets_never_leave_the_worktree() {
        let dir = tempfile::tempdir().unwrap();
        let wt = dir.path().join("wt");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&wt).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, wt.join("config")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), wt.join("file")).unwrap();
        assert!(checked_target(&wt, Path::new("config/app.toml"), "t").is_err());
        assert!(checked_target(&wt, Path::new("file"), "t").is_err());
        assert!(checked_target(&wt, Path::new("../x"), "t").is_err());
        assert!(checked_target(&wt, Path::new(".git/hooks/x"), "t").is_err());
        assert!(checked_target(&wt, Path::new("/etc/passwd"), "t").is_err());
        assert_eq!(
            checked_target(&wt, Path::new("a/b"), "t").unwrap(),
            wt.join("a/b")
        );
    }

    #[test]
    fn exclude_block_is_merged_and_escaped() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("info")).unwrap();
        fs::write(dir.path().join("info/exclude"), "# user\n*.log").unwrap();
        let want = exclude_patterns(&[PathBuf::from(".env"), PathBuf::from("a b/[x].toml")]);
        // Two paths and the temp-file pattern.
        assert_eq!(missing_excludes(dir.path(), &want).len(), 3);
        add_excludes(dir.path(), &want).unwrap();
        add_excludes(dir.path(), &exclude_patterns(&[PathBuf::from("c.toml")])).unwrap();
        let text = fs::read_to_string(dir.path().join("info/exclude")).unwrap();
        assert!(text.starts_with("# user\n*.log\n"), "{text}");
        assert!(text.contains("/.env\n"), "{text}");
        assert!(text.contains("/a\\ b/\\[x].toml\n"), "{text}");
        assert!(text.contains("/c.toml\n"), "{text}");
        assert_eq!(
            text.matches(&format!("\n{TEMP_EXCLUDE}\n")).count(),
            1,
            "{text}"
        );
        assert_eq!(text.matches(EXCLUDE_BEGIN).count(), 1, "{text}");
        assert!(missing_excludes(dir.path(), &want).is_empty());
    }

    #[test]
    fn hashes_differ_for_different_content() {
        assert_ne!(hash(b"a"), hash(b"b"));
        assert_eq!(hash(b"abc"), hash(b"abc"));
    }
}
