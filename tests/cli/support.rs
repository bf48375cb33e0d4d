//! `TestRepo`: a temp dir with a hermetic git environment, a repository with a committed
//! config of high, per-repository port ranges, and a builder to run the real binary.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;

/// Each live repository gets its own block of ports above the Linux ephemeral range
/// (32768-60999), so tests running in parallel never compete for ports and outgoing
/// connections do not land there. A block goes back to the pool when its repository is
/// dropped (its listeners are gone by then), so the suite can make any number of repositories.
const FIRST_BLOCK: u16 = 61000;
/// Ports per repository: web = base..base+19, db = base+20..base+39.
pub const BLOCK: u16 = 40;
const BLOCKS: usize = ((65535 - FIRST_BLOCK as u32) / BLOCK as u32) as usize;
static IN_USE: Mutex<[bool; BLOCKS]> = Mutex::new([false; BLOCKS]);

/// A block of ports no other live repository of this run has.
pub struct Block {
    pub base: u16,
    slot: usize,
}

impl Drop for Block {
    fn drop(&mut self) {
        IN_USE.lock().unwrap_or_else(|e| e.into_inner())[self.slot] = false;
    }
}

pub fn port_block() -> Block {
    let mut in_use = IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let slot = in_use
        .iter()
        .position(|u| !u)
        .expect("out of test port blocks");
    in_use[slot] = true;
    Block {
        base: FIRST_BLOCK + slot as u16 * BLOCK,
        slot,
    }
}

/// A test that cannot run for lack of a tool says so; in CI (`.ci/run` sets
/// `GIT_WORKTREE_PORTS_TESTS_STRICT=1` after installing every tool) that is a failure.
pub fn skip(why: &str) {
    if std::env::var_os("GIT_WORKTREE_PORTS_TESTS_STRICT").is_some_and(|v| v == "1") {
        panic!("cannot run in CI, where every tool should be installed: {why}");
    }
    eprintln!("skipped {why}");
}

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_git-worktree-ports"))
}

