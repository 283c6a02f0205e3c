//! The node's small PKI (`aura pki`): a CA, the server certificate the gRPC surfaces
//! present, and client certificates with Aurae-format client configs.
//!
//! Layout under `<home>/pki` (directory mode 0700, keys 0600):
//!
//! ```text
//! ca.crt  ca.key            the CA that signs both sides and that both sides trust
//! server.crt  server.key    SANs: server.unsafe.aurae.io, localhost, and --san names
//! grpc.toml                 the gRPC surfaces' settings: socket, TCP address, roles
//! clients/NAME.crt .key     CN and DNS SAN = NAME, for client authentication only
//! clients/NAME.toml         Aurae's client config: [auth] ca_crt, client_crt, client_key; [system] socket
//! ```

use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aura_core::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::auth::Role;
use crate::client::ClientConfig;
use crate::config::GrpcConfig;
use crate::error::{Error, Result};
use crate::files::write_new;

pub use crate::client::AURAE_SERVER_NAME;
pub use crate::config::DEFAULT_CLIENT;

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From `now` (less a minute, for clocks slightly behind) for `days` days.
    pub fn days(now: Timestamp, days: u32) -> Self {
        let now = SystemTime::UNIX_EPOCH + Duration::from_nanos(now.as_nanos());
        Validity {
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }
}

/// What `init` makes.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Extra DNS names (or IP addresses) for the server certificate.
    pub sans: Vec<String>,
    pub validity: Validity,
    /// The socket written into client configs (and `grpc.toml`).
    pub socket: PathBuf,
}

/// The files of one issued client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    pub name: String,
    pub crt: PathBuf,
    pub key: PathBuf,
    /// The Aurae-format client config.
    pub config: PathBuf,
}

/// The PKI directory.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// The PKI at `dir` (the node uses `<home>/pki`); nothing is read or made yet.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Pki { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `init` has run: the CA exists.
    pub fn exists(&self) -> bool {
        self.ca_crt().exists()
    }

    pub fn ca_crt(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn server_crt(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("grpc.toml")
    }

    pub fn client(&self, name: &str) -> ClientFiles {
        let dir = self.dir.join("clients");
        ClientFiles {
            name: name.to_owned(),
            crt: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            config: dir.join(format!("{name}.toml")),
        }
    }

    /// The gRPC settings in `grpc.toml`.
    pub fn config(&self) -> Result<GrpcConfig> {
        GrpcConfig::load(&self.config_path())
    }

    /// The server side of TLS from this PKI's CA and server certificate.
    pub fn server_tls(&self) -> Result<std::sync::Arc<rustls::ServerConfig>> {
        if !self.exists() {
            return Err(Error::NoCa(self.ca_crt()));
        }
        crate::tls::server_config(&self.ca_crt(), &self.server_crt(), &self.server_key())
    }

    /// Makes the CA, the server certificate and `grpc.toml` (with the `admin` client as
    /// admin). Refuses to overwrite an existing CA: every client certificate hangs on it.
    pub fn init(&self, opts: &InitOptions) -> Result<()> {
        if self.exists() {
            return Err(Error::Exists {
                what: "a CA",
                path: self.ca_crt(),
            });
        }
        for san in &opts.sans {
            check_san(san)?;
        }
        make_dir(&self.dir)?;
        make_dir(&self.dir.join("clients"))?;

        let ca_key = KeyPair::generate().map_err(Error::Cert)?;
        let mut ca = params(Vec::new(), "Aura node CA", opts.validity)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(Error::Cert)?;
        let issuer = Issuer::new(ca, &ca_key);

        let mut names = vec![AURAE_SERVER_NAME.to_owned(), "localhost".to_owned()];
        for san in &opts.sans {
            if !names.contains(san) {
                names.push(san.clone());
            }
        }
        let server_key = KeyPair::generate().map_err(Error::Cert)?;
        let mut server = params(names, "Aura node", opts.validity)?;
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .map_err(Error::Cert)?;

        // The key first: a CA certificate without its key would make `exists` true for
        // a PKI that cannot issue anything.
        write_new(&self.ca_key(), &ca_key.serialize_pem(), 0o600)?;
        write_new(&self.server_key(), &server_key.serialize_pem(), 0o600)?;
        write_new(&self.server_crt(), &server_cert.pem(), 0o644)?;
        if !self.config_path().exists() {
            let config = GrpcConfig::template(&opts.socket);
            write_new(&self.config_path(), &config, 0o600)?;
        }
        write_new(&self.ca_crt(), &ca_cert.pem(), 0o644)
    }

    /// Issues a client certificate for `name` (its CN and DNS SAN), writes its Aurae
    /// client config pointing at `socket`, and, with a role, records it in `grpc.toml`.
    pub fn issue_client(
        &self,
        name: &str,
        role: Option<Role>,
        validity: Validity,
        socket: &Path,
    ) -> Result<ClientFiles> {
        check_client_name(name)?;
        if !self.exists() {
            return Err(Error::NoCa(self.ca_crt()));
        }
        let files = self.client(name);
        if files.crt.exists() {
            return Err(Error::Exists {
                what: "a client certificate",
                path: files.crt,
            });
        }
        let ca_pem = read(&self.ca_crt())?;
        let ca_key = KeyPair::from_pem(&read(&self.ca_key())?).map_err(Error::Cert)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).map_err(Error::Cert)?;

        let key = KeyPair::generate().map_err(Error::Cert)?;
        let mut params = params(vec![name.to_owned()], name, validity)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).map_err(Error::Cert)?;

        make_dir(&self.dir.join("clients"))?;
        write_new(&files.key, &key.serialize_pem(), 0o600)?;
        write_new(&files.crt, &cert.pem(), 0o644)?;
        let config = ClientConfig::new(self.ca_crt(), files.crt.clone(), files.key.clone(), socket);
        write_new(&files.config, &config.to_toml(), 0o600)?;
        if let Some(role) = role {
            GrpcConfig::set_role(&self.config_path(), name, role)?;
        }
        Ok(files)
    }
}

