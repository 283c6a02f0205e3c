//! The model package benchmark (issue 5): manifest verification throughput beside
//! `sha256sum` over the same files, in the same run.
//!
//! The benchmark writes a safetensors model of `shards` shards (random bytes in one
//! tensor each) plus its config and tokenizer, imports it as a signed package, then
//! alternates, `rounds` times, between:
//!
//! - Aura: `Packages::verify_name` — read the signed manifest, check its signature, list
//!   the package directory, hash every file (streamed, in parallel across files) and
//!   match sizes and digests;
//! - `sha256sum` over the same files in one process (how a person would check them);
//! - `sha256sum` with one process per file, all at once (the parallel peer).
//!
//! Every run reads from the page cache (the files were just written, and each round reads
//! them all), so the figures compare hashing and file handling, not the disk. The best
//! round of each is reported, with its ratio to Aura.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aura_core::door::{SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_model::Registry;
use aura_model::import::{self, Context, Options};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Number of weight shards
    #[arg(long, default_value_t = 4)]
    shards: u64,
    /// Size of each shard in MiB
    #[arg(long, default_value_t = 384)]
    shard_mib: u64,
    /// Rounds of each measurement (the best is reported)
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Where to put the files [default: a temporary directory]
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A fast deterministic filler (xorshift64*): the bytes only need to be incompressible
/// enough that nothing below the hash can shortcut them.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

fn write_model(dir: &Path, shards: u64, shard_bytes: u64) -> anyhow::Result<Vec<PathBuf>> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), r#"{"model_type":"llama"}"#)?;
    std::fs::write(dir.join("tokenizer.json"), r#"{"model":{"type":"BPE"}}"#)?;
    let mut paths = Vec::new();
    let mut buf = vec![0u8; 8 << 20];
    for i in 0..shards {
        let name = format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
        let header = serde_json::json!({
            format!("model.layers.{i}.weight"): {
                "dtype": "U8", "shape": [shard_bytes], "data_offsets": [0, shard_bytes]
            }
        })
        .to_string();
        let path = dir.join(&name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(header.as_bytes())?;
        let mut left = shard_bytes;
        let mut seed = 0x9e37_79b9_7f4a_7c15 ^ i;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            seed = seed.wrapping_add(1);
            fill(&mut buf[..n], seed);
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.flush()?;
        paths.push(path);
    }
    Ok(paths)
}

fn sha256sum(files: &[PathBuf]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = Command::new("sha256sum").args(files).output()?;
    let d = t.elapsed();
    anyhow::ensure!(out.status.success(), "sha256sum failed");
    Ok(d)
}

fn sha256sum_parallel(files: &[PathBuf]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            Command::new("sha256sum")
                .arg(f)
                .stdout(std::process::Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for mut c in children {
        anyhow::ensure!(c.wait()?.success(), "sha256sum failed");
    }
    Ok(t.elapsed())
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        Command::new("sha256sum").arg("--version").output().is_ok(),
        "sha256sum (GNU coreutils) is needed as the peer"
    );
    let tmp = tempfile::tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let src = root.join("src");
    let shard_bytes = args.shard_mib << 20;
    let t = Instant::now();
    write_model(&src, args.shards, shard_bytes)?;
    eprintln!("wrote {} shards in {:?}", args.shards, t.elapsed());

    let home = root.join("home");
    let registry = Registry::new(&home);
    let signer = Signer::ephemeral("publisher", &SeededEntropy::new(1))?;
    let ctx = Context {
        signer: &signer,
        clock: &SystemClock,
        entropy: &SeededEntropy::new(2),
    };
    let options = Options {
        name: Some("bench".into()),
        ..Options::default()
    };
    let plan = import::plan(&src, &options)?;
    let t = Instant::now();
    let installed = import::import(registry.packages(), &plan, &options, &ctx, &|_| {})?;
    let import_time = t.elapsed();
    let total = installed.manifest().total_size();
    let files: Vec<PathBuf> = installed
        .manifest()
        .files
        .iter()
        .map(|f| installed.dir.join("files").join(&f.path))
        .collect();
    let shards: Vec<PathBuf> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .cloned()
        .collect();

    // Warm the page cache, and check that both sides agree on the digests.
    let out = Command::new("sha256sum").args(&files).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    for f in &installed.manifest().files {
        anyhow::ensure!(
            text.contains(&f.sha256.to_hex()),
            "sha256sum disagrees about {}",
            f.path
        );
    }

    let mut best = [Duration::MAX; 5];
    for _ in 0..args.rounds {
        let t = Instant::now();
        registry.packages().verify_name("bench", &|_| {})?;
        best[0] = best[0].min(t.elapsed());
        best[1] = best[1].min(sha256sum(&files)?);
        best[2] = best[2].min(sha256sum_parallel(&files)?);
        // One shard alone: hashing speed per core.
        let one = &shards[..1];
        let t = Instant::now();
        let bytes = std::fs::File::open(&one[0])?;
        sha2_digest(bytes)?;
        best[3] = best[3].min(t.elapsed());
        best[4] = best[4].min(sha256sum(one)?);
    }
    let one_bytes = std::fs::metadata(&shards[0])?.len();

    println!(
        "## Model packages: verification ({} shards, {:.2} GB in all)\n",
        args.shards,
        total as f64 / 1e9
    );
    println!(
        "machine: {} cores; {}; files in the page cache; best of {} rounds\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        args.rounds
    );
    println!("| verify a package's files | time | GB/s | Aura / peer |");
    println!("|---|---:|---:|---:|");
    let aura = gbps(total, best[0]);
    println!(
        "| Aura `verify` (manifest signature, listing, every file hashed in parallel) | {:.3} s | {aura:.2} | |",
        best[0].as_secs_f64()
    );
    for (what, d) in [
        ("`sha256sum` of every file, one process", best[1]),
        ("`sha256sum`, one process per file, all at once", best[2]),
    ] {
        let g = gbps(total, d);
        println!(
            "| {what} | {:.3} s | {g:.2} | {:.2} |",
            d.as_secs_f64(),
            aura / g
        );
    }
    println!();
    println!(
        "| hash one {:.0} MB shard, one core | GB/s | Aura / peer |",
        one_bytes as f64 / 1e6
    );
    println!("|---|---:|---:|");
    let a1 = gbps(one_bytes, best[3]);
    let p1 = gbps(one_bytes, best[4]);
    println!("| Aura (the `sha2` crate, streamed in 1 MiB reads) | {a1:.2} | |");
    println!("| `sha256sum` | {p1:.2} | {:.2} |", a1 / p1);
    println!();
    println!(
        "Import (copy, hash and sign {:.2} GB): {:.2} s, {:.2} GB/s.",
        total as f64 / 1e9,
        import_time.as_secs_f64(),
        gbps(total, import_time)
    );
    Ok(())
}

/// SHA-256 of a whole file the way verification reads it.
fn sha2_digest(mut f: std::fs::File) -> anyhow::Result<[u8; 32]> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into())
}
