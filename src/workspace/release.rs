//! `release`: give back a worktree's ports (all of them, after its `[on] release` command,
//! outside the lock), or some of its services', under the repository's lock.

use std::collections::BTreeMap;

use crate::model::error::{Code, Details, Error, UnknownService};

use super::Workspace;

impl Workspace {
    /// Give back the ports of the worktree `spec` names (or the current one; a path an entry
    /// recorded reaches a worktree whose directory is gone): all of them, `[on] release`
    /// first (never under the lock: it may take its time, `docker compose down`), or only
    /// `services`. Returns its registry key and what was given back.
    pub fn release(
        &self,
        spec: Option<&str>,
        services: &[String],
    ) -> anyhow::Result<(String, BTreeMap<String, u16>)> {
        let mut unlocked = self.read()?;
        let key = self.registry_key(&unlocked.registry, spec)?;
        if services.is_empty() && unlocked.registry.ports(&key).is_some() {
            self.before_release(&key);
            unlocked = self.read()?;
        }
        let lock = self.lock()?;
        let mut reg = self.load_locked(&lock, Some(unlocked))?;
        let held = reg.ports(&key).cloned().unwrap_or_default();
        let released = if services.is_empty() {
            let had = reg.knows(&key);
            let ports = reg.remove_worktree(&key);
            if had {
                self.save(&lock, &mut reg)?;
            }
            ports
        } else {
            for s in services {
                if held.get(s).is_none() {
                    let names: Vec<&str> = held.iter().map(|(s, _)| s).collect();
                    return Err(Error::new(
                        Code::UnknownService,
                        format!(
                            "worktree {key} has no port for service {s:?}; it has: {}",
                            if names.is_empty() {
                                "none".into()
                            } else {
                                names.join(", ")
                            }
                        ),
                    )
                    .with(Details::UnknownService(UnknownService {
                        service: s.clone(),
                        services: names.iter().map(|n| n.to_string()).collect(),
                        worktree: Some(key.clone()),
                    }))
                    .into());
                }
            }
            let released = reg.release_services(&key, services);
            self.save(&lock, &mut reg)?;
            released
        };
        Ok((key, released))
    }
}
