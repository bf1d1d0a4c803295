//! Basic auth (`kind = "basic"`): `Authorization: Basic` checked against the users file's
//! argon2 or bcrypt hashes. Both crates compare the derived hash in constant time; an unknown
//! user costs the same hash as a known one (no user enumeration by timing). A hash costs tens
//! of milliseconds by design, so each runs on the blocking pool, a few at once, and a
//! credential that verified is remembered for a while under a seeded hash of its header, the
//! header itself kept and compared in constant time on the next request.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::header::{self, HeaderValue};
use http::{HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

use super::Verdict;

/// How long a verified credential is taken without hashing again.
const REMEMBER_FOR: Duration = Duration::from_secs(300);
/// The most verified credentials remembered.
const REMEMBERED: u64 = 10_000;
/// The longest `Authorization` value looked at.
const MAX_CREDENTIAL: usize = 1024;

#[derive(Debug)]
enum Hash {
    Argon2(String),
    Bcrypt(String),
}

impl Hash {
    /// The config checked the hash's form (and parsed an argon2 one).
    fn new(hash: &str) -> Hash {
        if hash.starts_with("$argon2") {
            Hash::Argon2(hash.to_owned())
        } else {
            Hash::Bcrypt(hash.to_owned())
        }
    }

    /// The password matches (blocking: tens of milliseconds).
    fn verify(&self, password: &[u8]) -> bool {
        use argon2::PasswordVerifier as _;
        match self {
            Hash::Argon2(h) => argon2::PasswordHash::new(h).is_ok_and(|parsed| {
                argon2::Argon2::default()
                    .verify_password(password, &parsed)
                    .is_ok()
            }),
            Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
        }
    }
}

/// A credential that verified: the header as sent, and whose it is.
#[derive(Debug)]
struct Verified {
    credential: Box<[u8]>,
    user: usize,
}

#[derive(Debug)]
pub(super) struct Basic {
    users: Arc<Vec<(String, Hash)>>,
    challenge: HeaderValue,
    user_header: Option<HeaderName>,
    remembered: moka::sync::Cache<u128, Arc<Verified>>,
    seed: u64,
    hashing: Arc<tokio::sync::Semaphore>,
}

impl Basic {
    pub fn new(users: &[(String, String)], realm: &str, user_header: Option<HeaderName>) -> Basic {
        let users = users
            .iter()
            .map(|(u, h)| (u.clone(), Hash::new(h)))
            .collect();
        let challenge =
            HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
                .expect("the config allows printable realms without quotes");
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        Basic {
            users: Arc::new(users),
            challenge,
            user_header,
            remembered: moka::sync::Cache::builder()
                .max_capacity(REMEMBERED)
                .time_to_live(REMEMBER_FOR)
                .build(),
            seed: fastrand::u64(..),
            hashing: Arc::new(tokio::sync::Semaphore::new(parallel)),
        }
    }

    /// This rule's `WWW-Authenticate` challenge.
    pub fn challenge(&self) -> HeaderValue {
        self.challenge.clone()
    }

    pub async fn check(&self, headers: &mut HeaderMap) -> Result<(), Verdict> {
        let Some(given) = headers.get(header::AUTHORIZATION) else {
            return Err(Verdict::Refused("no credentials".into()));
        };
        let credential = given.as_bytes();
        if credential.len() > MAX_CREDENTIAL {
            return Err(Verdict::Refused("credentials over 1 KiB".into()));
        }
        let key = xxhash_rust::xxh3::xxh3_128_with_seed(credential, self.seed);
        if let Some(v) = self.remembered.get(&key) {
            if bool::from(v.credential.ct_eq(credential)) {
                self.pass_on(headers, v.user);
                return Ok(());
            }
        }
        let Some((user, password)) = decode(credential) else {
            return Err(Verdict::Refused("malformed Basic credentials".into()));
        };
        let known = self
            .users
            .iter()
            .position(|(u, _)| u.as_bytes() == user.as_slice());
        let credential: Box<[u8]> = credential.into();
        let users = Arc::clone(&self.users);
        let Ok(_permit) = self.hashing.acquire().await else {
            return Err(Verdict::Unavailable {
                why: "closed".into(),
                answered: false,
            });
        };
        // An unknown user is hashed against the first user's hash all the same, and refused.
        let index = known.unwrap_or(0);
        let ok = tokio::task::spawn_blocking(move || users[index].1.verify(&password))
            .await
            .unwrap_or(false);
        match (known, ok) {
            (Some(user), true) => {
                self.remembered
                    .insert(key, Arc::new(Verified { credential, user }));
                self.pass_on(headers, user);
                Ok(())
            }
            (Some(_), false) => Err(Verdict::Refused(format!(
                "wrong password for user {:?}",
                String::from_utf8_lossy(&user)
            ))),
            (None, _) => Err(Verdict::Refused(format!(
                "no user {:?}",
                String::from_utf8_lossy(&user)
            ))),
        }
    }

    fn pass_on(&self, headers: &mut HeaderMap, user: usize) {
        if let Some(h) = &self.user_header {
            super::pass_on(headers, h, self.users[user].0.as_bytes());
        }
    }
}

/// `Basic base64(user:password)`: the user and the password (the scheme in any case).
pub(super) fn decode(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}