/// A hermetic environment: own HOME, XDG dirs and git config; no inherited GIT_* variables.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("wp-test")
            .tempdir()
            .unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(
            home.join("gitconfig"),
            "[user]\n\tname = Test\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
        )
        .unwrap();
        TestEnv { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The machine's state dir as the tool finds it in this environment
    /// (`$XDG_STATE_HOME/git-worktree-ports`).
    pub fn state_dir(&self) -> PathBuf {
        self.root().join("home/.local/state/git-worktree-ports")
    }

    /// Apply the hermetic environment to a command.
    pub fn apply(&self, cmd: &mut Command) {
        let home = self.root().join("home");
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_COMMON_DIR",
            "GIT_INDEX_FILE",
            "GIT_CEILING_DIRECTORIES",
            "GIT_OBJECT_DIRECTORY",
            "GIT_WORKTREE_PORTS_LOCK_TIMEOUT",
        ] {
            cmd.env_remove(var);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin().parent().unwrap().to_path_buf()];
        paths.extend(std::env::split_paths(&path));
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
            .env("GIT_CONFIG_SYSTEM", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("LC_ALL", "C")
            .env("NO_COLOR", "1")
            .env("PATH", std::env::join_paths(paths).unwrap());
    }

    /// Run git in `dir`, asserting success.
    pub fn git<I, S>(&self, dir: &Path, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.git_output(dir, args);
        assert!(
            out.status.success(),
            "git failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn git_output<I, S>(&self, dir: &Path, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("git");
        cmd.current_dir(dir).args(args);
        self.apply(&mut cmd);
        cmd.output().unwrap()
    }

    /// The tool, run in `dir`.
    pub fn wp_in<I, S>(&self, dir: &Path, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(bin());
        cmd.current_dir(dir).args(args);
        self.apply(&mut cmd);
        Run {
            cmd,
            expect: Expect::default(),
        }
    }
}

/// A repository with one commit and a committed config of two services in its own block:
/// web = base..base+19, db = base+20..base+39.
pub struct TestRepo {
    pub env: TestEnv,
    /// The main worktree (for a bare repository: the bare git dir).
    pub root: PathBuf,
    pub base: u16,
    _block: Block,
}

impl TestRepo {
    pub fn new() -> TestRepo {
        let block = port_block();
        Self::with_config(&default_config(block.base), block)
    }

    /// A repository whose committed config is `config` (ports from `block`).
    pub fn with_config(config: &str, block: Block) -> TestRepo {
        Self::init(&[], config, block)
    }

    /// A repository made by `git init <init_args>` (`--object-format=sha256`, ...) with the
    /// default config in a fresh block of ports.
    pub fn with_format(init_args: &[&str]) -> TestRepo {
        let block = port_block();
        Self::init(init_args, &default_config(block.base), block)
    }

    /// A repository with no `.worktree-ports/` at all (the built-in services apply).
    pub fn without_config() -> TestRepo {
        let repo = Self::init(&[], "", port_block());
        repo.git(["rm", "-q", "-r", ".worktree-ports"]);
        repo.git(["commit", "-q", "-m", "no config"]);
        repo
    }

    /// Another repository in the same environment (same HOME and state dir, so the same
    /// machine index), at `<tmp>/<name>`, committed with `config` (default: this repository's
    /// config, so both compete for the same ports).
    pub fn another(&self, name: &str, config: Option<&str>) -> PathBuf {
        let root = self.env.root().join(name);
        std::fs::create_dir_all(&root).unwrap();
        self.env.git(&root, ["init", "-q"]);
        write(
            &root.join(".worktree-ports/config.toml"),
            config.unwrap_or(&default_config(self.base)),
        );
        write(&root.join("README"), "another repository\n");
        self.env.git(&root, ["add", "-A"]);
        self.env.git(&root, ["commit", "-q", "-m", "init"]);
        root
    }

    fn init(init_args: &[&str], config: &str, block: Block) -> TestRepo {
        let env = TestEnv::new();
        let root = env.root().join("repo");
        std::fs::create_dir_all(&root).unwrap();
        let mut args = vec!["init", "-q"];
        args.extend_from_slice(init_args);
        env.git(&root, args);
        write(&root.join(".worktree-ports/config.toml"), config);
        write(&root.join("README"), "test repository\n");
        env.git(&root, ["add", "-A"]);
        env.git(&root, ["commit", "-q", "-m", "init"]);
        TestRepo {
            env,
            root,
            base: block.base,
            _block: block,
        }
    }

    /// A bare clone of a fresh repository, with `root` the bare git dir.
    pub fn bare() -> TestRepo {
        TestRepo::new().into_bare(&[])
    }

    /// A bare clone of this repository (`clone_args` such as `--ref-format=reftable`).
    pub fn into_bare(self, clone_args: &[&str]) -> TestRepo {
        let bare = self.env.root().join("bare.git");
        let mut args = vec!["clone", "-q", "--bare"];
        args.extend_from_slice(clone_args);
        args.extend([self.root.to_str().unwrap(), bare.to_str().unwrap()]);
        self.env.git(self.env.root(), args);
        TestRepo {
            env: self.env,
            root: bare,
            base: self.base,
            _block: self._block,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.env.root().join(rel)
    }

    /// `git worktree add -b <name> <tmp>/<name>`; returns the worktree path.
    pub fn add_worktree(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        self.env.git(
            &self.root,
            [
                "worktree",
                "add",
                "-q",
                "-b",
                &branch_name(name),
                path.to_str().unwrap(),
            ],
        );
        path
    }

    pub fn git<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.env.git(&self.root, args)
    }

    /// The tool, run in the main worktree.
    pub fn wp<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.env.wp_in(&self.root, args)
    }

    /// The tool, run in `dir`.
    pub fn wp_in<I, S>(&self, dir: &Path, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.env.wp_in(dir, args)
    }

    /// The common dir.
    pub fn common_dir(&self) -> PathBuf {
        if self.root.join(".git").is_dir() {
            self.root.join(".git")
        } else {
            self.root.clone()
        }
    }

    pub fn registry_path(&self) -> PathBuf {
        self.common_dir().join("worktree-registry/ports.json")
    }

    /// Edit `ports.json` by hand (`edit` changes its JSON), dropping the backup so that the
    /// edit is what the next command reads.
    /// Edit `ports.json` by hand. A registry that keeps its records apart is written back
    /// with them inside (version 1), as a user's edit of [`TestRepo::registry`] would be.
    pub fn edit_registry(&self, edit: impl FnOnce(&mut Value)) {
        let mut reg = self.registry();
        edit(&mut reg);
        std::fs::write(self.registry_path(), reg.to_string()).unwrap();
        let _ = std::fs::remove_file(self.registry_path().with_extension("json.bak"));
    }

    /// The records files beside `ports.json` (`records-<generation>.jsonl`), sorted.
    pub fn records_files(&self) -> Vec<PathBuf> {
        let dir = self.common_dir().join("worktree-registry");
        let mut files: Vec<PathBuf> = (std::fs::read_dir(&dir).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| (p.file_name().unwrap().to_string_lossy()).starts_with("records-"))
            .collect();
        files.sort();
        files
    }

    /// `ports.json` in the shape of version 1, its records under `worktrees` wherever they
    /// are kept ([`read_registry`]).
    pub fn registry(&self) -> Value {
        read_registry(&self.registry_path())
    }

    /// The entries of `history.jsonl`, oldest first (none when it does not exist).
    pub fn history(&self) -> Vec<Value> {
        let path = self.common_dir().join("worktree-registry/history.jsonl");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }

    /// Bytes of every file in the registry dir (to prove a failure wrote nothing).
    pub fn registry_snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let dir = self.common_dir().join("worktree-registry");
        let mut out: Vec<(String, Vec<u8>)> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort();
        out
    }
}

