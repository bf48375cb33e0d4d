//! `.worktree-ports/config.toml` -> [`Config`]: the services a worktree gets, the strategy and
//! the reserved ports. Reads one file; never writes.
//!
//! Every problem is a `CONFIG_INVALID` error naming the file and, where one exists, the line.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::model::error::{Code, Error};

/// Where the config lives inside a worktree.
pub const CONFIG_PATH: &str = ".worktree-ports/config.toml";

/// The lowest port the tool ever hands out or accepts.
pub const MIN_PORT: u16 = 1024;

/// Which protocols must be free for a service's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP only (the default).
    Tcp,
    /// UDP only.
    Udp,
    /// Both TCP and UDP.
    Both,
}

impl Protocol {
    /// Lower-case name, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Both => "both",
        }
    }
}

/// How ports are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The lowest free port of each service's range.
    Ranges,
    /// The repository claims a block of `span` ports; each worktree takes a slot of `size`
    /// ports in it; each service sits at its `offset` in the slot.
    Block(Block),
}

/// `[block]`: the block strategy's numbers (validated: `size` divides `span`, the first block
/// fits below 65536).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The lowest port a block may start at; blocks start at `base + k * span`.
    pub base: u16,
    /// Ports per worktree (one slot).
    pub size: u16,
    /// Ports per repository (its block): `span / size` worktrees.
    pub span: u16,
}

impl Block {
    /// Slots in one block.
    pub fn slots(&self) -> u32 {
        u32::from(self.span / self.size)
    }

    /// `[block] base 30000, size 10, span 100`.
    pub fn describe(&self) -> String {
        format!(
            "[block] base {}, size {}, span {}",
            self.base, self.size, self.span
        )
    }

    /// The users' name for it: "increment of 10 from 9500" (one slot per repository, POEM's
    /// installations) or "blocks of 100 from 30000, 10 ports per worktree".
    pub fn convention(&self) -> String {
        if self.span == self.size {
            format!("increment of {} from {}", self.size, self.base)
        } else {
            format!(
                "blocks of {} from {}, {} ports per worktree",
                self.span, self.base, self.size
            )
        }
    }
}

/// One service of a worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Name, as used in `--port NAME=...`, `get NAME` and `ports.json`.
    pub name: String,
    /// Inclusive range the automatic choice takes from.
    pub range: (u16, u16),
    /// Environment variable name (`WEB_PORT`).
    pub env: String,
    /// Which protocols must be free.
    pub protocol: Protocol,
    /// Block strategy: the port's position in the worktree's slot (`offset`, else the
    /// service's position in the config). 0 and unused in the ranges strategy.
    pub offset: u16,
    /// It speaks HTTP (`http = true`; `web` and `api` by default): it gets URLs and proxy
    /// routes.
    pub http: bool,
    /// Ports inside the range that well-known software uses (the built-in services' only):
    /// an automatic choice takes one only when the rest of the range is taken, saying whose
    /// it usually is. A pin may name one.
    pub well_known: &'static [(u16, &'static str)],
}

/// Well-known ports inside the built-in ranges, and whose they usually are.
const WEB_WELL_KNOWN: &[(u16, &str)] = &[
    (8086, "InfluxDB"),
    (8088, "Hadoop YARN"),
    (8089, "Splunk's management"),
    (8096, "Jellyfin"),
    (8123, "Home Assistant"),
    (8125, "StatsD"),
    (8126, "the Datadog agent"),
    (8140, "Puppet"),
    (8161, "ActiveMQ's console"),
];
const API_WELL_KNOWN: &[(u16, &str)] = &[(3050, "Firebird")];
const TEST_WELL_KNOWN: &[(u16, &str)] = &[
    (9001, "MinIO's console"),
    (9042, "Cassandra"),
    (9050, "Tor"),
    (9051, "Tor's control"),
    (9090, "Prometheus"),
    (9091, "Prometheus's Pushgateway"),
    (9092, "Kafka"),
    (9093, "Alertmanager"),
    (9094, "Alertmanager's cluster"),
];
const DEBUG_WELL_KNOWN: &[(u16, &str)] = &[(5601, "Kibana")];

/// `[on] allocate = "..."` and `[on] release = "..."`: tera templates of shell commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnCommands {
    /// Run after a worktree first gets its ports (and its files are rendered).
    pub allocate: Option<String>,
    /// Run before a worktree's ports are given back (`remove`, `release`, `prune`).
    pub release: Option<String>,
}

