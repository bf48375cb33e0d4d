//! `core.sharedRepository`: who may write what the tool creates under a repository's git dir
//! (the registry folder and its files, a worktree's identity token and render manifest).
//! Git's rules (`git init --shared`, `git-config(1)`), so that every member of a shared
//! repository's group can allocate. PURE.

/// How a repository is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Not shared (`umask`, `false`, or unset): files only their owner can write.
    #[default]
    Private,
    /// `group` (`true`): files and folders writable by the group, folders set-group-id.
    Group,
    /// `all` (`world`, `everybody`): the group's rights, and readable by everyone.
    Everybody,
    /// `0xxx`: exactly these permission bits for files.
    Exactly(u32),
}

impl Sharing {
    /// Read a `core.sharedRepository` value as git does (`git_config_perm`); the error says
    /// what is wrong with it.
    pub fn parse(value: &str) -> Result<Sharing, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "umask" | "false" | "no" | "off" | "0" => Ok(Sharing::Private),
            "group" | "true" | "yes" | "on" | "1" => Ok(Sharing::Group),
            "all" | "world" | "everybody" | "2" => Ok(Sharing::Everybody),
            other => match u32::from_str_radix(other, 8) {
                // Like git: the owner must keep read and write, and only the permission bits.
                Ok(bits) if bits & 0o600 == 0o600 && bits <= 0o777 => Ok(Sharing::Exactly(bits)),
                _ => Err(format!(
                    "core.sharedRepository = {value:?} is not a sharing mode git knows (umask, group, all, or octal permissions like 0660 that let the owner read and write)"
                )),
            },
        }
    }

    /// The permissions of a file that would be `mode` in an unshared repository (git's
    /// `calc_shared_perm`).
    pub fn file_mode(self, mode: u32) -> u32 {
        let mut tweak = match self {
            Sharing::Private => return mode,
            Sharing::Group => 0o660,
            Sharing::Everybody => 0o664,
            Sharing::Exactly(bits) => bits,
        };
        if mode & 0o200 == 0 {
            tweak &= !0o222;
        }
        if mode & 0o100 != 0 {
            // Read bits become execute bits.
            tweak |= (tweak & 0o444) >> 2;
        }
        match self {
            Sharing::Exactly(_) => (mode & !0o777) | tweak,
            _ => mode | tweak,
        }
    }

    /// The permissions of a folder we make (0755 unshared); a shared one is set-group-id, so
    /// what is made in it belongs to the repository's group (git's `adjust_shared_perm`).
    pub fn dir_mode(self) -> u32 {
        match self {
            Sharing::Private => 0o755,
            _ => self.file_mode(0o755) | 0o2000,
        }
    }

    /// True unless the repository is private.
    pub fn is_shared(self) -> bool {
        self != Sharing::Private
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_values_parse_and_bad_ones_say_why() {
        assert_eq!(Sharing::parse("group"), Ok(Sharing::Group));
        assert_eq!(Sharing::parse("TRUE"), Ok(Sharing::Group));
        assert_eq!(Sharing::parse("1"), Ok(Sharing::Group));
        assert_eq!(Sharing::parse("umask"), Ok(Sharing::Private));
        assert_eq!(Sharing::parse("false"), Ok(Sharing::Private));
        assert_eq!(Sharing::parse("everybody"), Ok(Sharing::Everybody));
        assert_eq!(Sharing::parse("2"), Ok(Sharing::Everybody));
        assert_eq!(Sharing::parse("0640"), Ok(Sharing::Exactly(0o640)));
        assert!(
            Sharing::parse("0440")
                .unwrap_err()
                .contains("owner read and write")
        );
        assert!(Sharing::parse("sometimes").is_err());
    }

    #[test]
    fn modes_follow_gits_calc_shared_perm() {
        // (sharing, file 0644, executable 0755, folder)
        for (s, file, exe, dir) in [
            (Sharing::Private, 0o644, 0o755, 0o755),
            (Sharing::Group, 0o664, 0o775, 0o2775),
            (Sharing::Everybody, 0o664, 0o775, 0o2775),
            (Sharing::Exactly(0o660), 0o660, 0o770, 0o2770),
            (Sharing::Exactly(0o640), 0o640, 0o750, 0o2750),
        ] {
            assert_eq!(
                (s.file_mode(0o644), s.file_mode(0o755), s.dir_mode()),
                (file, exe, dir),
                "{s:?}"
            );
        }
        // A private file (the index: 0600) gets the group's rights too when shared.
        assert_eq!(Sharing::Group.file_mode(0o600), 0o660);
    }
}
