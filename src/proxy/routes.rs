//! The proxy's routing table: hostname -> (worktree, port), from the machine index and every
//! listed registry (read without locks, like every other reader). `<hostname>` goes to the
//! worktree's first HTTP service, `<service>.<hostname>` to that service. Rebuilt when the
//! index, a registry or a worktree's config changes on disk (checked by their sizes and
//! modification times).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::machine::Machine;
use crate::model::names::display_path;
use crate::registry::{self, Paths, Ports};

/// Where a hostname goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The repository as a user knows it.
    pub repository: PathBuf,
    /// The worktree's registry key.
    pub worktree: String,
    /// Its directory.
    pub path: PathBuf,
    /// The service.
    pub service: String,
    /// Its port.
    pub port: u16,
}

/// Hostname -> route; and the names two routes claimed (a worktree named like a service,
/// from before names were checked against service routes): the worktree's own hostname wins
/// over another's service route, else the first read; each collision is said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes(pub BTreeMap<String, Arc<Route>>, pub Vec<String>);

/// What the files looked like when the routes were read: (path, size, modified).
pub type Signature = Vec<(PathBuf, u64, Option<SystemTime>)>;

impl Routes {
    /// The routes of the machine of the environment (its state dir), without what
    /// [`Routes::read`] keeps to notice changes.
    pub fn read_machine() -> anyhow::Result<Routes> {
        Ok(Routes::read(&Machine::from_env()?).0)
    }

    /// The route of a Host header's name.
    pub fn get(&self, host: &str) -> Option<Arc<Route>> {
        self.0.get(host).cloned()
    }

    /// Read every listed repository's registry.
    pub fn read(machine: &Machine) -> (Routes, Signature) {
        let (index, _) = machine.read();
        let mut routes: BTreeMap<String, Arc<Route>> = BTreeMap::new();
        let mut collisions = Vec::new();
        let mut signature = vec![stat(&machine.file)];
        for common in index.repositories.keys().filter(|c| c.is_dir()) {
            let paths = Paths::new(common);
            signature.push(stat(&paths.file));
            let Ok(loaded) = registry::load_unlocked(&paths) else {
                continue;
            };
            let reg = loaded.registry;
            let display = display_path(common);
            for (key, ports) in reg.allocations() {
                let Some(record) = reg.record(key) else {
                    continue;
                };
                let Some(hostname) = record.hostname.clone() else {
                    continue;
                };
                let path = PathBuf::from(&record.path);
                // Its config says which services speak HTTP: a change there changes routes.
                signature.push(stat(&path.join(crate::model::config::CONFIG_PATH)));
                for (name, service, port) in http_services(&path, ports, &hostname) {
                    let route = Arc::new(Route {
                        repository: display.clone(),
                        worktree: key.to_string(),
                        path: path.clone(),
                        service,
                        port,
                    });
                    let own = name == hostname;
                    match routes.get(&name) {
                        None => {
                            routes.insert(name, route);
                        }
                        Some(first) => {
                            let said = format!(
                                "{name} is both worktree {} of {} ({}) and worktree {} of {} ({}); ",
                                first.worktree,
                                first.repository.display(),
                                first.service,
                                route.worktree,
                                route.repository.display(),
                                route.service
                            );
                            // A worktree's own hostname wins over another's service route.
                            let replace = own && first.worktree != route.worktree;
                            let (kept, reason) = match replace {
                                false => (first.worktree.clone(), "the first"),
                                true => (route.worktree.clone(), "its own hostname"),
                            };
                            if replace {
                                routes.insert(name.clone(), route);
                            }
                            collisions.push(format!(
                                "{said}it goes to worktree {kept} ({reason}); rename the other worktree's hostname"
                            ));
                        }
                    }
                }
            }
        }
        (Routes(routes, collisions), signature)
    }

    /// Whether the files changed since `signature` (a stat of each: cheap every second).
    pub fn changed(signature: &Signature) -> bool {
        signature.iter().any(|s| stat(&s.0) != *s)
    }
}

fn stat(path: &Path) -> (PathBuf, u64, Option<SystemTime>) {
    let meta = std::fs::metadata(path).ok();
    (
        path.to_path_buf(),
        meta.as_ref().map_or(0, |m| m.len()),
        meta.and_then(|m| m.modified().ok()),
    )
}

/// (hostname, service, port) of a worktree's HTTP services: its hostname to the first one (in
/// its config's order), `<service>.<hostname>` to each. The config says which services speak
/// HTTP; without a readable one, `web` and `api` do.
fn http_services(path: &Path, ports: &Ports, hostname: &str) -> Vec<(String, String, u16)> {
    let order: Vec<(String, bool)> = match crate::sys::config_file::load(path) {
        Ok(c) if path.is_dir() => c
            .services
            .iter()
            .map(|s| (s.name.clone(), s.http))
            .collect(),
        _ => ports
            .iter()
            .map(|(s, _)| (s.to_string(), s == "web" || s == "api"))
            .collect(),
    };
    let mut out = Vec::new();
    for (service, http) in order {
        if !http {
            continue;
        }
        let Some(port) = ports.get(&service) else {
            continue;
        };
        if out.is_empty() {
            out.push((hostname.to_string(), service.clone(), port));
        }
        out.push((format!("{service}.{hostname}"), service, port));
    }
    out
}