/// Commit files (path relative to the main worktree, content).
pub fn commit_files(repo: &TestRepo, files: &[(&str, &str)]) {
    for (rel, text) in files {
        write(&repo.root.join(rel), text);
    }
    repo.git(["add", "-A"]);
    repo.git(["commit", "-q", "-m", "files"]);
}

/// Replace the temp dir with `[TMP]` and this repository's ports with `[BASE+n]`.
pub fn redact(text: &str, repo: &TestRepo) -> String {
    let mut out = text.replace(repo.env.root().to_str().unwrap(), "[TMP]");
    // Highest first, so 61010 is not half-replaced by 6101.
    for n in (0..BLOCK).rev() {
        out = out.replace(&(repo.base + n).to_string(), &format!("[BASE+{n}]"));
    }
    out
}

pub fn default_config(base: u16) -> String {
    format!(
        "[services.web]\nrange = [{}, {}]\n[services.db]\nrange = [{}, {}]\n",
        base,
        base + 19,
        base + 20,
        base + 39
    )
}

fn branch_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Set a file's permission bits (hooks and scripts).
pub fn make_executable(path: &Path, mode: u32) {
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, mode);
    std::fs::set_permissions(path, perms).unwrap();
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A command about to run: state what it must print first (`stdout_is`, `stderr_is`,
/// `json_is`), then finish with `succeeds()`, `fails()` or `output()`, which compare exactly.
#[must_use]
pub struct Run {
    pub cmd: Command,
    expect: Expect,
}

/// What a run must print, stated before it runs.
#[derive(Default)]
struct Expect {
    stdout: Option<String>,
    stderr: Option<String>,
    json: Option<Value>,
}

impl Run {
    /// Its stdout must be exactly `text`.
    pub fn stdout_is(mut self, text: impl Into<String>) -> Run {
        self.expect.stdout = Some(text.into());
        self
    }

    /// Its stderr must be exactly `text`.
    pub fn stderr_is(mut self, text: impl Into<String>) -> Run {
        self.expect.stderr = Some(text.into());
        self
    }

    /// Its stdout must be exactly this JSON value.
    pub fn json_is(mut self, value: Value) -> Run {
        self.expect.json = Some(value);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Run {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Run {
        self.cmd.env_remove(k);
        self
    }

    pub fn output(mut self) -> Out {
        let out = Out(self.cmd.output().unwrap());
        if let Some(want) = &self.expect.stdout {
            assert_eq!(&out.stdout(), want, "stdout:\n{}", out.describe());
        }
        if let Some(want) = &self.expect.stderr {
            assert_eq!(&out.stderr(), want, "stderr:\n{}", out.describe());
        }
        if let Some(want) = &self.expect.json {
            assert_eq!(&out.json(), want, "JSON:\n{}", out.describe());
        }
        out
    }

    /// Exit 0, or panic with the output.
    pub fn succeeds(self) -> Out {
        let out = self.output();
        assert!(
            out.0.status.success(),
            "expected success:\n{}",
            out.describe()
        );
        out
    }

    /// Exit 1, or panic with the output.
    pub fn fails(self) -> Out {
        let out = self.output();
        assert_eq!(
            out.0.status.code(),
            Some(1),
            "expected exit 1:\n{}",
            out.describe()
        );
        out
    }
}

pub struct Out(pub Output);

impl Out {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.0.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.describe()))
    }
    pub fn code(&self) -> Option<i32> {
        self.0.status.code()
    }
    pub fn describe(&self) -> String {
        format!(
            "status: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.0.status,
            self.stdout(),
            self.stderr()
        )
    }
}