/// A validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Port selection strategy.
    pub strategy: Strategy,
    /// Services in the order the config lists them.
    pub services: Vec<Service>,
    /// Ports never handed out.
    pub reserved: Vec<RangeInclusive<u16>>,
    /// The named ranges among `reserved` (`"system"`), to name them when one is hit.
    pub reserved_names: Vec<(RangeInclusive<u16>, String)>,
    /// What `range = "auto"` chose for each service, and why, for `allocate` to say.
    pub range_choices: Vec<String>,
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
    /// `[on]`: the user's commands around a worktree's ports.
    pub on: OnCommands,
    /// `hostname = "..."`: a tera template for the worktree's label in its hostname (default:
    /// the worktree's name).
    pub hostname: Option<String>,
    /// Coordinate with every repository on the machine (the default); `coordinate = false`
    /// makes a throwaway repository neither listed in the machine index nor aware of it.
    pub coordinate: bool,
}

impl Config {
    /// The built-in services (no config file, or one without `[services]`): web 8080-8179,
    /// api 3000-3099, db 5432-5499, test 9000-9099, debug 5555-5624.
    pub fn builtin() -> Config {
        let svc = |name: &str, lo, hi, well_known| Service {
            name: name.to_string(),
            range: (lo, hi),
            env: default_env_name(name),
            protocol: Protocol::Tcp,
            offset: 0,
            http: default_http(name),
            well_known,
        };
        Config {
            strategy: Strategy::Ranges,
            services: vec![
                // At least 50 worktrees each, across the machine's repositories, the
                // conventional port first (the main worktree's, where it is free).
                svc("web", 8080, 8179, WEB_WELL_KNOWN),
                svc("api", 3000, 3099, API_WELL_KNOWN),
                svc("db", 5432, 5499, &[]),
                svc("test", 9000, 9099, TEST_WELL_KNOWN),
                svc("debug", 5555, 5624, DEBUG_WELL_KNOWN),
            ],
            reserved: Vec::new(),
            reserved_names: Vec::new(),
            range_choices: Vec::new(),
            source: None,
            coordinate: true,
            on: OnCommands::default(),
            hostname: None,
        }
    }

