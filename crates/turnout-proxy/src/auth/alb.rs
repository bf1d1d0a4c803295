//! The ALB's OIDC data (`kind = "alb"`): after its own OIDC login, an AWS ALB sends the user's
//! claims in `x-amzn-oidc-data`, a JWT it signs with ES256. The token's header names the key
//! (`kid`) and the load balancer (`signer`): the signer must be the pinned ARN, the key is
//! fetched from `{keys_url}/{kid}` (PEM) and cached, the signature must verify over the first
//! two segments as sent, and `exp` must be ahead. ALB pads its base64url segments with `=`,
//! which JWT libraries reject, so the segments are decoded here with padding allowed (this,
//! and the ALB's key-per-URL scheme, is why the check is written out rather than taken from a
//! JWT crate); the cryptography is p256's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;

use super::forward::AuthClient;
use super::Verdict;

/// The header the ALB sends the signed claims in.
const OIDC_DATA: &str = "x-amzn-oidc-data";
/// How long a fetched key is used before it is fetched again.
const KEY_FOR: Duration = Duration::from_secs(3600);
/// How long a key id the key server does not know is refused without asking again.
const UNKNOWN_FOR: Duration = Duration::from_secs(60);
/// The most a key fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest token looked at (an ALB's is a few KiB at most).
const MAX_TOKEN: usize = 16 * 1024;

/// base64url with or without the ALB's `=` padding.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone)]
enum FetchError {
    /// The key server does not know the key id.
    Unknown,
    /// It could not be asked, or answered wrongly.
    Unavailable(String),
}

#[derive(Debug)]
pub(super) struct Alb {
    client: AuthClient,
    keys_url: String,
    signer: String,
    claims: Vec<(String, HeaderName)>,
    keys: moka::future::Cache<String, Arc<VerifyingKey>>,
    unknown: moka::future::Cache<String, ()>,
}

/// The token's header, as far as it is read.
#[derive(serde::Deserialize)]
struct TokenHeader {
    alg: String,
    kid: String,
    signer: String,
    exp: Option<u64>,
}

impl Alb {
    pub fn new(
        client: AuthClient,
        keys_url: String,
        signer: String,
        claims: Vec<(String, HeaderName)>,
    ) -> Alb {
        Alb {
            client,
            keys_url,
            signer,
            claims,
            keys: moka::future::Cache::builder()
                .max_capacity(64)
                .time_to_live(KEY_FOR)
                .build(),
            unknown: moka::future::Cache::builder()
                .max_capacity(1024)
                .time_to_live(UNKNOWN_FOR)
                .build(),
        }
    }

    pub async fn check(&self, headers: &mut HeaderMap) -> Result<(), Verdict> {
        let refused = |why: &str| Err(Verdict::Refused(why.to_owned()));
        let token = match headers.get_all(OIDC_DATA).iter().collect::<Vec<_>>()[..] {
            [] => return refused("no x-amzn-oidc-data (not through the ALB's login)"),
            [one] => one.as_bytes(),
            _ => return refused("x-amzn-oidc-data sent twice"),
        };
        if token.len() > MAX_TOKEN {
            return refused("x-amzn-oidc-data over 16 KiB");
        }
        let mut parts = token.split(|b| *b == b'.');
        let (Some(head), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return refused("x-amzn-oidc-data is not a JWT");
        };
        let Some(header) = B64
            .decode(head)
            .ok()
            .and_then(|h| serde_json::from_slice::<TokenHeader>(&h).ok())
        else {
            return refused("the token's header does not decode");
        };
        if header.alg != "ES256" {
            return refused("the token is not ES256");
        }
        if header.signer != self.signer {
            return Err(Verdict::Refused(format!(
                "signed by {:?}, not the pinned load balancer",
                header.signer
            )));
        }
        let kid_ok = (1..=128).contains(&header.kid.len())
            && header
                .kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !kid_ok {
            return refused("the token's key id is malformed");
        }
        let Some(signature) = B64
            .decode(sig)
            .ok()
            .and_then(|s| Signature::from_slice(&s).ok())
        else {
            return refused("the token's signature does not decode");
        };
        let key = self.key(&header.kid).await?;
        let signed = &token[..head.len() + 1 + body.len()];
        if key.verify(signed, &signature).is_err() {
            return refused("the token's signature does not verify");
        }
        let Some(claims) = B64.decode(body).ok().and_then(|c| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&c).ok()
        }) else {
            return refused("the token's claims do not decode");
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .or(header.exp);
        match exp {
            Some(exp) if exp > now => {}
            Some(_) => return refused("the token has expired"),
            None => return refused("the token has no exp"),
        }
        for (claim, name) in &self.claims {
            match claims.get(claim) {
                Some(serde_json::Value::String(s)) => super::pass_on(headers, name, s.as_bytes()),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    super::pass_on(headers, name, v.to_string().as_bytes())
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The ALB's public key `kid`: cached, or fetched once however many requests wait for it.
    async fn key(&self, kid: &str) -> Result<Arc<VerifyingKey>, Verdict> {
        if self.unknown.contains_key(kid) {
            return Err(Verdict::Refused(format!(
                "key id {kid:?} is unknown to the key server"
            )));
        }
        match self.keys.try_get_with_by_ref(kid, self.fetch(kid)).await {
            Ok(key) => Ok(key),
            Err(e) => match &*e {
                FetchError::Unknown => {
                    self.unknown.insert(kid.to_owned(), ()).await;
                    Err(Verdict::Refused(format!(
                        "key id {kid:?} is unknown to the key server"
                    )))
                }
                FetchError::Unavailable(why) => Err(Verdict::Unavailable {
                    why: why.clone(),
                    answered: false,
                }),
            },
        }
    }

    async fn fetch(&self, kid: &str) -> Result<Arc<VerifyingKey>, FetchError> {
        let url: Uri = format!("{}/{kid}", self.keys_url)
            .parse()
            .map_err(|_| FetchError::Unknown)?;
        let unavailable = |why: String| FetchError::Unavailable(format!("ALB key {url}: {why}"));
        let ask = Request::get(url.clone())
            .body(Empty::<Bytes>::new())
            .expect("a GET of a valid URI");
        let answer = tokio::time::timeout(FETCH_TIMEOUT, async {
            let answer = self
                .client
                .request(ask)
                .await
                .map_err(|e| format!("{}", crate::error::DisplayChain(&e)))?;
            let status = answer.status();
            let body = Limited::new(answer.into_body(), 4096)
                .collect()
                .await
                .map_err(|e| format!("the body failed or is over 4 KiB: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await
        .map_err(|_| unavailable(format!("took over {FETCH_TIMEOUT:?}")))?
        .map_err(&unavailable)?;
        match answer {
            (StatusCode::OK, body) => std::str::from_utf8(&body)
                .ok()
                .and_then(|pem| VerifyingKey::from_public_key_pem(pem.trim()).ok())
                .map(Arc::new)
                .ok_or_else(|| {
                    unavailable("answered something that is not a P-256 public key in PEM".into())
                }),
            (StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST, _) => {
                Err(FetchError::Unknown)
            }
            (status, _) => Err(unavailable(format!("answered {status}"))),
        }
    }
}
