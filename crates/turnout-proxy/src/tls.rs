//! TLS: the HTTPS listener's certificates (loaded from PEM files, checked, chosen by SNI,
//! swapped for renewed ones without a restart), its handshake (ClientHello first, then a
//! bounded slot), and the client settings for `https://` upstreams (the system's roots, or a
//! pool's own CA).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use turnout_config::{CertFiles, PoolName};
use turnout_core::CertInfo;

/// Why a certificate, key or CA file could not be used. Each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read (the host's fault, not the file's).
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not PEM, or PEM that does not parse.
    #[error("{}: {why}", file.display())]
    Pem {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A certificate file with no certificate in it.
    #[error("{}: no certificate in it (expected a PEM chain, leaf first)", file.display())]
    NoCertificate {
        /// The file.
        file: PathBuf,
    },
    /// A key rustls cannot sign with.
    #[error("{}: the key cannot be used: {why}", file.display())]
    BadKey {
        /// The file.
        file: PathBuf,
        /// rustls' reason.
        why: String,
    },
    /// A key of another certificate.
    #[error("{} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate that is not X.509.
    #[error("{}: the certificate is not valid X.509: {why}", file.display())]
    BadCertificate {
        /// The file.
        file: PathBuf,
        /// The parser's reason.
        why: String,
    },
    /// Expired, with `[tls] reject_expired` set.
    #[error("{}: the certificate expired on {not_after} (reject_expired is set)", file.display())]
    Expired {
        /// The file.
        file: PathBuf,
        /// When it expired.
        not_after: String,
    },
    /// rustls refused the settings built from the files.
    #[error("TLS settings: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsError {
    /// The file was unreadable (a fault of the host), not a bad file.
    pub fn is_io(&self) -> bool {
        matches!(self, TlsError::Read { .. })
    }
}

/// The crypto provider every TLS context of turnout uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The most turnout reads of a certificate, key or CA file: a system CA bundle is about 200 KiB.
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    turnout_config::read_capped(file, MAX_PEM_BYTES).map_err(|source| TlsError::Read {
        file: file.to_owned(),
        source,
    })
}

/// One certificate being served.
#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    /// Lower-case DNS names (`*.example.com` for a wildcard).
    names: Vec<String>,
    info: CertInfo,
}

/// The listener's certificates, as loaded from `[[tls.certs]]`, swappable as a whole.
#[derive(Debug)]
pub struct CertStore {
    files: Vec<CertFiles>,
    reject_expired: bool,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Vec<Served>>,
}

impl CertStore {
    /// Loads every pair; the first failure is the error.
    pub fn load(files: &[CertFiles], reject_expired: bool) -> Result<Arc<CertStore>, TlsError> {
        let provider = provider();
        let served = load_all(files, reject_expired, &provider)?;
        Ok(Arc::new(CertStore {
            files: files.to_vec(),
            reject_expired,
            provider,
            current: ArcSwap::from_pointee(served),
        }))
    }

    /// Reads every file again. On success new handshakes use the new set at once (open
    /// connections keep theirs); on failure the set in use stays.
    pub fn reload(&self) -> Result<Vec<CertInfo>, TlsError> {
        let served = load_all(&self.files, self.reject_expired, &self.provider)?;
        let infos = served.iter().map(|s| s.info.clone()).collect();
        self.current.store(Arc::new(served));
        Ok(infos)
    }

    /// What is being served, in `[[tls.certs]]` order.
    pub fn infos(&self) -> Vec<CertInfo> {
        let now = unix_now();
        self.current
            .load()
            .iter()
            .map(|s| {
                let mut info = s.info.clone();
                info.days_left = days_left(info.not_after_unix, now);
                info
            })
            .collect()
    }

    /// The files to watch for a change.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files
            .iter()
            .flat_map(|f| [f.cert.as_path(), f.key.as_path()])
    }

    /// The rustls settings of the listener: TLS 1.3 and 1.2, ALPN `h2` then `http/1.1`, the
    /// certificate chosen by this store, session tickets.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Stateless session tickets (ChaCha20-Poly1305 under keys made at start and rotated
        // every 6 h), as nginx has them on by default: a browser or curl that comes back
        // resumes its session, without a signature, whichever of the process's clients it
        // was; rustls's stateful cache alone resumed only the last 256 of them. A ticket from
        // before an in-place upgrade is not resumed (the keys are the process's own): that
        // client makes a full handshake, as it would with nginx after a restart.
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        Ok(Arc::new(config))
    }
}