    /// Parse and validate config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Error> {
        let invalid = |span: Option<std::ops::Range<usize>>, msg: String| {
            let at = match span {
                Some(s) => format!("{}:{}", path.display(), line_of(text, s.start)),
                None => path.display().to_string(),
            };
            Error::new(Code::ConfigInvalid, format!("{at}: {msg}")).with(
                crate::model::error::Details::Config(crate::model::error::ConfigFile {
                    file: path.display().to_string(),
                }),
            )
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().trim().to_string()))?;

        let strategy = match raw.strategy.as_ref().map(|s| s.as_ref().as_str()) {
            None | Some("ranges") => {
                if let Some(block) = &raw.block {
                    return Err(invalid(
                        Some(block.span()),
                        "[block] is only used by strategy = \"block\"; add that line, or remove the table".into(),
                    ));
                }
                Strategy::Ranges
            }
            Some("block") => {
                let Some(block) = &raw.block else {
                    return Err(invalid(
                        raw.strategy.as_ref().map(|s| s.span()),
                        "strategy \"block\" needs a [block] table: base, size and span, such as\n[block]\nbase = 30000\nsize = 10\nspan = 100".into(),
                    ));
                };
                Strategy::Block(
                    parse_block(block.get_ref()).map_err(|m| invalid(Some(block.span()), m))?,
                )
            }
            Some(other) => {
                let span = raw.strategy.as_ref().map(|s| s.span());
                return Err(invalid(
                    span,
                    format!("unknown strategy {other:?}; expected \"ranges\" or \"block\""),
                ));
            }
        };

        let mut reserved = Vec::new();
        let mut reserved_names = Vec::new();
        let mut range_choices = Vec::new();
        for item in &raw.reserved {
            let r = parse_reserved(item.as_ref()).map_err(|m| invalid(Some(item.span()), m))?;
            if let ReservedItem::Text(name) = item.as_ref()
                && named_range(name).is_some()
            {
                reserved_names.push((r.clone(), name.clone()));
            }
            reserved.push(r);
        }

        let services = match raw.services {
            None => {
                let mut services = Config::builtin().services;
                if let Strategy::Block(b) = strategy {
                    if usize::from(b.size) < services.len() {
                        return Err(invalid(
                            raw.block.as_ref().map(|b| b.span()),
                            format!(
                                "[block] size = {} is smaller than the {} built-in services (web, api, db, test, debug); raise size, or list your services with an offset each under [services]",
                                b.size,
                                services.len()
                            ),
                        ));
                    }
                    for (i, s) in services.iter_mut().enumerate() {
                        s.offset = i as u16;
                        s.range = (b.base, b.base + (b.span - 1));
                    }
                }
                services
            }
            Some(OrderedServices(list)) => {
                if list.is_empty() {
                    return Err(invalid(None, "[services] is empty; define at least one service, or remove the table to use the built-in services".into()));
                }
                let mut services: Vec<Service> = Vec::new();
                for (name, raw_svc) in list {
                    let span = raw_svc.span();
                    let raw_svc = raw_svc.into_inner();
                    if !valid_service_name(&name) {
                        return Err(invalid(
                            Some(span),
                            format!(
                                "service name {name:?} must start with a letter or digit and contain only letters, digits, '-' and '_'"
                            ),
                        ));
                    }
                    let (lo, hi) = match (strategy, &raw_svc.range) {
                        (Strategy::Block(b), None) => (b.base, b.base + (b.span - 1)),
                        (Strategy::Block(_), Some(r)) => {
                            return Err(invalid(
                                Some(r.span()),
                                format!(
                                    "[services.{name}] range is not used by strategy \"block\" (ports come from [block] and the service's offset); remove it"
                                ),
                            ));
                        }
                        (Strategy::Ranges, None) => {
                            return Err(invalid(
                                Some(span),
                                format!(
                                    "[services.{name}] needs a range, such as range = [8080, 8099] or range = \"node\""
                                ),
                            ));
                        }
                        (Strategy::Ranges, Some(range)) => {
                            let range_span = Some(range.span());
                            let numbers: Vec<i64> = match range.as_ref() {
                                RawRange::Ports(v) => v.clone(),
                                RawRange::Name(n) if n == "auto" => {
                                    let worktree = path.parent().and_then(Path::parent);
                                    let (kind, why) = detect_project_type(worktree);
                                    let (lo, hi) =
                                        named_range(kind).expect("a project type is named");
                                    range_choices.push(format!(
                                        "{name}: range \"auto\" is {kind} {lo}-{hi} ({why})"
                                    ));
                                    vec![i64::from(lo), i64::from(hi)]
                                }
                                RawRange::Name(n) => match named_range(n) {
                                    Some((lo, hi)) => vec![i64::from(lo), i64::from(hi)],
                                    None => {
                                        return Err(invalid(
                                            range_span,
                                            format!(
                                                "[services.{name}] range {n:?} is not a named range; use one of {}, \"auto\", or two numbers: range = [8080, 8099]",
                                                NAMED_RANGES
                                                    .iter()
                                                    .map(|(n, _, _)| format!("{n:?}"))
                                                    .collect::<Vec<_>>()
                                                    .join(", ")
                                            ),
                                        ));
                                    }
                                },
                            };
                            let (lo, hi) = match numbers[..] {
                                [lo, hi] => (lo, hi),
                                ref other => {
                                    return Err(invalid(
                                        range_span,
                                        format!(
                                            "[services.{name}] range has {} numbers; write exactly two, the first and the last port: range = [8080, 8099]",
                                            other.len()
                                        ),
                                    ));
                                }
                            };
                            for p in [lo, hi] {
                                if !(MIN_PORT as i64..=65535).contains(&p) {
                                    return Err(invalid(
                                        range_span,
                                        format!(
                                            "[services.{name}] range: port {p} is outside 1024-65535"
                                        ),
                                    ));
                                }
                            }
                            if lo > hi {
                                return Err(invalid(
                                    range_span,
                                    format!(
                                        "[services.{name}] range [{lo}, {hi}] is reversed; write [{hi}, {lo}]"
                                    ),
                                ));
                            }
                            (lo as u16, hi as u16)
                        }
                    };
                    let offset = match (strategy, &raw_svc.offset) {
                        (Strategy::Ranges, None) => 0,
                        (Strategy::Ranges, Some(o)) => {
                            return Err(invalid(
                                Some(o.span()),
                                format!(
                                    "[services.{name}] offset is only used by strategy = \"block\"; remove it, or use that strategy"
                                ),
                            ));
                        }
                        (Strategy::Block(b), o) => {
                            // Without an offset: the lowest one no service above it has.
                            let at = o.as_ref().map(|o| *o.get_ref()).unwrap_or_else(|| {
                                (0..)
                                    .find(|i| !services.iter().any(|s| i64::from(s.offset) == *i))
                                    .expect("a free offset")
                            });
                            if !(0..i64::from(b.size)).contains(&at) {
                                return Err(invalid(
                                    o.as_ref().map(|o| o.span()).or(Some(span)),
                                    format!(
                                        "[services.{name}] offset {at} is outside the worktree's {} ports (0-{}); give it an offset below [block] size, or raise size",
                                        b.size,
                                        b.size - 1
                                    ),
                                ));
                            }
                            let at = at as u16;
                            if let Some(other) = services.iter().find(|s| s.offset == at) {
                                return Err(invalid(
                                    o.as_ref().map(|o| o.span()).or(Some(span)),
                                    format!(
                                        "[services.{name}] offset {at} is [services.{}]'s already; give each service its own offset",
                                        other.name
                                    ),
                                ));
                            }
                            at
                        }
                    };
                    let env = match raw_svc.env {
                        Some(env) => {
                            if let Some(why) = reserved_env_name(env.as_ref()) {
                                return Err(invalid(
                                    Some(env.span()),
                                    format!(
                                        "[services.{name}] env {:?} {why}; `exec` would run commands with it set to a port. Pick a name of your own, such as {}",
                                        env.as_ref(),
                                        default_env_name(&name)
                                    ),
                                ));
                            }
                            if !valid_env_name(env.as_ref()) {
                                return Err(invalid(
                                    Some(env.span()),
                                    format!(
                                        "[services.{name}] env {:?} is not a valid environment variable name (letters, digits, '_', not starting with a digit)",
                                        env.as_ref()
                                    ),
                                ));
                            }
                            env.into_inner()
                        }
                        None => default_env_name(&name),
                    };
                    if let Some(other) = services.iter().find(|s| s.env == env) {
                        return Err(invalid(
                            Some(span),
                            format!(
                                "[services.{name}] uses env {env:?}, which [services.{}] already uses",
                                other.name
                            ),
                        ));
                    }
                    // A service written exactly as a built-in one (as `init` writes them)
                    // keeps its well-known ports to avoid.
                    let well_known = (Config::builtin().services.into_iter())
                        .find(|b| b.name == name && b.range == (lo, hi))
                        .map_or(&[][..], |b| b.well_known);
                    services.push(Service {
                        well_known,
                        http: raw_svc.http.unwrap_or_else(|| default_http(&name)),
                        name,
                        range: (lo, hi),
                        offset,
                        env,
                        protocol: raw_svc.protocol.unwrap_or(Protocol::Tcp),
                    });
                }
                services
            }
        };

        Ok(Config {
            strategy,
            services,
            reserved,
            source: Some(path.to_path_buf()),
            coordinate: raw.coordinate.unwrap_or(true),
            on: match raw.on {
                None => OnCommands::default(),
                Some(on) => {
                    for (key, cmd) in [("allocate", &on.allocate), ("release", &on.release)] {
                        if let Some(cmd) = cmd {
                            check_command_template(cmd.get_ref()).map_err(|m| {
                                invalid(Some(cmd.span()), format!("[on] {key}: {m}"))
                            })?;
                        }
                    }
                    OnCommands {
                        allocate: on.allocate.map(Spanned::into_inner),
                        release: on.release.map(Spanned::into_inner),
                    }
                }
            },
            reserved_names,
            range_choices,
            hostname: match raw.hostname {
                None => None,
                Some(t) => {
                    check_command_template(t.get_ref())
                        .map_err(|m| invalid(Some(t.span()), format!("hostname: {m}")))?;
                    Some(t.into_inner())
                }
            },
        })
    }

    /// The service with this name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Service names, comma separated, for messages.
    pub fn service_names(&self) -> String {
        let names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        names.join(", ")
    }

    /// Where to point the user to change the config.
    pub fn location(&self) -> String {
        match &self.source {
            Some(p) => p.display().to_string(),
            None => format!("{CONFIG_PATH} (none yet; built-in services in use)"),
        }
    }
}