/// Ports of a JSON `ports` object, as (service, port) pairs.
pub fn ports_of(v: &Value) -> Vec<(String, u16)> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, p)| (k.clone(), p.as_u64().unwrap() as u16))
        .collect()
}

/// Every port in a registry, with duplicates kept (so tests can find them).
pub fn all_registry_ports(reg: &Value) -> Vec<u16> {
    reg["allocated_ports"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|ports| ports.as_object().unwrap().values())
        .map(|p| p.as_u64().unwrap() as u16)
        .collect()
}

/// Assert no port appears twice.
pub fn assert_unique(ports: &[u16]) {
    let mut sorted = ports.to_vec();
    sorted.sort();
    let before = sorted.len();
    sorted.dedup();
    assert_eq!(
        before,
        sorted.len(),
        "a port is registered twice: {ports:?}"
    );
}

static FIXED_PORTS: Mutex<()> = Mutex::new(());

/// Tests of a policy's exact numbers (30000, 9500...) hold this while they run, so two of them
/// never probe the same fixed ports at once (the test blocks above 61000 need no such lock).
pub fn fixed_ports() -> std::sync::MutexGuard<'static, ()> {
    FIXED_PORTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The file name of this test binary (`cli-<hash>`), which [`Server`] processes run as.
pub fn test_binary_name() -> String {
    std::env::current_exe()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A real server: this test binary run again as a process that listens on a port (TCP, all
/// addresses) from a directory of our choice, until it is dropped (killed).
pub struct Server {
    pub child: std::process::Child,
}

impl Server {
    /// Start one listening on `port` with `dir` as its working directory; returns once the
    /// port is listening.
    pub fn start(dir: &Path, port: u16) -> Server {
        Server::spawn(
            "support::listen_helper",
            &[("WP_TEST_LISTEN_PORT", port.to_string())],
            dir,
            port,
        )
    }

    /// This test binary run again as the ignored test `helper` with `env`, from `dir`;
    /// returns once `port` accepts connections.
    fn spawn(helper: &str, env: &[(&str, String)], dir: &Path, port: u16) -> Server {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", helper, "--ignored", "--nocapture"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "the test server ({helper}) on {port} did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Server { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The process [`Server`] starts: not a test (it only runs when asked for by name, with the
/// port in its environment).
#[test]
#[ignore = "a helper process for the status tests, started by Server::start"]
fn listen_helper() {
    let Some(port) = std::env::var("WP_TEST_LISTEN_PORT").ok() else {
        return;
    };
    let port: u16 = port.parse().unwrap();
    let _listener = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// A real HTTP/1.1 server for the proxy tests: this test binary run again (see
/// [`http_helper`]), named `name`, on `port`, from `dir`.
pub fn http_server(dir: &Path, port: u16, name: &str) -> Server {
    Server::spawn(
        "support::http_helper",
        &[
            ("WP_TEST_HTTP_PORT", port.to_string()),
            ("WP_TEST_HTTP_NAME", name.to_string()),
        ],
        dir,
        port,
    )
}

/// The HTTP server [`http_server`] starts: `GET /...` answers `hello from <name> <path>` and the
/// forwarded headers and the request's body (Content-Length or chunked; HEAD gets the head
/// only); `/close` closes the connection after its answer, without saying so first; `/sse?gate=<file>` streams one event, waits for the file, streams
/// another; a WebSocket upgrade echoes every text frame.
#[test]
#[ignore = "a helper process for the proxy tests, started by http_server"]
fn http_helper() {
    let (Ok(port), Ok(name)) = (
        std::env::var("WP_TEST_HTTP_PORT"),
        std::env::var("WP_TEST_HTTP_NAME"),
    ) else {
        return;
    };
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    for stream in listener.incoming().flatten() {
        let name = name.clone();
        std::thread::spawn(move || {
            let _ = serve_http(stream, &name);
        });
    }
}

fn serve_http(stream: std::net::TcpStream, name: &str) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = std::collections::BTreeMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        if headers
            .get("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            // Chunks (their extensions ignored), then the trailers up to a blank line.
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let size = size.split(';').next().unwrap_or("").trim();
                let n = usize::from_str_radix(size, 16).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk[..n]);
            }
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer.trim_end().is_empty() {
                    break;
                }
            }
        }
        if headers
            .get("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        {
            let key = headers
                .get("sec-websocket-key")
                .cloned()
                .unwrap_or_default();
            let accept = base64(&sha1(
                format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
            ));
            write!(
                out,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )?;
            loop {
                let Ok((opcode, payload)) = read_frame(&mut reader) else {
                    return Ok(());
                };
                if opcode == 8 {
                    return Ok(());
                }
                let mut reply = format!("{name}: ").into_bytes();
                reply.extend(payload);
                out.write_all(&frame(opcode, &reply, None))?;
            }
        }
        if let Some(gate) = path.strip_prefix("/sse?gate=") {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )?;
            let event = |n: u32| {
                let e = format!("data: {name} {n}\n\n");
                format!("{:x}\r\n{e}\r\n", e.len())
            };
            out.write_all(event(1).as_bytes())?;
            out.flush()?;
            while !Path::new(gate).exists() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            out.write_all(event(2).as_bytes())?;
            out.write_all(b"0\r\n\r\n")?;
            out.flush()?;
            continue;
        }
        let text = format!(
            "hello from {name} {method} {path} host={} xff={} xfh={} xfp={} body={}\n",
            headers.get("host").map_or("", String::as_str),
            headers.get("x-forwarded-for").map_or("", String::as_str),
            headers.get("x-forwarded-host").map_or("", String::as_str),
            headers.get("x-forwarded-proto").map_or("", String::as_str),
            String::from_utf8_lossy(&body)
        );
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{}",
            text.len(),
            if method == "HEAD" { "" } else { &text }
        )?;
        // As a server whose keep-alive timeout ends a connection between requests, without
        // having said so.
        if path == "/close" {
            return Ok(());
        }
    }
}

