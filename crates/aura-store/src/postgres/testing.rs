//! A throwaway PostgreSQL cluster for tests (feature `test-util`; tests and benches only).
//!
//! [`TestCluster::get`] starts one server per test process, the first time a test asks:
//! `initdb` into a fresh temporary directory, then `postgres` listening only on a Unix
//! socket in that directory (no TCP port, so parallel test processes cannot collide).
//! [`TestCluster::database`] creates a fresh database per test. The server is watched by a
//! small shell loop that stops it and removes the directory once the test process is
//! gone, however it ended (a static is never dropped, and a killed test runs no code).
//!
//! PostgreSQL's binaries are looked for in `AURA_PG_BIN`, then in
//! `/usr/lib/postgresql/<version>/bin`. Without them [`TestCluster::get`] prints why and
//! returns `None`, so the test can skip, unless `AURA_REQUIRE_POSTGRES=1` is set (as
//! scripts/test.sh does), which makes their absence a failure. `initdb` refuses to run as
//! root, so as root the cluster runs as the `postgres` user.
//!
//! The server runs with `fsync=off`: tests check behaviour, not the disk, and the machine
//! is shared. Benchmarks start a server of their own with PostgreSQL's default durability
//! ([`TestCluster::durable`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test harness fails loudly"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The port in the socket's name; the socket is in a private directory, so any will do.
const PORT: u16 = 5432;

/// A running throwaway server.
#[derive(Debug)]
pub struct TestCluster {
    dir: PathBuf,
}

static CLUSTER: OnceLock<Option<TestCluster>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The directory of PostgreSQL's server binaries, if there is one.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("AURA_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| d.join("initdb").exists());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists() && d.join("postgres").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    // The owner of /proc/self is the process's effective user.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root.
fn command(bin: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

impl TestCluster {
    /// The process's server, started on first use; `None` (with the reason printed) when
    /// PostgreSQL is not installed and `AURA_REQUIRE_POSTGRES` is not set.
    pub fn get() -> Option<&'static TestCluster> {
        CLUSTER.get_or_init(|| TestCluster::start(false)).as_ref()
    }

    /// A server of the caller's own with PostgreSQL's default durability (`fsync` and full
    /// page writes on): what a benchmark measures. Like [`TestCluster::get`]'s, it is
    /// stopped and removed once this process is gone.
    pub fn durable() -> Option<TestCluster> {
        TestCluster::start(true)
    }

    /// The directory holding the server's Unix socket (a client's `-h`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    fn start(durable: bool) -> Option<TestCluster> {
        let Some(bin) = bin_dir() else {
            let why = "PostgreSQL's server binaries are not installed (looked in AURA_PG_BIN and /usr/lib/postgresql/*/bin)";
            if std::env::var_os("AURA_REQUIRE_POSTGRES").is_some_and(|v| v == "1") {
                panic!("{why}, and AURA_REQUIRE_POSTGRES=1 forbids skipping");
            }
            eprintln!("skipping a PostgreSQL test: {why}");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("aura-pg-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let data = dir.join("data");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot give {} to the postgres user", dir.display());
        }
        let out = command(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        )
        .output();
        // A failed initdb (a full disk, say) leaves no directory behind.
        let failed = match &out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failed {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("initdb failed: {why}");
        }
        // The watchdog: the server runs until this test process is gone, then is stopped
        // and its directory removed.
        let script = format!(
            r#"{postgres} -D {data} -k {dir} -p {PORT} -c listen_addresses='' {settings} -c max_connections=300 >{dir}/log 2>&1 &
pg=$!
while [ -d /proc/{pid} ] && kill -0 $pg 2>/dev/null; do sleep 0.5; done
kill -INT $pg 2>/dev/null; wait $pg
rm -rf {dir}"#,
            postgres = bin.join("postgres").display(),
            // A benchmark's server keeps PostgreSQL's defaults; a test's trades durability
            // and memory for speed.
            settings = if durable {
                ""
            } else {
                "-c fsync=off -c full_page_writes=off -c shared_buffers=32MB"
            },
            data = data.display(),
            dir = dir.display(),
            pid = std::process::id(),
        );
        let mut watchdog = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        watchdog
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // The watchdog outlives this process on purpose, by a moment; a thread reaps it
        // should it end first.
        let mut child = watchdog.spawn().expect("the PostgreSQL watchdog starts");
        std::thread::spawn(move || child.wait());
        let cluster = TestCluster { dir };
        cluster.wait_ready(&bin);
        Some(cluster)
    }

    fn wait_ready(&self, bin: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h"])
                .arg(&self.dir)
                .args(["-p", &PORT.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start; its log: {}",
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The connection URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@localhost/{db}?host={}&port={PORT}",
            self.dir.display()
        )
    }

    /// Creates a fresh, empty database and returns its URL.
    pub async fn database(&self) -> String {
        let name = format!(
            "aura_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        drop(client);
        let _ = task.await;
        self.url(&name)
    }
}