/// `web` -> `WEB_PORT`; `my-svc.x` -> `MY_SVC_X_PORT`.
pub fn default_env_name(service: &str) -> String {
    let mut s: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s.push_str("_PORT");
    s
}

fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Why `name` may not carry a port: the variables a process, the shell, the dynamic linker
/// or git itself depend on.
pub fn reserved_env_name(name: &str) -> Option<&'static str> {
    const RESERVED: [&str; 24] = [
        "PATH",
        "HOME",
        "SHELL",
        "USER",
        "LOGNAME",
        "PWD",
        "OLDPWD",
        "IFS",
        "TERM",
        "TMPDIR",
        "LANG",
        "LANGUAGE",
        "TZ",
        "PS1",
        "ENV",
        "BASH_ENV",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "DYLD_INSERT_LIBRARIES",
        "DYLD_LIBRARY_PATH",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
    ];
    if RESERVED.contains(&name) {
        Some("is a variable the system depends on")
    } else if name.starts_with("LC_") || name.starts_with("GIT_CONFIG") {
        Some("is a variable the system depends on (LC_*, GIT_CONFIG*)")
    } else {
        None
    }
}

/// `web` and `api` speak HTTP unless the config says otherwise.
pub fn default_http(service: &str) -> bool {
    service == "web" || service == "api"
}