/// A WebSocket frame (FIN set), masked with `mask` when given (clients mask, servers do not).
pub fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n => {
            f.push(m | 126);
            f.extend((n as u16).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend(k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend(payload),
    }
    f
}

/// Read one WebSocket frame: (opcode, unmasked payload).
pub fn read_frame(r: &mut impl std::io::Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head)?;
    let mut len = u64::from(head[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b)?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        len = u64::from_be_bytes(b);
    }
    let mask = if head[1] & 0x80 != 0 {
        let mut k = [0u8; 4];
        r.read_exact(&mut k)?;
        Some(k)
    } else {
        None
    };
    let mut payload = vec![0; len as usize];
    r.read_exact(&mut payload)?;
    if let Some(k) = mask {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= k[i % 4]);
    }
    Ok((head[0] & 0x0f, payload))
}

/// SHA-1 (RFC 3174), for the WebSocket handshake only.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64) * 8;
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend(bits.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(chunk[i * 4..i * 4 + 4].try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let (mut a, mut b, mut c, mut d, mut e) = (h[0], h[1], h[2], h[3], h[4]);
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn sha1_and_base64_give_rfc_6455s_example() {
    // RFC 6455 section 1.3.
    let accept = base64(&sha1(
        b"dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11",
    ));
    assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/// A Python that imports `modules` (`"mcp, jsonschema"`): `GIT_WORKTREE_PORTS_TEST_PYTHON`
/// (the virtualenv `.ci/run` makes), else `python3`; None when neither does (the caller
/// says it skips).
pub fn python(modules: &str) -> Option<PathBuf> {
    let candidate: PathBuf = match std::env::var_os("GIT_WORKTREE_PORTS_TEST_PYTHON") {
        Some(p) => p.into(),
        None => "python3".into(),
    };
    Command::new(&candidate)
        .args(["-c", &format!("import {modules}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        .then_some(candidate)
}

/// Stops the proxy of a test environment when the test ends, whatever happened.
pub struct Proxy<'a> {
    pub repo: &'a TestRepo,
}

impl<'a> Proxy<'a> {
    /// `proxy start --port <port>` in `repo`'s environment.
    pub fn start(repo: &'a TestRepo, port: u16) -> Proxy<'a> {
        repo.wp(["proxy", "start", "--port", &port.to_string()])
            .succeeds();
        Proxy { repo }
    }

    /// The same with `threads` serving threads (`GIT_WORKTREE_PORTS_PROXY_THREADS`).
    pub fn start_with_threads(repo: &'a TestRepo, port: u16, threads: usize) -> Proxy<'a> {
        repo.wp(["proxy", "start", "--port", &port.to_string()])
            .env("GIT_WORKTREE_PORTS_PROXY_THREADS", threads.to_string())
            .succeeds();
        Proxy { repo }
    }
}

impl Drop for Proxy<'_> {
    fn drop(&mut self) {
        let _ = self.repo.wp(["proxy", "stop"]).output();
    }
}

/// A raw HTTP/1.1 request to 127.0.0.1:`port`; the connection, ready to read.
pub fn raw(port: u16, request: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s
}

/// The registry file at `path` (`ports.json`, its backup) in the shape of version 1: a
/// registry of version 2 names its records file (`"records": {"generation", "bytes"}`),
/// whose committed lines, a later one winning and `null` removing, are its `worktrees`.
pub fn read_registry(path: &Path) -> Value {
    let mut reg: Value = serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if reg["version"] == 2 {
        let at = reg.as_object_mut().unwrap().remove("records").unwrap();
        reg["worktrees"] = records_apart(path, &at);
        reg["version"] = 1.into();
    }
    reg
}

/// The records of a registry kept apart: the committed lines of the file `at` names, beside
/// `ports`.
pub fn records_apart(ports: &Path, at: &Value) -> Value {
    let file = ports.with_file_name(format!("records-{}.jsonl", at["generation"]));
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let committed = &bytes[..at["bytes"].as_u64().unwrap() as usize];
    let mut records = serde_json::Map::new();
    for line in std::str::from_utf8(committed).unwrap().lines() {
        let one: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
        assert_eq!(one.len(), 1, "{line}");
        for (key, record) in one {
            match record {
                Value::Null => records.remove(&key),
                record => records.insert(key, record),
            };
        }
    }
    Value::Object(records)
}