impl turnout_core::TlsAdmin for CertStore {
    fn reload(&self) -> Result<Vec<CertInfo>, turnout_core::TlsReloadError> {
        CertStore::reload(self).map_err(|e| turnout_core::TlsReloadError {
            message: e.to_string(),
            io: e.is_io(),
        })
    }

    fn certs(&self) -> Vec<CertInfo> {
        self.infos()
    }
}

/// What the files look like on disk (following symlinks, as certbot's `live/` links are), to
/// tell a renewal from nothing.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamps(store: &CertStore) -> Vec<Stamp> {
    store
        .files()
        .map(|f| {
            std::fs::metadata(f).ok().map(|m| {
                // The inode too: a file renamed into place within one mtime tick, with the
                // same length (PEM keys of one type are), is still seen.
                #[cfg(unix)]
                let inode = std::os::unix::fs::MetadataExt::ino(&m);
                #[cfg(not(unix))]
                let inode = 0;
                (m.modified().unwrap_or(UNIX_EPOCH), m.len(), inode)
            })
        })
        .collect()
}

/// `[tls] watch = true`: looks at the files every `interval` and reloads when one changed; a
/// failed reload is logged and the served set stays (a renewal that writes the certificate
/// before the key succeeds on the next look). A poll rather than inotify: a renewal swaps
/// symlinks or renames files into place, which watches on the old inodes do not see, and two
/// seconds of delay is nothing for a certificate valid for weeks.
/// Call it right after the store loaded: the files as they are now are taken as the ones loaded.
pub fn spawn_watch(store: Arc<CertStore>, interval: Duration) -> tokio::task::JoinHandle<()> {
    // Now, not in the task: a change made before the task first runs must still count.
    let mut seen = stamps(&store);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let store2 = Arc::clone(&store);
            let Ok(now) = tokio::task::spawn_blocking(move || stamps(&store2)).await else {
                continue;
            };
            if now == seen {
                continue;
            }
            seen = now;
            let store2 = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || store2.reload()).await {
                Ok(Ok(certs)) => {
                    tracing::info!(certs = certs.len(), "certificate files changed: reloaded")
                }
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "certificate files changed but do not load; the previous certificates are still served"
                ),
                Err(e) => tracing::error!(error = %e, "certificate reload did not finish"),
            }
        }
    })
}

/// rustls' own `ResolvesServerCertUsingSni` matches exact names only and has no default for
/// clients without SNI; certificates for `*.example.com` and old clients both need more.
impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = self.current.load();
        let chosen = hello
            .server_name()
            .and_then(|name| choose(&served, name))
            .or_else(|| served.first());
        chosen.map(|s| Arc::clone(&s.key))
    }
}

/// The certificate for `name`: an exact name first, then a wildcard covering one label.
fn choose<'a>(served: &'a [Served], name: &str) -> Option<&'a Served> {
    let exact = served
        .iter()
        .find(|s| s.names.iter().any(|n| n.eq_ignore_ascii_case(name)));
    exact.or_else(|| {
        let (_, parent) = name.split_once('.')?;
        served.iter().find(|s| {
            s.names.iter().any(|n| {
                n.strip_prefix("*.")
                    .is_some_and(|p| p.eq_ignore_ascii_case(parent))
            })
        })
    })
}

fn load_all(
    files: &[CertFiles],
    reject_expired: bool,
    provider: &CryptoProvider,
) -> Result<Vec<Served>, TlsError> {
    files
        .iter()
        .map(|f| load_pair(f, reject_expired, provider))
        .collect()
}