/// POSIX shell variable name: what `.env` files, `export` and docker compose accept.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The named ranges of the port policies people already follow, with the sources' numbers:
/// project types (an agent's port registry) and categories (a resource platform's policy).
pub const NAMED_RANGES: [(&str, u16, u16); 19] = [
    ("node", 3000, 3999),
    ("static", 4000, 4999),
    ("python", 5000, 5999),
    ("php", 8080, 8980),
    ("system", 2601, 2699),
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

/// The range a name stands for.
pub fn named_range(name: &str) -> Option<(u16, u16)> {
    NAMED_RANGES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// The project type of a worktree, from its files, and why: package.json -> node;
/// pyproject.toml, requirements.txt, setup.py -> python; composer.json -> php; otherwise
/// static. Only regular files count; a sign that is something else (a directory, a FIFO) is
/// named in the reason, never called missing.
pub fn detect_project_type(worktree: Option<&Path>) -> (&'static str, String) {
    const SIGNS: [(&str, &str); 5] = [
        ("package.json", "node"),
        ("pyproject.toml", "python"),
        ("requirements.txt", "python"),
        ("setup.py", "python"),
        ("composer.json", "php"),
    ];
    let mut odd = Vec::new();
    if let Some(dir) = worktree {
        for (file, kind) in SIGNS {
            match std::fs::metadata(dir.join(file)) {
                Ok(m) if m.is_file() => return (kind, file.to_string()),
                Ok(_) => odd.push(format!("{file} is not a regular file")),
                Err(_) => {}
            }
        }
    }
    let mut why =
        "no package.json, pyproject.toml, requirements.txt, setup.py or composer.json".to_string();
    if !odd.is_empty() {
        why = format!("{why} that is a regular file: {}", odd.join(", "));
    }
    ("static", why)
}

fn parse_reserved(item: &ReservedItem) -> Result<RangeInclusive<u16>, String> {
    let port = |v: i64| -> Result<u16, String> {
        u16::try_from(v)
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| format!("reserved port {v} is outside 1-65535"))
    };
    match item {
        ReservedItem::Port(p) => {
            let p = port(*p)?;
            Ok(p..=p)
        }
        ReservedItem::Text(s) if named_range(s).is_some() => {
            let (lo, hi) = named_range(s).expect("checked");
            Ok(lo..=hi)
        }
        ReservedItem::Text(s) => {
            let bad = || {
                format!(
                    "reserved entry {s:?} must be a port (\"5000\"), a range (\"2601-2699\") or a named range (\"system\")"
                )
            };
            let (lo, hi) = match s.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (s.trim(), s.trim()),
            };
            let lo = port(lo.parse::<i64>().map_err(|_| bad())?)?;
            let hi = port(hi.parse::<i64>().map_err(|_| bad())?)?;
            if lo > hi {
                return Err(format!("reserved range {s:?} is reversed"));
            }
            Ok(lo..=hi)
        }
    }
}

