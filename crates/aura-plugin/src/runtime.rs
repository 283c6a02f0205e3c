//! Running plugins: WebAssembly components (WASI preview 2 commands) on wasmtime, each call
//! in a fresh store with only what the plugin declared and the caller granted.
//!
//! The calling convention is a command's: the call's arguments arrive as JSON on stdin, the
//! answer is the JSON the plugin writes to stdout, a non-zero exit is a failure whose
//! reason is on stderr. A plugin written in any language that targets `wasm32-wasip2`
//! needs nothing of Aura's to be one.
//!
//! What a call gets: no environment, no arguments but its name, no clock but the host's,
//! the mission's workspace at `/workspace` only if both its manifest and the caller's
//! grant allow it (read-only unless both say write), TCP connections only to the
//! addresses its declared `host:port`s resolve to and only if the grant allows network,
//! and no UDP. What it may spend: its manifest's fuel (about one unit per instruction),
//! linear memory and wall-clock time (an epoch ticker interrupts it), and output bytes.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{DirPerms, FilePerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::manifest::{PluginManifest, WorkspaceAccess};
use crate::package::VerifiedPackage;

/// How often the epoch ticker advances: the resolution of a call's timeout.
const TICK: Duration = Duration::from_millis(10);
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
const MAX_INSTANCES: usize = 64;

/// Why a plugin could not be loaded or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the component does not load: {0}")]
    Load(String),
    #[error("the plugin ran out of fuel ({0} units)")]
    OutOfFuel(u64),
    #[error("the plugin ran past its {0} ms timeout")]
    Timeout(u32),
    #[error("the plugin asked for more than its {0} bytes of memory")]
    Memory(u64),
    #[error("the plugin exited with status {code}: {stderr}")]
    Exit { code: i32, stderr: String },
    #[error("the plugin failed: {reason}; stderr: {stderr}")]
    Trap { reason: String, stderr: String },
    #[error("the plugin's answer is not JSON: {0}")]
    Answer(String),
    #[error("cannot set up the call: {0}")]
    Setup(String),
}

/// What a call's caller grants, on top of which the manifest's capabilities are a ceiling.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// The workspace directory and the most the caller allows in it.
    pub workspace: Option<(PathBuf, WorkspaceAccess)>,
    /// Whether the plugin may reach its declared hosts.
    pub network: bool,
}

/// A call's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub answer: serde_json::Value,
    /// What it wrote to stderr (its log), lossily decoded.
    pub stderr: String,
    pub fuel_used: u64,
}

/// A loaded plugin: its manifest and its compiled, pre-linked component.
pub struct Plugin {
    manifest: PluginManifest,
    pre: CommandPre<CallState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.manifest.name)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn manifest(&self) -> &PluginManifest {
        &self.manifest
    }
}