fn load_pair(
    files: &CertFiles,
    reject_expired: bool,
    provider: &CryptoProvider,
) -> Result<Served, TlsError> {
    let pem_err = |file: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
        file: file.to_owned(),
        why: format!("not a valid PEM file ({e})"),
    };
    let chain = read(&files.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(&files.cert, e))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            file: files.cert.clone(),
        });
    };
    let (names, info) = describe(leaf, files)?;
    if reject_expired && info.not_after_unix < unix_now() {
        return Err(TlsError::Expired {
            file: files.cert.clone(),
            not_after: info.not_after.clone(),
        });
    }
    let key = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::BadKey {
            file: files.key.clone(),
            why: "no private key in it (expected PKCS#8, RSA or EC in PEM)".into(),
        },
        e => pem_err(&files.key, e),
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        },
        e => TlsError::BadKey {
            file: files.key.clone(),
            why: e.to_string(),
        },
    })?;
    Ok(Served {
        key: Arc::new(key),
        names,
        info,
    })
}

/// The names (DNS subject alternative names, else the common name), serial and expiry of a
/// leaf certificate.
fn describe(
    leaf: &CertificateDer<'_>,
    files: &CertFiles,
) -> Result<(Vec<String>, CertInfo), TlsError> {
    let bad = |why: String| TlsError::BadCertificate {
        file: files.cert.clone(),
        why,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(e.to_string()))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(n) => {
                    names.push(n.to_ascii_lowercase())
                }
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    if let Some(ip) = ip_of(ip) {
                        names.push(ip);
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let not_after_unix = cert.validity().not_after.timestamp();
    let not_after = humantime::format_rfc3339_seconds(
        UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after_unix).unwrap_or(0)),
    )
    .to_string();
    let info = CertInfo {
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
        names: names.clone(),
        serial: cert.raw_serial_as_string(),
        not_after,
        not_after_unix,
        days_left: days_left(not_after_unix, unix_now()),
    };
    Ok((names, info))
}

fn ip_of(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whole days until `not_after` (negative once expired).
fn days_left(not_after: i64, now: i64) -> i64 {
    (not_after - now).div_euclid(86_400)
}

/// The client side of `https://` upstreams: the system's roots for every pool, or the CA in
/// `[pools.NAME.tls] ca` for the pools that name one.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    default: Arc<rustls::ClientConfig>,
    by_pool: Arc<HashMap<PoolName, Arc<rustls::ClientConfig>>>,
}

impl UpstreamTls {
    /// The system's roots, and each pool's CA file (read and checked now; the error names it).
    pub fn load(
        pool_ca: &std::collections::BTreeMap<PoolName, PathBuf>,
    ) -> Result<UpstreamTls, TlsError> {
        let provider = provider();
        let mut system = rustls::RootCertStore::empty();
        // Unreadable entries of the system store are skipped, as every TLS client does; a pool
        // whose servers need them fails its handshakes with a message naming the verification.
        let native = rustls_native_certs::load_native_certs();
        system.add_parsable_certificates(native.certs);
        let default = client_config(system, &provider)?;
        let mut by_pool = HashMap::new();
        for (pool, file) in pool_ca {
            let pem = read(file)?;
            let mut roots = rustls::RootCertStore::empty();
            let mut any = false;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| TlsError::Pem {
                    file: file.clone(),
                    why: format!("not a valid PEM file ({e})"),
                })?;
                roots.add(cert).map_err(|e| TlsError::BadCertificate {
                    file: file.clone(),
                    why: e.to_string(),
                })?;
                any = true;
            }
            if !any {
                return Err(TlsError::NoCertificate { file: file.clone() });
            }
            by_pool.insert(pool.clone(), client_config(roots, &provider)?);
        }
        Ok(UpstreamTls {
            default,
            by_pool: Arc::new(by_pool),
        })
    }

    /// The system's roots only (no pool has a CA of its own).
    pub fn system() -> UpstreamTls {
        UpstreamTls::load(&Default::default()).expect("no file to read, nothing can fail")
    }

    pub(crate) fn default_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.default
    }

    pub(crate) fn pool_configs(
        &self,
    ) -> impl Iterator<Item = (&PoolName, &Arc<rustls::ClientConfig>)> {
        self.by_pool.iter()
    }
}