/// `[block]` -> [`Block`], or what is wrong with it.
fn parse_block(raw: &RawBlock) -> Result<Block, String> {
    let get = |key: &str, v: Option<i64>| {
        v.ok_or_else(|| format!("[block] needs {key}; the three keys are base (first port), size (ports per worktree) and span (ports per repository), such as base = 30000, size = 10, span = 100"))
    };
    let (base, size, span) = (
        get("base", raw.base)?,
        get("size", raw.size)?,
        get("span", raw.span)?,
    );
    if !(i64::from(MIN_PORT)..=65535).contains(&base) {
        return Err(format!("[block] base = {base} is outside 1024-65535"));
    }
    if !(1..=65535).contains(&size) || !(1..=65535).contains(&span) {
        return Err(format!(
            "[block] size = {size} and span = {span} must be 1-65535"
        ));
    }
    if span < size || span % size != 0 {
        return Err(format!(
            "[block] span = {span} must be a multiple of size = {size} (a repository's block holds whole worktree slots)"
        ));
    }
    if base + span - 1 > 65535 {
        return Err(format!(
            "[block] base = {base} with span = {span} ends past 65535; lower base or span"
        ));
    }
    Ok(Block {
        base: base as u16,
        size: size as u16,
        span: span as u16,
    })
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    strategy: Option<Spanned<String>>,
    coordinate: Option<bool>,
    #[serde(default)]
    reserved: Vec<Spanned<ReservedItem>>,
    services: Option<OrderedServices>,
    block: Option<Spanned<RawBlock>>,
    on: Option<RawOn>,
    hostname: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOn {
    allocate: Option<Spanned<String>>,
    release: Option<Spanned<String>>,
}

/// A command template must parse (so a typo is found when the config is read, not when a
/// worktree is removed).
fn check_command_template(text: &str) -> Result<(), String> {
    let mut tera = tera::Tera::default();
    tera.add_raw_template("command", text)
        .map(|_| ())
        .map_err(|e| match e.kind() {
            tera::ErrorKind::SyntaxError(r) => r.message().to_string(),
            _ => e.to_string(),
        })
}

/// `range = [8080, 8099]` or `range = "node"` / `"auto"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawRange {
    // A Vec, not [i64; 2]: the array form took the first two of `[a, b, c]` and ignored the rest.
    Ports(Vec<i64>),
    Name(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ReservedItem {
    Port(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    range: Option<Spanned<RawRange>>,
    env: Option<Spanned<String>>,
    protocol: Option<Protocol>,
    offset: Option<Spanned<i64>>,
    http: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    base: Option<i64>,
    size: Option<i64>,
    span: Option<i64>,
}

/// `[services.*]` in file order (a map type would sort them).
struct OrderedServices(Vec<(String, Spanned<RawService>)>);

impl<'de> Deserialize<'de> for OrderedServices {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OrderedServices;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of services")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry()? {
                    out.push((k, v));
                }
                Ok(OrderedServices(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(text, Path::new("/r/.worktree-ports/config.toml"))
    }

    #[test]
    fn empty_file_means_builtin_services() {
        let c = parse("").unwrap();
        let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web", "api", "db", "test", "debug"]);
        assert_eq!(c.service("db").unwrap().range, (5432, 5499));
        assert_eq!(c.service("web").unwrap().env, "WEB_PORT");
    }

    #[test]
    fn builtin_ranges_give_fifty_worktrees_each_starting_at_the_conventional_port() {
        for s in Config::builtin().services {
            let (lo, hi) = s.range;
            let usable = (lo..=hi)
                .filter(|p| !s.well_known.iter().any(|(k, _)| k == p))
                .count();
            assert!(usable >= 50, "{}: {usable}", s.name);
            assert!(
                s.well_known.iter().all(|(k, _)| (lo + 1..=hi).contains(k)),
                "{}",
                s.name
            );
        }
        let starts: Vec<u16> = (Config::builtin().services.iter())
            .map(|s| s.range.0)
            .collect();
        assert_eq!(starts, [8080, 3000, 5432, 9000, 5555]);
    }

    #[test]
    fn services_table_replaces_builtins_and_keeps_file_order() {
        let c = parse(
            "reserved = [\"2601-2699\", 5000]\n\
             [services.zeta]\nrange = [4000, 4010]\nprotocol = \"udp\"\n\
             [services.alpha-one]\nrange = [4100, 4110]\nenv = \"ALPHA\"\n",
        )
        .unwrap();
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[0].name, "zeta");
        assert_eq!(c.services[0].protocol, Protocol::Udp);
        assert_eq!(c.services[0].env, "ZETA_PORT");
        assert_eq!(c.services[1].env, "ALPHA");
        assert_eq!(c.reserved, vec![2601..=2699, 5000..=5000]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("[services.web]\nrange = [8099, 8080]\n").unwrap_err();
        assert_eq!(e.code, Code::ConfigInvalid);
        assert!(
            e.message.starts_with("/r/.worktree-ports/config.toml:2:"),
            "{}",
            e.message
        );
        assert!(e.message.contains("reversed"), "{}", e.message);

        let e = parse("[services.web]\nrange = [80, 90]\n").unwrap_err();
        assert!(
            e.message.contains("port 80 is outside 1024-65535"),
            "{}",
            e.message
        );

        let e = parse("[services.web]\nrange = [8080, 70000]\n").unwrap_err();
        assert!(e.message.contains("70000"), "{}", e.message);

        let e = parse("\n\n[services.web]\nrang = [1, 2]\n").unwrap_err();
        assert!(e.message.contains(":4:"), "{}", e.message);
        assert!(e.message.contains("rang"), "{}", e.message);

        let e = parse("colour = 1\n").unwrap_err();
        assert!(e.message.contains("colour"), "{}", e.message);

        let e = parse("[services.web\n").unwrap_err();
        assert!(e.message.contains(":1:"), "{}", e.message);
    }

    /// Regression (issue 15, low items): `range = [a, b, c]` was accepted (the third number
    /// ignored), and `env = "PATH"` made `exec` run with PATH set to a port.
    #[test]
    fn ranges_of_three_numbers_and_system_variables_are_refused() {
        let e = parse("[services.web]\nrange = [40000, 40010, 40020]\n").unwrap_err();
        assert!(e.message.contains("range has 3 numbers"), "{}", e.message);
        assert!(parse("[services.web]\nrange = [40000]\n").is_err());
        for env in ["PATH", "HOME", "LD_PRELOAD", "LC_ALL", "GIT_DIR"] {
            let e = parse(&format!(
                "[services.web]\nrange = [4000, 4001]\nenv = {env:?}\n"
            ))
            .unwrap_err();
            assert!(
                e.message.contains("the system depends on"),
                "{env}: {}",
                e.message
            );
            assert!(e.message.contains("WEB_PORT"), "{}", e.message);
        }
        assert!(
            parse("[services.ld]\nrange = [4000, 4001]\n").is_ok(),
            "LD_PORT is fine"
        );
    }

    #[test]
    fn rejects_bad_names_and_duplicate_env() {
        assert!(parse("[services.\"a b\"]\nrange = [2000, 2001]\n").is_err());
        let e = parse("[services.web]\nrange = [2000, 2001]\nenv = \"1X\"\n").unwrap_err();
        assert!(e.message.contains("1X"), "{}", e.message);
        let e = parse(
            "[services.a]\nrange = [2000, 2001]\nenv = \"P\"\n[services.b]\nrange = [2002, 2003]\nenv = \"P\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("already uses"), "{}", e.message);
        assert!(parse("strategy = \"random\"\n").is_err());
        assert!(parse("reserved = [\"9-\"]\n").is_err());
        assert!(parse("reserved = [\"200-100\"]\n").is_err());
        assert!(parse("[services]\n").is_err());
    }

    #[test]
    fn block_strategy_reads_base_size_span_and_offsets() {
        let c = parse(
            "strategy = \"block\"\n[block]\nbase = 30000\nsize = 10\nspan = 100\n[services.web]\noffset = 0\n[services.db]\noffset = 2\n[services.studio]\n",
        )
        .unwrap();
        let b = Block {
            base: 30000,
            size: 10,
            span: 100,
        };
        assert_eq!(c.strategy, Strategy::Block(b));
        let offsets: Vec<(&str, u16)> = c
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.offset))
            .collect();
        // Without an offset, a service takes the lowest one free above it.
        assert_eq!(offsets, [("web", 0), ("db", 2), ("studio", 1)]);
        assert_eq!(
            b.convention(),
            "blocks of 100 from 30000, 10 ports per worktree"
        );
        let poem = Block {
            base: 9500,
            size: 10,
            span: 10,
        };
        assert_eq!(poem.convention(), "increment of 10 from 9500");
        // The built-in services get offsets 0-4.
        let c =
            parse("strategy = \"block\"\n[block]\nbase = 9500\nsize = 10\nspan = 10\n").unwrap();
        assert_eq!(
            c.services.iter().map(|s| s.offset).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn block_mistakes_name_the_key_and_the_fix() {
        let cases = [
            ("strategy = \"block\"\n", "needs a [block] table"),
            (
                "strategy = \"block\"\n[block]\nbase = 30000\nsize = 10\n",
                "[block] needs span",
            ),
            (
                "strategy = \"block\"\n[block]\nbase = 30000\nsize = 10\nspan = 95\n",
                "must be a multiple of size",
            ),
            (
                "strategy = \"block\"\n[block]\nbase = 80\nsize = 10\nspan = 100\n",
                "outside 1024-65535",
            ),
            (
                "strategy = \"block\"\n[block]\nbase = 65500\nsize = 10\nspan = 100\n",
                "ends past 65535",
            ),
            (
                "strategy = \"block\"\n[block]\nbase = 30000\nsize = 3\nspan = 30\n",
                "smaller than the 5 built-in services",
            ),
            (
                "strategy = \"block\"\n[block]\nbase = 30000\nsize = 10\nspan = 100\n[services.web]\noffset = 10\n",
                "offset 10 is outside",
            ),
            (
                "strategy = \"block\"\n[block]\nbase = 30000\nsize = 10\nspan = 100\n[services.web]\noffset = 1\n[services.db]\noffset = 1\n",
                "[services.web]'s already",
            ),
            (
                "strategy = \"block\"\n[block]\nbase = 30000\nsize = 10\nspan = 100\n[services.web]\nrange = [8080, 8099]\n",
                "range is not used by strategy",
            ),
            (
                "[block]\nbase = 30000\nsize = 10\nspan = 100\n",
                "only used by strategy = \"block\"",
            ),
            (
                "[services.web]\nrange = [8080, 8099]\noffset = 1\n",
                "offset is only used",
            ),
            ("[services.web]\nenv = \"W\"\n", "needs a range"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.code, Code::ConfigInvalid);
            assert!(e.message.contains(want), "{text:?}: {}", e.message);
            assert!(
                e.message.starts_with("/r/.worktree-ports/config.toml"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn every_config_in_the_readme_is_valid() {
        let readme = include_str!("../../README.md");
        let mut found = 0;
        for block in readme.split("```toml\n").skip(1) {
            let text = &block[..block.find("```").expect("a closed block")];
            // Another program's TOML (an agent's MCP settings) says whose file it is.
            if text.starts_with("# Codex") {
                continue;
            }
            let parsed = parse(text);
            assert!(
                parsed.is_ok(),
                "{text}\n{:?}",
                parsed.err().map(|e| e.message)
            );
            found += 1;
        }
        assert!(found >= 6, "{found} toml blocks");
    }

    #[test]
    fn env_names_default_from_service_names() {
        assert_eq!(default_env_name("web"), "WEB_PORT");
        assert_eq!(default_env_name("my-svc.x"), "MY_SVC_X_PORT");
        assert_eq!(default_env_name("9p"), "_9P_PORT");
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Arbitrary text never panics the parser: it is a config or a CONFIG_INVALID.
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            if let Err(e) = Config::parse(&text, Path::new("c.toml")) {
                prop_assert_eq!(e.code, Code::ConfigInvalid);
            }
        }

        /// Near-misses of real configs (the parser's edge cases) never panic either, and what
        /// parses is valid.
        #[test]
        fn config_shaped_text_never_panics(
            text in r#"(strategy = "[a-z]{0,6}"\n|reserved = \[("[0-9-]{0,12}"|-?[0-9]{1,6}|), ?("[0-9 -]{0,12}")?\]\n|\[services\.[a-z_ -]{0,4}\]\n|range = \[-?[0-9]{1,6}, ?-?[0-9]{1,6}\]\n|env = "[A-Za-z_0-9 ]{0,5}"\n|protocol = "[a-z]{0,5}"\n|offset = [0-9]{1,6}\n|\[block\]\nbase = -?[0-9]{1,6}\n){0,8}"#
        ) {
            if let Ok(c) = Config::parse(&text, Path::new("c.toml")) {
                for s in &c.services {
                    prop_assert!(s.range.0 >= MIN_PORT && s.range.0 <= s.range.1);
                    prop_assert!(valid_env_name(&s.env));
                }
            }
        }
    }
}