/// Certificate parameters with a CN, SANs and a validity.
fn params(sans: Vec<String>, cn: &str, validity: Validity) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(sans).map_err(Error::Cert)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.not_before = validity.not_before.into();
    p.not_after = validity.not_after.into();
    // No serial is set: rcgen derives it from the public key, and every certificate
    // here has a fresh key, so two certificates never share one.
    Ok(p)
}

/// Client names become a CN, a DNS SAN and file names: letters, digits, `-`, `.`, `_`.
pub fn check_client_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "`{name}` is not a client name: use 1-63 letters, digits, `-`, `.` or `_`, not starting with `.` or `-`"
        )))
    }
}

fn check_san(san: &str) -> Result<()> {
    let ok = !san.is_empty()
        && san.len() <= 253
        && san
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '*'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "`{san}` is not a DNS name or an IP address"
        )))
    }
}

fn make_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(format!("read {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aura_core::door::{Clock as _, SystemClock};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    fn der(path: &Path) -> Vec<u8> {
        CertificateDer::from_pem_file(path)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_vec()
    }

    #[test]
    fn certificates_carry_the_names_authorisation_reads() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pki = Pki::new(dir.path().join("pki"));
        let validity = Validity::days(SystemClock.now(), 1);
        let socket = dir.path().join("aurae.sock");
        pki.init(&InitOptions {
            sans: vec!["node.example".into(), "localhost".into()],
            validity,
            socket: socket.clone(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            crate::auth::identities(&der(&pki.server_crt())),
            ["Aura node", AURAE_SERVER_NAME, "localhost", "node.example"]
        );
        let files = pki
            .issue_client("ci.runner", Some(Role::Observer), validity, &socket)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            crate::auth::identities(&der(&files.crt)),
            ["ci.runner", "ci.runner"]
        );
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt as _;
            fs::metadata(p).map(|m| m.permissions().mode() & 0o777).ok()
        };
        assert_eq!(mode(&pki.ca_key()), Some(0o600));
        assert_eq!(mode(&files.key), Some(0o600));
        assert_eq!(mode(pki.dir()), Some(0o700));
        // Nothing is overwritten: not the CA, not a client.
        assert!(matches!(
            pki.issue_client("ci.runner", None, validity, &socket),
            Err(Error::Exists { .. })
        ));
        assert!(matches!(
            pki.init(&InitOptions {
                sans: Vec::new(),
                validity,
                socket
            }),
            Err(Error::Exists { .. })
        ));
        let config = pki.config().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.roles.get("ci.runner"), Some(&Role::Observer));
        assert_eq!(config.roles.get(DEFAULT_CLIENT), Some(&Role::Admin));
    }

    #[test]
    fn client_names() {
        for (name, ok) in [
            ("admin", true),
            ("ci-runner.1", true),
            ("a_b", true),
            ("", false),
            ("-x", false),
            (".x", false),
            ("a/b", false),
            ("a b", false),
            ("../x", false),
            (&"x".repeat(64), false),
        ] {
            assert_eq!(check_client_name(name).is_ok(), ok, "{name:?}");
        }
    }
}