fn client_config(
    roots: rustls::RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    // ALPN (`http/1.1`) is set by the connector builder.
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What each TLS connection's task needs before it can serve.
pub(crate) struct Handshakes {
    pub config: Arc<rustls::ServerConfig>,
    pub timeout: Duration,
    pub slots: tokio::sync::Semaphore,
}

/// A TLS connection: the ClientHello is read first, holding no handshake slot (so sockets that
/// send nothing, or dribble, cannot starve real clients of slots); then a slot (waited for at
/// most `timeout`) bounds the handshakes doing cryptography at once, each finishing within
/// `timeout`.
pub(crate) async fn handshake(
    handshakes: &Handshakes,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let timeout = handshakes.timeout;
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout(timeout, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS ClientHello unreadable");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "no TLS ClientHello in time; closed");
            return None;
        }
    };
    let Ok(Ok(_slot)) = tokio::time::timeout(timeout, handshakes.slots.acquire()).await else {
        tracing::debug!(%peer, ?timeout, "no TLS handshake slot in time; closed");
        return None;
    };
    match tokio::time::timeout(timeout, start.into_stream(Arc::clone(&handshakes.config))).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "TLS handshake not finished in time; closed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(names: &[&str]) -> Served {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["x.test".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = PrivateKeyDer::try_from(key.serialize_der()).expect("der");
        let key = CertifiedKey::from_der(vec![cert.der().clone()], der, &provider()).expect("key");
        Served {
            key: Arc::new(key),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            info: CertInfo::default(),
        }
    }

    #[test]
    fn sni_prefers_exact_names_then_one_label_wildcards() {
        let set = vec![
            served(&["www.example.com"]),
            served(&["*.example.com"]),
            served(&["api.example.com", "example.com"]),
        ];
        let pick = |n: &str| choose(&set, n).map(|s| s.names[0].clone());
        assert_eq!(pick("api.example.com").as_deref(), Some("api.example.com"));
        assert_eq!(pick("API.Example.COM").as_deref(), Some("api.example.com"));
        assert_eq!(pick("example.com").as_deref(), Some("api.example.com"));
        assert_eq!(pick("shop.example.com").as_deref(), Some("*.example.com"));
        assert_eq!(pick("www.example.com").as_deref(), Some("www.example.com"));
        // A wildcard covers one label only.
        assert_eq!(pick("a.b.example.com"), None);
        assert_eq!(pick("example.org"), None);
    }

    /// Keys as openssl writes them by default for RSA (PKCS#1) and EC (SEC1), next to rcgen's
    /// PKCS#8 ones in the end-to-end tests; `ec.pem` has no subject alternative name.
    #[test]
    fn pkcs1_rsa_and_sec1_ec_keys_load_and_a_crossed_pair_is_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let pair = |cert: &str, key: &str| CertFiles {
            cert: dir.join(cert),
            key: dir.join(key),
        };
        let store = CertStore::load(
            &[
                pair("rsa.pem", "rsa-pkcs1.key"),
                pair("ec.pem", "ec-sec1.key"),
            ],
            true,
        )
        .expect("both load");
        let infos = store.infos();
        assert_eq!(infos[0].names, ["rsa.test"]);
        assert_eq!(infos[1].names, ["ec.test"], "the common name, without SANs");
        assert!(infos[1].days_left > 36_000, "{:?}", infos[1]);
        assert!(store.server_config().is_ok());

        match CertStore::load(&[pair("rsa.pem", "ec-sec1.key")], false) {
            Err(e @ TlsError::KeyMismatch { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("ec-sec1.key") && text.contains("rsa.pem"),
                    "{text}"
                );
            }
            other => panic!("a crossed pair must be refused: {other:?}"),
        }
        match CertStore::load(&[pair("rsa-pkcs1.key", "rsa-pkcs1.key")], false) {
            Err(e @ TlsError::NoCertificate { .. }) => {
                assert!(e.to_string().contains("rsa-pkcs1.key"), "{e}")
            }
            other => panic!("a key is no certificate: {other:?}"),
        }
    }

    #[test]
    fn days_left_rounds_down_and_goes_negative() {
        assert_eq!(days_left(86_400 * 3 + 5, 0), 3);
        assert_eq!(days_left(0, 1), -1);
    }
}
