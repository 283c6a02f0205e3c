//! `aura pki`: the certificates of the node's gRPC surfaces (the CA, the server's, and
//! clients' with Aurae-format client configs), in `<home>/pki`.

use std::path::PathBuf;

use aura_core::door::{Clock as _, SystemClock};
use aura_grpc::pki::{DEFAULT_CLIENT, InitOptions};
use aura_grpc::{Pki, Role, Validity};
use serde::Serialize;

use crate::hinted;
use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Make the CA, the server certificate and the `admin` client
    #[command(
        after_help = "Writes <home>/pki: ca.crt and ca.key, server.crt and server.key \
(SANs: server.unsafe.aurae.io, localhost and each --san), grpc.toml (the socket and the role \
of each client), and clients/admin.{crt,key,toml}. `aura serve` then serves the gRPC cell API \
on <home>/aurae.sock with mTLS.

Examples:
  aura pki init
  aura pki init --san node1.example.com --san 10.0.0.5 --days 90"
    )]
    Init(InitArgs),
    /// Make a client certificate and an Aurae-format client config
    #[command(
        after_help = "Writes <home>/pki/clients/NAME.{crt,key,toml}; NAME is the \
certificate's CN and DNS SAN, and gets the role in <home>/pki/grpc.toml. The .toml is \
Aurae's client config ([auth] ca_crt, client_crt, client_key; [system] socket), which \
Aurae's clients and `aura cell --client-config` read.

Examples:
  aura pki client ci --role observer
  aura pki client app --role inference
  aura pki client ops --role admin --days 30"
    )]
    Client(ClientArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Another DNS name or IP address for the server certificate (repeatable)
    #[arg(long = "san", value_name = "NAME")]
    sans: Vec<String>,
    /// Days the certificates are valid
    #[arg(long, value_name = "N", default_value_t = 365)]
    days: u32,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    /// The client's name (its certificate's CN and DNS SAN)
    name: String,
    /// What it may do: admin (everything), observer (list, logs, wait; no changes) or
    /// inference (the models only: chat, completions, embeddings)
    /// [default: its role in grpc.toml, else observer]
    #[arg(long, value_name = "ROLE")]
    role: Option<Role>,
    /// Days the certificate is valid
    #[arg(long, value_name = "N", default_value_t = 365)]
    days: u32,
}

#[derive(Serialize)]
struct Initialized {
    dir: PathBuf,
    ca: PathBuf,
    server_sans: Vec<String>,
    socket: PathBuf,
    client: Issued,
}

#[derive(Serialize)]
struct Issued {
    name: String,
    role: &'static str,
    crt: PathBuf,
    key: PathBuf,
    config: PathBuf,
}

/// Where the node's gRPC socket is, by default.
pub(crate) fn default_socket(home: &Home) -> PathBuf {
    home.dir().join("aurae.sock")
}

pub(crate) fn pki(home: &Home) -> Pki {
    Pki::new(home.dir().join("pki"))
}

fn pki_error(e: aura_grpc::Error) -> anyhow::Error {
    match e.hint() {
        Some(h) => hinted(e.to_string(), h),
        None => e.into(),
    }
}

fn validity(days: u32) -> anyhow::Result<Validity> {
    if days == 0 || days > 36_500 {
        return Err(hinted(
            format!("--days {days} is out of range"),
            "give a number of days from 1 to 36500",
        ));
    }
    Ok(Validity::days(SystemClock.now(), days))
}

pub(crate) fn run(home: &Home, out: &Output, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(args) => init(home, out, args),
        Command::Client(args) => client(home, out, &args),
    }
}

fn init(home: &Home, out: &Output, args: InitArgs) -> anyhow::Result<()> {
    home.create_dir()?;
    let pki = pki(home);
    let validity = validity(args.days)?;
    let socket = default_socket(home);
    let mut sans = vec![
        aura_grpc::pki::AURAE_SERVER_NAME.to_owned(),
        "localhost".to_owned(),
    ];
    for san in &args.sans {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    pki.init(&InitOptions {
        sans: args.sans,
        validity,
        socket: socket.clone(),
    })
    .map_err(pki_error)?;
    let files = pki
        .issue_client(DEFAULT_CLIENT, None, validity, &socket)
        .map_err(pki_error)?;
    let done = Initialized {
        dir: pki.dir().to_owned(),
        ca: pki.ca_crt(),
        server_sans: sans,
        socket,
        client: Issued {
            name: files.name,
            role: Role::Admin.as_str(),
            crt: files.crt,
            key: files.key,
            config: files.config,
        },
    };
    out.print(&done, || {
        format!(
            "made a CA and a server certificate ({}) in {}\n\
             client `{}` (admin): {}\n\
             `aura serve` now serves the gRPC cell API on {} (mTLS)",
            done.server_sans.join(", "),
            done.dir.display(),
            done.client.name,
            done.client.config.display(),
            done.socket.display(),
        )
    })
}

fn client(home: &Home, out: &Output, args: &ClientArgs) -> anyhow::Result<()> {
    let pki = pki(home);
    let validity = validity(args.days)?;
    let config = pki.config().map_err(pki_error)?;
    let known = config.roles.get(&args.name).copied();
    let role = args.role.or(known).unwrap_or(Role::Observer);
    let socket = config.socket.unwrap_or_else(|| default_socket(home));
    // The role is written only when it changes, so grpc.toml keeps its layout otherwise.
    let set = (known != Some(role)).then_some(role);
    let files = pki
        .issue_client(&args.name, set, validity, &socket)
        .map_err(pki_error)?;
    let issued = Issued {
        name: files.name,
        role: role.as_str(),
        crt: files.crt,
        key: files.key,
        config: files.config,
    };
    out.print(&issued, || {
        let mut text = format!(
            "client `{}` ({}): {}",
            issued.name,
            issued.role,
            issued.config.display()
        );
        if set.is_some() {
            text.push_str("\na running node picks up the new role when it restarts");
        }
        text
    })
}