struct CallState {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers whether a growth was refused, so the failure that
/// follows (usually the guest's own abort) is reported as what it is.
struct Limiter {
    memory: usize,
    refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
}

/// The wasmtime engine every plugin of a node runs on, with its epoch ticker.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    _ticker: Arc<Ticker>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new() -> Result<Self, RunError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // Async, so that a call blocked in a host function (a guest sleeping, or waiting
        // on a socket) is cancelled by the timeout like a guest spinning in its own code.
        config.async_support(true);
        let engine = Engine::new(&config).map_err(|e| RunError::Setup(e.to_string()))?;
        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RunError::Setup(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticking, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("aura-plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| RunError::Setup(e.to_string()))?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            _ticker: Arc::new(Ticker { stop }),
        })
    }

    /// Compiles a verified package's component and links it against WASI. A component
    /// that is not a WASI command, or imports anything else, is refused here.
    pub fn load(&self, package: &VerifiedPackage) -> Result<Plugin, RunError> {
        let component = Component::new(&self.engine, &package.component)
            .map_err(|e| RunError::Load(format!("{e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(CommandPre::new)
            .map_err(|e| RunError::Load(format!("{e:#}")))?;
        Ok(Plugin {
            manifest: package.manifest.statement.clone(),
            pre,
        })
    }

    /// Runs one call of `plugin` with `input` as its arguments, on the current tokio
    /// runtime (it needs the timer).
    pub async fn call(
        &self,
        plugin: &Plugin,
        input: &serde_json::Value,
        grant: &Grant,
    ) -> Result<Outcome, RunError> {
        let m = &plugin.manifest;
        let limits = m.limits;
        let input = serde_json::to_vec(input).map_err(|e| RunError::Setup(e.to_string()))?;
        let stdout = MemoryOutputPipe::new(limits.output_bytes as usize);
        let stderr = MemoryOutputPipe::new(limits.output_bytes as usize);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(input))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&[m.name.as_str()])
            .allow_udp(false);
        if let Some((dir, granted)) = &grant.workspace {
            match m.capabilities.workspace.min(*granted) {
                WorkspaceAccess::None => {}
                WorkspaceAccess::Read => {
                    wasi.preopened_dir(dir, "/workspace", DirPerms::READ, FilePerms::READ)
                        .map_err(|e| RunError::Setup(format!("workspace: {e}")))?;
                }
                WorkspaceAccess::Write => {
                    wasi.preopened_dir(dir, "/workspace", DirPerms::all(), FilePerms::all())
                        .map_err(|e| RunError::Setup(format!("workspace: {e}")))?;
                }
            }
        }
        if grant.network && !m.capabilities.hosts.is_empty() {
            let allowed = resolve(&m.capabilities.hosts)?;
            wasi.allow_tcp(true)
                .allow_ip_name_lookup(true)
                .socket_addr_check(move |addr, usage| {
                    let ok = matches!(usage, SocketAddrUse::TcpConnect) && allowed.contains(&addr);
                    Box::pin(async move { ok })
                });
        } else {
            wasi.allow_tcp(false).allow_ip_name_lookup(false);
        }
        let mut store = Store::new(
            &self.engine,
            CallState {
                ctx: wasi.build(),
                table: ResourceTable::new(),
                limits: Limiter {
                    memory: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                    refused: false,
                },
            },
        );
        store.limiter(|s| &mut s.limits);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| RunError::Setup(e.to_string()))?;
        let ticks = u64::from(limits.timeout_ms).div_ceil(TICK.as_millis() as u64) + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();

        // The epoch deadline traps a guest busy in its own code; the timer cancels one
        // blocked in a host call. Either way the store and everything the call opened are
        // dropped with it.
        let limit = Duration::from_millis(u64::from(limits.timeout_ms));
        let ran = tokio::time::timeout(limit, async {
            let command = plugin.pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        })
        .await
        .map_err(|_| RunError::Timeout(limits.timeout_ms))?;
        let log = || String::from_utf8_lossy(&stderr.contents()).into_owned();
        let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
        let exit = match ran {
            Ok(Ok(())) => 0,
            Ok(Err(())) => 1,
            Err(e) => {
                if let Some(code) = e.downcast_ref::<I32Exit>() {
                    code.0
                } else if store.data().limits.refused {
                    return Err(RunError::Memory(limits.memory_bytes));
                } else {
                    return Err(match e.downcast_ref::<Trap>() {
                        Some(Trap::OutOfFuel) => RunError::OutOfFuel(limits.fuel),
                        Some(Trap::Interrupt) => RunError::Timeout(limits.timeout_ms),
                        _ => RunError::Trap {
                            reason: format!("{e:#}"),
                            stderr: tail(&log()),
                        },
                    });
                }
            }
        };
        if exit != 0 {
            if store.data().limits.refused {
                return Err(RunError::Memory(limits.memory_bytes));
            }
            return Err(RunError::Exit {
                code: exit,
                stderr: tail(&log()),
            });
        }
        let answer = serde_json::from_slice(&stdout.contents())
            .map_err(|e| RunError::Answer(e.to_string()))?;
        Ok(Outcome {
            answer,
            stderr: log(),
            fuel_used,
        })
    }
}

/// The last few lines of a plugin's stderr, for an error message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.trim_end().lines().collect();
    let start = lines.len().saturating_sub(5);
    let joined = lines[start..].join(" | ");
    if joined.len() > 1000 {
        let mut cut = joined.len() - 1000;
        while !joined.is_char_boundary(cut) {
            cut += 1;
        }
        joined[cut..].to_owned()
    } else {
        joined
    }
}

fn resolve(hosts: &[String]) -> Result<HashSet<SocketAddr>, RunError> {
    let mut out = HashSet::new();
    for h in hosts {
        let addrs = h
            .to_socket_addrs()
            .map_err(|e| RunError::Setup(format!("cannot resolve {h}: {e}")))?;
        out.extend(addrs);
    }
    Ok(out)
}
